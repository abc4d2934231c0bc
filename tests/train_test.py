"""The runner: determinism, what it writes, bad input, NaN handling, jit vs no-jit."""
import json
import os
import shutil

import chex
import jax
import numpy as np
import pytest

from configs import breast_cancer
from configs import default
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import metrics
from research import models
from research import optim
from research import train


def tiny_config(**overrides):
  config = default.get_config()
  config.num_steps = 60
  config.log_every = 20
  config.eval_every = 30
  config.update(overrides)
  return config


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _strip_timing(records):
  timing = set(metrics.TIMING_FIELDS)
  return [{k: v for k, v in r.items() if k not in timing} for r in records]


def test_same_seed_gives_identical_metrics_and_params(tmp_path):
  a = train.train_and_evaluate(tiny_config(), str(tmp_path / "a"))
  b = train.train_and_evaluate(tiny_config(), str(tmp_path / "b"))
  assert _strip_timing(_records(tmp_path / "a")) == _strip_timing(_records(tmp_path / "b"))
  chex.assert_trees_all_equal(a["state"]["params"], b["state"]["params"])
  c = train.train_and_evaluate(tiny_config(seed=1), str(tmp_path / "c"))
  assert c["test"] != a["test"] or not np.array_equal(
      a["state"]["params"][0]["w"], c["state"]["params"][0]["w"])


def test_writes_metrics_jsonl_and_config_json(tmp_path):
  workdir = str(tmp_path / "run")
  params = train.train_and_evaluate(tiny_config(), workdir)["state"]["params"]
  records = _records(workdir)
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  valid_steps = [r["step"] for r in records if r["split"] == "valid"]
  assert train_steps == [20, 40, 60] and valid_steps == [30, 60]
  for r in records:
    if r["split"] == "train":
      assert {"loss", "accuracy", "examples_per_sec"} <= set(r)
  (test,) = [r for r in records if r["split"] == "test"]
  # The test record is the final params' accuracy on the test split, recomputed here.
  config = tiny_config()
  dataset = data_lib.load(config.data)
  model = models.build(config.model, dataset.input_shape, 10)
  predicted = np.asarray(model.apply(params, dataset.test.x)).argmax(-1)
  assert test["accuracy"] == pytest.approx(np.mean(predicted == np.asarray(dataset.test.y)))
  assert test["wall_time"] > 0
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["optimizer"]["name"] == "momentum" and saved["num_steps"] == 60


def test_never_overwrites_an_earlier_run(tmp_path):
  workdir = str(tmp_path / "run")
  first = train.train_and_evaluate(tiny_config(), workdir)
  before = _records(workdir)
  # Same config: the run is finished, nothing is retrained or rewritten.
  again = train.train_and_evaluate(tiny_config(), workdir)
  assert again["test"] == pytest.approx(first["test"]) and _records(workdir) == before
  # Another config in the same workdir would mix two experiments.
  with pytest.raises(errors.ConfigError, match=r"different config \(config.seed: 0 -> 1\)"):
    train.train_and_evaluate(tiny_config(seed=1), workdir)
  assert _records(workdir) == before
  # Metrics without checkpoints (e.g. from another tool): refused, not appended to.
  shutil.rmtree(os.path.join(workdir, "checkpoints"))
  with pytest.raises(errors.ConfigError, match="already holds a run"):
    train.train_and_evaluate(tiny_config(), workdir)
  assert _records(workdir) == before


@pytest.mark.parametrize("overrides, fragment", [
    (dict(batch_size=0), "config.batch_size=0 must be an integer >= 1"),
    (dict(batch_size=5000), "config.batch_size=5000 is larger than the 1258 training examples"),
    (dict(num_steps=-3), "config.num_steps=-3 must be an integer >= 1"),
    (dict(grad="symbolic"), "config.grad='symbolic' is not supported"),
])
def test_bad_run_fields(tmp_path, overrides, fragment):
  with pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path / "run"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


