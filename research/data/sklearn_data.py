"""Data sets that ship inside scikit-learn: no network, ever.

Also holds `fixed_test_split`, shared by the loaders whose source defines its own test set.
"""
import ml_collections
import numpy as np
from sklearn import datasets as skdatasets

from research import config_lib
from research import data
from research import errors

IMAGE_SIZES = (0, 8, 28, 32)  # digits: 0 = flat 64-vector, else an NHWC image of that side


def config(name: str = "digits", **overrides) -> ml_collections.ConfigDict:
  """config.data for digits / breast_cancer (the fields live in research.config_lib)."""
  return config_lib.sklearn_data(name, **overrides)


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


@data.register("digits")
def digits(cfg) -> data.Dataset:
  """1,797 handwritten digits, 8x8 grey levels 0..16; 10 classes.

  cfg.image_size = 0 gives 64 flat features; 8, 28 or 32 gives NHWC images (see
  `digits_images`). The split depends on split_seed alone, so it is the same for every size.
  """
  errors.check_choice("data.image_size", cfg.image_size, IMAGE_SIZES)
  x, y = skdatasets.load_digits(return_X_y=True)
  if cfg.image_size:
    x = digits_images(x, cfg.image_size)
  return data.split_and_standardize(
      x, y, name="digits", num_classes=10, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)


@data.register("breast_cancer")
def breast_cancer(cfg) -> data.Dataset:
  """569 tumours, 30 real-valued features; binary (0 = malignant, 1 = benign)."""
  if cfg.image_size:
    raise errors.ConfigError(
        f"config.data.image_size={cfg.image_size!r} applies to digits only; set it to 0 for "
        "breast_cancer")
  x, y = skdatasets.load_breast_cancer(return_X_y=True)
  return data.split_and_standardize(
      x, y, name="breast_cancer", num_classes=2, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)


def fixed_test_split(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                     y_test: np.ndarray, *, name: str, num_classes: int, valid_fraction: float,
                     seed: int, standardize: str) -> data.Dataset:
  """A source's own train/test sets, with a seeded valid_fraction of train held out.

  standardize is one of data.STANDARDIZE ("feature", "global", "none"); its statistics
  are fitted on the remaining training examples only and applied to all three splits.
  """
  errors.check_choice("data.standardize", standardize, data.STANDARDIZE)
  ds = data.split_and_standardize(
      x_train, y_train, name=name, num_classes=num_classes, valid_fraction=valid_fraction,
      test_fraction=0.0, seed=seed, standardize="none")
  test = data.Split(x_test.astype(np.float32), y_test.astype(np.int32))
  if standardize == "none":
    return data.Dataset(name, ds.train, ds.valid, test, num_classes)
  axis = 0 if standardize == "feature" else None
  mean = ds.train.x.mean(axis=axis)
  std = ds.train.x.std(axis=axis)
  std = np.where(std > 1e-8, std, 1).astype(np.float32)  # A constant feature stays as is.
  scale = lambda s: data.Split((s.x - mean) / std, s.y)
  return data.Dataset(name, scale(ds.train), scale(ds.valid), scale(test), num_classes)
