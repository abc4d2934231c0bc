"""Tiny versions of the regularization and dropout-ensemble experiments (issue 7 items 1-2)."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import exp_dropout_ensemble
from configs import exp_regularization
from research import data as data_lib
from research import errors
from research import experiments
from research import kernel
from research import losses
from research import models
from research import optim
from research.experiments import dropout_ensemble
from research.experiments import harness
from research.experiments import regularization


def _reg_config(**experiment) -> ml_collections.ConfigDict:
  """The experiment's config, shrunk: 60 examples, 32 hidden units, 120 steps."""
  config = exp_regularization.get_config()
  config.model.hidden_sizes = (32,)
  config.num_steps, config.eval_every, config.log_every, config.batch_size = 120, 40, 40, 20
  config.optimizer.learning_rate = 1e-2
  config.experiment.update(dict(train_examples=60, repeats=1, bagging_members=4))
  config.experiment.update(experiment)
  return config


@pytest.fixture(scope="module")
def digits():
  return data_lib.load(_reg_config().data)


@pytest.fixture(scope="module")
def slice60(digits):
  return harness.seeded_slice(digits.train, 60, 0)


def _model(config, dataset):
  return models.build(config.model, dataset.input_shape, 10)


def _sum_w2(params) -> float:
  return sum(float(jnp.sum(layer["w"] ** 2)) for layer in params)


# ------------------------------------------------------------------------------- mixture_nll

# Jitted: one compilation per case instead of one per primitive.
_mixture_nll = jax.jit(losses.mixture_nll, static_argnums=2)