@pytest.mark.parametrize("group, field, value, fragment", [
    ("data", "name", "mnist9", "config.data.name='mnist9' is not supported; choose one of"),
    ("model", "name", "resnet", "config.model.name='resnet' is not a registered model"),
    ("model", "activation", "swish", "choose one of: 'relu', 'sigmoid', 'tanh'"),
    ("loss", "output", "hinge", "config.loss.output='hinge'"),
    ("loss", "l2", -1.0, "config.loss.l2=-1.0 must be a finite number >= 0"),
    ("optimizer", "name", "lbfgs", "config.optimizer.name='lbfgs'"),
    ("data", "standardize", "minmax", "config.data.standardize='minmax'"),
])
def test_bad_group_fields(tmp_path, group, field, value, fragment):
  config = tiny_config()
  config[group][field] = value
  with pytest.raises(errors.ConfigError) as e:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert fragment in str(e.value)


def test_nan_loss_stops_the_run_naming_the_step(tmp_path):
  config = tiny_config()
  config.model.activation = "relu"
  config.optimizer.learning_rate = 1e6
  with pytest.raises(errors.NonFiniteLossError, match=r"NaN/inf at step \d+"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_early_stopping_keeps_the_best_validation_params(tmp_path):
  # Wide, unregularised and long: validation loss bottoms out early, then rises.
  config = tiny_config(num_steps=3000, log_every=100, eval_every=100, early_stopping_patience=3)
  config.loss.l2 = 0.0
  workdir = str(tmp_path / "run")
  result = train.train_and_evaluate(config, workdir)
  records = _records(workdir)
  (stop,) = [r for r in records if r["split"] == "early_stop"]
  valid = {r["step"]: r["loss"] for r in records if r["split"] == "valid"}
  assert stop["step"] < 3000 and stop["step"] - stop["best_step"] == 300
  assert valid[stop["best_step"]] == min(valid.values())
  assert stop["best_valid_loss"] == pytest.approx(valid[stop["best_step"]], rel=1e-6)
  # The returned params are the best ones: re-evaluating them gives the best loss.
  dataset = data_lib.load(config.data)
  model = models.build(config.model, dataset.input_shape, 10)
  again = kernel.evaluate(kernel.make_eval_fn(model, "sigmoid", 10), result["state"]["params"],
                         dataset.valid, 1024)
  assert again["loss"] == pytest.approx(stop["best_valid_loss"], rel=1e-5)


@pytest.mark.slow
def test_jitted_chunk_equals_unjitted_steps():
  config = tiny_config()
  dataset = data_lib.load(config.data)
  model = models.build(config.model, dataset.input_shape, 10)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  loss_fn = losses.make_loss_fn(model, "sigmoid", config.loss.l2, len(dataset.train), 10)
  chunk = kernel.make_train_chunk(loss_fn, optimizer)
  idx = data_lib.batch_indices(0, len(dataset.train), 32, 0, 5)

  def fresh():
    params = model.init(jax.random.key(0))
    return {"params": params, "opt_state": optimizer.init(params),
            "step": jax.numpy.zeros((), "int32"), "rng": jax.random.key(1)}

  jitted, sums = chunk(fresh(), dataset.train.x, dataset.train.y, idx)
  with jax.disable_jit():
    eager, eager_sums = chunk(fresh(), dataset.train.x, dataset.train.y, idx)
  chex.assert_trees_all_close(jitted["params"], eager["params"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sums["loss_sum"], eager_sums["loss_sum"], rtol=1e-5)
  assert int(jitted["step"]) == 5


@pytest.mark.slow
def test_default_experiment_reaches_97_percent_on_digits(tmp_path):
  result = train.train_and_evaluate(default.get_config(), str(tmp_path / "run"))
  print(f"digits test accuracy {result['test']['accuracy']:.4f}, "
        f"wall {result['wall_time']:.1f}s")
  assert result["test"]["accuracy"] >= 0.97


@pytest.mark.slow
def test_breast_cancer_single_sigmoid_output_reaches_95_percent(tmp_path):
  config = breast_cancer.get_config()
  result = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert result["state"]["params"][-1]["w"].shape[-1] == 1  # One sigmoid output unit.
  assert result["test"]["accuracy"] >= 0.95


def test_train_records_hold_the_norms_of_dE_dw_w_and_the_update(tmp_path):
  """The last step's per-layer norms against an independent computation: plain SGD's update is
  the difference of the params after and before the step (checkpoints 39 and 40), and
  -learning_rate * dE/dw."""
  config = tiny_config(num_steps=40, log_every=20, eval_every=40, checkpoint_every=39,
                       keep_checkpoints=5)
  config.optimizer.name = "sgd"
  workdir = str(tmp_path / "run")
  after = train.train_and_evaluate(config, workdir)["state"]["params"]
  norms = next(r["norms"] for r in _records(workdir) if r["split"] == "train" and r["step"] == 40)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "40"))
  before, step = train.restore_state(config, workdir)
  assert step == 39
  assert set(norms["grad"]) == set(norms["param"]) == set(norms["update"]) == {"0/w", "1/w"}
  for layer, (w0, w1) in enumerate(zip(before["params"], after)):
    w0, w1 = (np.asarray(p["w"], np.float64) for p in (w0, w1))
    update = np.linalg.norm(w1 - w0)
    assert norms["param"][f"{layer}/w"] == pytest.approx(np.linalg.norm(w1), rel=1e-6)
    assert norms["update"][f"{layer}/w"] == pytest.approx(update, rel=1e-3)
    assert norms["grad"][f"{layer}/w"] == pytest.approx(
        update / config.optimizer.learning_rate, rel=1e-3)


