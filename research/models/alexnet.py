"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012, "ImageNet classification with deep
convolutional neural networks") as pure functions, full size or scaled down by config.

  conv1 96@11x11/4 -> ReLU -> LRN -> max pool 3x3/2
  conv2 256@5x5    -> ReLU -> LRN -> max pool 3x3/2
  conv3 384@3x3 -> ReLU;  conv4 384@3x3 -> ReLU;  conv5 256@3x3 -> ReLU -> max pool 3x3/2
  fc6 4096 -> ReLU -> dropout;  fc7 4096 -> ReLU -> dropout;  fc8 K logits

Spatial sizes: the paper says 224x224 inputs, but its 55x55 conv1 maps need 227x227 with no
padding ((227 - 11) / 4 + 1 = 55), so the full model takes 227x227x3 with conv1_padding
"VALID"; conv2-5 use SAME padding (the paper's 2, 1, 1, 1). After the pools: 27, 13, 6, and
fc6 sees 6 * 6 * 256 = 9216 features. (A 224x224 input with conv1_padding "SAME" gives 56x56
conv1 maps and the same 27/13/6 after pooling.)

groups=(1, 2, 1, 2, 2) reproduces the paper's two-GPU split (conv2, conv4, conv5 only see
the kernels on their own GPU): 60,965,224 parameters for K = 1000; with groups all 1 it is
62,378,344. Pools are overlapping (3x3 windows, stride 2), which the paper found reduced
top-1 error by 0.4% against 2x2/2 (pool_window=2 gives those). LRN uses the paper's k=2,
n=5, alpha=1e-4, beta=0.75.

