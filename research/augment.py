"""Data augmentation: pure, jittable functions of an explicit key and a batch x_BxHxWxC.

Each function draws independent randomness per example from its key, returns an array of
the input's shape and dtype, and never moves an example to another position in the batch,
so the labels y_B stay valid untouched. The same key gives the same output.

Zero fill is 0 in the units of x: after standardisation that is the training mean.

`make_augment(config.augment)` composes the ops named in the config into
`augment(rng, x_BxHxWxC) -> x_BxHxWxC` for the training step (e.g. with the per-step key
`jax.random.fold_in(rng, step)`).
"""
from typing import Callable

import jax
import jax.numpy as jnp
from research import config_lib
from research import errors

OPS = ("crop", "flip", "translate", "noise")
PAD_MODES = ("constant", "edge", "reflect")


config = config_lib.augment  # config.augment's defaults, JAX-free for config files


def _check_nhwc(x) -> None:
  if x.ndim != 4:
    raise errors.DataError(
        f"augmentation expects images x_BxHxWxC, got shape {x.shape}; set config.augment.ops=() "
        "for non-image data")


def _crop_padded(key, x_BxHxWxC, pad: int, mode: str):
  """Pads H and W by `pad` on each side and takes a random HxW window per example."""
  if pad == 0:
    return x_BxHxWxC
  b, h, w, c = x_BxHxWxC.shape
  padded = jnp.pad(x_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  offsets_Bx2 = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
  window = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(window)(padded, offsets_Bx2)


def random_crop(key: jax.Array, x_BxHxWxC: jax.Array, pad: int,
                mode: str = "constant") -> jax.Array:
  """Random crop with padding (the CIFAR recipe): pad by `pad`, cut back to HxW.

  mode is jnp.pad's: constant (zeros), edge or reflect. pad = 0 is the identity.
  """
  _check_nhwc(x_BxHxWxC)
  errors.check_choice("augment.crop_mode", mode, PAD_MODES)
  return _crop_padded(key, x_BxHxWxC, pad, mode)


def random_flip(key: jax.Array, x_BxHxWxC: jax.Array, prob: float = 0.5) -> jax.Array:
  """Mirrors each image left-right (along W) with probability `prob`."""
  _check_nhwc(x_BxHxWxC)
  flip_B = jax.random.bernoulli(key, prob, (x_BxHxWxC.shape[0],))
  return jnp.where(flip_B[:, None, None, None], x_BxHxWxC[:, :, ::-1, :], x_BxHxWxC)


def random_translate(key: jax.Array, x_BxHxWxC: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each image by integers (dy, dx) in [-max_shift, max_shift], filling with zeros.

  The same as random_crop with constant padding of max_shift: pixel (i, j) moves to
  (i + dy, j + dx) and what leaves the frame is lost.
  """
  _check_nhwc(x_BxHxWxC)
  return _crop_padded(key, x_BxHxWxC, max_shift, "constant")


def gaussian_noise(key: jax.Array, x_BxHxWxC: jax.Array, std: float) -> jax.Array:
  """x + std * N(0, 1), drawn independently for every element (any shape of x)."""
  noise = jax.random.normal(key, x_BxHxWxC.shape, x_BxHxWxC.dtype)
  return x_BxHxWxC + jnp.asarray(std, x_BxHxWxC.dtype) * noise


def _op(name: str, cfg) -> Callable:
  """One configured op as fn(key, x) -> x, its parameters checked now, not at trace time."""
  def non_negative_int(field):
    value = cfg[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise errors.ConfigError(f"config.augment.{field}={value!r} must be an integer >= 0")
    return value

  if name == "crop":
    pad = non_negative_int("crop_pad")
    mode = cfg.crop_mode
    errors.check_choice("augment.crop_mode", mode, PAD_MODES)
    return lambda key, x: random_crop(key, x, pad, mode)
  if name == "flip":
    prob = cfg.flip_prob
    if not 0 <= prob <= 1:
      raise errors.ConfigError(f"config.augment.flip_prob={prob!r} must be in [0, 1]")
    return lambda key, x: random_flip(key, x, prob)
  if name == "translate":
    max_shift = non_negative_int("max_shift")
    return lambda key, x: random_translate(key, x, max_shift)
  assert name == "noise", name  # make_augment checked the name against OPS.
  std = cfg.noise_std
  if not std >= 0:
    raise errors.ConfigError(f"config.augment.noise_std={std!r} must be >= 0")
  return lambda key, x: gaussian_noise(key, x, std)


def make_augment(cfg) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns augment(rng, x_BxHxWxC) -> x applying cfg.ops in order, each with its own key.

  With no ops it is the identity (and consumes no randomness).
  """
  names = tuple(cfg.ops)
  for i, name in enumerate(names):
    errors.check_choice(f"augment.ops[{i}]", name, OPS)
  ops = [_op(name, cfg) for name in names]

  def augment(rng: jax.Array, x_BxHxWxC: jax.Array) -> jax.Array:
    if not ops:
      return x_BxHxWxC
    for key, op in zip(jax.random.split(rng, len(ops)), ops):
      x_BxHxWxC = op(key, x_BxHxWxC)
    return x_BxHxWxC

  return augment
