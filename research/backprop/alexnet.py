"""Backpropagation through AlexNet (research/models/alexnet.py), layer by layer, by hand.

The forward pass keeps each layer's input and output sigma^l; the backward pass runs the
layers of research/backprop/layers.py in reverse, carrying dE/dsigma^l down:

  fc8      delta^out = (softmax(sum^out) - y) / B;  dE/dsigma^fc7 = delta^out w^fc8.T
  fc7, fc6 dropout's transpose (the forward's mask, / (1 - rate)), then ReLU:
           delta = dE/dsigma [sum > 0], and dense_backward
  pool5    max pooling (3x3/2, or the config's pool_window/pool_stride) routes each window's
           gradient to its argmax (overlapping windows add up)
  conv5-3  ReLU, then conv2d_backward (SAME, stride 1, the config's groups)
  conv2, conv1  max pool, LRN's backward (when model.lrn), ReLU, conv2d_backward
           (conv1 with its stride and padding; its dE/dx is unused and jit drops it)

The cost is losses.make_loss_fn's: the data term averaged over the B examples, plus
(lambda/2m) sum w^2 [+ (lambda_1/m) sum |w|] over the "w" leaves. Dropout needs the rng the
trainer passes: its keys are split exactly as alexnet.apply splits them, so the masks agree.
"""
import functools

import jax
import ml_collections

from research import errors
from research import models
from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import alexnet as alexnet_model
from research.models import layers

def _dropout_keys(rng, num_hidden: int, rate: float) -> list:
  """alexnet.apply's keys (train=True): one split of rng per hidden fc layer."""
  return list(jax.random.split(rng, num_hidden)) if rate > 0 else [None] * num_hidden


def forward(params: dict, x_NHWC: jax.Array, rng, cfg) -> tuple[jax.Array, dict]:
  """alexnet.apply(train=True), keeping what the backward pass needs: (logits_NxK, saved).

  saved["conv_in"][l] / saved["conv_out"][l] are conv l's input and ReLU output a^l
  (N x H x W x C), saved["norm"][l] conv1/conv2's LRN output (a^l itself without LRN),
  saved["fc_in"][l] each fc layer's input (dropout applied), saved["fc_out"][l] each hidden
  fc layer's ReLU output before dropout.
  """
  conv, fc = params["conv"], params["fc"]
  norm = layers.local_response_norm if cfg.lrn else (lambda h: h)
  window, pool_stride = alexnet_model.pool_shape(cfg)
  conv_impl = models.conv_impl(cfg)
  s = {"conv_in": [], "conv_out": [], "norm": [], "fc_in": [], "fc_out": [], "keeps": []}
  h = x_NHWC
  for l, c in enumerate(conv):
    s["conv_in"].append(h)
    stride, padding = (cfg.conv1_stride, cfg.conv1_padding) if l == 0 else (1, "SAME")
    h = jax.nn.relu(layers.conv2d(c, h, stride, padding, conv_impl))
    s["conv_out"].append(h)
    if l < 2:
      s["norm"].append(h := norm(h))
    if l in (0, 1, len(conv) - 1):
      h = layers.max_pool(h, window, pool_stride)
  s["pool5"] = h
  h = layers.flatten(h)
  for layer, r in zip(fc[:-1], _dropout_keys(rng, len(fc) - 1, cfg.dropout)):
    s["fc_in"].append(h)
    s["fc_out"].append(a := jax.nn.relu(layers.dense(layer, h)))
    h, keep = backprop_layers.dropout_forward(r, a, cfg.dropout)
    s["keeps"].append(keep)
  s["fc_in"].append(h)
  return layers.dense(fc[-1], h), s