@pytest.mark.parametrize("output,k", [("softmax", 5), ("sigmoid", 5), ("sigmoid", 1)])
def test_mixture_of_one_member_is_the_library_loss(output, k):
  logits_BxK = jax.random.normal(jax.random.key(0), (7, k)) * 3
  labels_B = jax.random.randint(jax.random.key(1), (7,), 0, max(k, 2))
  nll_B, pred_B = _mixture_nll(logits_BxK[None], labels_B, output)
  expected = losses.DATA_LOSSES[output](logits_BxK, losses.one_hot_targets(labels_B, k))
  np.testing.assert_allclose(nll_B, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(pred_B, losses.predictions(logits_BxK))


def test_mixture_averages_probabilities_not_logits():
  # Two members, one sure of class 0 and one sure of class 1: the mixture gives each 1/2.
  logits_MxBxK = jnp.array([[[20.0, -20.0]], [[-20.0, 20.0]]])
  nll_B, _ = _mixture_nll(logits_MxBxK, jnp.array([0]), "softmax")
  np.testing.assert_allclose(nll_B, [np.log(2.0)], rtol=1e-5)


# ------------------------------------------------------------------------------ regularizers


def test_seeded_slice_is_seeded_and_without_replacement(digits):
  a = harness.seeded_slice(digits.train, 60, 0)
  b = harness.seeded_slice(digits.train, 60, 0)
  c = harness.seeded_slice(digits.train, 60, 1)
  np.testing.assert_array_equal(a.x, b.x)
  assert not np.array_equal(a.x, c.x)
  assert len(np.unique(a.x.reshape(60, -1), axis=0)) == 60
  assert harness.seeded_slice(digits.train, 0, 0) is digits.train


@pytest.mark.slow
def test_l2_shrinks_the_weight_norm(digits, slice60):
  config = _reg_config()
  sums = {}
  for method in ("none", "l2"):
    cfg = regularization.method_config(config, method)
    if method == "l2":
      cfg.loss.l2 = 5.0
    (out,) = regularization.fit(cfg, dataclasses.replace(digits, train=slice60), [0])
    sums[method] = _sum_w2(out["params"])
  assert sums["l2"] < 0.7 * sums["none"], sums


def test_early_stopping_keeps_the_best_validation_params(digits):
  # 30 examples, a fast optimizer and many evals: the validation loss turns up early.
  config = _reg_config(patience=3)
  config.num_steps, config.eval_every, config.batch_size = 600, 10, 10
  config.optimizer.learning_rate = 3e-2
  cfg = regularization.method_config(config, "early_stopping")
  assert cfg.early_stopping_patience == 3
  tiny = harness.seeded_slice(digits.train, 30, 0)
  model = _model(cfg, digits)
  (out,) = regularization.fit(cfg, dataclasses.replace(digits, train=tiny), [0])
  steps, valid_losses = zip(*out["valid_losses"])
  best = int(np.argmin(valid_losses))
  assert out["stop_step"] < config.num_steps  # It stopped...
  assert out["stop_step"] == steps[best] + 3 * config.eval_every  # ...patience evals later...
  assert out["best_step"] == steps[best]  # ...and kept the best eval's params.
  eval_fn = kernel.make_eval_fn(model, "softmax", 10)
  kept = kernel.evaluate(eval_fn, out["params"], digits.valid, 1024)["loss"]
  assert kept == pytest.approx(valid_losses[best], rel=1e-6)
  assert kept < valid_losses[-1]


# ----------------------------------------------------------------------------------- bagging


@pytest.fixture(scope="module")
def bagged(digits, slice60):
  config = regularization.method_config(_reg_config(), "bagging")
  model = _model(config, digits)
  (out,) = regularization.fit_bagging(config, model, 10, slice60, 4, [0])
  return config, model, out


def test_bagging_members_differ(bagged):
  _, _, out = bagged
  boot = out["boot"]
  assert boot.shape == (4, 60) and boot.min() >= 0 and boot.max() < 60
  assert len({tuple(row) for row in boot}) == 4
  # A bootstrap resample leaves out about 1/e of the examples.
  assert 0.2 < np.mean([1 - len(np.unique(row)) / 60 for row in boot]) < 0.5
  w_kxIxO = np.asarray(out["params"][0]["w"])
  for i in range(4):
    for j in range(i):
      assert not np.allclose(w_kxIxO[i], w_kxIxO[j])


def test_bagging_ensemble_loss_is_not_worse_than_its_mean_member(bagged, digits):
  config, model, out = bagged
  ensemble_eval = regularization.make_ensemble_eval_fn(model, "softmax")
  ensemble = kernel.evaluate(ensemble_eval, out["params"], digits.test, 1024)
  member_eval = kernel.make_eval_fn(model, "softmax", 10)
  members = [kernel.evaluate(member_eval, jax.tree.map(lambda a: a[j], out["params"]),
                            digits.test, 1024) for j in range(4)]
  assert ensemble["loss"] <= np.mean([m["loss"] for m in members])
  # The ensemble evaluator of one member is the library's evaluator.
  one = kernel.evaluate(ensemble_eval, jax.tree.map(lambda a: a[:1], out["params"]),
                       digits.test, 1024)
  assert one["loss"] == pytest.approx(members[0]["loss"], rel=1e-5)
  assert one["accuracy"] == members[0]["accuracy"]


def test_vmapped_bagging_equals_training_one_member_alone(bagged, slice60):
  config, model, out = bagged
  j = 2
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  loss_fn = losses.make_loss_fn(model, "softmax", config.loss.l2, 60, 10)
  chunk = kernel.make_train_chunk(loss_fn, optimizer)
  state = kernel.init_state(model, optimizer, jax.random.split(jax.random.key(0), 4)[j])
  idx_SxB = regularization.bagging_batches(out["boot"], 0, config.batch_size, 0,
                                           config.num_steps)[j]
  state, _ = chunk(state, slice60.x, slice60.y, idx_SxB)
  for alone, vmapped in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(out["params"])):
    np.testing.assert_allclose(alone, vmapped[j], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- MC dropout


@pytest.fixture(scope="module")
def dropout_net():
  cfg = ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=(64,), activation="relu",
                                       dropout=0.5))
  model = models.build(cfg, (12,), 4)
  params = model.init(jax.random.key(0))
  x_NxD = np.asarray(jax.random.normal(jax.random.key(1), (50, 12)))
  labels_N = np.asarray(jnp.argmax(model.apply(params, x_NxD), axis=-1))  # Learnable labels.
  keys_M = jax.random.split(jax.random.key(2), 256)
  logits_MxNxK = dropout_ensemble.split_logits(
      dropout_ensemble.make_mask_logits_fn(model, 32), params, x_NxD, 16, keys_M)
  return model, params, x_NxD, labels_N, logits_MxNxK


def test_masks_differ_and_average_to_weight_scaling(dropout_net):
  model, params, x_NxD, _, logits_MxNxK = dropout_net
  assert logits_MxNxK.shape == (256, 50, 4)
  assert not np.allclose(logits_MxNxK[0], logits_MxNxK[1])
  # One hidden layer feeding a linear output: E_d[logits] is exactly weight scaling's logits.
  ws_NxK = np.asarray(model.apply(params, x_NxD, train=False))
  err = lambda m: np.abs(logits_MxNxK[:m].mean(axis=0) - ws_NxK).mean()
  assert err(256) < 0.5 * err(4)
  assert err(256) < 0.1 * np.abs(ws_NxK).mean()


