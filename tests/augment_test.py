"""Augmentation: shapes, determinism per key, known values, labels left aligned."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from research import augment
from research import errors

B, H, W, C = 6, 5, 7, 2
X = jax.random.normal(jax.random.key(0), (B, H, W, C))
KEY = jax.random.key(1)

# One jitted function per op, shared by the tests (parameters are static).
crop = jax.jit(augment.random_crop, static_argnums=(2, 3))
flip = jax.jit(augment.random_flip, static_argnums=2)
translate = jax.jit(augment.random_translate, static_argnums=2)
noise = jax.jit(augment.gaussian_noise, static_argnums=2)
OPS = {"crop": functools.partial(crop, pad=2), "flip": functools.partial(flip, prob=0.5),
       "translate": functools.partial(translate, max_shift=2),
       "noise": functools.partial(noise, std=0.1)}


@pytest.mark.parametrize("name", sorted(OPS))
def test_shape_dtype_and_determinism(name):
  op = OPS[name]
  out = op(KEY, X)
  assert out.shape == X.shape and out.dtype == X.dtype
  np.testing.assert_array_equal(out, op(KEY, X))  # Same key, same output.
  assert not np.array_equal(out, op(jax.random.key(2), X))


@pytest.mark.parametrize("name", sorted(OPS))
def test_jit_matches_eager(name):
  eager = {"crop": lambda k, x: augment.random_crop(k, x, 2),
           "flip": lambda k, x: augment.random_flip(k, x, 0.5),
           "translate": lambda k, x: augment.random_translate(k, x, 2),
           "noise": lambda k, x: augment.gaussian_noise(k, x, 0.1)}[name]
  np.testing.assert_allclose(OPS[name](KEY, X), eager(KEY, X), rtol=1e-6, atol=1e-6)


def test_identities():
  np.testing.assert_array_equal(crop(KEY, X, 0, "constant"), X)  # Crop with pad 0.
  np.testing.assert_array_equal(translate(KEY, X, 0), X)
  np.testing.assert_array_equal(noise(KEY, X, 0.0), X)
  np.testing.assert_array_equal(flip(KEY, X, 0.0), X)
  np.testing.assert_array_equal(flip(KEY, flip(KEY, X, 0.5), 0.5), X)  # Flip twice.
  np.testing.assert_array_equal(flip(KEY, X, 1.0), X[:, :, ::-1, :])


def _offsets_found(out, padded):
  """For each example, the window offsets (i, j) of padded that equal out (numpy reference)."""
  found = []
  for b in range(out.shape[0]):
    hits = [(i, j) for i in range(padded.shape[1] - H + 1) for j in range(padded.shape[2] - W + 1)
            if np.array_equal(padded[b, i:i + H, j:j + W], out[b])]
    assert hits, f"example {b} is not a window of its padded image"
    found.append(hits[0])
  return found


@pytest.mark.parametrize("mode", augment.PAD_MODES)
def test_crop_is_a_window_of_the_padded_image(mode):
  pad = 2
  padded = np.pad(np.asarray(X), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  offsets = _offsets_found(np.asarray(crop(KEY, X, pad, mode)), padded)
  # Independent per example: six examples do not all get the same window.
  assert len(set(offsets)) > 1


def test_translate_moves_a_pixel_within_max_shift_with_zero_fill():
  x = np.zeros((32, 9, 9, 1), np.float32)
  x[:, 4, 4, 0] = 1.0
  out = np.asarray(translate(KEY, jnp.asarray(x), 3))
  assert out.sum() == 32  # Nothing leaves the frame for shifts of at most 3 from the centre.
  _, rows, cols, _ = np.nonzero(out)
  assert np.all(np.abs(rows - 4) <= 3) and np.all(np.abs(cols - 4) <= 3)
  assert len(set(zip(rows, cols))) > 5  # Different shifts for different examples.
  edge = np.zeros((1, 3, 3, 1), np.float32)
  edge[0, 0, 0, 0] = 1.0
  shifted = [np.asarray(translate(jax.random.key(k), jnp.asarray(edge), 1)) for k in range(20)]
  assert any(s.sum() == 0 for s in shifted)  # Shifted out of the frame: zeros fill in.


def test_noise_statistics():
  x = jnp.zeros((64, 8, 8, 3))
  out = np.asarray(noise(KEY, x, 0.5))
  assert abs(out.mean()) < 0.02 and abs(out.std() - 0.5) < 0.02


def test_examples_stay_in_their_slot_so_labels_stay_valid():
  # Example b is the constant image b + 1: after augmentation its non-zero pixels must still
  # all equal b + 1, so y_B still labels the same positions.
  x = jnp.broadcast_to(jnp.arange(1.0, B + 1)[:, None, None, None], (B, H, W, C))
  aug = jax.jit(augment.make_augment(augment.config(ops=("crop", "flip", "translate"),
                                                    crop_pad=2, max_shift=1)))
  out = np.asarray(aug(KEY, x))
  for b in range(B):
    values = np.unique(out[b])
    assert set(values) <= {0.0, b + 1.0} and b + 1.0 in values


def test_make_augment_composes_in_order_with_split_keys():
  cfg = augment.config(ops=("flip", "noise"), flip_prob=0.5, noise_std=0.3)
  k_flip, k_noise = jax.random.split(KEY, 2)
  want = augment.gaussian_noise(k_noise, augment.random_flip(k_flip, X, 0.5), 0.3)
  np.testing.assert_allclose(jax.jit(augment.make_augment(cfg))(KEY, X), want, rtol=1e-6,
                             atol=1e-6)
  identity = augment.make_augment(augment.config())
  assert identity(KEY, X) is X


@pytest.mark.parametrize("overrides, match", [
    (dict(ops=("rotate",)), "ops"),
    (dict(ops=("crop",), crop_pad=-1), "crop_pad"),
    (dict(ops=("crop",), crop_mode="wrap"), "crop_mode"),
    (dict(ops=("flip",), flip_prob=1.5), "flip_prob"),
    (dict(ops=("translate",), max_shift=1.5), "max_shift"),
    (dict(ops=("noise",), noise_std=-0.1), "noise_std"),
])
def test_bad_config_is_a_config_error(overrides, match):
  # A fresh ConfigDict, so ml_collections' own type check does not catch it first.
  cfg = ml_collections.ConfigDict({**augment.config().to_dict(), **overrides})
  with pytest.raises(errors.ConfigError, match=match):
    augment.make_augment(cfg)


def test_non_images_are_a_data_error():
  with pytest.raises(errors.DataError, match="x_BxHxWxC"):
    augment.random_flip(KEY, jnp.zeros((4, 40)))
