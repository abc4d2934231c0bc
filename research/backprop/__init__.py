"""Hand-written backward passes, one module per model family (mirroring research/models/), in
the lecture's symbols; each returns the pytree jax.grad would, so research/gradcheck can
hold it against autodiff and finite differences.

  core: the registry by model name (register_manual, register_problem) and gradcheck's Problem.
  layers: the backward primitives every family shares (dense, conv, pools, LRN, layer norm,
      embeddings, dropout, the output delta, the penalties, E from the logits).
  <family>: that family's pass and gradient check, registered next to them.

Importing this package imports every module in it (no list to keep), so both registries are
full: a new file here registers by being here.
"""
import importlib
import pkgutil

from research.backprop.core import (  # noqa: F401
    Problem, make_manual_value_and_grad, manual_builder, manual_names, problem_builder,
    problem_names)

FAMILIES = tuple(m.name for m in pkgutil.iter_modules(__path__) if m.name != "core")
for _name in FAMILIES:
  importlib.import_module(f"{__name__}.{_name}")
