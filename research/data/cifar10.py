"""CIFAR-10 from its standard binary batches (the "binary version" of the data set).

cifar-10-batches-bin/ holds data_batch_1.bin ... data_batch_5.bin (10,000 images each) and
test_batch.bin. Every record is 3,073 bytes: the label (0..9), then the 1,024 red, 1,024
green and 1,024 blue values of a 32x32 image, each plane row-major. We read no pickles.
Files come from config.data.data_dir, else the cache; with download=True the official
archive is fetched into the cache, checked against its published MD5 and unpacked.
"""
import os
import pathlib
import tarfile
import tempfile

import ml_collections
import numpy as np

from research.data import core
from research import errors
from research.data import download

DIRNAME = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD_BYTES = 1 + 32 * 32 * 3
ARCHIVE_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # Published on the data set's page.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def config(**overrides) -> ml_collections.ConfigDict:
  """config.data for CIFAR-10."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "cifar10"
  cfg.split_seed = 0           # which training images are held out for validation
  cfg.valid_fraction = 0.1     # of the 50,000 training images; the test set is the official one
  cfg.standardize = "global"   # feature | global | none, fitted on the train split only
  cfg.data_dir = ""            # holds cifar-10-batches-bin/ (or is it); "" = the cache
  cfg.download = False         # fetch the 162 MB archive into the cache (MD5-checked)
  cfg.update(overrides)
  return cfg


def read_batch(path: os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """One binary batch -> (x_Nx32x32x3 uint8, y_N int32); DataError names a corrupt file."""
  raw = np.fromfile(path, np.uint8)
  if raw.size == 0 or raw.size % RECORD_BYTES:
    raise errors.DataError(
        f"{path} is corrupt: {raw.size} bytes is not a whole number of {RECORD_BYTES}-byte "
        "CIFAR-10 records; download it again")
  records = raw.reshape(-1, RECORD_BYTES)
  # The pixels are bytes, finite by construction; the labels are bytes too, maybe above 9.
  y = core.check_labels(records[:, 0], 10, f"{path} is corrupt", "download it again")
  x_NxCxHxW = records[:, 1:].reshape(-1, 3, 32, 32)
  return x_NxCxHxW.transpose(0, 2, 3, 1), y


def _directory_with_files(directories: list[pathlib.Path]) -> pathlib.Path | None:
  for d in directories:
    for candidate in (d / DIRNAME, d):
      if all((candidate / f).is_file() for f in (*TRAIN_FILES, TEST_FILE)):
        return candidate
  return None


def _download_and_extract(cache: pathlib.Path) -> pathlib.Path:
  """Fetches the archive into cache, unpacks the six batches, deletes the archive."""
  archive = download.fetch(ARCHIVE_URLS, cache / "cifar-10-binary.tar.gz", "md5:" + ARCHIVE_MD5)
  out = cache / DIRNAME
  out.mkdir(parents=True, exist_ok=True)
  with tarfile.open(archive, "r:gz") as tar:
    for fname in (*TRAIN_FILES, TEST_FILE):
      # Only the members we expect, written by us: no paths from the archive are trusted.
      member = tar.getmember(f"{DIRNAME}/{fname}")
      fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{fname}.", suffix=".part")
      try:
        with os.fdopen(fd, "wb") as f, tar.extractfile(member) as src:
          f.write(src.read())
        os.replace(tmp, out / fname)
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
  archive.unlink()
  return out


def batch_dir(data_dir: str, download_missing: bool) -> pathlib.Path:
  """The directory holding the six batches: data_dir (or its cifar-10-batches-bin/), else
  the cache; downloaded there when download_missing, else DataError says how to get them."""
  cache = download.cache_dir("cifar10")
  directories = ([pathlib.Path(data_dir).expanduser()] if data_dir else []) + [cache]
  found = _directory_with_files(directories)
  if found is not None:
    return found
  if not download_missing:
    raise errors.DataError(
        f"cifar10: need {DIRNAME}/{{{', '.join(TRAIN_FILES)}, {TEST_FILE}}} in "
        f"{' or '.join(map(str, directories))}; unpack {ARCHIVE_URLS[0]} there and set "
        "config.data.data_dir, or set config.data.download=True to fetch it into the cache")
  return _download_and_extract(cache)


@core.register("cifar10")
def cifar10(cfg) -> core.Dataset:
  """CIFAR-10: 50,000 train / 10,000 test 32x32x3 colour images, 10 classes (CLASSES)."""
  d = batch_dir(cfg.data_dir, cfg.download)
  train = [read_batch(d / f) for f in TRAIN_FILES]
  x_test, y_test = read_batch(d / TEST_FILE)
  return core.fixed_test_split(
      np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test,
      y_test, name="cifar10", num_classes=10, valid_fraction=cfg.valid_fraction,
      seed=cfg.split_seed, standardize=cfg.standardize)
