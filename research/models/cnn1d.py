"""A 1-D convolutional network for sequences, the MNIST-1D paper's CNN baseline (Greydanus, 2020).

  x_NxT (or x_NxTxC) -> [conv k_l, stride s_l, C_l channels -> ReLU] x L -> flatten -> dense -> K

The paper's CNN has three convolutions of 25 channels (kernels 5, 3, 3, stride 2 each) and a
dense layer on the flattened 25 x 5 features: 40 -> 20 -> 10 -> 5 steps with "SAME" padding,
5,210 parameters for K = 10. A 1-D conv is the library's 2-D conv on x_NxTx1xC with k x 1
kernels, sum^l_{to} = sum_{ic} x_{t*s+i, c} w^l_{ico} + b^l_o (cross-correlation, no flip), so
it shares layers.conv2d, its initialisers and its "w" naming (decayed by the l2 penalty).
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

param_count = layers.param_count


def output_lengths(length: int, kernel_sizes: Sequence[int], strides: Sequence[int],
                   padding: str) -> list[int]:
  """T_l after each conv: ceil(T / s) for "SAME", floor((T - k) / s) + 1 for "VALID"."""
  out = []
  for k, s in zip(kernel_sizes, strides):
    length = -(-length // s) if padding == "SAME" else (length - k) // s + 1
    out.append(length)
  return out


def init(key: jax.Array, length: int, in_ch: int, num_outputs: int, channels: Sequence[int],
         kernel_sizes: Sequence[int], strides: Sequence[int], padding: str = "SAME",
         dtype=jnp.float32) -> dict:
  """{"conv": [{"w": w_kx1xIxO, "b": b_O} per layer], "out": {"w": w_(T_L*C_L)xK, "b": b_K}}.

  Convs use He normal N(0, 2/fan_in) with fan_in = k * I (ReLU follows them); the output layer
  LeCun normal N(0, 1/fan_in).
  """
  keys = jax.random.split(key, len(channels) + 1)
  ins = (in_ch, *channels[:-1])
  conv = [layers.init_conv2d(k, i, o, (ks, 1), init="he", dtype=dtype)
          for k, i, o, ks in zip(keys[:-1], ins, channels, kernel_sizes)]
  t_last = output_lengths(length, kernel_sizes, strides, padding)[-1]
  out = layers.init_dense(keys[-1], t_last * channels[-1], num_outputs, dtype=dtype)
  return {"conv": conv, "out": out}


def apply(params: dict, x: jax.Array, strides: Sequence[int], padding: str = "SAME",
          conv_impl: str = "xla") -> jax.Array:
  """x_NxT or x_NxTxC -> logits_NxK; conv_impl as in layers.conv2d."""
  h = x[..., None] if x.ndim == 2 else x               # N x T x C
  h = h[:, :, None, :]                                 # N x T x 1 x C: a 1-pixel-wide image
  for layer, s in zip(params["conv"], strides):
    h = jax.nn.relu(layers.conv2d(layer, h, stride=(s, 1), padding=padding,
                                      impl=conv_impl))
  return layers.dense(params["out"], layers.flatten(h))  # flatten: t-major, then channel


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.cnn1d
RANGES = model_configs.RANGES["cnn1d"]


@core.register("cnn1d")
def _build(cfg, input_shape, num_outputs) -> core.Model:
  """(T,) or (T, C) sequences -> cnn1d logits; config.model fields: channels, kernel_sizes,
  strides (one per conv layer) and padding ("SAME" | "VALID")."""
  if len(input_shape) not in (1, 2):
    raise errors.ConfigError(
        f"config.model.name='cnn1d' reads (T,) or (T, C) sequences, but the data has examples "
        f"of shape {tuple(input_shape)}; for MNIST-1D set config.data.shape='sequence' or 'flat'")
  length, in_ch = input_shape[0], (input_shape[1] if len(input_shape) == 2 else 1)
  channels = errors.check_ints("model.channels", cfg.channels, ", e.g. (25, 25, 25)")
  kernel_sizes = errors.check_ints("model.kernel_sizes", cfg.kernel_sizes, ", e.g. (5, 3, 3)")
  strides = errors.check_ints("model.strides", cfg.strides, ", e.g. (2, 2, 2)")
  if not len(channels) == len(kernel_sizes) == len(strides):
    raise errors.ConfigError(
        f"config.model.channels, kernel_sizes and strides need one entry per conv layer, got "
        f"lengths {len(channels)}, {len(kernel_sizes)} and {len(strides)}")
  errors.check_choice("model.padding", cfg.padding, PADDINGS)
  conv_impl = core.conv_impl(cfg)
  lengths = output_lengths(length, kernel_sizes, strides, cfg.padding)
  if min(lengths) < 1:
    raise errors.ConfigError(
        f"config.model.padding='VALID' shrinks the {length}-step input to lengths {lengths}; "
        f"use padding='SAME', smaller kernel_sizes or fewer layers")

  def apply_fn(params, x, *, train=False, rng=None):
    del train, rng  # No dropout: the paper's CNN is deterministic.
    return apply(params, x, strides, cfg.padding, conv_impl)

  return core.Model(
      functools.partial(init, length=length, in_ch=in_ch, num_outputs=num_outputs,
                        channels=channels, kernel_sizes=kernel_sizes, strides=strides,
                        padding=cfg.padding),
      apply_fn)
