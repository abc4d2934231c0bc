"""Tests for research.lecture_algorithm: the lecture's misclassified-only training with restarts."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from research import augment
from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research.experiments import lecture as lecture_algorithm
from research import losses
from research import models
from research import optim

_BLOBS = "lecture_test_blobs"
_NOISE = "lecture_test_noise"


@data_lib.register(_BLOBS)
def _blobs(cfg) -> data_lib.Dataset:
  """Two 2-D Gaussian blobs, std 0.5, centred at (-3, -3) and (3, 3): linearly separable."""
  rng = np.random.default_rng(0)
  n = 120
  y = np.arange(n) % 2
  x = rng.normal(0.0, 0.5, (n, 2)) + np.where(y[:, None] == 1, 3.0, -3.0)
  return data_lib.split_and_standardize(
      x, y, name=_BLOBS, num_classes=2, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)


@data_lib.register(_NOISE)
def _noise(cfg) -> data_lib.Dataset:
  """Gaussian x with coin-flip labels: no small network classifies it all, so it never converges."""
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(120, 2)), rng.integers(0, 2, 120)
  return data_lib.split_and_standardize(
      x, y, name=_NOISE, num_classes=2, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)


def _config(data=_BLOBS, **lecture) -> ml_collections.ConfigDict:
  """The lecture's sigmoid MLP on toy data; one sigmoid output, lambda > 0."""
  config = config_lib.base(trainer="lecture", batch_size=8, num_steps=400, eval_batch_size=256)
  config.data = config_lib.sklearn_data(data)
  config.model = dict(name="mlp", hidden_sizes=(4,), activation="sigmoid")
  config.loss = config_lib.loss("sigmoid", l2=1e-3)
  config.optimizer = config_lib.optimizer(name="sgd", learning_rate=0.5)
  config.lecture = dict(rounds_per_check=20, min_relative_decrease=0.01,
                        perturbation_scale=0.5, max_restarts=2, batch_size=8)
  config.lecture.update(lecture)
  return config


def _records(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def _train_accuracy(config, params) -> float:
  dataset = data_lib.load(config.data)
  model = models.build(config.model, dataset.input_shape, 1)
  eval_fn = kernel.make_eval_fn(model, config.loss.output, 1)
  return kernel.evaluate(eval_fn, params, dataset.train, 256)["accuracy"]


@pytest.fixture(scope="module")
def converged_run(tmp_path_factory):
  config = _config()
  workdir = str(tmp_path_factory.mktemp("blobs"))
  return config, workdir, lecture_algorithm.train_lecture(config, workdir)


def test_converges_on_separable_blobs(converged_run):
  config, workdir, out = converged_run
  assert _train_accuracy(config, out["state"]["params"]) == 1.0
  final = _records(workdir, "test")[-1]
  assert final["converged"] is True
  assert final["step"] < config.num_steps  # Stopped early: nothing left to learn from.
  assert _records(workdir, "train")[-1]["misclassified"] == 0
  assert out["test"]["accuracy"] == 1.0
  assert set(out) == {"state", "valid", "test", "wall_time"}


def test_same_seed_same_params(converged_run, tmp_path):
  config, _, out = converged_run
  again = lecture_algorithm.train_lecture(config, str(tmp_path / "again"))
  chex_equal = jax.tree.map(np.array_equal, out["state"]["params"], again["state"]["params"])
  assert all(jax.tree.leaves(chex_equal))
  assert int(out["state"]["step"]) == int(again["state"]["step"])


def test_restarts_when_E_cannot_fall(tmp_path):
  # min_relative_decrease = 1 asks E to reach 0 between checks: every check is a stall.
  config = _config(_NOISE, min_relative_decrease=1.0, max_restarts=2)
  workdir = str(tmp_path / "stall")
  lecture_algorithm.train_lecture(config, workdir)
  restarts = _records(workdir, "restart")
  assert [r["restart"] for r in restarts] == [1, 2]
  for r in restarts:
    assert r["perturbation_norm"] > 0
    assert r["E_after"] != r["E_before"]
  final = _records(workdir, "test")[-1]
  assert final["restarts"] == 2
  # Three descents of rounds_per_check steps each: two ended by restarts, one by giving up.
  assert final["step"] == 3 * config.lecture.rounds_per_check


@pytest.mark.slow
def test_step_uses_only_the_misclassified_example():
  # Logistic regression (no hidden layer) with w = (1, 0): labels follow x_0 > 0 except for
  # example 3, whose label is flipped, so it alone is misclassified.
  x_NxD = jnp.array([[-2.0, 1.0], [-1.0, -1.0], [1.5, 0.5], [0.5, 2.0], [2.0, -1.0]])
  y_N = jnp.array([0, 0, 1, 0, 1], jnp.int32)
  model_cfg = ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=(), activation="sigmoid"))
  model = models.build(model_cfg, (2,), 1)
  params = [{"w": jnp.array([[1.0], [0.0]]), "b": jnp.zeros((1,))}]
  lam, m, eta = 0.1, 5, 0.3
  loss_fn = losses.make_loss_fn(model, "sigmoid", lam, m, 1)
  optimizer = optim.make_optimizer(config_lib.optimizer(name="sgd", learning_rate=eta), 10)
  chunk = lecture_algorithm.make_chunk(model, loss_fn, optimizer, batch_size=4)
  state = {"params": params, "opt_state": optimizer.init(params),
           "step": jnp.zeros((), jnp.int32), "rng": jax.random.key(0)}
  new = chunk(jax.tree.map(jnp.copy, state), x_NxD, y_N, length=1)
  used_grad = jax.tree.map(lambda a, b: (a - b) / eta, params, new["params"])
  expected, _ = jax.grad(loss_fn, has_aux=True)(params, x_NxD[3:4], y_N[3:4], None)
  np.testing.assert_allclose(used_grad[0]["w"], expected[0]["w"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(used_grad[0]["b"], expected[0]["b"], rtol=1e-5, atol=1e-6)
  full, _ = jax.grad(loss_fn, has_aux=True)(params, x_NxD, y_N, None)
  assert not np.allclose(full[0]["w"], expected[0]["w"])  # The test can tell them apart.
  assert int(new["step"]) == 1


def test_no_step_when_nothing_is_misclassified():
  x_NxD = jnp.array([[-2.0, 1.0], [1.5, 0.5]])
  y_N = jnp.array([0, 1], jnp.int32)
  model_cfg = ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=(), activation="sigmoid"))
  model = models.build(model_cfg, (2,), 1)
  params = [{"w": jnp.array([[1.0], [0.0]]), "b": jnp.zeros((1,))}]
  loss_fn = losses.make_loss_fn(model, "sigmoid", 0.1, 2, 1)
  optimizer = optax.sgd(0.3)
  chunk = lecture_algorithm.make_chunk(model, loss_fn, optimizer, batch_size=2)
  state = {"params": params, "opt_state": optimizer.init(params),
           "step": jnp.zeros((), jnp.int32), "rng": jax.random.key(0)}
  new = chunk(jax.tree.map(jnp.copy, state), x_NxD, y_N, length=3)
  assert int(new["step"]) == 0
  np.testing.assert_array_equal(new["params"][0]["w"], params[0]["w"])


