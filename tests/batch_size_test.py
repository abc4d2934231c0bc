"""Mini-batch size (research/experiments/batch_size.py): the learning-rate rules, the 1/B law of
the mini-batch gradient variance, and examples to a target E under the harness, checked after
every step."""
import json
import os

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from configs import exp_batch_size
from research import config_lib
from research import errors
from research import experiments
from research import kernel
from research import losses
from research import models
from research import optim
from research.experiments import batch_size


def test_scaled_lr_rules():
  assert batch_size.scaled_lr("linear", 0.05, 8, 4.0) == pytest.approx(0.4)
  assert batch_size.scaled_lr("linear", 0.05, 1000, 4.0) == 4.0
  assert batch_size.scaled_lr("sqrt", 0.1, 64, 4.0) == pytest.approx(0.8)
  assert batch_size.scaled_lr("constant", 0.1, 64, 4.0) == 0.1


def test_minibatch_variance_scales_as_one_over_b():
  g_NxP = jax.random.normal(jax.random.key(0), (300, 6)) * jnp.arange(1.0, 7.0)
  variance = jax.jit(batch_size.minibatch_variance, static_argnums=3)
  measured = {}
  for b in (1, 8, 32, 300):
    measured[b], predicted = variance(g_NxP, b, jax.random.key(b), 2000)
    if b < 300:
      assert float(measured[b]) == pytest.approx(float(predicted), rel=0.2)
  assert abs(float(measured[300])) < 1e-3  # the full batch is g_bar itself
  # 1/B, up to the finite-population factor (m - B)/(m - 1).
  assert float(measured[1] / measured[8]) == pytest.approx(8 * 292 / 299, rel=0.25)


def _tiny_model():
  model_cfg = exp_batch_size.get_config().model
  model_cfg.hidden_sizes = (4,)
  model = models.build(model_cfg, (5,), 3)
  return model, losses.make_loss_fn(model, "sigmoid", 0.0, 10, 3)


def test_per_example_grads_average_to_the_batch_gradient():
  model, loss_fn = _tiny_model()

  @jax.jit  # One compilation instead of op-by-op dispatch.
  def both(key):
    params = model.init(key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (10, 5))
    y = jnp.arange(10) % 3
    batch = jax.grad(lambda p: loss_fn(p, x, y, None)[0])(params)
    return (batch_size.per_example_grads(loss_fn, params, x, y),
            flatten_util.ravel_pytree(batch)[0])

  g_NxP, flat = both(jax.random.key(0))
  np.testing.assert_allclose(g_NxP.mean(axis=0), flat, rtol=1e-4, atol=1e-6)


def test_the_first_step_at_or_below_a_target_is_exact():
  E = np.array([3.0, 2.0, 0.9, 1.1, 0.5])
  assert batch_size.first_step_at_or_below(E, 1.0) == 2  # a dip counts: it was reached
  assert batch_size.first_step_at_or_below(E, 3.0) == 0
  assert batch_size.first_step_at_or_below(E, 0.1) is None


def test_steps_with_E_is_the_kernels_steps_and_the_E_after_each():
  model, loss_fn = _tiny_model()
  optimizer = optim.make_optimizer(config_lib.optimizer(name="sgd", learning_rate=0.5), 3)
  x = jax.random.normal(jax.random.key(1), (10, 5))
  y = jnp.arange(10) % 3
  idx = np.array([[[0, 1], [2, 3], [4, 5]]], np.int32)  # one seed, 3 steps of B = 2
  state = kernel.init_state(model, optimizer, jax.random.key(0))
  stacked = jax.tree.map(lambda a: a[None], state)
  _, E_1xS = batch_size.make_steps_with_E(loss_fn, optimizer)(stacked, x, y, idx)
  chunk = kernel.make_train_chunk(loss_fn, optimizer)
  state = kernel.init_state(model, optimizer, jax.random.key(0))
  for s in range(3):
    state, _ = chunk(state, x, y, idx[0, s:s + 1])
    assert float(E_1xS[0, s]) == pytest.approx(float(loss_fn(state["params"], x, y, None)[0]),
                                               rel=1e-5)


def _tiny_config():
  config = exp_batch_size.get_config()
  config.model.hidden_sizes = (8,)
  config.experiment.update(batch_sizes=(1, 64, 0), target_losses=(2.5, 2.0), max_epochs=3,
                           variance_batches=200, seeds=2)
  return config


@pytest.mark.slow
def test_batch_size_runner_counts_examples_to_each_target(tmp_path):
  workdir = str(tmp_path / "bs")
  out = experiments.run(_tiny_config(), workdir)
  for name in ("results.md", "results.json", "metrics.jsonl", "batch_size.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert [e["size"] for e in out["sizes"]] == [2.5, 2.0]
  arms = out["sizes"][1]["arms"]
  assert tuple(arms) == ("B=1", "B=64", "B=full")
  for name, b in (("B=1", 1), ("B=64", 64)):
    for r in arms[name]["test"]:
      assert r["reached"] == 1.0 and r["examples"] == r["steps"] * b
  # The full batch cannot reach E <= 2 in 3 epochs (3 steps): the budget, flagged.
  assert [r["reached"] for r in arms["B=full"]["test"]] == [0.0, 0.0]
  # A looser target is reached no later.
  for name in arms:
    for loose, tight in zip(out["sizes"][0]["arms"][name]["test"], arms[name]["test"]):
      assert loose["steps"] <= tight["steps"]
  with open(os.path.join(workdir, "results.json")) as f:
    variance = batch_size.variance_of(json.load(f))
  assert {v["w"] for v in variance} == {"init", "trained"}
  for v in variance:
    if v["batch_size"] < out["m"]:
      assert 0.6 < v["ratio"] < 1.6, v
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "exact to one step" in text and "not reached: B=full at E <= 2.5: 0 of 2" in text
  assert experiments.run(_tiny_config(), workdir)["finished"]


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(batch_sizes=(1, -8)), "batch_sizes=(1, -8) must be"),
    (lambda c: c.experiment.update(batch_sizes=(1, 1)), "repeats a batch size"),
    (lambda c: c.experiment.update(batch_sizes=(1, 5000)), "larger than the 1258 training"),
    (lambda c: c.experiment.update(target_losses=(0.1, 0.0)), "target_losses=(0.1, 0.0) must"),
    (lambda c: c.experiment.update(lr_rule="cubic"), "experiment.lr_rule='cubic'"),
    (lambda c: c.experiment.update(seeds=1), "config.experiment.seeds=1 must be"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_batch_size.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")


def test_the_cap_is_chosen_on_a_held_out_seed_by_the_fewest_full_batch_steps():
  config = _tiny_config()
  config.experiment.update(max_lr_grid=(0.5, 2.0, 8.0), max_epochs=60, target_losses=(2.5,))
  cap = batch_size.choose_cap(config)
  assert cap["seed"] == config.experiment.cap_seed
  assert [r["eta"] for r in cap["candidates"]] == [0.5, 2.0, 8.0]
  reached = [r for r in cap["candidates"] if r["steps"] is not None]
  assert reached, cap  # the tiny problem reaches E <= 2.5 at some eta
  assert cap["chosen"] == min(reached, key=lambda r: (r["steps"], r["eta"]))["eta"]
  config.experiment.cap_seed = config.seed + 1  # one of the reported seeds
  with pytest.raises(errors.ConfigError, match="cap_seed=.* is one of the reported seeds"):
    batch_size.validate(config)
