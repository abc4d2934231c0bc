"""The slide's procedure as an experiment (research/experiments/lecture.py, run_procedure): its lecture arm
is the trainer `trainer="lecture"` runs, its misclassified arm never restarts, and every arm
sees the same budget of gradient steps."""
import os

import pytest

from configs import exp_lecture_procedure
from research import errors
from research import experiments
from research.experiments import lecture


def _tiny(**experiment):
  config = exp_lecture_procedure.get_config()
  # Checks every 20 steps that E fell by half: the lecture arm stalls and restarts.
  config.lecture.rounds_per_check, config.lecture.min_relative_decrease = 20, 0.5
  config.experiment.update(dict(seeds=2, budgets=(60,), learning_rates=(0.5,)))
  config.experiment.update(experiment)
  return config


@pytest.mark.slow
def test_arms_share_the_budget_and_the_lecture_arm_is_the_lecture_trainer(tmp_path):
  config = _tiny()
  result = experiments.run(config, str(tmp_path / "proc"))
  (entry,) = result["sizes"]
  assert tuple(entry["arms"]) == lecture.PROCEDURE_METHODS
  tests = {m: arm["test"] for m, arm in entry["arms"].items()}
  assert [r["steps"] for r in tests["minibatch"]] == [60, 60]
  assert all(r["steps"] <= 60 and r["restarts"] == 0 for r in tests["misclassified"])
  assert all(r["restarts"] >= 1 for r in tests["lecture"])
  assert all(0.5 < r["accuracy"] <= 1 for rs in tests.values() for r in rs)
  text = (tmp_path / "proc" / "results.md").read_text()
  assert "| 60 | lecture | learning_rate=0.5 |" in text and "restarts" in text

  # The same seed, step size and budget through trainer="lecture": the same test accuracy.
  single = exp_lecture_procedure.get_config()
  single.trainer, single.num_steps = "lecture", 60
  single.lecture.rounds_per_check, single.lecture.min_relative_decrease = 20, 0.5
  del single.experiment
  seed = result["seeds"][1]
  single.seed = seed
  out = lecture.train_lecture(single, str(tmp_path / "single"))
  assert out["test"]["accuracy"] == pytest.approx(tests["lecture"][1]["accuracy"], abs=1e-6)


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(methods=("minibatch", "slide")),
     "experiment.methods[1]='slide' is not supported"),
    (lambda c: c.experiment.update(budgets=(0,)), "experiment.budgets=(0,) must be"),
    (lambda c: c.experiment.update(learning_rates=()), "learning_rates is empty"),
    (lambda c: c.optimizer.update(name="adam"), "takes plain gradient steps"),
    (lambda c: c.lecture.update(max_restarts=-1), "config.lecture.max_restarts=-1"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_lecture_procedure.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value) and "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
