"""Tiny versions of the lecture's experiments 3-6: surrogate metrics, optimizers on hard
curvature, universal approximation and mini-batch gradient variance."""
import json
import os
import sys

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets as skdatasets
from sklearn import metrics as skmetrics

from configs import exp_approximation
from configs import exp_batch_size
from configs import exp_curvature
from configs import exp_surrogate
from research import config_lib
from research import data as data_lib
from research import errors
from research import losses
from research import models
from research import optim
from research.experiments import approximation
from research.experiments import batch_size
from research.experiments import curvature
from research.experiments import surrogate


def _outputs(workdir, *pngs):
  """Asserts the runner wrote its results and plots; returns results.json."""
  for name in ("results.md", "results.json", "metrics.jsonl", *pngs):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


# ------------------------------------------------------------------- 3. surrogate vs metric


def test_f1_and_mae_on_hand_examples():
  # Positives: tp = 2 (rows 0, 1), fp = 2 (rows 2, 3), fn = 1 (row 4): P = 1/2, R = 2/3.
  pred = np.array([1, 1, 1, 1, 0, 0])
  label = np.array([1, 1, 0, 0, 1, 0])
  assert surrogate.binary_f1(pred, label) == pytest.approx(4 / 7)
  assert surrogate.binary_f1(pred, label) == pytest.approx(skmetrics.f1_score(label, pred))
  # 3 classes; class 2 is never predicted (F1 0), class 0: tp 1 fp 1 fn 0 -> 2/3,
  # class 1: tp 2 fp 1 fn 1 -> 2/3.
  pred = np.array([0, 0, 1, 1, 1])
  label = np.array([0, 1, 1, 1, 2])
  np.testing.assert_allclose(surrogate.f1_per_class(pred, label, 3), [2 / 3, 2 / 3, 0.0])
  assert surrogate.macro_f1(pred, label, 3) == pytest.approx(
      skmetrics.f1_score(label, pred, average="macro", zero_division=0))
  assert surrogate.mean_absolute_error([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]) == pytest.approx(1.0)


def test_binary_dataset_relabels_and_subsamples_positives():
  x = np.arange(40, dtype=np.float32)[:, None]
  y = np.arange(40) % 4  # 10 examples of each of 4 classes
  split = data_lib.Split(x, y.astype(np.int32))
  ds = data_lib.Dataset("toy", split, split, split, num_classes=4)
  out = surrogate.binary_dataset(ds, positive_class=3, positive_keep=0.5, seed=0)
  assert out.num_classes == 2
  assert set(np.unique(out.train.y)) <= {0, 1}
  assert (out.train.y == 0).sum() == 30  # every negative kept
  assert 0 < out.train.y.sum() < 10  # about half of the 10 positives
  np.testing.assert_array_equal(out.train.x[out.train.y == 1, 0] % 4, 3)
  with pytest.raises(errors.ConfigError, match="positive_class"):
    surrogate.binary_dataset(ds, positive_class=4, positive_keep=1.0, seed=0)


def test_diabetes_targets_round_trip_to_the_original_units():
  ds, t_mean, t_std = surrogate.diabetes(config_lib.sklearn_data("diabetes"))
  _, t_N = skdatasets.load_diabetes(return_X_y=True)
  assert len(ds.train) + len(ds.valid) + len(ds.test) == len(t_N)
  assert abs(ds.train.y.mean()) < 1e-5 and ds.train.y.std() == pytest.approx(1, abs=1e-5)
  back = np.concatenate([s.y for s in (ds.train, ds.valid, ds.test)]) * t_std + t_mean
  np.testing.assert_allclose(np.sort(back), np.sort(t_N), rtol=1e-5)


def _tiny_surrogate(arg, **fields):
  config = exp_surrogate.get_config(arg)
  config.num_steps, config.eval_every = 20, 10
  config.model.hidden_sizes = (16,)
  config.update(fields)
  return config


@pytest.mark.parametrize("arg,metric", [("macro_f1", "macro_f1"), ("binary_f1_cancer", "f1"),
                                        ("mae", "mae")])
def test_surrogate_runner_logs_loss_and_metric_per_eval(tmp_path, arg, metric):
  out = surrogate.run(_tiny_surrogate(arg), str(tmp_path))
  saved = _outputs(tmp_path, "surrogate.png")
  assert [r["step"] for r in out["evals"]] == [10, 20]
  for r in out["evals"]:
    assert np.isfinite(r["loss"]) and np.isfinite(r[metric])
  assert saved["best_loss"]["loss"] == min(r["loss"] for r in out["evals"])
  values = [r[metric] for r in out["evals"]]
  assert out["best_metric"][metric] == (min(values) if metric == "mae" else max(values))
  assert set(out["test"]) == {"loss", "metric"}
  if metric != "mae":
    assert all(0 <= v <= 1 for v in values)
  if arg == "binary_f1_cancer":  # a quarter of the malignant tumours, out of 212
    assert 30 <= sum(out["positives"].values()) <= 80


def test_bleu_is_100_for_a_perfect_copy_and_lower_otherwise():
  pytest.importorskip("sacrebleu")
  refs = ["the cat sat on the mat", "a dog ran in the park"]
  assert surrogate.bleu(refs, refs) == pytest.approx(100.0)
  assert surrogate.bleu(["the cat sat on a hat", "a dog ran"], refs) < 60
  assert surrogate.bleu(["the cat sat on a hat", "a dog ran"], refs, "char") > surrogate.bleu(
      ["zzz", "qqq"], refs, "char")


