"""The model registry: a name -> builder(model_config, input_shape, num_outputs) -> Model.

A family module (research/models/<family>.py) registers its builders with @register(name)
and exports, beside them, `config(name, **overrides)`: the default config.model group of each
of its names, and `RANGES`: its numeric fields' ranges ({field: config_lib.Range}), which
build checks. research.models imports every module of the package, so nothing else lists them.
"""
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from research import config_lib
from research import errors
from research import model_configs
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


def _family(name: str):
  """The module that registered model `name`."""
  return sys.modules[_BUILDERS[name].__module__]


def check_name(name) -> None:
  """ConfigError for an unregistered name, naming the choices and how a family registers."""
  if name not in _BUILDERS:
    raise errors.ConfigError(
        f"config.model.name={name!r} is not a registered model; choose one of: "
        + ", ".join(repr(n) for n in names())
        + " (a new family registers with @core.register(name) in research/models/<family>.py)")


def default_config(name: str) -> ml_collections.ConfigDict:
  """The default config.model group of model `name`: its family's config(name)."""
  check_name(name)
  return _family(name).config(name)


def family_ranges(name: str) -> dict:
  """{field: config_lib.Range} of model `name`'s numeric fields (its family's RANGES)."""
  check_name(name)
  return dict(getattr(_family(name), "RANGES", {}))


resolve = model_configs.resolve  # JAX-free, for research.main


COMPUTE_DTYPES = config_lib.CHOICES["compute_dtype"]


def build(model_config, input_shape: tuple[int, ...], num_outputs: int, *,
          compute_dtype: str = "float32") -> Model:
  """The registered builder of model_config.name applied to the config (resolve()d: a family
  switched by override gets its defaults), its fields checked against the family's RANGES.

  compute_dtype="bfloat16" is mixed precision: params stay float32 (so do the optimizer state
  and the loss); apply casts them and the input to bfloat16, so every matmul and convolution
  runs in bfloat16 (XLA accumulates its products in float32 and rounds the result), and
  returns float32 logits. The gradient flows back through the casts as float32.
  """
  check_name(model_config.name)
  errors.check_choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)
  model_config = resolve(model_config)
  config_lib.check_ranges(model_config, family_ranges(model_config.name), prefix="config.model")
  model = _BUILDERS[model_config.name](model_config, tuple(input_shape), num_outputs)
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
