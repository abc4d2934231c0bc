"""The model registry: a name -> builder(model_config, input_shape, num_outputs) -> Model.

Family modules (research/models/<family>.py) register their builders here; research.models
re-exports this module's API and imports every family, so `models.build(config.model, ...)`
finds them all.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from research import config_lib
from research import errors
from research.models import layers


class Model(NamedTuple):
  init: Callable  # key -> params
  apply: Callable  # (params, x, *, train=False, rng=None) -> logits


_BUILDERS: dict[str, Callable] = {}


def register(name: str):
  """Decorator: makes `fn(model_config, input_shape, num_outputs) -> Model` a model name."""
  def wrap(fn):
    _BUILDERS[name] = fn
    return fn
  return wrap


def names() -> list[str]:
  return sorted(_BUILDERS)


COMPUTE_DTYPES = ("float32", "bfloat16")


def build(model_config, input_shape: tuple[int, ...], num_outputs: int, *,
          compute_dtype: str = "float32") -> Model:
  """The registered builder of model_config.name applied to the config; a field the builder
  reads but the config lacks (a family switched by override) is a one-line ConfigError.

  compute_dtype="bfloat16" is mixed precision: params stay float32 (so do the optimizer state
  and the loss); apply casts them and the input to bfloat16, so every matmul and convolution
  runs in bfloat16 (XLA accumulates its products in float32 and rounds the result), and
  returns float32 logits. The gradient flows back through the casts as float32.
  """
  errors.check_choice("model.name", model_config.name, names())
  errors.check_choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)
  try:
    model = _BUILDERS[model_config.name](model_config, tuple(input_shape), num_outputs)
  except (AttributeError, KeyError) as e:
    field = config_lib.missing_field(e, model_config)
    if field is None:
      raise
    raise config_lib.family_switch_error("model", model_config, field) from None
  if compute_dtype == "float32":
    return model
  return Model(model.init, _mixed_precision(model.apply, jnp.dtype(compute_dtype)))


def _mixed_precision(apply: Callable, dtype) -> Callable:
  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

  def apply_mixed(params, x, **kwargs):
    logits = apply(jax.tree.map(cast, params), cast(jnp.asarray(x)), **kwargs)
    return logits.astype(jnp.float32)

  return apply_mixed


def conv_impl(cfg) -> str:
  """config.model.conv_impl resolved: "auto" (the configs' default) is "patches" (im2col and
  one matmul) on a CPU, where XLA runs lax.conv inside the scanned train step 4-5x slower,
  and "xla" (cuDNN, the TPU's convolution units, no kh x kw larger im2col tensors) on GPUs
  and TPUs; "xla" when the config has no such field."""
  impl = cfg.get("conv_impl", "xla")
  errors.check_choice("model.conv_impl", impl, ("auto", *layers.CONV_IMPLS))
  if impl == "auto":
    return "patches" if jax.default_backend() == "cpu" else "xla"
  return impl