def test_missing_sacrebleu_names_the_pip_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "sacrebleu", None)  # `import sacrebleu` now fails
  with pytest.raises(errors.ConfigError, match="pip install sacrebleu"):
    surrogate.bleu(["a"], ["a"])


def test_greedy_generation_keeps_the_prompt_and_follows_the_argmax():
  cfg = exp_surrogate.get_config("bleu").model
  cfg.embed_dim, cfg.hidden_size = 4, 8
  model = models.build(cfg, (8,), 7)
  params = jax.jit(model.init)(jax.random.key(0))
  ids = np.random.default_rng(0).integers(0, 7, (3, 8)).astype(np.int32)
  out = surrogate.make_generate(model, prompt_len=5)(params, ids, jax.random.key(2))
  np.testing.assert_array_equal(out[:, :5], ids[:, :5])
  # Causal model: rerunning it on the finished buffer predicts every generated character.
  rerun = jax.jit(lambda p, x: jnp.argmax(model.apply(p, x), -1))(params, out)
  np.testing.assert_array_equal(out[:, 5:], rerun[:, 4:-1])


@pytest.mark.slow
def test_bleu_path_runs_on_a_tiny_char_model(tmp_path):
  pytest.importorskip("sacrebleu")
  config = exp_surrogate.get_config("bleu")
  config.data.seq_len = 12
  config.model.embed_dim, config.model.hidden_size = 8, 16
  config.experiment.prompt_len, config.experiment.num_prompts = 6, 4
  config.num_steps, config.eval_every, config.batch_size = 10, 5, 8
  out = surrogate.run(config, str(tmp_path))
  _outputs(tmp_path, "surrogate.png")
  for r in out["evals"]:
    assert 0 <= r["bleu_13a"] <= 100 and 0 <= r["bleu_char"] <= 100
    assert r["bleu"] == r["bleu_char"]  # the config tracks character BLEU
    assert len(r["sample"]["truth"]) > 0


# ------------------------------------------------------------------------ 4. hard curvature


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


@pytest.mark.slow
def test_curvature_runner_tiny(tmp_path):
  config = exp_curvature.get_config()
  config.experiment.problems = ("rosenbrock", "deep_mlp")
  config.experiment.optimizers = ("momentum",)
  config.experiment.num_steps_2d = 30
  config.experiment.learning_rates = (1e-3, 1e-2, 1.0)
  config.model.hidden_sizes = (8,) * 3
  config.num_steps, config.log_every = 10, 5
  out = curvature.run(config, str(tmp_path))
  saved = _outputs(tmp_path, "trajectories.png", "curves.png")
  assert len(out["rows"]) == 2 * 1 * 2  # problems x optimizers x {no clip, clip}
  deep = [r for r in out["rows"] if r["problem"] == "deep_mlp"]
  for r in deep:
    assert [c["step"] for c in r["curve"]] == [0, 5, 10]
    assert len(r["curve"][0]["grad_norm_per_layer"]) == 4  # 3 hidden layers + output
  # Sigmoid layers shrink the gradient towards the input at init.
  assert deep[0]["grad_ratio_first_last_init"] < 1
  assert len(saved["rows"]) == len(out["rows"])


# ------------------------------------------------------------------- 5. universal approximation


@pytest.mark.slow
def test_approximation_error_falls_with_width(tmp_path):
  config = exp_approximation.get_config()
  config.experiment.targets = ("sines_1d",)
  config.experiment.widths = (1, 32)
  config.experiment.num_seeds = 2
  config.experiment.train_points = 128
  config.experiment.grid_points_1d, config.experiment.grid_points_2d = 201, 21
  config.num_steps = 200
  config.optimizer.learning_rate, config.optimizer.schedule = 0.03, "constant"
  out = approximation.run(config, str(tmp_path))
  _outputs(tmp_path, "approximation.png")
  narrow, wide = out["rows"]
  assert (narrow["width"], wide["width"]) == (1, 32)
  assert wide["rms_median"] < 0.5 * narrow["rms_median"], (narrow, wide)
  assert wide["rms_best"] <= wide["max_best"]


def test_dense_grid_covers_the_square():
  g = approximation.dense_grid(2, 3)
  assert g.shape == (9, 2)
  np.testing.assert_array_equal(np.unique(g[:, 0]), [-1, 0, 1])


# --------------------------------------------------------------------------- 6. batch size


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


def test_per_example_grads_average_to_the_batch_gradient():
  model_cfg = exp_batch_size.get_config().model
  model_cfg.hidden_sizes = (4,)
  model = models.build(model_cfg, (5,), 3)
  loss_fn = losses.make_loss_fn(model, "sigmoid", 0.0, 10, 3)

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


@pytest.mark.slow
def test_batch_size_runner_tiny(tmp_path):
  config = exp_batch_size.get_config()
  config.model.hidden_sizes = (8,)
  config.experiment.batch_sizes = (1, 64, 0)
  config.experiment.target_loss = 2.0
  config.experiment.max_epochs = 3
  config.experiment.variance_batches = 200
  out = batch_size.run(config, str(tmp_path))
  _outputs(tmp_path, "batch_size.png")
  assert [r["batch_size"] for r in out["runs"]] == [1, 64, out["m"]]
  assert out["runs"][0]["reached"]
  for v in out["variance"]:
    if v["batch_size"] < out["m"]:
      assert 0.6 < v["ratio"] < 1.6, v
