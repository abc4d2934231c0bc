"""The fixed split, train-only standardisation and the resumable batch order."""
import ml_collections
import numpy as np
import pytest

from research import config_lib
from research import data
from research import errors


def test_split_is_fixed_by_seed_and_disjoint():
  x = np.arange(100, dtype=np.float32)[:, None]
  y = np.arange(100)
  kwargs = dict(name="t", num_classes=100, valid_fraction=0.1, test_fraction=0.2,
                standardize="none")
  a = data.split_and_standardize(x, y, seed=3, **kwargs)
  b = data.split_and_standardize(x, y, seed=3, **kwargs)
  c = data.split_and_standardize(x, y, seed=4, **kwargs)
  np.testing.assert_array_equal(a.train.y, b.train.y)
  assert not np.array_equal(a.train.y, c.train.y)
  assert (len(a.train), len(a.valid), len(a.test)) == (70, 10, 20)
  all_y = np.concatenate([a.train.y, a.valid.y, a.test.y])
  np.testing.assert_array_equal(np.sort(all_y), y)


@pytest.mark.parametrize("mode", ["feature", "global"])
def test_standardisation_is_fitted_on_train_only(mode):
  rng = np.random.default_rng(0)
  x = rng.normal(5.0, 3.0, size=(200, 4)).astype(np.float32)
  ds = data.split_and_standardize(x, np.zeros(200), name="t", num_classes=1,
                                  valid_fraction=0.1, test_fraction=0.2, seed=0,
                                  standardize=mode)
  axis = 0 if mode == "feature" else None
  np.testing.assert_allclose(ds.train.x.mean(axis=axis), 0, atol=1e-5)
  np.testing.assert_allclose(ds.train.x.std(axis=axis), 1, atol=1e-5)
  # Test statistics are not forced to 0/1: they were not used in the fit.
  assert abs(float(ds.test.x.mean())) > 1e-4


def test_batch_order_covers_each_epoch_and_resumes_exactly():
  n, b = 10, 3  # 3 steps per epoch; one example dropped per epoch.
  full = data.batch_indices(seed=7, n=n, batch_size=b, start_step=0, num_steps=9)
  for epoch in range(3):
    seen = full[3 * epoch:3 * epoch + 3].ravel()
    assert len(set(seen.tolist())) == 9  # No repeats within an epoch.
  assert not np.array_equal(full[0:3], full[3:6])  # A fresh shuffle each epoch.
  resumed = data.batch_indices(seed=7, n=n, batch_size=b, start_step=4, num_steps=5)
  np.testing.assert_array_equal(resumed, full[4:])
  np.testing.assert_array_equal(full, data.batch_indices(7, n, b, 0, 9))


def test_batch_larger_than_data_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="batch_size=11 is larger than the 10"):
    data.batch_indices(seed=0, n=10, batch_size=11, start_step=0, num_steps=1)


def test_bundled_sklearn_sets_load_offline():
  digits = data.load(config_lib.sklearn_data("digits"))
  assert digits.input_shape == (64,) and digits.num_classes == 10
  assert len(digits.train) + len(digits.valid) + len(digits.test) == 1797
  cancer = data.load(config_lib.sklearn_data("breast_cancer"))
  assert cancer.input_shape == (30,) and cancer.num_classes == 2
  assert cancer.train.x.dtype == np.float32 and cancer.train.y.dtype == np.int32


def test_unknown_data_set_names_the_choices():
  with pytest.raises(errors.ConfigError, match="choose one of: .*'digits'"):
    data.load(ml_collections.ConfigDict({"name": "imagenet"}))
