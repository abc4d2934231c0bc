"""MNIST-1D (Greydanus 2020), generated offline by the mnist1d package.

`mnist1d.data.make_dataset()` with its default arguments builds the paper's data set:
5,000 signals of length 40 from ten 1-D digit templates (padded, sheared, scaled,
translated, with correlated and i.i.d. noise), split 4,000 train / 1,000 test. We never
call `mnist1d.get_dataset`, which downloads and writes a pickle into the working directory.
Generation takes about 2 s, so the arrays are cached as .npz (never pickle) in the data cache.
"""
import contextlib
import os
import pathlib
import random
import tempfile
import zipfile
from importlib import metadata

import ml_collections
import numpy as np
from absl import logging

from research.data import core
from research import errors
from research.data import download

SHAPES = ("flat", "sequence")
NUM_TRAIN, NUM_TEST, LENGTH = 4000, 1000, 40


def config(**overrides) -> ml_collections.ConfigDict:
  """config.data for MNIST-1D."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "mnist1d"
  cfg.split_seed = 0           # which of the 4,000 training signals are held out for validation
  cfg.valid_fraction = 0.1     # of the 4,000 training signals; the test set is the paper's 1,000
  cfg.standardize = "global"   # feature | global | none, fitted on the train split only
  cfg.shape = "flat"           # flat: x_Nx40 (MLPs); sequence: x_Nx40x1 (RNNs, 1-D convolutions)
  cfg.cache = True             # keep the generated arrays in an .npz (generation takes ~2 s)
  cfg.cache_dir = ""           # "" = $RESEARCH_DATA_DIR or ~/.cache/research
  cfg.update(overrides)
  return cfg


@contextlib.contextmanager
def _global_rng_preserved():
  """make_dataset reseeds NumPy's and Python's global generators; put both back after."""
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    yield
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)


def _make_dataset() -> dict:
  from mnist1d import data as mnist1d_data  # Imported lazily: it pulls in matplotlib.
  with _global_rng_preserved():
    return mnist1d_data.make_dataset()  # Default arguments: the paper's data set.


def generate() -> dict[str, np.ndarray]:
  """The paper's arrays: x (4000, 40) float32, y (4000,) int32, x_test, y_test likewise."""
  d = _make_dataset()
  arrays = {"x": d["x"].astype(np.float32), "y": d["y"],
            "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"]}
  return _check(arrays, f"mnist1d {metadata.version('mnist1d')}'s make_dataset()",
                "reinstall it: pip install --force-reinstall mnist1d")


def _check(arrays, source: str, fix: str) -> dict[str, np.ndarray]:
  """The arrays with int32 labels; DataError naming `source` for a missing array, another
  shape, a NaN or infinite value or a label that is not an integer in 0..9."""
  shapes = {"x": (NUM_TRAIN, LENGTH), "y": (NUM_TRAIN,), "x_test": (NUM_TEST, LENGTH),
            "y_test": (NUM_TEST,)}
  for k, shape in shapes.items():
    if k not in arrays or arrays[k].shape != shape:
      got = arrays[k].shape if k in arrays else "nothing"
      raise errors.DataError(f"{source}: {k} has shape {got}, not {shape}; {fix}")
  out = dict(arrays)
  for x_key, y_key in (("x", "y"), ("x_test", "y_test")):
    core.check_finite(arrays[x_key], f"{source} ({x_key})", fix)
    out[y_key] = core.check_labels(arrays[y_key], 10, f"{source} ({y_key})", fix)
  return out


def cache_path(cache_dir: str = "") -> pathlib.Path:
  """Where the arrays are cached; the file name carries the generator's version."""
  root = pathlib.Path(cache_dir) if cache_dir else download.cache_dir("mnist1d")
  return root / f"mnist1d_default_v{metadata.version('mnist1d')}.npz"


def load_arrays(cache: bool = True, cache_dir: str = "") -> dict[str, np.ndarray]:
  """`generate()`, read from / written to the .npz cache when `cache` is set.

  An unreadable or malformed cache file (cut short, other shapes, NaN values, bad labels) is
  regenerated and replaced, with a warning naming what was wrong.
  """
  if not cache:
    return generate()
  path = cache_path(cache_dir)
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
    return _check(arrays, str(path), "delete it")
  except errors.DataError as e:
    logging.warning("regenerating the MNIST-1D cache: %s", e)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # Missing, cut short, not .npz.
    pass
  arrays = generate()
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)  # Atomic: a concurrent reader sees the old file or the new one.
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return arrays


@core.register("mnist1d")
def mnist1d(cfg) -> core.Dataset:
  """MNIST-1D: 10 classes of 40-long signals, the paper's 4,000/1,000 train/test split."""
  errors.check_choice("data.shape", cfg.shape, SHAPES)
  a = load_arrays(cfg.cache, cfg.cache_dir)
  ds = core.fixed_test_split(
      a["x"], a["y"], a["x_test"], a["y_test"], name="mnist1d", num_classes=10,
      valid_fraction=cfg.valid_fraction, seed=cfg.split_seed, standardize=cfg.standardize)
  if cfg.shape == "flat":
    return ds
  seq = lambda s: core.Split(s.x[..., None], s.y)  # x_NxTx1: one feature per time step.
  return core.Dataset(ds.name, seq(ds.train), seq(ds.valid), seq(ds.test), ds.num_classes)
