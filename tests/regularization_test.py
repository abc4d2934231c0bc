"""The regularization runner under the experiment harness (research/experiments/
regularization.py): each method's one regularizer, early stopping, bagging's members and
ensemble, the runner end to end and its one-line config errors."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs import exp_regularization
from research import data as data_lib
from research import errors
from research import experiments
from research import kernel
from research import losses
from research import models
from research import optim
from research.experiments import harness
from research.experiments import regularization

SEEDS = [0, 1]


def _tiny_config(**experiment) -> ml_collections.ConfigDict:
  """The experiment's config, shrunk: 6 labels per class, 32 hidden units, 120 steps."""
  config = exp_regularization.get_config()
  config.model.hidden_sizes = (32,)
  config.num_steps, config.eval_every, config.log_every, config.batch_size = 120, 40, 40, 20
  config.optimizer.learning_rate = 1e-2
  config.experiment.update(dict(
      seeds=2, labels_per_class=(6,), learning_rates=(1e-2,), l2_strengths=(5.0,),
      l1_strengths=(0.03,), dropout_rates=(0.5,), patiences=(3,), noise_stds=(0.3,),
      bagging_members=(4,)))
  config.experiment.update(experiment)
  return config


@pytest.fixture(scope="module")
def setup():
  """The tiny config, its harness Experiment, and each seed's stratified subset."""
  config = _tiny_config()
  exp = regularization.experiment(config)
  subsets = [exp.draw(6, s) for s in SEEDS]
  dataset = data_lib.load(config.data)
  return config, exp, subsets, dataset


def _model(config, dataset):
  return models.build(config.model, dataset.input_shape, 10)


def test_every_method_tunes_the_step_size_and_its_one_knob_equally_in_kind():
  config = exp_regularization.get_config()
  exp = config.experiment
  experiment = regularization.experiment(config)
  harness.check(experiment)  # The same step sizes; as many candidates for every knob.
  assert {a.name: tuple(a.grid) for a in experiment.arms} == {
      m: ("learning_rate",) + ((regularization.KNOBS[m][0],) if m != "none" else ())
      for m in regularization.METHODS}
  assert exp.max_extensions >= 1
  assert exp.seeds >= 5 and experiment.baseline == "none"


def test_l2_shrinks_the_weight_norm_and_l1_too(setup):
  _, exp, subsets, _ = setup
  norm = {}
  lr = {"learning_rate": 1e-2}
  for method, setting in (("none", lr), ("l2", {**lr, "lambda": 5.0}),
                          ("l1", {**lr, "lambda_1": 0.03})):
    params = exp.fit(method, setting, 6, SEEDS, subsets)
    norm[method] = [exp.measure(method, setting, 6, s, p, "test")["weight_norm_sq"]
                    for s, p in zip(SEEDS, params)]
  assert all(a < 0.7 * b for a, b in zip(norm["l2"], norm["none"])), norm
  assert all(a < b for a, b in zip(norm["l1"], norm["none"])), norm


def test_early_stopping_keeps_the_best_validation_params(setup):
  config, _, _, dataset = setup
  # 30 examples, a fast optimizer and many evals: the validation loss turns up early.
  model = _model(config, dataset)
  tiny = harness.stratified_subset(dataset.train, 3, 0, 10)
  optimizer = optim.make_optimizer(config.optimizer, 600)
  loss_fn = losses.make_loss_fn(model, "softmax", 0.0, 30, 10)
  eval_fn = kernel.make_eval_fn(model, "softmax", 10)
  (out,) = regularization.fit_early_stopping(model, loss_fn, optimizer, 600, 10, 10, 3,
                                             [tiny], [0], dataset.valid, eval_fn, 1024)
  steps, valid_losses = zip(*out["valid_losses"])
  best = int(np.argmin(valid_losses))
  assert out["stop_step"] < 600  # It stopped...
  assert out["stop_step"] == steps[best] + 3 * 10  # ...patience evals later...
  assert out["best_step"] == steps[best]  # ...and kept the best eval's params.
  kept = kernel.evaluate(eval_fn, out["params"], dataset.valid, 1024)["loss"]
  assert kept == pytest.approx(valid_losses[best], rel=1e-6)
  assert kept < valid_losses[-1]