def backward(params: dict, s: dict, delta_out: jax.Array, cfg) -> dict:
  """dE/dparams (data term only) from delta^out = dE/dsum^out_NxK, the same pytree as params."""
  conv, fc = params["conv"], params["fc"]
  window, pool_stride = alexnet_model.pool_shape(cfg)
  conv_impl = models.conv_impl(cfg)
  g_conv, g_fc = [None] * len(conv), [None] * len(fc)
  dE_dh, g_fc[-1] = backprop_layers.dense_backward(fc[-1], s["fc_in"][-1], delta_out)
  for l in reversed(range(len(fc) - 1)):
    dE_da = backprop_layers.dropout_backward(s["keeps"][l], dE_dh, cfg.dropout)
    delta = backprop_layers.activation_backward("relu", s["fc_out"][l], dE_da)
    dE_dh, g_fc[l] = backprop_layers.dense_backward(fc[l], s["fc_in"][l], delta)
  dE_dh = dE_dh.reshape(s["pool5"].shape)
  for l in reversed(range(len(conv))):
    a = s["conv_out"][l]
    if l in (0, 1, len(conv) - 1):
      dE_dh = backprop_layers.max_pool_backward(s["norm"][l] if l < 2 else a, dE_dh, window,
                                                pool_stride)
    if l < 2 and cfg.lrn:
      dE_dh = backprop_layers.local_response_norm_backward(a, dE_dh)
    delta = backprop_layers.activation_backward("relu", a, dE_dh)
    stride, padding = (cfg.conv1_stride, cfg.conv1_padding) if l == 0 else (1, "SAME")
    dE_dh, g_conv[l] = backprop_layers.conv2d_backward(conv[l], s["conv_in"][l], delta,
                                                       stride, padding, conv_impl)
  return {"conv": g_conv, "fc": g_fc}


@core.register_manual("alexnet")
def make_value_and_grad(model_cfg, input_shape: tuple[int, ...], output: str, lam: float,
                        m: int, num_outputs: int, lam1: float = 0.0):
  """A drop-in for jax.value_and_grad(losses.make_loss_fn(alexnet, output, lam, m, K, lam1),
  has_aux=True).

  Returns value_and_grad(params, x_NHWC, labels_N, rng) -> ((E, {"data_loss", "accuracy"}),
  grads) from one forward and one hand-written backward pass; rng is the dropout key (may be
  None when model_cfg.dropout == 0).
  """
  model_cfg = models.resolve(model_cfg)  # a partial group gets the family's defaults, as in build
  models.build(model_cfg, input_shape, num_outputs)  # The model's own config errors.
  backprop_layers.check_loss(output, lam, m, lam1)
  if model_cfg.dropout > 0:
    def check_rng(rng):
      if rng is None:
        raise errors.ConfigError(
            "alexnet manual gradients with config.model.dropout > 0 need the step's rng key")
  else:
    check_rng = lambda rng: None

  def fwd(params, x_NHWC, rng):
    check_rng(rng)
    return forward(params, x_NHWC, rng, model_cfg)

  return backprop_layers.value_and_grad_from(
      fwd, functools.partial(backward, cfg=model_cfg), num_outputs, output, lam, m, lam1)


def alexnet_manual_grads(params: dict, x_NHWC: jax.Array, labels_N: jax.Array, rng, *,
                         model_cfg, output: str, lam: float, m: int, num_outputs: int,
                         lam1: float = 0.0) -> dict:
  """dE/dparams of losses.make_loss_fn(alexnet, output, lam, m, K, lam1) at (x, labels, rng),
  by hand: the same pytree as jax.grad of that loss."""
  value_and_grad = make_value_and_grad(model_cfg, x_NHWC.shape[1:], output, lam, m,
                                       num_outputs, lam1)
  return value_and_grad(params, x_NHWC, labels_N, rng)[1]


# ------------------------------------------------------------------------------ gradient check

# 1/16 of alexnet_small's maps (4-12-24-16-16) with the paper's two-GPU groups, on 16 x 16 x 1
# inputs (16 -> pools 7, 3, 1): every layer kind of the full model, in milliseconds.
SMALL = {"name": "alexnet", "conv_channels": (64, 192, 384, 256, 256),
         "kernel_sizes": (5, 5, 3, 3, 3), "groups": (1, 2, 1, 2, 2), "conv1_stride": 1,
         "conv1_padding": "SAME", "width": 0.0625, "fc_sizes": (16, 16), "lrn": True,
         "dropout": 0.3, "conv_impl": "xla"}
SMALL_INPUT = (16, 16, 1)


@core.register_problem("alexnet_small")
def problem_alexnet_small(key: jax.Array, batch: int, dtype):
  """gradcheck.Problem: AlexNet at SMALL on 16 x 16 x 1 inputs, K = 10, softmax, lambda > 0,
  B < m, dropout with a fixed key (the same masks in the loss and the backward pass)."""
  cfg = ml_collections.ConfigDict(SMALL)
  return core.classifier_problem(
      key, batch, dtype, cfg, SMALL_INPUT, make_value_and_grad,
      f"alexnet width={cfg.width} (4-12-24-16-16 maps, groups {cfg.groups}, LRN, "
      f"fc {cfg.fc_sizes}, dropout {cfg.dropout})")
