"""Tiny versions of issue 14's experiments: multi-task and semi-supervised learning (weight
sharing, sparse representations and tangent propagation have their own test files)."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import exp_multitask
from configs import exp_semi_supervised
from research import augment
from research import config_lib
from research import data as data_lib
from research import errors
from research import experiments
from research import models
from research.experiments import multitask
from research.experiments import report
from research.experiments import semi_supervised
from research.experiments import variants


def _outputs(workdir, png):
  """Asserts the runner wrote its results, records and plot; returns results.md's text."""
  for name in ("results.md", "results.json", "metrics.jsonl", png):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert {r["split"] for r in records} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    return f.read()


def _tiny(config, steps=60, **experiment):
  config.num_steps, config.eval_every, config.log_every = steps, steps // 2, steps // 2
  config.experiment.update(dict(repeats=1, **experiment))
  return config


@pytest.fixture(scope="module")
def digits_images():
  return data_lib.load(config_lib.sklearn_data("digits", image_size=8))


def _mlp(hidden=(16,)):
  return ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=hidden, activation="relu",
                                        dropout=0.0))


# ------------------------------------------------------------------------------ the helper


def test_two_source_batches_read_each_source_in_its_own_rows():
  batches = variants.two_source_batches(10, 4, 30, 6)(0, 0, 5)
  assert batches.shape == (5, 10)
  assert (batches[:, :4] < 10).all() and (batches[:, 4:] >= 10).all()
  assert (batches[:, 4:] < 40).all()
  # Source a alone is the library's batch order over its 10 rows.
  np.testing.assert_array_equal(batches[:, :4], data_lib.batch_indices(0, 10, 4, 0, 5))


def test_summary_and_cell():
  s = report.summarize([{"a": 0.9}, {"a": 0.8}], ["a"])["a"]
  assert s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(0.05)
  assert variants.cell(s) == "85.0 ± 5.0"


# -------------------------------------------------------------------------- 5. multi-task


def test_mnist_is_reduced_to_digits_counts():
  img = np.zeros((1, 28, 28, 1))
  img[0, 4:24, 12:17] = 255  # a vertical bar, 20 x 5 pixels: scaled to 32 x 8, centred
  x = multitask.mnist_as_digits(img).reshape(8, 8)
  expected = np.zeros((8, 8))
  expected[:, 3:5] = 16  # 4x4 blocks fully on in the two middle columns, on every row
  np.testing.assert_array_equal(x, expected)


def test_multitask_loss_reads_the_aux_rows_only_for_the_aux_head():
  model = multitask.make_model(4, (8,), 3, 2)
  params = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (5, 4))
  labels = jnp.array([0, 1, 2, 1, 0])
  single = multitask.make_loss_fn(3, 2, "single", 2, 1.0)
  aux = multitask.make_loss_fn(3, 2, "aux_mnist", 2, 1.0)
  # The single-task cost of x with every row past b_main replaced: it ignores them.
  both = jax.jit(lambda p, x, labels: (single(p, x, labels, None), aux(p, x, labels, None),
                                       single(p, x.at[2:].set(0.0), labels.at[2:].set(0), None)))
  (E_s, a_s), (E_a, a_a), (E_moved, _) = both(params, x, labels)
  assert float(a_s["data_loss"]) == pytest.approx(float(a_a["data_loss"]))
  assert float(E_a) == pytest.approx(float(a_a["data_loss"] + a_a["aux_loss"]))
  assert float(E_moved) == pytest.approx(float(E_s))


@pytest.mark.slow
def test_multitask_runner_writes_its_table_and_the_mnist_head_transfers(tmp_path):
  config = _tiny(exp_multitask.get_config(), 200, labels_per_class=(2,), seeds=2,
                 methods=("single", "aux_mnist", "pooled"), learning_rates=(1e-3,),
                 aux_weights=(1.0,))
  del config.experiment.repeats
  result = experiments.run(config, str(tmp_path / "mt"))
  arms = result["sizes"][0]["arms"]
  assert arms["aux_mnist"]["stats"]["aux_test_accuracy"]["mean"] > 0.6
  assert arms["aux_mnist"]["stats"]["aux_head_on_digits"]["mean"] > 0.3  # chance: 0.1
  assert "aux_head_on_digits" not in arms["single"]["stats"]
  assert arms["pooled"]["stats"]["accuracy"]["vs_baseline"]["n"] == 2
  text = _outputs(str(tmp_path / "mt"), "multitask.png")
  assert "| 2 | aux_mnist |" in text and "minus the digits head" in text


# -------------------------------------------------------------------- 6. semi-supervised


@pytest.fixture(scope="module")
def semi_losses(digits_images):
  """Every method's (E, aux) at one point, and pseudo_label's with tau = 1, in one jit."""
  model = models.build(_mlp(), (8, 8, 1), 10)
  aug = augment.make_augment(augment.config(ops=("translate", "noise"), max_shift=1,
                                            noise_std=0.3))
  fns = {m: semi_supervised.make_loss_fn(model, 10, m, 4, aug, 1.0, 0.95)
         for m in semi_supervised.METHODS}
  mean_teacher = fns["mean_teacher"]
  fns["mean_teacher"] = lambda p, *a: mean_teacher({"student": p, "teacher": p}, *a)
  fns["fixmatch_style tau=1"] = semi_supervised.make_loss_fn(
      model, 10, "fixmatch_style", 4, aug, 1.0, 1.0)
  fns["pseudo_label at its ramp's start"] = semi_supervised.make_loss_fn(
      model, 10, "pseudo_label", 4, aug, 1.0, 0.95,
      lambda step: semi_supervised.ramp("pseudo_label", step, 100, 0.1, 0.4))
  every = jax.jit(lambda p, x, labels, key: {m: f(p, x, labels, key, 5)
                                             for m, f in fns.items()})
  params = model.init(jax.random.key(0))
  x = jnp.asarray(digits_images.train.x[:12])
  labels = jnp.asarray(digits_images.train.y[:12])
  key = jax.random.key(1)
  return every(params, x, labels, key), every(params, x, labels.at[4:].set(-1), key)


