"""Data sets that ship inside scikit-learn: no network, ever.

The CSV files are read from scikit-learn's installed data folder without importing
scikit-learn (an import of several seconds), exactly as sklearn.datasets.load_digits and
load_breast_cancer read them. Also holds `fixed_test_split`, shared by the loaders whose source
defines its own test set.
"""
import importlib.util
import os

import ml_collections
import numpy as np

from research import config_lib
from research.data import core
from research import errors

IMAGE_SIZES = (0, 8, 28, 32)  # digits: 0 = flat 64-vector, else an NHWC image of that side
_REINSTALL = "reinstall it: pip install --force-reinstall scikit-learn"


def config(name: str = "digits", **overrides) -> ml_collections.ConfigDict:
  """config.data for digits / breast_cancer (the fields live in research.config_lib)."""
  return config_lib.sklearn_data(name, **overrides)


def _bundled_csv(filename: str) -> str:
  """The path of one of scikit-learn's bundled data files (sklearn/datasets/data/)."""
  spec = importlib.util.find_spec("sklearn")  # Locates the package without importing it.
  path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", filename) if (
      spec and spec.submodule_search_locations) else filename
  if not os.path.isfile(path):
    raise errors.DataError(f"{filename} was not found in scikit-learn's data folder ({path}); "
                           + _REINSTALL)
  return path


def _read_table(path: str, num_features: int, num_classes: int,
                skiprows: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """x_NxD and int y_N of a CSV of D features then a label, checked: D columns, finite
  features, integer labels in 0..num_classes-1 (DataError naming the file otherwise)."""
  try:
    data = np.loadtxt(path, delimiter=",", skiprows=skiprows, ndmin=2)
  except ValueError as e:
    raise errors.DataError(f"{path} is not a table of numbers ({e}); {_REINSTALL}") from None
  if data.shape[1] != num_features + 1:
    raise errors.DataError(f"{path} has {data.shape[1]} columns, not {num_features + 1} "
                           f"({num_features} features and a label); {_REINSTALL}")
  core.check_finite(data[:, :-1], path, _REINSTALL)
  y = core.check_labels(data[:, -1], num_classes, path, _REINSTALL)
  return data[:, :-1], y.astype(np.int64)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """x_Nx64 (grey levels 0..16) and y_N of scikit-learn's digits.csv.gz, N = 1,797."""
  return _read_table(_bundled_csv("digits.csv.gz"), 64, 10)


def load_breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray]:
  """x_Nx30 and y_N (0 = malignant, 1 = benign) of scikit-learn's breast_cancer.csv."""
  # The first line is a header: n_samples, n_features, then the target names.
  return _read_table(_bundled_csv("breast_cancer.csv"), 30, 2, skiprows=1)


def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """A_OxI: linear interpolation with half-pixel centres, edges clamped.

  The same weights as jax.image.resize(method="linear") when upsampling, so an image
  resizes as A @ img_IxI @ A.T.
  """
  centres_O = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
  w_OxI = np.maximum(0.0, 1.0 - np.abs(centres_O[:, None] - np.arange(n_in)[None, :]))
  return w_OxI / w_OxI.sum(axis=1, keepdims=True)


def digits_images(x_Nx64: np.ndarray, image_size: int) -> np.ndarray:
  """Flat 8x8 digits -> x_NxSxSx1 with S = image_size.

  Larger sizes are bilinear upsamplings: 28/8 = 3.5 is not an integer, so nearest
  neighbour would make uneven 3- and 4-pixel blocks, while linear interpolation keeps the
  strokes smooth (and keeps the 0..16 grey range).
  """
  x_Nx8x8 = x_Nx64.reshape(-1, 8, 8).astype(np.float64)
  if image_size != 8:
    a_Sx8 = linear_resize_matrix(8, image_size)
    x_Nx8x8 = np.einsum("oh,nhw,pw->nop", a_Sx8, x_Nx8x8, a_Sx8)
  return x_Nx8x8[..., None]


@core.register("digits")
def digits(cfg) -> core.Dataset:
  """1,797 handwritten digits, 8x8 grey levels 0..16; 10 classes.

  cfg.image_size = 0 gives 64 flat features; 8, 28 or 32 gives NHWC images (see
  `digits_images`). The split depends on split_seed alone, so it is the same for every size.
  """
  errors.check_choice("data.image_size", cfg.image_size, IMAGE_SIZES)
  x, y = load_digits_arrays()
  if cfg.image_size:
    x = digits_images(x, cfg.image_size)
  return core.split_and_standardize(
      x, y, name="digits", num_classes=10, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)


@core.register("breast_cancer")
def breast_cancer(cfg) -> core.Dataset:
  """569 tumours, 30 real-valued features; binary (0 = malignant, 1 = benign)."""
  if cfg.image_size:
    raise errors.ConfigError(
        f"config.data.image_size={cfg.image_size!r} applies to digits only; set it to 0 for "
        "breast_cancer")
  x, y = load_breast_cancer_arrays()
  return core.split_and_standardize(
      x, y, name="breast_cancer", num_classes=2, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)
