"""Parameter tying and sharing: a small image network whose layers are either convolutions
(one kernel shared by every receptive field) or locally connected (one kernel per field).

  x_NxHxWxC -> [layer k_l x k_l, stride s_l, C_l channels -> ReLU] x L -> flatten -> dense -> K

Both kinds compute sum_{hwo} = sum_{ijc} x_{s h + i, s w + j, c} w_{.., ijco} + b_{.., o} over
the same receptive fields (same kernel sizes, strides, padding and channels); they differ
only in the index of w: a conv's w_{ijco} is tied across output positions (h, w), a locally
connected layer's w_{hw,ijc,o} is not (and neither is its bias b_{hwo}). So the local model
has H' W' times the conv's parameters in every layer, and can fit anything the conv can:
sharing is a constraint, i.e. a prior that a feature detector is useful everywhere.

config.model: name="local_cnn", shared (True: conv, False: locally connected), channels,
kernel_sizes, strides (one entry per layer), padding ("SAME" | "VALID"), conv_impl (shared
layers only, as in layers.conv2d).
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers

PADDINGS = ("SAME", "VALID")


def layer_shapes(in_hw: tuple[int, int], kernel_sizes: Sequence[int], strides: Sequence[int],
                 padding: str) -> list[tuple[int, int]]:
  """(H_l, W_l) at the input of every layer and after the last one (L + 1 entries)."""
  shapes = [tuple(in_hw)]
  for k, s in zip(kernel_sizes, strides):
    shapes.append(layers.conv_output_hw(shapes[-1], k, s, padding))
  return shapes


def init(key: jax.Array, in_hw: tuple[int, int], in_ch: int, num_outputs: int, shared: bool,
         channels: Sequence[int], kernel_sizes: Sequence[int], strides: Sequence[int],
         padding: str = "SAME", dtype=jnp.float32) -> dict:
  """{"layers": [{"w", "b"} per layer], "out": {"w": w_(H_L*W_L*C_L)xK, "b": b_K}}.

  Shared: w_kxkxIxO, b_O (layers.init_conv2d); unshared: w_H'xW'x(k*k*I)xO, b_H'xW'xO
  (layers.init_locally_connected2d). He normal with fan_in = k * k * I for both, so the two
  models start with the same distribution of sums; the output layer is LeCun normal.
  """
  keys = jax.random.split(key, len(channels) + 1)
  shapes = layer_shapes(in_hw, kernel_sizes, strides, padding)
  ins = (in_ch, *channels[:-1])
  params = []
  for kk, hw, i, o, k, s in zip(keys[:-1], shapes, ins, channels, kernel_sizes, strides):
    if shared:
      params.append(layers.init_conv2d(kk, i, o, k, init="he", dtype=dtype))
    else:
      params.append(layers.init_locally_connected2d(kk, hw, i, o, k, s, padding, init="he",
                                                    dtype=dtype))
  h, w = shapes[-1]
  out = layers.init_dense(keys[-1], h * w * channels[-1], num_outputs, dtype=dtype)
  return {"layers": params, "out": out}


def hidden(params: dict, x_NHWC: jax.Array, shared: bool, strides: Sequence[int],
           padding: str = "SAME", conv_impl: str = "patches") -> list[jax.Array]:
  """Every layer's ReLU output sigma^l_NxH_lxW_lxC_l, l = 1..L."""
  sigmas, h = [], x_NHWC
  for layer, s in zip(params["layers"], strides):
    if shared:
      h = layers.conv2d(layer, h, s, padding, conv_impl)
    else:
      h = layers.locally_connected2d(layer, h, s, padding)
    h = jax.nn.relu(h)
    sigmas.append(h)
  return sigmas


def apply(params: dict, x_NHWC: jax.Array, shared: bool, strides: Sequence[int],
          padding: str = "SAME", conv_impl: str = "patches") -> jax.Array:
  """x_NHWC -> logits_NxK."""
  top = hidden(params, x_NHWC, shared, strides, padding, conv_impl)[-1]
  return layers.dense(params["out"], layers.flatten(top))


def check(cfg, input_shape) -> dict:
  """The checked geometry of config.model for images of input_shape (H, W, C)."""
  if len(input_shape) != 3:
    raise errors.ConfigError(
        f"config.model.name='local_cnn' reads images HxWxC, but the data has examples of shape "
        f"{tuple(input_shape)}; for digits set config.data.image_size=8")
  if not isinstance(cfg.shared, bool):
    raise errors.ConfigError(f"config.model.shared={cfg.shared!r} must be True (convolution) "
                             "or False (locally connected)")
  geometry = {"channels": errors.check_ints("model.channels", cfg.channels, ", e.g. (16, 32)"),
              "kernel_sizes": errors.check_ints("model.kernel_sizes", cfg.kernel_sizes,
                                                ", e.g. (3, 3)"),
              "strides": errors.check_ints("model.strides", cfg.strides, ", e.g. (1, 2)")}
  if len({len(v) for v in geometry.values()}) != 1:
    raise errors.ConfigError(
        "config.model.channels, kernel_sizes and strides need one entry per layer, got lengths "
        + ", ".join(str(len(v)) for v in geometry.values()))
  errors.check_choice("model.padding", cfg.padding, PADDINGS)
  shapes = layer_shapes(input_shape[:2], geometry["kernel_sizes"], geometry["strides"],
                        cfg.padding)
  if min(min(hw) for hw in shapes) < 1:
    raise errors.ConfigError(
        f"config.model.padding='VALID' shrinks the {input_shape[0]}x{input_shape[1]} input to "
        f"{shapes}; use padding='SAME', smaller kernel_sizes or fewer layers")
  return geometry


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.local_cnn
RANGES = model_configs.RANGES["local_cnn"]


@core.register("local_cnn")
def _build(cfg, input_shape, num_outputs) -> core.Model:
  g = check(cfg, input_shape)
  conv_impl = core.conv_impl(cfg)

  def apply_fn(params, x, *, train=False, rng=None):
    del train, rng  # Deterministic: no dropout.
    return apply(params, x, cfg.shared, g["strides"], cfg.padding, conv_impl)

  return core.Model(
      functools.partial(init, in_hw=tuple(input_shape[:2]), in_ch=input_shape[2],
                        num_outputs=num_outputs, shared=cfg.shared, padding=cfg.padding, **g),
      apply_fn)
