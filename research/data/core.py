"""Data sets as in-memory arrays with a fixed split, the loader registry and the batch order.

Loader modules (research/data/<name>.py) register here; research.data re-exports this module
and imports every loader, so `data.load(config.data)` finds them all.
"""
import dataclasses
from typing import Callable

import numpy as np

from research import config_lib
from research import errors


@dataclasses.dataclass(frozen=True)
class Split:
  x: np.ndarray  # (N, ...) float32 inputs
  y: np.ndarray  # (N,) int32 labels

  def __len__(self) -> int:
    return len(self.y)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  valid: Split
  test: Split
  num_classes: int

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.train.x.shape[1:])


STANDARDIZE = ("feature", "global", "none")

_LOADERS: dict[str, Callable] = {}


def register(name: str):
  """Decorator: makes `fn(data_config) -> Dataset` loadable as config.data.name=name."""
  def wrap(fn):
    _LOADERS[name] = fn
    return fn
  return wrap


def names() -> list[str]:
  return sorted(_LOADERS)


def check_labels(y: np.ndarray, num_classes: int, source: str, fix: str) -> np.ndarray:
  """y (any shape) as int32; DataError naming `source`, how many labels are not integers
  (e.g. 0.5 in a float file, which astype would truncate to a class) or outside
  0..num_classes-1, and `fix`."""
  y = np.asarray(y)
  if y.dtype.kind not in "iub":
    if y.dtype.kind != "f":
      raise errors.DataError(f"{source} holds {y.dtype} labels, not integers; {fix}")
    with np.errstate(invalid="ignore"):
      not_int = ~np.isfinite(y) | (y != np.round(y))
    if not_int.any():
      raise errors.DataError(
          f"{source}: {int(not_int.sum())} of {y.size} labels are not integers (e.g. "
          f"{y.reshape(-1)[np.argmax(not_int.reshape(-1))].item()!r}); {fix}")
  out = (y < 0) | (y >= num_classes)
  if out.any():
    raise errors.DataError(
        f"{source}: {int(out.sum())} of {y.size} labels are outside 0..{num_classes - 1} (e.g. "
        f"{y.reshape(-1)[np.argmax(out.reshape(-1))].item()!r}); {fix}")
  return y.astype(np.int32)


def check_finite(x: np.ndarray, source: str, fix: str) -> None:
  """DataError naming `source` and how many of x's values are NaN or infinite (they would
  make the loss NaN, and the run blame the optimizer)."""
  x = np.asarray(x)
  if x.dtype.kind in "fc":
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
      raise errors.DataError(f"{source}: {bad} of {x.size} input values are NaN or infinite; "
                             f"{fix}")


def check(dataset: Dataset) -> Dataset:
  """Every split's labels are integers in 0..num_classes-1 and its inputs finite: what every
  loader's data must be (loaders check their files first, naming them)."""
  for split_name in ("train", "valid", "test"):
    split = getattr(dataset, split_name)
    source = f"data set {dataset.name!r}, {split_name} split"
    fix = "check the loader and its files"
    check_finite(split.x, source, fix)
    check_labels(split.y, dataset.num_classes, source, fix)
  return dataset


def load(data_config) -> Dataset:
  """Loads the data set named by data_config.name (see `names()`), checked (`check`)."""
  errors.check_choice("data.name", data_config.name, names())
  try:
    return check(_LOADERS[data_config.name](data_config))
  except (AttributeError, KeyError) as e:
    field = config_lib.missing_field(e, data_config)
    if field is None:
      raise
    # A data set switched by override: its loader reads a field this config lacks.
    builder = _LOADERS[data_config.name].__module__
    raise config_lib.family_switch_error("data", data_config, field, builder) from None