def test_mc_log_likelihood_grows_with_masks_and_approaches_weight_scaling(dropout_net):
  model, params, x_NxD, labels_N, logits_MxNxK = dropout_net
  ws_pred = np.asarray(jnp.argmax(model.apply(params, x_NxD, train=False), axis=-1))
  rows = dropout_ensemble.mc_curve(logits_MxNxK, labels_N, "softmax", ws_pred)
  assert [r["masks"] for r in rows] == [2 ** i for i in range(9)]
  assert [r["ensembles"] for r in rows] == [256 // 2 ** i for i in range(9)]
  ll = [r["log_likelihood"] for r in rows]
  assert all(b >= a - 1e-6 for a, b in zip(ll, ll[1:])), ll  # Jensen: never decreases.
  assert ll[-1] > ll[0] + 0.05
  assert rows[-1]["agreement"] >= 0.9 > rows[0]["agreement"]
  assert rows[-1]["accuracy_std"] == 0.0  # One ensemble of all 256 masks.


# ------------------------------------------------------------------------------- the runners


def _check_regularization_run(config, workdir):
  out = experiments.run(config, workdir)
  methods = tuple(config.experiment.methods)
  assert tuple(out["methods"]) == methods
  for r in out["methods"].values():
    (run,) = r["runs"]
    assert run["gap"] == pytest.approx(run["train_accuracy"] - run["test_accuracy"])
    assert 0 < run["test_accuracy"] <= 1 and run["weight_norm_sq"] > 0
  bag = out["methods"]["bagging"]["runs"][0]
  assert bag["test_loss"] <= bag["member_test_loss"]
  with open(os.path.join(workdir, "results.json")) as f:
    assert tuple(json.load(f)["methods"]) == methods
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read()
  assert all(f"| {m} |" in table for m in methods)
  assert os.path.getsize(os.path.join(workdir, "regularization.png")) > 10_000
  results = [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
             if r["split"] == "result"]
  assert [r["method"] for r in results] == list(methods)


@pytest.mark.slow
def test_regularization_runner_writes_its_table_and_plot(tmp_path):
  config = _reg_config(methods=("none", "bagging"))
  config.trainer = "regularization"
  _check_regularization_run(config, str(tmp_path / "reg"))


@pytest.mark.slow
def test_regularization_runner_runs_every_method(tmp_path):
  config = _reg_config()
  config.trainer = "regularization"
  assert tuple(config.experiment.methods) == regularization.METHODS
  _check_regularization_run(config, str(tmp_path / "reg"))


def test_each_method_turns_on_exactly_its_regularizer():
  config = exp_regularization.get_config()
  exp = config.experiment
  fields = lambda c: {"loss.l2": c.loss.l2, "loss.l1": c.loss.l1,
                      "model.dropout": c.model.dropout,
                      "early_stopping_patience": c.early_stopping_patience,
                      "augment.ops": tuple(c.augment.ops)}
  off = fields(config)
  expected = {"none": {}, "l2": {"loss.l2": exp.l2}, "l1": {"loss.l1": exp.l1},
              "dropout": {"model.dropout": exp.dropout},
              "early_stopping": {"early_stopping_patience": exp.patience},
              "augment": {"augment.ops": tuple(exp.augment_ops)}, "bagging": {}}
  for method in regularization.METHODS:
    cfg = regularization.method_config(config, method)
    assert fields(cfg) == dict(off, **expected[method]), method
  assert fields(config) == off  # The base config is untouched.


@pytest.mark.slow
def test_dropout_ensemble_runner_writes_its_table_and_plot(tmp_path):
  config = exp_dropout_ensemble.get_config()
  config.model.hidden_sizes = (32,)
  config.num_steps, config.eval_every, config.log_every = 60, 60, 60
  config.checkpoint_every = 0
  config.experiment.max_masks = 16
  workdir = str(tmp_path / "drop")
  out = experiments.run(config, workdir)
  rows = out["monte_carlo"]
  assert [r["masks"] for r in rows] == [1, 2, 4, 8, 16]
  assert rows[-1]["log_likelihood"] >= rows[0]["log_likelihood"]
  assert out["weight_scaling"]["accuracy"] == out["train"]["test"]["accuracy"]
  with open(os.path.join(workdir, "results.md")) as f:
    assert f.read().count("| Monte Carlo |") == 5
  assert os.path.getsize(os.path.join(workdir, "dropout_ensemble.png")) > 10_000
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["masks"] for r in records if r["split"] == "mc_dropout"] == [1, 2, 4, 8, 16]


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(methods=("none", "weight_decay")),
     "experiment.methods[1]='weight_decay' is not supported"),
    (lambda c: c.experiment.update(train_examples=5000), "train_examples=5000 is more than"),
    (lambda c: c.loss.update(l2=0.1), "config.loss.l2=0.1 must be off"),
    (lambda c: c.experiment.update(dropout=1.0), "experiment.dropout=1.0 must be in (0, 1)"),
    (lambda c: c.experiment.update(bagging_members=0), "bagging_members=0 must be a positive"),
    (lambda c: c.data.update(image_size=0), "set config.data.image_size=8"),
])
def test_bad_regularization_config(tmp_path, edit, fragment):
  config = _reg_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    regularization.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.model.update(dropout=0.0), "config.model.dropout=0.0"),
    (lambda c: c.experiment.update(max_masks=100), "max_masks=100 must be a power of 2"),
])
def test_bad_dropout_ensemble_config(tmp_path, edit, fragment):
  config = exp_dropout_ensemble.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    dropout_ensemble.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
