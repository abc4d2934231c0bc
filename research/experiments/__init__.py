"""Everything `python -m research.main` can run, chosen by config.trainer.

  standard   research.train.train_and_evaluate: mini-batch training with the optax chain
  lecture    research.experiments.lecture.train_lecture: the slide's misclassified-examples
             procedure with random-perturbation restarts
  regularization, dropout_ensemble, ...   the lecture's experiments (docs/experiments.md)

Each runner takes (config, workdir) and returns a dict of results. A runner's module is
imported only when its trainer runs, so a plain run does not pay for the experiments'
imports (matplotlib, scikit-learn, sacrebleu).
"""
import importlib
from typing import Any, Callable

from research import config_lib
from research import errors

# config.trainer -> "module:function".
RUNNERS: dict[str, str] = {
    "standard": "research.train:train_and_evaluate",
    "lecture": "research.experiments.lecture:train_lecture",
    "adversarial": "research.experiments.adversarial:run",
    "approximation": "research.experiments.approximation:run",
    "batch_size": "research.experiments.batch_size:run",
    "curvature": "research.experiments.curvature:run",
    "dropout_ensemble": "research.experiments.dropout_ensemble:run",
    "embeddings": "research.experiments.embeddings:run",
    "lecture_procedure": "research.experiments.lecture:run_procedure",
    "multitask": "research.experiments.multitask:run",
    "pretraining": "research.experiments.pretraining:run",
    "regularization": "research.experiments.regularization:run",
    "semi_supervised": "research.experiments.semi_supervised:run",
    "sparsity": "research.experiments.sparsity:run",
    "surrogate": "research.experiments.surrogate:run",
    "tangent_prop": "research.experiments.tangent_prop:run",
    "weight_sharing": "research.experiments.weight_sharing:run",
}


def runner(name: str) -> Callable[..., dict[str, Any]]:
  """The function config.trainer=name runs; ConfigError naming the choices for others."""
  errors.check_choice("trainer", name, sorted(RUNNERS))
  module, function = RUNNERS[name].split(":")
  return getattr(importlib.import_module(module), function)


# Fields only train.train_and_evaluate's loop reads, and the trainers that run through it;
# any other trainer refuses a value (other than config_lib.base's) it would silently ignore.
RUN_LOOP_FIELDS = ("compute_dtype", "profile_steps")
RUN_LOOP_TRAINERS = ("standard",)


def run(config, workdir: str) -> dict[str, Any]:
  """Runs config.trainer on config, writing into workdir (each trainer enters
  config.matmul_precision: train_and_evaluate itself, the others through report.runner)."""
  fn = runner(config.trainer)
  if config.trainer not in RUN_LOOP_TRAINERS:
    base = config_lib.base()
    for field in RUN_LOOP_FIELDS:
      default = base[field]
      value = config.get(field, default)
      if (tuple(value) if isinstance(value, (list, tuple)) else value) != default:
        raise errors.ConfigError(
            f"config.{field}={value!r} is read by the standard training loop only, which "
            f"config.trainer={config.trainer!r} does not use; leave it at {default!r}")
  return fn(config, workdir)