def split_and_standardize(x: np.ndarray, y: np.ndarray, *, name: str, num_classes: int,
                          valid_fraction: float, test_fraction: float, seed: int,
                          standardize: str = "feature") -> Dataset:
  """Seeded shuffle into train/valid/test; statistics fitted on the train split only.

  standardize: "feature" = zero mean, unit variance per input feature (for features in
  different units, e.g. breast cancer); "global" = one mean and std over all inputs (for
  pixels: per-pixel scaling would blow up the near-constant border pixels of digits and
  cost about 1 point of test accuracy); "none".
  The split depends only on `seed`, never on NumPy's global state.
  """
  errors.check_choice("data.standardize", standardize, STANDARDIZE)
  for field, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
    if not 0 <= frac < 1:
      raise errors.ConfigError(f"config.data.{field}={frac!r} must be in [0, 1)")
  if valid_fraction + test_fraction >= 1:
    raise errors.ConfigError("config.data.valid_fraction + test_fraction must be < 1")
  n = len(y)
  order = np.random.default_rng(seed).permutation(n)
  n_test = int(round(n * test_fraction))
  n_valid = int(round(n * valid_fraction))
  test_idx, valid_idx, train_idx = np.split(order, [n_test, n_test + n_valid])
  x = x.astype(np.float32)
  if standardize != "none":
    axis = 0 if standardize == "feature" else None
    mean = x[train_idx].mean(axis=axis)
    std = x[train_idx].std(axis=axis)
    # Constant features (e.g. digits' always-blank corner pixels) would divide by zero.
    x = (x - mean) / np.where(std > 1e-8, std, 1.0)
  y = y.astype(np.int32)
  mk = lambda idx: Split(x[idx], y[idx])
  return Dataset(name, mk(train_idx), mk(valid_idx), mk(test_idx), num_classes)


def fixed_test_split(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                     y_test: np.ndarray, *, name: str, num_classes: int, valid_fraction: float,
                     seed: int, standardize: str) -> Dataset:
  """A source's own train/test sets, with a seeded valid_fraction of train held out.

  standardize is one of STANDARDIZE ("feature", "global", "none"); its statistics
  are fitted on the remaining training examples only and applied to all three splits.
  """
  errors.check_choice("data.standardize", standardize, STANDARDIZE)
  ds = split_and_standardize(
      x_train, y_train, name=name, num_classes=num_classes, valid_fraction=valid_fraction,
      test_fraction=0.0, seed=seed, standardize="none")
  test = Split(x_test.astype(np.float32), y_test.astype(np.int32))
  if standardize == "none":
    return Dataset(name, ds.train, ds.valid, test, num_classes)
  axis = 0 if standardize == "feature" else None
  mean = ds.train.x.mean(axis=axis)
  std = ds.train.x.std(axis=axis)
  std = np.where(std > 1e-8, std, 1).astype(np.float32)  # A constant feature stays as is.
  scale = lambda s: Split((s.x - mean) / std, s.y)
  return Dataset(name, scale(ds.train), scale(ds.valid), scale(test), num_classes)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of the n training examples in `epoch`: a function of (seed, epoch) alone."""
  return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def batch_indices(seed: int, n: int, batch_size: int, start_step: int,
                  num_steps: int) -> np.ndarray:
  """Indices of the batches for steps [start_step, start_step + num_steps), shape (S, B).

  Batch s is a pure function of (seed, s): each epoch is a fresh permutation and the last
  n % batch_size examples of an epoch are dropped, so resuming at any step is exact.
  """
  errors.check_batch_size(batch_size, n, "training examples")
  steps_per_epoch = n // batch_size
  out = np.empty((num_steps, batch_size), np.int32)
  perm, perm_epoch = None, -1
  for i, step in enumerate(range(start_step, start_step + num_steps)):
    epoch, pos = divmod(step, steps_per_epoch)
    if epoch != perm_epoch:
      perm, perm_epoch = epoch_permutation(seed, epoch, n), epoch
    out[i] = perm[pos * batch_size:(pos + 1) * batch_size]
  return out
