"""Models chosen by name. Each is a pair of pure functions over a pytree of params:

  init(key) -> params
  apply(params, x_BxI..., *, train=False, rng=None) -> logits_BxK

`build(model_config, input_shape, num_outputs)` returns that pair as a `Model`.
"""
import functools
import math
from typing import Callable, NamedTuple

from research import errors
from research.models import mlp


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
  errors.check_choice("model.name", model_config.name, names())
  return _BUILDERS[model_config.name](model_config, tuple(input_shape), num_outputs)


def conv_impl(cfg) -> str:
  """config.model.conv_impl ("xla" when the config has no such field), checked."""
  from research.models import layers  # pylint: disable=g-import-not-at-top
  impl = cfg.get("conv_impl", "xla")
  errors.check_choice("model.conv_impl", impl, layers.CONV_IMPLS)
  return impl


@register("mlp")
def _build_mlp(cfg, input_shape, num_outputs) -> Model:
  errors.check_choice("model.activation", cfg.activation, sorted(mlp.ACTIVATIONS))
  hidden = tuple(cfg.hidden_sizes)
  if any(not isinstance(h, int) or h <= 0 for h in hidden):
    raise errors.ConfigError(
        f"config.model.hidden_sizes={hidden!r} must be positive integers, e.g. (64,) or (128, 64)")
  rate = cfg.get("dropout", 0.0)
  if not 0 <= rate < 1:
    raise errors.ConfigError(f"config.model.dropout={rate!r} must be in [0, 1)")
  sizes = (math.prod(input_shape), *hidden, num_outputs)

  def apply(params, x, *, train=False, rng=None):
    return mlp.apply(params, x, cfg.activation, dropout=rate, train=train, rng=rng)

  return Model(functools.partial(mlp.init, sizes=sizes), apply)


# Model families register themselves on import.
from research.models import alexnet  # noqa: E402,F401
from research.models import attention  # noqa: E402,F401
from research.models import cnn1d  # noqa: E402,F401
from research.models import inception  # noqa: E402,F401
from research.models import lenet  # noqa: E402,F401
from research.models import lstm  # noqa: E402,F401
