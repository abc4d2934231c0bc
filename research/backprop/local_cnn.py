"""Backpropagation through research/models/local_cnn.py (tied or untied receptive fields).

The backward pass runs research/backprop/layers.py's layers in reverse:

  out    delta^out = (softmax(sum^out) - y) / B;  dE/dsigma^L = delta^out w^out.T, unflattened
  layer  delta^l = dE/dsigma^l * 1[sigma^l > 0] (ReLU); then
           shared:  conv2d_backward: dE/dw_{ijco} = sum_{nhw} x_{n, s h + i, s w + j, c}
                    delta_{nhwo}, one gradient summed over every position (the tied weight
                    collects the gradient of all its copies);
           local:   locally_connected2d_backward: the same products, not summed over (h, w);
         both give dE/dsigma^{l-1} by col2im of delta w^T.

The cost is losses.make_loss_fn's: the data term averaged over the B examples, plus
(lambda/2m) sum w^2 [+ (lambda_1/m) sum |w|] over the "w" leaves.
"""
import functools

import jax
import ml_collections

from research import models
from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import layers
from research.models import local_cnn


def forward(params: dict, x_NHWC: jax.Array, cfg) -> tuple[jax.Array, dict]:
  """local_cnn.apply, keeping every layer's input and ReLU output: (logits_NxK, saved)."""
  g = local_cnn.check(cfg, x_NHWC.shape[1:])
  sigmas = local_cnn.hidden(params, x_NHWC, cfg.shared, g["strides"], cfg.padding,
                            models.conv_impl(cfg))
  flat = layers.flatten(sigmas[-1])
  return layers.dense(params["out"], flat), {"inputs": [x_NHWC, *sigmas[:-1]],
                                             "sigmas": sigmas, "flat": flat}


def backward(params: dict, s: dict, delta_out: jax.Array, cfg) -> dict:
  """dE/dparams (data term only) from delta^out = dE/dsum^out_NxK, the same pytree as params."""
  strides = tuple(cfg.strides)
  grads = [None] * len(params["layers"])
  dE_dflat, g_out = backprop_layers.dense_backward(params["out"], s["flat"], delta_out)
  dE_dsigma = dE_dflat.reshape(s["sigmas"][-1].shape)
  for l in reversed(range(len(grads))):
    delta = backprop_layers.activation_backward("relu", s["sigmas"][l], dE_dsigma)
    layer, x, stride = params["layers"][l], s["inputs"][l], strides[l]
    if cfg.shared:
      dE_dsigma, grads[l] = backprop_layers.conv2d_backward(layer, x, delta, stride,
                                                            cfg.padding, models.conv_impl(cfg))
    else:
      dE_dsigma, grads[l] = backprop_layers.locally_connected2d_backward(layer, x, delta, stride,
                                                                         cfg.padding)
  return {"layers": grads, "out": g_out}


@core.register_manual("local_cnn")
def make_value_and_grad(model_cfg, input_shape: tuple[int, ...], *, num_outputs: int,
                        output: str, lam: float, m: int, lam1: float = 0.0):
  """A drop-in for jax.value_and_grad(losses.make_loss_fn(local_cnn, ...), has_aux=True)."""
  model_cfg = models.resolve(model_cfg)  # a partial group gets the family's defaults, as in build
  models.build(model_cfg, input_shape, num_outputs)  # The model's own config errors.
  backprop_layers.check_loss(output, lam, m, lam1)
  return backprop_layers.value_and_grad_from(
      lambda params, x, rng: forward(params, x, model_cfg),
      functools.partial(backward, cfg=model_cfg), num_outputs, output, lam, m, lam1)


# ------------------------------------------------------------------------------ gradient check

# A 3x3 stride-1 layer, then a 3x3 stride-2 one padded (0, 1) by SAME: 8 -> 8 -> 4.
CHECK = {"name": "local_cnn", "channels": (3, 4), "kernel_sizes": (3, 3), "strides": (1, 2),
         "padding": "SAME", "conv_impl": "patches"}
CHECK_INPUT = (8, 8, 2)


@core.register_problem("local_cnn")
def problem_local_cnn(key: jax.Array, batch: int, dtype):
  """gradcheck.Problem: two locally connected layers (unshared weights) + dense, softmax."""
  cfg = ml_collections.ConfigDict(dict(CHECK, shared=False))
  return core.classifier_problem(
      key, batch, dtype, cfg, CHECK_INPUT, make_value_and_grad,
      "local_cnn unshared: locally connected 3x3/1 (3 maps) -> relu -> 3x3/2 (4 maps) -> "
      "relu -> dense, SAME", dropout_key=False)


@core.register_problem("local_cnn_shared")
def problem_local_cnn_shared(key: jax.Array, batch: int, dtype):
  """gradcheck.Problem: the same geometry with shared weights (two convolutions) + dense."""
  cfg = ml_collections.ConfigDict(dict(CHECK, shared=True))
  return core.classifier_problem(
      key, batch, dtype, cfg, CHECK_INPUT, make_value_and_grad,
      "local_cnn shared: conv 3x3/1 (3 maps) -> relu -> conv 3x3/2 (4 maps) -> relu -> "
      "dense, SAME", dropout_key=False)
