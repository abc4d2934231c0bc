"""Parameter tying and sharing (research/experiments/weight_sharing.py): the runner under the
experiment harness, its parameter counts and its one-line config errors."""
import json
import os

import pytest

from configs import exp_weight_sharing
from research import errors
from research import experiments


def _tiny_config(steps=60, **experiment):
  config = exp_weight_sharing.get_config()
  config.model.channels = (4, 8)
  config.num_steps, config.eval_every, config.log_every = steps, steps // 2, steps // 2
  config.experiment.update(dict(seeds=2, labels_per_class=(4,), learning_rates=(1e-3,)))
  config.experiment.update(experiment)
  return config


def test_both_kinds_tune_the_same_grid_over_enough_seeds():
  exp = exp_weight_sharing.get_config().experiment
  assert exp.seeds >= 5 and len(exp.learning_rates) >= 2
  mnist = exp_weight_sharing.get_config("mnist_subset")
  assert mnist.data.name == "mnist_subset" and tuple(mnist.model.strides) == (2, 2)
  with pytest.raises(ValueError, match="choose digits"):
    exp_weight_sharing.get_config("cifar")


@pytest.mark.slow
def test_runner_counts_parameters_and_writes_its_table(tmp_path):
  workdir = str(tmp_path / "ws")
  result = experiments.run(_tiny_config(), workdir)
  (entry,) = result["sizes"]
  arms = entry["arms"]
  # 3x3x1 -> 4 at 8x8 positions, 3x3x4 -> 8 at 4x4; the same dense layer on 4x4x8.
  dense = 4 * 4 * 8 * 10 + 10
  assert arms["conv"]["test"][0]["params"] == 40 + 296 + dense
  assert arms["local"]["test"][0]["params"] == 64 * 40 + 16 * 296 + dense
  for arm in arms.values():
    for r in arm["test"]:
      assert r["gap"] == pytest.approx(r["train_accuracy"] - r["accuracy"])
  assert arms["local"]["stats"]["accuracy"]["vs_baseline"]["n"] == 2
  for name in ("results.md", "results.json", "metrics.jsonl", "weight_sharing.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert {json.loads(line)["split"] for line in f} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "| 4 | local | learning_rate=0.001 |" in text and "local 8,586 parameters" in text


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.model.update(name="mlp"), "compares the two kinds"),
    (lambda c: c.experiment.update(seeds=1), "config.experiment.seeds=1"),
    (lambda c: c.experiment.update(labels_per_class=(10, 0)), "labels_per_class=(10, 0)"),
    (lambda c: c.experiment.update(labels_per_class=(500,)),
     "500 labels per class cannot be drawn"),
    (lambda c: c.experiment.update(learning_rates=(1e-3, -1.0)),
     "learning_rates[]=-1.0 must be a positive number"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_weight_sharing.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
