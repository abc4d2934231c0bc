"""Tuning equal in kind, for every harness section's default config: the experiment each runner
builds (data loaded, nothing trained) passes harness.check, and its config states the budget of
grid extensions (config.experiment.max_extensions) that harness.run_from_config applies."""
import importlib
import inspect
import pathlib

import pytest

from research import errors
from research import experiments
from research.experiments import harness
from scripts import launch_script  # tests/ is on sys.path (tests/scripts.py)

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(spec: str):
  name, _, arg = spec.partition(":")
  module = importlib.import_module(f"configs.{name[:-len('.py')]}")
  return module.get_config(arg) if arg else module.get_config()


# Runners whose experiment is built from per-seed artifacts that take training to make (the
# skip-gram tables, the pre-trained layers): their runner tests build and run them.
TRAINS_TO_BUILD = ("embeddings", "pretraining")
SECTIONS = launch_script("regenerate_experiments").SECTIONS


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_sections_default_grids_are_equal_in_kind(section):
  config = _config(SECTIONS[section])
  module = importlib.import_module(experiments.RUNNERS[config.trainer].split(":")[0])
  if config.trainer in TRAINS_TO_BUILD:
    pytest.skip(f"{config.trainer}'s experiment needs trained per-seed artifacts to build")
  build = getattr(module, "experiment", getattr(module, "procedure_experiment", None))
  params = list(inspect.signature(build).parameters) if build else []
  assert params[:1] == ["config"], f"{section}: no experiment(config, ...) to check"
  getattr(module, "validate", getattr(module, "validate_procedure", None))(config)
  # A runner of several experiments (approximation: one per target) takes its key second.
  args = (config.experiment.targets[0],) if params[1:2] == ["target"] else ()
  exp = harness.with_budget(build(config, *args), config)
  harness.check(exp)
  if any(a.grid for a in exp.arms):  # Something is chosen: a stated budget of extensions.
    assert exp.max_extensions >= 1, f"{section}: config.experiment.max_extensions is not set"
  assert all(len(v) >= 2 for a in exp.arms for v in a.grid.values()), (
      f"{section}: an axis with one candidate chooses nothing")
