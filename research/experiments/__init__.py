"""Everything `python -m research.main` can run, chosen by config.trainer.

  standard   research.train.train_and_evaluate: mini-batch training with the optax chain
  lecture    research.lecture_algorithm.train_lecture: the slide's misclassified-examples
             procedure with random-perturbation restarts
  regularization, dropout_ensemble, ...   the lecture's experiments (docs/experiments.md)

Each runner takes (config, workdir) and returns a dict of results. Runners register with
`@experiments.register(name)`; the modules that define them are imported at the bottom.
"""
from typing import Any, Callable

from research import errors
from research import train

RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {"standard": train.train_and_evaluate}


def register(name: str):
  """Decorator: makes `fn(config, workdir) -> dict` runnable as config.trainer=name."""
  def wrap(fn):
    RUNNERS[name] = fn
    return fn
  return wrap


def run(config, workdir: str) -> dict[str, Any]:
  """Runs config.trainer on config, writing into workdir."""
  errors.check_choice("trainer", config.trainer, sorted(RUNNERS))
  return RUNNERS[config.trainer](config, workdir)


# The runners beyond standard training.
from research import lecture_algorithm  # noqa: E402

register("lecture")(lecture_algorithm.train_lecture)

# The lecture's experiments register themselves on import.
from research.experiments import approximation  # noqa: E402,F401
from research.experiments import batch_size  # noqa: E402,F401
from research.experiments import curvature  # noqa: E402,F401
from research.experiments import dropout_ensemble  # noqa: E402,F401
from research.experiments import regularization  # noqa: E402,F401
from research.experiments import surrogate  # noqa: E402,F401
