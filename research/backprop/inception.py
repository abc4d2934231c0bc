"""Backpropagation through the small inception network (research/models/inception.py) by hand.

The backward pass runs research/backprop/layers.py's layers in reverse:

  out      delta^out = (softmax(sum^out) - y) / B;  dE/dg = delta^out w^out.T
  dropout  the forward's mask, / (1 - rate)
  GAP      g = mean_{hw} h, so every position gets dE/dg / (H W)
  block    dE/dy split on channels into the four branches (1x1 | 3x3 | 5x5 | pool); each
           ReLU -> conv2d_backward (-> ReLU -> 1x1 reduce's conv2d_backward); the pool
           branch ends in max_pool_backward 3x3/1 SAME. dE/dx is the sum of the four.
  pool     max pool 3x3/2 SAME before each block routes to the argmax
  stem     ReLU, conv2d_backward (its dE/dx is unused and jit drops it)

The cost is losses.make_loss_fn's: the data term averaged over the B examples, plus
(lambda/2m) sum w^2 [+ (lambda_1/m) sum |w|] over the "w" leaves.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from research import errors
from research import models
from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import layers

_BRANCHES = ("b1", "b3", "b5", "pool_proj")  # inception_block's concatenation order


def block_forward(params: dict, x_NHWC: jax.Array,
                  conv_impl: str = "xla") -> tuple[jax.Array, dict]:
  """layers.inception_block, keeping every branch's input and ReLU output: (y, saved)."""
  relu_conv = lambda p, h: jax.nn.relu(layers.conv2d(p, h, 1, "SAME", conv_impl))
  s = {"x": x_NHWC}
  s["b1"] = relu_conv(params["b1"], x_NHWC)
  s["b3_reduce"] = relu_conv(params["b3_reduce"], x_NHWC)
  s["b3"] = relu_conv(params["b3"], s["b3_reduce"])
  s["b5_reduce"] = relu_conv(params["b5_reduce"], x_NHWC)
  s["b5"] = relu_conv(params["b5"], s["b5_reduce"])
  s["pool"] = layers.max_pool(x_NHWC, 3, 1, "SAME")
  s["pool_proj"] = relu_conv(params["pool_proj"], s["pool"])
  return jnp.concatenate([s[b] for b in _BRANCHES], axis=-1), s


def block_backward(params: dict, s: dict, dE_dy: jax.Array,
                   conv_impl: str = "xla") -> tuple[jax.Array, dict]:
  """Backward of layers.inception_block: (dE/dx_NHWC, grads of its six convs)."""
  grads = {}

  def relu_conv_backward(name, x, dE_da):
    delta = backprop_layers.activation_backward("relu", s[name], dE_da)
    dE_dx, grads[name] = backprop_layers.conv2d_backward(params[name], x, delta, 1, "SAME",
                                                         conv_impl)
    return dE_dx

  sizes = [s[b].shape[-1] for b in _BRANCHES]
  d1, d3, d5, dp = jnp.split(dE_dy, [sum(sizes[:i]) for i in range(1, 4)], axis=-1)
  x = s["x"]
  dE_dx = relu_conv_backward("b1", x, d1)
  dE_dx += relu_conv_backward("b3_reduce", x, relu_conv_backward("b3", s["b3_reduce"], d3))
  dE_dx += relu_conv_backward("b5_reduce", x, relu_conv_backward("b5", s["b5_reduce"], d5))
  dE_dx += backprop_layers.max_pool_backward(
      x, relu_conv_backward("pool_proj", s["pool"], dp), 3, 1, "SAME")
  return dE_dx, {name: grads[name] for name in params}


def forward(params: dict, x_NHWC: jax.Array, rng, rate: float,
            conv_impl: str = "xla") -> tuple[jax.Array, dict]:
  """inception.apply(train=True), keeping what the backward pass needs: (logits_NxK, saved)."""
  s = {"stem": jax.nn.relu(layers.conv2d(params["stem"], x_NHWC, impl=conv_impl)), "x": x_NHWC,
       "pool_in": [], "blocks": []}
  h = s["stem"]
  for block in params["blocks"]:
    s["pool_in"].append(h)
    h, saved = block_forward(block, layers.max_pool(h, 3, 2, "SAME"), conv_impl)
    s["blocks"].append(saved)
  s["last"] = h
  s["gap"], s["keep"] = backprop_layers.dropout_forward(rng, layers.global_avg_pool(h), rate)
  return layers.dense(params["out"], s["gap"]), s