def test_sample_draws_only_misclassified():
  wrong_N = jnp.zeros((50,), bool).at[jnp.array([0, 7, 49])].set(True)
  idx = jax.jit(lecture_algorithm.sample_misclassified, static_argnums=2)(
      jax.random.key(1), wrong_N, 600)
  assert set(np.asarray(idx).tolist()) == {0, 7, 49}
  counts = np.bincount(np.asarray(idx), minlength=50)[[0, 7, 49]]
  assert counts.min() > 150  # Uniform over the three: 200 each on average.


def test_perturb_is_gaussian_with_absolute_scale():
  params = {"w": jnp.ones((200, 100)), "b": jnp.zeros((100,))}
  out = lecture_algorithm.perturb(params, jax.random.key(2), 0.3)
  noise = np.asarray(out["w"] - params["w"])
  assert abs(noise.std() - 0.3) < 0.01 and abs(noise.mean()) < 0.01
  assert np.asarray(out["b"]).std() > 0.2  # Biases are perturbed too.
  again = lecture_algorithm.perturb(params, jax.random.key(2), 0.3)
  np.testing.assert_array_equal(out["w"], again["w"])


@pytest.mark.parametrize("field,value", [
    ("rounds_per_check", 0), ("batch_size", -3), ("max_restarts", -1),
    ("min_relative_decrease", 1.5), ("perturbation_scale", 0.0)])
def test_bad_lecture_fields_are_config_errors(field, value, tmp_path):
  config = _config()
  config.lecture[field] = value
  with pytest.raises(errors.ConfigError, match=f"lecture.{field}"):
    lecture_algorithm.train_lecture(config, str(tmp_path / "bad"))


def test_missing_lecture_group_is_a_config_error(tmp_path):
  config = _config()
  del config["lecture"]
  with pytest.raises(errors.ConfigError, match="config.lecture is missing"):
    lecture_algorithm.train_lecture(config, str(tmp_path / "bad"))


@pytest.mark.parametrize("field,value", [
    ("early_stopping_patience", 3), ("augment", augment.config(ops=("noise",)))])
def test_standard_trainer_fields_are_refused(field, value, tmp_path):
  config = _config()
  config[field] = value
  with pytest.raises(errors.ConfigError, match=f"config.{field}"):
    lecture_algorithm.train_lecture(config, str(tmp_path / "bad"))
