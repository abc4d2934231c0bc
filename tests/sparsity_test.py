"""Sparse representations (research/experiments/sparsity.py): the activation penalty's manual
gradient against autodiff, the runner under the experiment harness and its one-line config
errors."""
import json
import os

import jax
import numpy as np
import pytest

from configs import exp_sparse_representations
from research import config_lib
from research import data as data_lib
from research import errors
from research import experiments
from research import models
from research import optim
from research.experiments import harness
from research.experiments import sparsity


def _tiny_config(steps=300, **experiment):
  config = exp_sparse_representations.get_config()
  config.model.hidden_sizes = (64,)
  config.num_steps, config.eval_every, config.log_every = steps, steps // 2, steps // 2
  config.experiment.update(dict(seeds=2, activation_l1=(0.03,), weight_l1=(3.0,),
                                learning_rates=(1e-3,)))
  config.experiment.update(experiment)
  return config


def test_manual_and_autodiff_training_with_the_activation_penalty_agree():
  digits = data_lib.load(config_lib.sklearn_data("digits", image_size=8))
  config = _tiny_config(10)
  config.model.hidden_sizes = (16,)
  subset = data_lib.Split(digits.train.x[:64].reshape(64, -1), digits.train.y[:64])
  model = models.build(config.model, (64,), 10)
  optimizer = optim.make_optimizer(config.optimizer, 10)
  params = {}
  for grad in ("autodiff", "manual"):
    config.grad = grad
    variant = sparsity.make_variant(grad, config, model, 10, 64, lam_act=0.03)
    assert (variant.value_and_grad is None) == (grad == "autodiff")
    (params[grad],) = harness.train_seeds(model, variant.loss_fn, optimizer, 10,
                                          config.batch_size, [subset], [0], mode="loop",
                                          value_and_grad=variant.value_and_grad)
  for a, m in zip(jax.tree.leaves(params["autodiff"]), jax.tree.leaves(params["manual"])):
    np.testing.assert_allclose(m, a, rtol=1e-4, atol=1e-5)


def test_the_arms_are_none_then_every_strength_of_each_penalty():
  exp = exp_sparse_representations.get_config().experiment
  names = sparsity.arm_names(exp)
  assert names[0] == ("none", "none", 0.0)
  assert [s for _, p, s in names if p == "activations"] == list(exp.activation_l1)
  assert [s for _, p, s in names if p == "weights"] == list(exp.weight_l1)
  assert exp.seeds >= 5


@pytest.mark.slow
def test_l1_on_activations_sparsifies_the_units_and_l1_on_weights_the_weights(tmp_path):
  workdir = str(tmp_path / "sparse")
  result = experiments.run(_tiny_config(), workdir)
  (entry,) = result["sizes"]
  st = {m: arm["stats"] for m, arm in entry["arms"].items()}
  none, act, w = st["none"], st["activations 0.03"], st["weights 3"]
  assert act["hidden_exact_zero"]["mean"] > none["hidden_exact_zero"]["mean"] + 0.2
  assert w["weights_near_zero"]["mean"] > none["weights_near_zero"]["mean"] + 0.2
  assert act["weights_near_zero"]["mean"] < w["weights_near_zero"]["mean"]
  assert act["accuracy"]["vs_baseline"]["n"] == 2
  for name in ("results.md", "results.json", "metrics.jsonl", "sparsity.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert {json.loads(line)["split"] for line in f} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "| 719 | activations 0.03 | learning_rate=0.001 |" in text and "| weights 3 |" in text
  assert "no subset to draw" in text
  # Every accuracy difference has its test-inclusive interval (per-example correctness).
  record = entry["arms"]["weights 3"]["test"][0]
  assert len(record["per_example"]["accuracy"]) == 898
  rows = [line for line in text.splitlines() if line.startswith("| 719 |")]
  assert rows and not any("| n/a |" in line for line in rows)
  # The section's choice is made on validation, as a block of its own.
  with open(os.path.join(workdir, "results.json")) as f:
    chosen = json.load(f)["chosen_on_valid"]
  assert set(chosen["sizes"][0]["arms"]) == {"none", "activations", "weights"}
  assert "Each penalty at the strength chosen on validation" in text


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(activation_l1=(0.01, -1.0)),
     "activation_l1=(0.01, -1.0) must be positive"),
    (lambda c: c.model.update(dropout=0.5), "dropout=0"),
    (lambda c: c.experiment.update(weight_l1=()), "weight_l1=() must be positive numbers"),
    (lambda c: c.loss.update(l1=0.1), "config.loss.l1=0.1 must be 0"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_sparse_representations.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
