"""The model registry: a name -> builder(model_config, input_shape, num_outputs) -> Model.

Family modules (research/models/<family>.py) register their builders here; research.models
re-exports this module's API and imports every family, so `models.build(config.model, ...)`
finds them all.
"""
from typing import Callable, NamedTuple

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


def build(model_config, input_shape: tuple[int, ...], num_outputs: int) -> Model:
  """The registered builder of model_config.name applied to the config; a field the builder
  reads but the config lacks (a family switched by override) is a one-line ConfigError."""
  errors.check_choice("model.name", model_config.name, names())
  try:
    return _BUILDERS[model_config.name](model_config, tuple(input_shape), num_outputs)
  except (AttributeError, KeyError) as e:
    field = config_lib.missing_field(e, model_config)
    if field is None:
      raise
    raise config_lib.family_switch_error("model", model_config, field) from None


def conv_impl(cfg) -> str:
  """config.model.conv_impl ("xla" when the config has no such field), checked."""
  impl = cfg.get("conv_impl", "xla")
  errors.check_choice("model.conv_impl", impl, layers.CONV_IMPLS)
  return impl
