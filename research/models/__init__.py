"""Models chosen by name. Each is a pair of pure functions over a pytree of params:

  init(key) -> params
  apply(params, x_BxI..., *, train=False, rng=None) -> logits_BxK

`build(model_config, input_shape, num_outputs)` returns that pair as a `Model`. The registry
lives in research/models/core.py; importing this package imports every module in it (no list
to keep), so a family registers by being a file here with `@core.register(name)`.
"""
import importlib
import pkgutil

from research.models.core import Model, build, conv_impl, names, register  # noqa: F401
from research.models.core import default_config, family_ranges, resolve  # noqa: F401
from research import config_lib

FAMILIES = tuple(m.name for m in pkgutil.iter_modules(__path__) if m.name != "core")
for _name in FAMILIES:
  importlib.import_module(f"{__name__}.{_name}")
for _name in names():  # check_ranges(config) checks the chosen family's fields too
  config_lib.add_family_ranges("model", _name, family_ranges(_name))