def test_no_method_reads_the_unlabelled_labels(semi_losses):
  with_labels, hidden = semi_losses
  for method in semi_supervised.METHODS:
    assert float(with_labels[method][0]) == float(hidden[method][0]), method


def test_targets_below_the_threshold_or_before_the_ramp_add_nothing(semi_losses):
  _, out = semi_losses
  E_thresholded, aux = out["fixmatch_style tau=1"]
  assert float(aux["confident"]) == 0.0
  assert float(E_thresholded) == pytest.approx(float(out["labels_augment"][0]))
  # Lee's pseudo-label has no threshold: every unlabelled row has a target...
  assert float(out["pseudo_label"][1]["unlabelled_loss"]) > 0
  assert float(out["pseudo_label"][0]) > float(out["labels_augment"][0])
  # ...weighted by its ramp, 0 before ramp_start.
  assert float(out["pseudo_label at its ramp's start"][0]) == pytest.approx(
      float(out["labels_augment"][0]))
  assert float(out["consistency"][1]["unlabelled_loss"]) > 0


def test_mean_teacher_moves_the_teacher_by_its_moving_average_and_never_by_gradient():
  """The student takes the inner optimizer's step; the teacher moves to
  alpha teacher + (1 - alpha) student_new; the consistency term's gradient never reaches it."""
  model = models.build(_mlp(), (8, 8, 1), 10)
  aug = augment.make_augment(augment.config(ops=("translate",), max_shift=1))
  loss_fn = semi_supervised.make_loss_fn(model, 10, "mean_teacher", 4, aug, 1.0, 0.95)
  student = model.init(jax.random.key(0))
  teacher = jax.tree.map(lambda a: a + 0.1, student)
  params = {"student": student, "teacher": teacher}
  x = jnp.zeros((12, 8, 8, 1)).at[:, 2:6, 3].set(1.0)
  labels = jnp.full((12,), -1).at[:4].set(3)
  grads = jax.grad(lambda p: loss_fn(p, x, labels, jax.random.key(1), 5)[0])(params)
  assert all(not np.asarray(g).any() for g in jax.tree.leaves(grads["teacher"]))
  assert any(np.asarray(g).any() for g in jax.tree.leaves(grads["student"]))
  inner = optax.sgd(0.5)
  opt = semi_supervised.mean_teacher_optimizer(inner, 0.9)
  updates, _ = opt.update(grads, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  want_student = optax.apply_updates(student, inner.update(grads["student"], inner.init(
      student))[0])
  chex.assert_trees_all_close(new["student"], want_student, rtol=1e-6)
  chex.assert_trees_all_close(
      new["teacher"], jax.tree.map(lambda t, s: 0.9 * t + 0.1 * s, teacher, want_student),
      rtol=1e-5, atol=1e-7)


def test_the_ramps_follow_lee_and_laine_and_aila():
  lee = [float(semi_supervised.ramp("pseudo_label", t, 100, 0.1, 0.4)) for t in (0, 10, 25, 40, 90)]
  np.testing.assert_allclose(lee, [0, 0, 0.5, 1, 1], atol=1e-6)
  for method in ("consistency", "mean_teacher"):
    pi = [float(semi_supervised.ramp(method, t, 100, 0.1, 0.4)) for t in (0, 20, 40, 90)]
    np.testing.assert_allclose(pi, [np.exp(-5), np.exp(-5 * 0.25), 1, 1], rtol=1e-6)


@pytest.mark.slow
def test_semi_supervised_runner_writes_its_table(tmp_path):
  config = _tiny(exp_semi_supervised.get_config(), 60, labels_per_class=(2,), seeds=2,
                 unlabelled_weights=(1.0,), learning_rates=(1e-3,))
  del config.experiment.repeats
  result = experiments.run(config, str(tmp_path / "semi"))
  assert tuple(result["sizes"][0]["arms"]) == semi_supervised.METHODS
  table = _outputs(str(tmp_path / "semi"), "semi_supervised.png")
  assert all(f"| 2 | {m} |" in table for m in semi_supervised.METHODS)
  assert "of those, right" in table


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("config_module,edit,fragment", [
    (exp_multitask, lambda c: c.experiment.update(labels_per_class=()),
     "labels_per_class=() must be a non-empty"),
    (exp_multitask, lambda c: c.experiment.update(baseline="aux_parity",
                                                  methods=("single", "aux_mnist")),
     "experiment.baseline='aux_parity' is not supported"),
    (exp_semi_supervised, lambda c: c.augment.update(ops=()), "config.augment.ops is empty"),
    (exp_semi_supervised, lambda c: c.experiment.update(threshold=1.5),
     "config.experiment.threshold=1.5 must be a finite number in [0, 1]"),
    (exp_semi_supervised, lambda c: c.experiment.update(ema_decay=1.0),
     "config.experiment.ema_decay=1.0 must be a finite number in [0, 1)"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, config_module, edit,
                                                       fragment):
  config = config_module.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
