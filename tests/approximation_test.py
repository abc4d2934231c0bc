"""Universal approximation (research/experiments/approximation.py): the inits, the random
points, the full-batch fit through the kernel, and the runner under the harness."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import exp_approximation
from research import config_lib
from research import errors
from research import experiments
from research import models
from research import optim
from research.experiments import approximation
from research.experiments import harness


def test_dense_grid_covers_the_square():
  g = approximation.dense_grid(2, 3)
  assert g.shape == (9, 2)
  np.testing.assert_array_equal(np.unique(g[:, 0]), [-1, 0, 1])


def _model(width: int, dim: int = 1) -> models.Model:
  cfg = ml_collections.ConfigDict(exp_approximation.get_config().model.to_dict())
  cfg.hidden_sizes = (width,)
  return models.build(cfg, (dim,), 1)


def test_spread_init_puts_every_transition_inside_the_domain_and_lecun_at_zero():
  model = _model(64)
  spread = approximation.spread_init(model, 1, 64, 10.0)(jax.random.key(0))
  w, b = np.asarray(spread[0]["w"])[0], np.asarray(spread[0]["b"])
  centres = -b / w  # sigma(w x + b) = 1/2 at x = -b / w
  assert np.all(np.abs(centres) <= 1 + 1e-5) and np.std(centres) > 0.3
  assert np.std(w) > 5  # steep: scale 10
  lecun = model.init(jax.random.key(0))
  np.testing.assert_array_equal(lecun[0]["b"], 0)
  # The output layer is the library's in both.
  np.testing.assert_array_equal(spread[1]["w"].shape, lecun[1]["w"].shape)


def test_random_points_are_a_function_of_seed_and_stream_and_carry_the_target():
  a = approximation.random_points("bumps_2d", 16, seed=3, stream=0)
  np.testing.assert_array_equal(a.x, approximation.random_points("bumps_2d", 16, 3, 0).x)
  assert a.x.shape == (16, 2) and np.all(np.abs(a.x) <= 1)
  assert not np.allclose(a.x, approximation.random_points("bumps_2d", 16, 4, 0).x)
  assert not np.allclose(a.x, approximation.random_points("bumps_2d", 16, 3, 1).x)
  np.testing.assert_allclose(a.y, approximation.TARGETS["bumps_2d"][1](jnp.asarray(a.x)),
                             rtol=1e-6)


def test_full_batch_step_through_the_kernel_is_gradient_descent_on_the_mse():
  model = _model(4)
  subset = approximation.random_points("sines_1d", 8, seed=0, stream=0)
  loss_fn = approximation.mse_loss_fn(model)
  opt = optim.make_optimizer(config_lib.optimizer(name="sgd", learning_rate=0.5), 1)
  (params,) = harness.train_seeds(model, loss_fn, opt, 1, 8, [subset], [7],
                                  batches=approximation.full_batches)
  init = model.init(jax.random.split(jax.random.key(7))[0])  # kernel.init_state's half
  grads = jax.grad(lambda p: loss_fn(p, subset.x, subset.y, None)[0])(init)
  expected = jax.tree.map(lambda p, g: p - 0.5 * g, init, grads)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _tiny_config():
  config = exp_approximation.get_config()
  config.num_steps = 300
  config.experiment.update(targets=("sines_1d",), widths=(2, 32), seeds=2, train_points=128,
                           valid_points=64, learning_rates=(3e-3, 3e-2), grid_points_1d=201)
  return config


@pytest.mark.slow
def test_runner_tunes_each_init_on_validation_and_the_error_falls_with_width(tmp_path):
  config = _tiny_config()
  workdir = str(tmp_path / "approx")
  result = experiments.run(config, workdir)
  sizes = result["sines_1d"]["sizes"]
  assert [e["size"] for e in sizes] == [2, 32]
  for e in sizes:
    assert tuple(e["arms"]) == ("lecun", "spread")
    for arm in e["arms"].values():
      # Lower is better: the chosen rate has the lowest mean validation RMS of the grid.
      means = {c["setting"]["learning_rate"]: np.mean([v["rms"] for v in c["valid"]])
               for c in arm["grid"]}
      assert arm["chosen"]["learning_rate"] == min(means, key=means.get)
      assert all(r["rms"] <= r["max"] for r in arm["test"])
  narrow, wide = (e["arms"]["spread"]["stats"]["rms"]["mean"] for e in sizes)
  assert wide < 0.5 * narrow, (narrow, wide)
  assert sizes[1]["arms"]["spread"]["stats"]["rms"]["vs_baseline"]["n"] == 2
  fold = approximation.fold(result["sines_1d"], "spread")
  assert fold["ci"][0] <= fold["mean"] <= fold["ci"][1] and fold["mean"] > 2
  for name in ("results.md", "results.json", "metrics.jsonl", "approximation.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert {json.loads(line)["split"] for line in f} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "| 32 | spread | learning_rate=" in text and "grid RMS at H=2 / at H=32" in text
  assert "look, not a finding" in text  # 2 seeds
  assert experiments.run(config, workdir)["finished"]


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(targets=("sines_3d",)), "experiment.targets[0]='sines_3d'"),
    (lambda c: c.experiment.update(widths=(4, 0)), "experiment.widths=(4, 0)"),
    (lambda c: c.experiment.update(inits=("lecun", "xavier")), "experiment.inits[1]='xavier'"),
    (lambda c: c.experiment.update(baseline="spread", inits=("lecun",)),
     "experiment.baseline='spread'"),
    (lambda c: c.experiment.update(learning_rates=(1e-2, -1.0)), "learning_rates=(0.01, -1.0)"),
    (lambda c: c.experiment.update(seeds=1), "seeds"),
    (lambda c: c.experiment.update(init_scale=0.0), "init_scale"),
    (lambda c: c.model.update(hidden_sizes=(4, 4)), "one hidden layer"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_approximation.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value) and "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
