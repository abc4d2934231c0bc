"""Data sets that ship inside scikit-learn: no network, ever."""
from sklearn import datasets as skdatasets

from research import data


@data.register("digits")
def digits(cfg) -> data.Dataset:
  """1,797 handwritten digits, 8x8 grey levels 0..16 flattened to 64 features; 10 classes."""
  x, y = skdatasets.load_digits(return_X_y=True)
  return data.split_and_standardize(
      x, y, name="digits", num_classes=10, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)


@data.register("breast_cancer")
def breast_cancer(cfg) -> data.Dataset:
  """569 tumours, 30 real-valued features; binary (0 = malignant, 1 = benign)."""
  x, y = skdatasets.load_breast_cancer(return_X_y=True)
  return data.split_and_standardize(
      x, y, name="breast_cancer", num_classes=2, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)
