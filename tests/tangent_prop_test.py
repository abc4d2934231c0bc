"""Tangent propagation: the tangents are the transformations' derivatives, forward mode gives
J t, and the runner under the experiment harness (research/experiments/tangent_prop.py)."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import exp_tangent_prop
from research import config_lib
from research import data as data_lib
from research import errors
from research import experiments
from research import models
from research.experiments import tangent_prop


@pytest.fixture(scope="module")
def digits_images():
  return data_lib.load(config_lib.sklearn_data("digits", image_size=8))


def _mlp(hidden=(16,)):
  return ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=hidden, activation="relu",
                                        dropout=0.0))


def test_image_tangents_are_the_derivatives_of_the_transformations(digits_images):
  x = jnp.asarray(digits_images.train.x[:3])
  smooth = tangent_prop.blur(x, 1.0)
  tangents = tangent_prop.image_tangents(x, 1.0)
  eps, r = 1e-2, 4.0  # r: half the 8-pixel side; the rotation tangent is per 1/r radian
  zeros = jnp.zeros((3,))
  moves = [(jnp.stack([zeros + eps, zeros], 1), zeros),
           (jnp.stack([zeros, zeros + eps], 1), zeros),
           (jnp.zeros((3, 2)), zeros + eps / r)]
  for t, (shift, angle) in zip(tangents, moves):
    fd = (tangent_prop.affine(smooth, shift, angle) - tangent_prop.affine(smooth, -shift, -angle)
          ) / (2 * eps)
    # Away from the border, where the edge-padded differences and the resampling agree.
    inner = (slice(None), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(t[inner], fd[inner], rtol=0.05, atol=0.02)


def test_forward_mode_directional_derivative_is_the_reverse_mode_jacobian_times_t():
  model = models.build(_mlp(), (8, 8, 1), 5)
  params = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  t_TxB = jax.random.normal(jax.random.key(2), (3, 2, 8, 8, 1))

  @jax.jit
  def both(params, x, t_TxB):
    _, d_TxBxK = tangent_prop.output_tangents(model.apply, params, x, t_TxB, "softmax")
    probs = lambda x: jax.nn.softmax(model.apply(params, x), axis=-1)
    j_BxKxB8x8x1 = jax.jacrev(probs)(x)  # one backward pass per output unit
    return d_TxBxK, jnp.einsum("bkcijd,tcijd->tbk", j_BxKxB8x8x1, t_TxB)

  forward, reverse = both(params, x, t_TxB)
  np.testing.assert_allclose(forward, reverse, rtol=1e-4, atol=1e-6)


def test_random_affine_keeps_shapes_and_zero_moves_are_the_identity(digits_images):
  x = jnp.asarray(digits_images.train.x[:4])
  np.testing.assert_allclose(tangent_prop.affine(x, jnp.zeros((4, 2)), jnp.zeros(4)), x,
                             atol=1e-5)
  moved = tangent_prop.random_affine(jax.random.key(0), x, 1.0, 10.0)
  assert moved.shape == x.shape and not np.allclose(moved, x)


def _tiny_config(steps=200, **experiment):
  config = exp_tangent_prop.get_config()
  config.data = config_lib.sklearn_data("digits", image_size=8, valid_fraction=0.1,
                                        test_fraction=0.5)
  config.model.hidden_sizes = (32,)
  config.num_steps, config.eval_every, config.log_every = steps, steps // 2, steps // 2
  config.batch_size = 20
  config.experiment.update(dict(seeds=2, labels_per_class=(10,), learning_rates=(1e-3,),
                                augment_magnitudes=(0.5,), tangent_weights=(100.0,)))
  config.experiment.update(experiment)
  return config


def test_every_arm_tunes_the_step_size_and_its_strength_equally_in_kind():
  config = exp_tangent_prop.get_config()
  exp = config.experiment
  strengths = {"augment": exp.augment_magnitudes, "tangent_prop": exp.tangent_weights,
               "mtc": exp.tangent_weights}
  assert len({len(b) for b in strengths.values()}) == 1 and len(exp.tangent_weights) >= 2
  assert len(exp.learning_rates) >= 2 and exp.max_extensions >= 1
  assert exp.seeds >= 5 and exp.baseline == "none"
  assert tuple(exp.methods) == tangent_prop.METHODS


@pytest.mark.slow
def test_runner_writes_its_tables_and_tangent_prop_flattens_the_output(tmp_path):
  workdir = str(tmp_path / "tp")
  result = experiments.run(_tiny_config(methods=("none", "tangent_prop")), workdir)
  (entry,) = result["sizes"]
  st = {m: arm["stats"] for m, arm in entry["arms"].items()}
  assert st["tangent_prop"]["tangent_norm"]["mean"] < 0.7 * st["none"]["tangent_norm"]["mean"]
  assert st["tangent_prop"]["tangent_norm"]["vs_baseline"]["n"] == 2
  assert entry["arms"]["tangent_prop"]["chosen"] == {"learning_rate": 1e-3, "gamma": 100.0}
  for name in ("results.md", "results.json", "metrics.jsonl", "tangent_prop.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert {json.loads(line)["split"] for line in f} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "| 10 | tangent_prop | learning_rate=0.001, gamma=100 |" in text and "test sum_t ‖J t‖²" in text
  assert "subsets redrawn per seed, stratified" in text


def test_tangents_travel_with_their_images_through_the_channels(digits_images):
  x = np.asarray(digits_images.train.x[:4])
  t = np.stack([x + 1, x + 2])
  packed = tangent_prop.with_tangents(x, t)
  assert packed.shape == (*x.shape[:3], 3 * x.shape[3])
  x_back, t_back = tangent_prop.split_tangents(jnp.asarray(packed), x.shape[-1])
  np.testing.assert_array_equal(x_back, x)
  np.testing.assert_array_equal(t_back, t)


@pytest.mark.slow
def test_manifold_tangent_classifier_learns_tangents_and_flattens_along_them(tmp_path):
  """The MTC arm trains under the harness, and its tangents are what the method says: k per
  image from a contractive encoder trained without labels, scaled to the hand-specified
  tangents' mean length."""
  config = _tiny_config(methods=("none", "mtc"), mtc_steps=300, mtc_hidden=16,
                        mtc_tangents=2)
  result = experiments.run(config, str(tmp_path / "mtc"))
  (entry,) = result["sizes"]
  assert entry["arms"]["mtc"]["chosen"] == {"learning_rate": 1e-3, "gamma": 100.0}
  acc = [r["accuracy"] for r in entry["arms"]["mtc"]["test"]]
  assert min(acc) > 0.5, acc  # 10 classes: a working classifier, not chance

  data = data_lib.load(config.data)
  x = data.train.x[:32]
  lo, hi = float(data.train.x.min()), float(data.train.x.max())
  encoder = tangent_prop.train_contractive_encoder(
      (data.train.x.reshape(len(data.train), -1) - lo) / (hi - lo), 0, hidden=16, beta=0.3,
      steps=300, batch_size=64, learning_rate=1e-3)
  t = tangent_prop.mtc_tangents(encoder, x, lo, hi, 2, 1.0)
  assert t.shape == (2, *x.shape)
  hand = tangent_prop.image_tangents(jnp.asarray(x), 1.0)
  np.testing.assert_allclose(np.sqrt(np.square(t).sum(axis=(2, 3, 4))).mean(),
                             np.sqrt(np.square(hand).sum(axis=(2, 3, 4))).mean(), rtol=1e-4)


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(mtc_tangents=200),
     "config.experiment.mtc_tangents=200 is more than the contractive encoder's 128"),
    (lambda c: c.experiment.update(methods=("none", "jitter")),
     "experiment.methods[1]='jitter' is not supported"),
    (lambda c: c.experiment.update(tangent_weights=(10.0, float("nan"))),
     "config.experiment.tangent_weights[]=nan must be a positive number"),
    (lambda c: c.experiment.update(augment_magnitudes=()), "augment_magnitudes is empty"),
    (lambda c: c.experiment.update(labels_per_class=(0,)), "labels_per_class=(0,) must be"),
    (lambda c: c.experiment.update(labels_per_class=(400,)),
     "400 labels per class cannot be drawn"),
    (lambda c: c.experiment.update(baseline="augment", methods=("none", "tangent_prop")),
     "experiment.baseline='augment' is not supported"),
    (lambda c: c.augment.update(ops=("noise",)), "config.augment.ops"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_tangent_prop.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