Weights are He normal and biases 0 (the paper used N(0, 0.01) and biases of 1 in conv2,
conv4, conv5 and the hidden fc layers, which only trains with its hand-tuned schedule).
"""
import functools

import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers

NUM_CONV = 5


def conv_channels(cfg) -> tuple[int, ...]:
  """cfg.conv_channels times cfg.width, each rounded to a multiple of the largest group count
  so that every grouped conv can split its input and its output evenly."""
  m = max(cfg.groups)
  return tuple(max(m, int(round(c * cfg.width / m)) * m) for c in cfg.conv_channels)


def init(key: jax.Array, input_shape: tuple[int, int, int], num_outputs: int, *,
         channels: tuple[int, ...], kernel_sizes: tuple[int, ...], groups: tuple[int, ...],
         conv1_stride: int, conv1_padding: str, fc_sizes: tuple[int, ...],
         pool_window: int = 3, pool_stride: int = 2, dtype=jnp.float32) -> dict:
  """{"conv": [5 x {"w": w_HxWxIxO, "b"}], "fc": [len(fc_sizes) + 1 x {"w": w_IxO, "b"}]}."""
  k_conv, k_fc = jax.random.split(key)
  in_chs = (input_shape[2], *channels[:-1])
  conv = [layers.init_conv2d(k, i, o, s, groups=g, dtype=dtype)
          for k, i, o, s, g in zip(jax.random.split(k_conv, NUM_CONV), in_chs, channels,
                                   kernel_sizes, groups)]
  h, w = feature_map_size(input_shape[:2], kernel_sizes[0], conv1_stride, conv1_padding,
                          pool_window, pool_stride)
  sizes = (h * w * channels[-1], *fc_sizes, num_outputs)
  fc = [layers.init_dense(k, i, o, init="he", dtype=dtype)
        for k, i, o in zip(jax.random.split(k_fc, len(sizes) - 1), sizes[:-1], sizes[1:])]
  return {"conv": conv, "fc": fc}


def feature_map_size(hw: tuple[int, int], k1: int, stride1: int, pad1: str,
                     pool_window: int = 3, pool_stride: int = 2) -> tuple[int, int]:
  """Height and width of conv5's pooled output for an input of size hw."""
  def one(n):
    n = -(-n // stride1) if pad1 == "SAME" else (n - k1) // stride1 + 1   # conv1
    for _ in range(3):  # three VALID pools (conv2-5 keep the size)
      n = (n - pool_window) // pool_stride + 1
    return n
  return one(hw[0]), one(hw[1])


def apply(params: dict, x_NHWC: jax.Array, *, conv1_stride: int, conv1_padding: str,
          lrn: bool, dropout: float, train: bool = False, rng: jax.Array | None = None,
          pool_window: int = 3, pool_stride: int = 2, conv_impl: str = "xla") -> jax.Array:
  """x_NxHxWxC -> logits_NxK; dropout (rate `dropout`) on fc6 and fc7 outputs when `train`.
  Max pools are pool_window x pool_window / pool_stride; conv_impl as in layers.conv2d."""
  if train and dropout > 0 and rng is None:
    raise ValueError("alexnet apply with train=True and dropout > 0 needs an rng key")
  conv, fc = params["conv"], params["fc"]
  norm = layers.local_response_norm if lrn else (lambda h: h)
  pool = functools.partial(layers.max_pool, window=pool_window, stride=pool_stride)
  conv2d = functools.partial(layers.conv2d, impl=conv_impl)
  h = pool(norm(jax.nn.relu(conv2d(conv[0], x_NHWC, conv1_stride, conv1_padding))))
  h = pool(norm(jax.nn.relu(conv2d(conv[1], h))))
  for c in conv[2:]:
    h = jax.nn.relu(conv2d(c, h))
  h = layers.flatten(pool(h))
  rngs = jax.random.split(rng, len(fc) - 1) if train and dropout > 0 else [None] * len(fc)
  for layer, r in zip(fc[:-1], rngs):
    h = layers.dropout(r, jax.nn.relu(layers.dense(layer, h)), dropout, train)
  return layers.dense(fc[-1], h)


def pool_shape(cfg) -> tuple[int, int]:
  """(window, stride) of the max pools: config.model.pool_window / pool_stride, else the
  paper's overlapping 3x3/2."""
  return cfg.get("pool_window", 3), cfg.get("pool_stride", 2)  # checked against RANGES


def _validate(cfg, input_shape) -> None:
  for field in ("conv_channels", "kernel_sizes", "groups"):
    if len(cfg[field]) != NUM_CONV or any(not isinstance(v, int) or v <= 0 for v in cfg[field]):
      raise errors.ConfigError(
          f"config.model.{field}={tuple(cfg[field])!r} must be {NUM_CONV} positive integers")
  if any(not isinstance(v, int) or v <= 0 for v in cfg.fc_sizes):
    raise errors.ConfigError(
        f"config.model.fc_sizes={tuple(cfg.fc_sizes)!r} must be positive integers, "
        "e.g. (4096, 4096)")
  errors.check_choice("model.conv1_padding", cfg.conv1_padding, ("VALID", "SAME"))
  pool_window, pool_stride = pool_shape(cfg)
  core.conv_impl(cfg)
  if cfg.groups[0] != 1:
    raise errors.ConfigError("config.model.groups[0] must be 1: conv1 sees every input channel")
  if len(input_shape) != 3:
    raise errors.ConfigError(
        f"model alexnet needs NHWC images, got input shape {input_shape}; set "
        "config.data.image_size (e.g. 32 for digits)")
  h, w = feature_map_size(input_shape[:2], cfg.kernel_sizes[0], cfg.conv1_stride,
                          cfg.conv1_padding, pool_window, pool_stride)
  if h < 1 or w < 1:
    raise errors.ConfigError(
        f"alexnet: input {input_shape[:2]} is too small for conv1 {cfg.kernel_sizes[0]}x"
        f"{cfg.kernel_sizes[0]}/{cfg.conv1_stride} and three {pool_window}x{pool_window}/"
        f"{pool_stride} pools; use a larger "
        "config.data.image_size or config.model.conv1_stride=1, conv1_padding='SAME'")


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.alexnet
RANGES = model_configs.RANGES["alexnet"]


@core.register("alexnet")
def _build(cfg, input_shape, num_outputs) -> core.Model:
  _validate(cfg, input_shape)
  pool_window, pool_stride = pool_shape(cfg)
  init_fn = functools.partial(
      init, input_shape=input_shape, num_outputs=num_outputs, channels=conv_channels(cfg),
      kernel_sizes=tuple(cfg.kernel_sizes), groups=tuple(cfg.groups),
      conv1_stride=cfg.conv1_stride, conv1_padding=cfg.conv1_padding,
      fc_sizes=tuple(cfg.fc_sizes), pool_window=pool_window, pool_stride=pool_stride)
  apply_fn = functools.partial(
      apply, conv1_stride=cfg.conv1_stride, conv1_padding=cfg.conv1_padding, lrn=cfg.lrn,
      dropout=cfg.dropout, pool_window=pool_window, pool_stride=pool_stride,
      conv_impl=core.conv_impl(cfg))
  return core.Model(init_fn, apply_fn)
