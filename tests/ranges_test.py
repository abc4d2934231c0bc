"""One place for every range: a numeric field's range is declared once (config_lib.RANGES, or
an experiment runner's RANGES for its config.experiment group) and nothing re-checks it."""
import ast
import pathlib

import pytest

from research import config_lib
from research import errors

REPO = pathlib.Path(__file__).resolve().parents[1]


def _field_name(node) -> str | None:
  """`cfg.momentum` -> "momentum", `config.loss["l2"]` -> "l2"; else None."""
  if isinstance(node, ast.Attribute):
    return node.attr
  if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
    return str(node.slice.value)
  return None


def _raises_config_error(body) -> bool:
  for node in ast.walk(ast.Module(body=body, type_ignores=[])):
    if isinstance(node, ast.Raise) and "ConfigError" in ast.unparse(node):
      return True
  return False


def _range_checks(path: pathlib.Path, fields: set[str]) -> list[str]:
  """`if <field> <op> <number>: raise ...ConfigError` in path, for the declared fields."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if not isinstance(node, ast.If) or not _raises_config_error(node.body):
      continue
    for test in ast.walk(node.test):
      if not isinstance(test, ast.Compare):
        continue
      if all(isinstance(op, (ast.Eq, ast.NotEq)) for op in test.ops):
        continue  # A required value, not a range.
      operands = [test.left, *test.comparators]
      if not any(isinstance(o, ast.Constant) and isinstance(o.value, (int, float))
                 for o in operands):
        continue
      fields_here = [o for o in operands if _field_name(o) in fields
                     and not ast.unparse(o).startswith(("exp.", "config.experiment."))]
      others = [o for o in operands if not isinstance(o, ast.Constant) and o not in fields_here]
      if others:  # A relation between fields (e.g. start <= stop <= num_steps), not a range.
        continue
      names = {_field_name(o) for o in fields_here}
      if names:
        found.append(f"{path.relative_to(REPO)}:{node.lineno} re-checks {sorted(names)}")
  return found


def test_no_declared_field_is_range_checked_outside_its_declaration():
  fields = {p.rsplit(".", 1)[-1] for p in config_lib.RANGES}
  offenders = []
  for path in sorted((REPO / "research").rglob("*.py")):
    if path.name != "config_lib.py":
      offenders += _range_checks(path, fields)
  assert not offenders, "\n".join(offenders)


def _configs():
  """(name, config) for every configs/*.py and each variant its get_config names."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  for path in sorted((REPO / "configs").glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"_cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variants = [None]
    if inspect.signature(module.get_config).parameters:
      variants += sorted(set(re.findall(r"""arg == ["'](\w+)["']""", path.read_text())))
    for v in variants:
      yield f"{path.name}" + (f":{v}" if v else ""), (
          module.get_config(v) if v else module.get_config())


def _numeric_leaves(node, prefix=""):
  for key in node.keys():
    value, path = node[key], f"{prefix}{key}"
    if hasattr(value, "keys"):
      yield from _numeric_leaves(value, path + ".")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield path


def test_every_numeric_config_field_has_a_declared_range():
  from research import experiments  # pylint: disable=g-import-not-at-top
  from research import models  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  missing = []
  for name, config in _configs():
    declared = set(config_lib.RANGES)
    model = config.get("model")
    if model is not None and model.get("name") in models.names():
      declared |= {f"model.{f}" for f in models.family_ranges(model.name)}
    trainer = config.get("trainer", "standard")
    module = importlib.import_module(experiments.RUNNERS[trainer].split(":")[0])
    declared |= {f"experiment.{f}" for f in getattr(module, "RANGES", {})}
    # A nested group declared by reference: {field: a config_lib.RANGES group}.
    for field, group in getattr(module, "NESTED", {}).items():
      declared |= {f"experiment.{field}.{f}" for f in config_lib.group_ranges(group)}
    declared |= {f"lecture.{f}" for f in getattr(module, "LECTURE_RANGES", {})}
    missing += [f"{name}: config.{p}" for p in _numeric_leaves(config) if p not in declared]
  assert not missing, "numeric fields without a declared range:\n" + "\n".join(missing)


def _load(name: str):
  return dict(_configs())[name]


@pytest.mark.parametrize("name,path,value,message", [
    ("lstm_mnist1d.py", "model.hidden_size", 0,
     "config.model.hidden_size=0 must be an integer >= 1"),
    ("transformer_mnist1d.py", "model.patch_size", 0,
     "config.model.patch_size=0 must be an integer >= 1"),
    ("alexnet_small.py", "model.pool_window", 0,
     "config.model.pool_window=0 must be an integer >= 1"),
    ("lenet_digits.py", "data.image_size", -1,
     "config.data.image_size=-1 must be an integer >= 0"),
])
def test_a_family_field_out_of_range_is_one_line_naming_its_range(name, path, value, message):
  from research import train  # pylint: disable=g-import-not-at-top
  config = _load(name)
  group, field = path.split(".")
  config[group][field] = value
  with pytest.raises(errors.ConfigError) as e:
    train.validate(config)
  assert str(e.value) == message


@pytest.mark.parametrize("name,path,value,message", [
    ("exp_pretraining.py", "pretrain_optimizer.learning_rate", -1.0,
     "config.experiment.pretrain_optimizer.learning_rate=-1.0 must be a positive number"),
    ("exp_surrogate.py", "num_prompts", 0,
     "config.experiment.num_prompts=0 must be an integer >= 1"),
    ("exp_curvature.py", "kappa", 0.0, "config.experiment.kappa=0.0 must be a positive number"),
    ("lecture_algorithm.py", "min_relative_decrease", 1.5,
     "config.lecture.min_relative_decrease=1.5 must be a finite number in [0, 1]"),
])
def test_a_runner_field_out_of_range_is_one_line_naming_its_range(name, path, value, message):
  import importlib  # pylint: disable=g-import-not-at-top
  from research import experiments  # pylint: disable=g-import-not-at-top
  config = _load(name)
  node = config.lecture if name == "lecture_algorithm.py" else config.experiment
  *groups, field = path.split(".")
  for g in groups:
    node = node[g]
  node[field] = value
  module = importlib.import_module(experiments.RUNNERS[config.trainer].split(":")[0])
  with pytest.raises(errors.ConfigError) as e:
    module.validate(config)
  assert str(e.value) == message