def test_early_stopping_keeps_what_the_harness_trains_in_as_many_steps(setup):
  config, _, subsets, dataset = setup
  model = _model(config, dataset)
  optimizer = optim.make_optimizer(config.optimizer, 200)  # A constant step size.
  loss_fn = losses.make_loss_fn(model, "softmax", 0.0, 60, 10)
  eval_fn = kernel.make_eval_fn(model, "softmax", 10)
  (out,) = regularization.fit_early_stopping(model, loss_fn, optimizer, 200, 20, 40, 100,
                                             subsets[:1], SEEDS[:1], dataset.valid, eval_fn,
                                             1024)
  assert out["stop_step"] == 200  # Patience 100 never runs out.
  # The same init and batch order: the kept params are the harness's after best_step steps.
  (params,) = harness.train_seeds(model, loss_fn, optimizer, out["best_step"], 20, subsets[:1],
                                  SEEDS[:1], mode="loop", chunk_steps=40)
  for a, b in zip(jax.tree.leaves(out["params"]), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------- bagging


@pytest.fixture(scope="module")
def bagged(setup):
  config, exp, subsets, dataset = setup
  params = exp.fit("bagging", {"learning_rate": 1e-2, "members": 4}, 6, SEEDS, subsets)
  return config, _model(config, dataset), params, subsets, dataset


def test_bagging_members_differ_and_resample_with_replacement(bagged):
  _, _, params, _, _ = bagged
  boot = regularization.bootstrap_indices(0, 60, 4)
  assert boot.shape == (4, 60) and boot.min() >= 0 and boot.max() < 60
  assert len({tuple(row) for row in boot}) == 4
  # A bootstrap resample leaves out about 1/e of the examples.
  assert 0.2 < np.mean([1 - len(np.unique(row)) / 60 for row in boot]) < 0.5
  w_kxIxO = np.asarray(params[0][0]["w"])
  assert w_kxIxO.shape[0] == 4
  for i in range(4):
    for j in range(i):
      assert not np.allclose(w_kxIxO[i], w_kxIxO[j])


def test_bagging_ensemble_loss_is_not_worse_than_its_mean_member(bagged):
  _, model, params, _, dataset = bagged
  ensemble_eval = regularization.make_ensemble_eval_fn(model, "softmax")
  ensemble = kernel.evaluate(ensemble_eval, params[0], dataset.test, 1024)
  member_eval = kernel.make_eval_fn(model, "softmax", 10)
  members = [kernel.evaluate(member_eval, jax.tree.map(lambda a, j=j: a[j], params[0]),
                             dataset.test, 1024) for j in range(4)]
  assert ensemble["loss"] <= np.mean([m["loss"] for m in members])
  # The ensemble evaluator of one member is the library's evaluator.
  one = kernel.evaluate(ensemble_eval, jax.tree.map(lambda a: a[:1], params[0]),
                        dataset.test, 1024)
  assert one["loss"] == pytest.approx(members[0]["loss"], rel=1e-5)
  assert one["accuracy"] == members[0]["accuracy"]


def test_a_bagging_member_is_one_model_trained_alone_on_its_resample(bagged):
  config, model, params, subsets, _ = bagged
  seed, j = SEEDS[1], 2
  boot = regularization.bootstrap_indices(seed, 60, 4)[j]
  resample = data_lib.Split(subsets[1].x[boot], subsets[1].y[boot])
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  loss_fn = losses.make_loss_fn(model, "softmax", 0.0, 60, 10)
  (alone,) = harness.train_seeds(model, loss_fn, optimizer, config.num_steps,
                                 config.batch_size, [resample],
                                 [regularization.member_seed(seed, j)], mode="loop")
  for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(params[1])):
    np.testing.assert_allclose(a, b[j], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- the runner


@pytest.mark.slow
def test_runner_writes_its_tables_and_plot(tmp_path):
  config = _tiny_config()
  workdir = str(tmp_path / "reg")
  result = experiments.run(config, workdir)
  (entry,) = result["sizes"]
  assert tuple(entry["arms"]) == regularization.METHODS
  for name, arm in entry["arms"].items():
    for r in arm["test"]:
      assert r["gap"] == pytest.approx(r["train_accuracy"] - r["accuracy"])
      assert 0 < r["accuracy"] <= 1 and r["weight_norm_sq"] > 0
    assert arm["stats"]["accuracy"]["n"] == 2
  bag = entry["arms"]["bagging"]["test"]
  assert all(r["loss"] <= r["member_loss"] for r in bag)
  assert all(r["best_step"] <= r["stop_step"] for r in entry["arms"]["early_stopping"]["test"])
  for name in ("results.md", "results.json", "metrics.jsonl", "regularization.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert {json.loads(line)["split"] for line in f} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert all(f"| 6 | {m} |" in text for m in regularization.METHODS)
  assert "bagging's ensemble of 4 minus its mean member" in text
  assert "subsets redrawn per seed, stratified" in text
  assert experiments.run(config, workdir)["finished"]


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(methods=("none", "weight_decay")),
     "experiment.methods[1]='weight_decay' is not supported"),
    (lambda c: c.experiment.update(labels_per_class=(500,)),
     "500 labels per class cannot be drawn"),
    (lambda c: c.loss.update(l2=0.1), "config.loss.l2=0.1 must be off"),
    (lambda c: c.experiment.update(dropout_rates=(0.5, 1.0)),
     "dropout_rates=(0.5, 1.0) must be dropout probabilities in (0, 1)"),
    (lambda c: c.experiment.update(bagging_members=(0,)),
     "bagging_members=(0,) must be a non-empty tuple of positive integers"),
    (lambda c: c.experiment.update(l2_strengths=()), "l2_strengths is empty"),
    (lambda c: c.experiment.update(baseline="l3"), "experiment.baseline='l3' is not supported"),
    (lambda c: c.data.update(image_size=0), "set config.data.image_size=8"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = _tiny_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