def backward(params: dict, s: dict, delta_out: jax.Array, rate: float,
             conv_impl: str = "xla") -> dict:
  """dE/dparams (data term only) from delta^out = dE/dsum^out_NxK, the same pytree as params."""
  grads = {"blocks": [None] * len(params["blocks"])}
  dE_dg, grads["out"] = backprop_layers.dense_backward(params["out"], s["gap"], delta_out)
  dE_dg = backprop_layers.dropout_backward(s["keep"], dE_dg, rate)
  n, h, w, c = s["last"].shape
  dE_dh = jnp.broadcast_to(dE_dg[:, None, None, :] / (h * w), (n, h, w, c))
  for l in reversed(range(len(params["blocks"]))):
    dE_dp, grads["blocks"][l] = block_backward(params["blocks"][l], s["blocks"][l], dE_dh,
                                               conv_impl)
    dE_dh = backprop_layers.max_pool_backward(s["pool_in"][l], dE_dp, 3, 2, "SAME")
  delta = backprop_layers.activation_backward("relu", s["stem"], dE_dh)
  _, grads["stem"] = backprop_layers.conv2d_backward(params["stem"], s["x"], delta,
                                                     impl=conv_impl)
  return {name: grads[name] for name in params}


@core.register_manual("inception")
def make_value_and_grad(model_cfg, input_shape: tuple[int, ...], output: str, lam: float,
                        m: int, num_outputs: int, lam1: float = 0.0):
  """A drop-in for jax.value_and_grad(losses.make_loss_fn(inception, output, lam, m, K, lam1),
  has_aux=True).

  Returns value_and_grad(params, x_NHWC, labels_N, rng) -> ((E, {"data_loss", "accuracy"}),
  grads) from one forward and one hand-written backward pass; rng is the dropout key (may be
  None when model_cfg.dropout == 0).
  """
  model_cfg = models.resolve(model_cfg)  # a partial group gets the family's defaults, as in build
  models.build(model_cfg, input_shape, num_outputs)  # The model's own config errors.
  backprop_layers.check_loss(output, lam, m, lam1)
  rate = model_cfg.dropout
  conv_impl = models.conv_impl(model_cfg)

  def fwd(params, x_NHWC, rng):
    if rate > 0 and rng is None:
      raise errors.ConfigError(
          "inception manual gradients with config.model.dropout > 0 need the step's rng key")
    return forward(params, x_NHWC, rng, rate, conv_impl)

  return backprop_layers.value_and_grad_from(
      fwd, functools.partial(backward, rate=rate, conv_impl=conv_impl), num_outputs, output,
      lam, m, lam1)


def inception_manual_grads(params: dict, x_NHWC: jax.Array, labels_N: jax.Array, rng, *,
                           model_cfg, output: str, lam: float, m: int, num_outputs: int,
                           lam1: float = 0.0) -> dict:
  """dE/dparams of losses.make_loss_fn(inception, output, lam, m, K, lam1) at (x, labels, rng),
  by hand: the same pytree as jax.grad of that loss."""
  value_and_grad = make_value_and_grad(model_cfg, x_NHWC.shape[1:], output, lam, m,
                                       num_outputs, lam1)
  return value_and_grad(params, x_NHWC, labels_N, rng)[1]


# ------------------------------------------------------------------------------ gradient check

# Two blocks of a few channels each on 8 x 8 x 1 inputs (8 -> 4 -> 2 before the blocks): both
# 3x3/2 pools, every branch, the global average pool and dropout.
SMALL = {"name": "inception", "stem_channels": 4,
         "blocks": ((2, 2, 3, 1, 2, 2), (3, 2, 4, 2, 2, 3)), "dropout": 0.3, "conv_impl": "xla"}
SMALL_INPUT = (8, 8, 1)


@core.register_problem("inception")
def problem_inception(key: jax.Array, batch: int, dtype):
  """gradcheck.Problem: the inception net at SMALL on 8 x 8 x 1 inputs, K = 10, softmax,
  lambda > 0, B < m, dropout with a fixed key (the same mask in the loss and backward pass)."""
  cfg = ml_collections.ConfigDict(SMALL)
  return core.classifier_problem(
      key, batch, dtype, cfg, SMALL_INPUT, make_value_and_grad,
      f"inception stem {cfg.stem_channels}, blocks {cfg.blocks}, dropout {cfg.dropout}")
