"""Optimizers on hard curvature (research/experiments/curvature.py): the 2-D illustrations and
the deep sigmoid MLP under the harness."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import exp_curvature
from research import config_lib
from research import errors
from research import experiments
from research import optim
from research.experiments import curvature


@pytest.mark.parametrize("name", ["sgd", "momentum"])
def test_clipping_bounds_the_update_norm(name):
  eta, clip, beta = 0.1, 1.0, 0.9
  opt = optim.make_optimizer(config_lib.optimizer(name=name, learning_rate=eta, momentum=beta,
                                                  clip_global_norm=clip), 10)
  unclipped = optim.make_optimizer(config_lib.optimizer(name=name, learning_rate=eta,
                                                        momentum=beta), 10)
  params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
  state, free_state = opt.init(params), unclipped.init(params)
  # Momentum sums past clipped gradients: |update| <= eta clip / (1 - beta) at any step.
  bound = eta * clip * (1 if name == "sgd" else 1 / (1 - beta))
  for t in range(3):
    grads = jax.tree.map(lambda p: jnp.full_like(p, 100.0 * (t + 1)), params)
    updates, state = opt.update(grads, state, params)
    free, free_state = unclipped.update(grads, free_state, params)
    assert float(optax_norm(updates)) <= bound * (1 + 1e-5)
    assert float(optax_norm(free)) > 10 * bound
  if name == "sgd":  # One step of clipped SGD is exactly eta * clip long.
    assert float(optax_norm(updates)) == pytest.approx(eta * clip, rel=1e-5)


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in jax.tree.leaves(tree)))


@pytest.mark.parametrize("name", ["nesterov", "adam"])
def test_eta_factors_out_of_the_chain(name):
  """run_2d's vmap over eta relies on update(eta) = eta * update(1) for a constant schedule."""
  w = jnp.array([0.3, -2.0])
  f = curvature.rosenbrock
  traj = curvature.run_2d(f, w, curvature.method_config(name, 1.0), jnp.array([0.01]), 3)[0]
  opt = optim.make_optimizer(
      config_lib.optimizer(name=name, learning_rate=0.01, clip_global_norm=1.0), 3)
  state = opt.init(w)
  for t in range(3):
    updates, state = opt.update(jax.grad(f)(w), state, w)
    w = w + updates
    np.testing.assert_allclose(traj[t + 1], w, rtol=1e-5)


def test_momentum_beats_sgd_on_the_ill_conditioned_quadratic():
  f = curvature.quadratic(kappa=100.0, rotation_deg=30.0)
  w0, etas = jnp.array([-1.5, 1.0]), jnp.array([0.01])
  final = {name: float(f(curvature.run_2d(f, w0, curvature.method_config(name, 0.0), etas,
                                          100)[0, -1]))
           for name in ("sgd", "momentum")}
  assert final["momentum"] < 0.01 * final["sgd"], final


def test_steps_to_tolerance_ignores_a_transient_dip():
  assert curvature.steps_to_tolerance(np.array([5.0, 0.5, 0.05, 0.01]), 0.1) == 2
  assert curvature.steps_to_tolerance(np.array([5.0, 0.01, 3.0, 0.01]), 0.1) == 3
  assert curvature.steps_to_tolerance(np.array([5.0, 0.01, 3.0]), 0.1) is None


def _tiny_config():
  config = exp_curvature.get_config()
  config.experiment.problems = ("rosenbrock", "deep_mlp")
  config.experiment.optimizers = ("sgd", "adam")
  config.experiment.num_steps_2d = 30
  config.experiment.learning_rates = (1e-3, 1e-2, 1.0)
  # No grid extension: the diverging candidate below is a fixed grid's loser on purpose.
  config.experiment.update(depths=(3,), deep_width=8, seeds=2, max_extensions=0)
  # sgd's second step size overflows to NaN: a candidate that loses, not a failed run.
  config.experiment.deep_learning_rates = dict(sgd=(0.5, 1e38), adam=(1e-3, 1e-2))
  config.num_steps, config.log_every = 10, 5
  return config


@pytest.mark.slow
def test_curvature_runner_tunes_each_optimizer_and_keeps_the_2d_illustrations(tmp_path):
  workdir = str(tmp_path / "curv")
  out = experiments.run(_tiny_config(), workdir)
  for name in ("results.md", "results.json", "metrics.jsonl", "trajectories.png", "curves.png",
               "deep_mlp.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert len(out["rows_2d"]) == 2 * 2  # optimizers x {no clip, clip}
  (entry,) = out["deep"]["sizes"]
  assert entry["size"] == 3 and tuple(entry["arms"]) == ("sgd", "adam")
  sgd = entry["arms"]["sgd"]
  assert [g["valid"][0]["diverged"] for g in sgd["grid"]] == [0.0, 1.0]
  assert sgd["chosen"] == {"learning_rate": 0.5}
  for arm in entry["arms"].values():
    for r in arm["test"]:
      # Sigmoid layers shrink the gradient towards the input at init.
      assert r["log10_grad_ratio_init"] < 0 and np.isfinite(r["train_loss"])
  assert entry["arms"]["adam"]["stats"]["accuracy"]["vs_baseline"]["n"] == 2
  with open(os.path.join(workdir, "results.json")) as f:
    assert "trajectory" not in json.load(f)["rows_2d"][0]
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "| 3 | adam | learning_rate=" in text and "Illustrations, not findings" in text
  assert experiments.run(_tiny_config(), workdir)["finished"]


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(depths=(0,)), "experiment.depths=(0,) must be"),
    (lambda c: c.experiment.update(baseline="lbfgs"), "experiment.baseline='lbfgs'"),
    (lambda c: c.experiment.update(seeds=1), "config.experiment.seeds=1 must be"),
    (lambda c: c.experiment.deep_learning_rates.update(adam=(1e-3,)), "differ in length"),
    (lambda c: c.experiment.deep_learning_rates.update(sgd=(0.1, -1.0, 1.0, 3.0)),
     "deep_learning_rates.sgd=(0.1, -1.0, 1.0, 3.0) must be"),
    (lambda c: c.experiment.update(optimizers=("sgd", "lion")), "optimizers[1]='lion'"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_curvature.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