class _Differentiated(Exception):
  pass


@jax.custom_jvp
def _sigmoid_not_to_differentiate(z):
  return jax.nn.sigmoid(z)


@_sigmoid_not_to_differentiate.defjvp
def _raise_if_differentiated(primals, tangents):
  del primals, tangents
  raise _Differentiated("autodiff differentiated the network's sigmoid")


def test_grad_manual_trains_with_the_hand_written_pass(tmp_path, monkeypatch):
  """config.grad=manual: the train step traces the MLP family's hand-written recursion
  (research/backprop/mlp.py's `backward`) and differentiates nothing. With a sigmoid whose
  derivative rule raises in place of jax.nn.sigmoid (both the model and the hand-written
  forward pass look it up in models.mlp.ACTIVATIONS), a manual run trains, and an autodiff
  run (the tripwire's own check) cannot be traced. Its dE/dw agrees with jax.grad's to float32
  rounding. (Whether the two round alike is no evidence either way: under jax 0.12.1 they are
  bit-identical.)"""
  from research.backprop import mlp as backprop_mlp  # pylint: disable=g-import-not-at-top
  from research import gradients  # pylint: disable=g-import-not-at-top
  from research.models import mlp  # pylint: disable=g-import-not-at-top
  real_backward, calls = backprop_mlp.backward, []

  def backward(*args, **kwargs):
    calls.append(True)
    return real_backward(*args, **kwargs)

  monkeypatch.setattr(backprop_mlp, "backward", backward)
  monkeypatch.setitem(mlp.ACTIVATIONS, "sigmoid", _sigmoid_not_to_differentiate)
  train._functions.cache_clear()  # pylint: disable=protected-access  Traced before the patches.
  try:
    result = train.train_and_evaluate(tiny_config(grad="manual", num_steps=20),
                                      str(tmp_path / "manual"))
    assert calls, "config.grad=manual trained without the hand-written backward pass"
    assert np.isfinite(result["test"]["loss"])
    with pytest.raises(_Differentiated):
      train.train_and_evaluate(tiny_config(grad="autodiff", num_steps=20),
                               str(tmp_path / "autodiff"))
  finally:
    train._functions.cache_clear()  # pylint: disable=protected-access  Traced with the patches.
  monkeypatch.undo()

  config = default.get_config()
  dataset = data_lib.load(config.data)
  n, k = len(dataset.train), 10
  model = models.build(config.model, dataset.input_shape, k)
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k)
  params = model.init(jax.random.key(0))
  grads = {}
  for grad in ("autodiff", "manual"):
    config.grad = grad
    value_and_grad = gradients.make_value_and_grad(config, loss_fn, k, n, dataset.input_shape)
    grads[grad] = jax.jit(value_and_grad)(params, dataset.train.x[:32], dataset.train.y[:32],
                                           jax.random.key(1))[1]
  chex.assert_trees_all_close(grads["manual"], grads["autodiff"], rtol=1e-5, atol=1e-7)
