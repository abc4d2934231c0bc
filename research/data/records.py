"""Data sets as ArrayRecord files with a manifest: the format the streaming pipeline reads.

A records directory (local, or any path etils.epath opens) holds

  manifest.json                       what the files hold, checked on every load
  <split>-00000-of-00004.array_record one shard of a split (train, test, val, ...)

Every record is one example: 8 header bytes, little-endian int32 label and uint32 CRC-32 of
the payload, then the payload: the image file's own bytes (encoding "image": JPEG, PNG, ...,
decoded with Pillow) or its raw uint8 pixels, HxWxC row-major (encoding "raw": IDX, CIFAR).
The manifest names the classes, the encoding and shape, each split's count and class counts,
each shard's record count, size and CRC-32, and the train split's per-channel pixel mean,
std and covariance (for standardizing and the PCA colour jitter).

Checks: `read_manifest` (every load) checks the manifest's whole layout (every key the
code reads, with its type) and turns config.data.data_dir into a path (a URL that cannot be
opened here is one errors.WorkdirError); `open_split` finds every shard, with the
manifest's size and record count; every record read is checked against its CRC-32, and
every label read (train examples, LazyLabels of every split) against the manifest's classes;
`verify_files` re-reads whole shards against their CRC-32 and decodes every record, its label
checked (launch/make_records.py --verify). Each failure is one errors.DataError naming the
file and the fix. launch/make_records.py writes the format.

config.data.name="records" loads a records directory whole into memory (pipeline "memory",
for sets that fit); research.data.streaming reads it a batch at a time ("streaming").
"""
import concurrent.futures
import dataclasses
import functools
import io
import json
import os
import re
import struct
import threading
import zlib

import ml_collections
import numpy as np
from etils import epath

from research import config_lib
from research import errors
from research import workdir as workdir_lib
from research.data import core

MANIFEST = "manifest.json"
FORMAT = 1                          # Version of the manifest and record layout.
ENCODINGS = ("image", "raw")
PIPELINES = config_lib.CHOICES["data.pipeline"]
_HEADER = struct.Struct("<iI")      # label, CRC-32 of the payload
_CONVERT = "launch/make_records.py"
# Random access: no read-ahead (the streaming order jumps between records).
_READ_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
_OPEN_READERS = 64                  # per process (each grain worker has its own)


def config(data_dir: str = "", **overrides) -> ml_collections.ConfigDict:
  """config.data for a records directory written by launch/make_records.py."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "records"
  cfg.data_dir = data_dir      # the records directory (local, gs://...; see README)
  cfg.pipeline = "memory"      # memory: load every split whole | streaming: read per batch
  cfg.train_split = "train"    # manifest split names; "" = none (valid: none by default)
  cfg.valid_split = ""
  cfg.test_split = "test"
  cfg.image_size = 0           # side of the square crop fed to the model; 0 = stored shape
  cfg.resize = 0               # "image" records: shorter side scaled to this first; 0 = none
  cfg.random_crop = False      # train: a random image_size crop (else the centre one)
  cfg.flip = False             # train: mirror left-right with probability 1/2
  cfg.pca_jitter = 0.0         # train: the paper's PCA colour jitter, alpha ~ N(0, this)
  cfg.num_workers = 0          # streaming: grain worker processes decoding (0 = in-process)
  cfg.prefetch = 2             # streaming: chunks of batches prepared ahead on the device
  cfg.verify_files = False     # re-read every shard against its CRC-32 at load (slow)
  cfg.update(overrides)
  return cfg


def check_config(cfg) -> None:
  """Raises ConfigError naming the first records field the loaders cannot use."""
  errors.check_choice("data.pipeline", cfg.get("pipeline", "memory"), PIPELINES)
  if not cfg.get("data_dir"):
    raise errors.ConfigError(
        "config.data.data_dir is empty; pass the records directory written by "
        f"{_CONVERT}, e.g. --config.data.data_dir=/data/imagenet_records")
  config_lib.check_ranges({"data": cfg})  # image_size, resize, pca_jitter, num_workers, ...


def encode(label: int, payload: bytes) -> bytes:
  """One record: header (label, CRC-32 of the payload) + payload."""
  return _HEADER.pack(int(label), zlib.crc32(payload)) + payload


def decode(record: bytes, where: str) -> tuple[int, bytes]:
  """(label, payload) of a record; DataError naming `where` when its checksum fails."""
  if len(record) < _HEADER.size:
    raise errors.DataError(f"{where} is corrupt (a record of {len(record)} bytes); rewrite "
                           f"the records with {_CONVERT}")
  label, crc = _HEADER.unpack_from(record)
  payload = record[_HEADER.size:]
  if zlib.crc32(payload) != crc:
    raise errors.DataError(f"{where} is corrupt (checksum mismatch); rewrite the records with "
                           f"{_CONVERT}")
  return label, payload


def file_crc32(path: epath.Path) -> int:
  crc = 0
  with path.open("rb") as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def shard_name(split: str, i: int, count: int) -> str:
  return f"{split}-{i:05d}-of-{count:05d}.array_record"


def data_path(data_dir, flag: str = "--config.data.data_dir") -> epath.Path:
  """The records directory as an epath.Path (local paths made absolute); errors.WorkdirError
  naming `flag` for a URL etils cannot open here (gs:// without gcsfs, http://, gs:/x, gs:x).
  A folder named "gs:" inside the path is fine: only checkpoint paths are read as URLs."""
  return workdir_lib.as_path(data_dir, flag=flag)


def read_manifest(data_dir, flag: str = "--config.data.data_dir") -> dict:
  """The manifest of a records directory, its layout checked; DataError otherwise (and
  WorkdirError naming `flag` for a directory given as a URL that cannot be opened here)."""
  path = data_path(data_dir, flag) / MANIFEST
  fix = f"convert the data with {_CONVERT} and pass its output as config.data.data_dir"
  if not path.exists():
    raise errors.DataError(f"{path} is missing; {fix}")
  try:
    manifest = json.loads(path.read_text())
  except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
    raise errors.DataError(f"{path} cannot be read ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:100] if str(e) else ''}); {fix}") from None
  if (not isinstance(manifest, dict) or not _is_int(manifest.get("format"))
      or manifest["format"] != FORMAT):
    raise errors.DataError(f"{path} is not a format-{FORMAT} records manifest; {fix}")
  for key in ("classes", "encoding", "channels", "splits"):
    if key not in manifest:
      raise errors.DataError(f"{path} has no {key!r}; {fix}")
  if manifest["encoding"] not in ENCODINGS:
    raise errors.DataError(f"{path}: encoding {manifest['encoding']!r} is not one of "
                           f"{ENCODINGS}; {fix}")
  _check_layout(path, manifest)
  _check_class_counts(path, manifest)
  return manifest


_LABEL_KEY = re.compile(r"-?[0-9]+")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  """A finite JSON number (json reads NaN and Infinity as floats)."""
  return _is_int(v) or isinstance(v, float) and np.isfinite(v)


def _check_layout(path, manifest: dict) -> None:
  """Every field the loaders and make_records.py read, with the type they read it as: a
  manifest edited by hand or written by another tool is one DataError naming the key, never
  a KeyError or TypeError later in the run."""

  def bad(key: str, problem: str):
    raise errors.DataError(f"{path}: {key} {problem}; the manifest is damaged or was edited: "
                           f"rewrite the records with {_CONVERT}")

  def need(container: dict, key: str, name: str, check, expected: str):
    if key not in container:
      bad(name, f"is missing (expected {expected})")
    if not check(container[key]):
      bad(name, f"is {_show(container[key])}, not {expected}")
    return container[key]

  count = lambda v: _is_int(v) and v >= 0
  classes = need(manifest, "classes", '"classes"', lambda v: isinstance(v, list),
                 "a list of class names")
  if not classes:
    raise errors.DataError(f'{path}: "classes" lists no classes (a model needs at least one); '
                           f"restore the class list, or rewrite the records with {_CONVERT}")
  for i, name in enumerate(classes):
    if not isinstance(name, str):
      bad(f'"classes"[{i}]', f"is {_show(name)}, not a class name (a string)")
  channels = need(manifest, "channels", '"channels"', lambda v: _is_int(v) and v >= 1,
                  "a positive integer")
  if manifest["encoding"] == "image" and channels not in (1, 3):
    bad('"channels"', f"is {channels}: image records decode to 1 (grayscale) or 3 (RGB)")
  shape = manifest.get("shape")
  if shape is not None or manifest["encoding"] == "raw":
    if not (isinstance(shape, list) and len(shape) == 3
            and all(_is_int(d) and d >= 1 for d in shape) and shape[-1] == channels):
      bad('"shape"', f"is {_show(shape)}, not [height, width, {channels}] (positive integers)"
          + (" as raw records need" if manifest["encoding"] == "raw" else ""))
  stats = manifest.get("stats")
  if stats is not None:
    if not isinstance(stats, dict):
      bad('"stats"', f"is {_show(stats)}, not an object of per-channel mean, std and cov")
    vector = lambda v: (isinstance(v, list) and len(v) == channels
                        and all(_is_number(a) for a in v))
    for key in ("mean", "std"):
      if key in stats:
        need(stats, key, f'"stats".{key}', vector, f"a list of {channels} finite numbers")
    if "cov" in stats:
      need(stats, "cov", '"stats".cov', lambda v: isinstance(v, list) and len(v) == channels
           and all(vector(row) for row in v), f"a {channels}x{channels} list of finite numbers")
  splits = need(manifest, "splits", '"splits"', lambda v: isinstance(v, dict) and v,
                "an object of splits (train, test, ...)")
  for split, entry in splits.items():
    where = f'"splits".{split}'
    if not isinstance(entry, dict):
      bad(where, f"is {_show(entry)}, not an object with count, files and class_counts")
    need(entry, "count", f"{where}.count", count, "a non-negative integer")
    files = need(entry, "files", f"{where}.files", lambda v: isinstance(v, list),
                 "a list of shard entries")
    for i, f in enumerate(files):
      name = f"{where}.files[{i}]"
      if not isinstance(f, dict):
        bad(name, f"is {_show(f)}, not an object with path, bytes, count and crc32")
      need(f, "path", f"{name}.path", lambda v: isinstance(v, str) and v not in ("", ".", "..")
           and "/" not in v and "\\" not in v and "\0" not in v,
           "the name of a shard file in the records directory")
      need(f, "bytes", f"{name}.bytes", count, "a non-negative integer")
      need(f, "count", f"{name}.count", count, "a non-negative integer")
      need(f, "crc32", f"{name}.crc32", lambda v: _is_int(v) and 0 <= v < 1 << 32,
           "a CRC-32 (an integer 0..2**32-1)")
    class_counts = entry.get("class_counts")
    if class_counts is None:
      continue
    if not isinstance(class_counts, dict):
      bad(f"{where}.class_counts", f"is {_show(class_counts)}, not an object of label: count")
    for label, n in class_counts.items():
      if not _LABEL_KEY.fullmatch(label):
        bad(f"{where}.class_counts", f"has key {_show(label)}, not a label (an integer)")
      if not count(n):
        bad(f"{where}.class_counts[{label!r}]", f"is {_show(n)}, not a non-negative integer")


def _show(value) -> str:
  """A JSON value in a message: short, one line."""
  text = json.dumps(value) if value is not None else "null"
  return text if len(text) <= 40 else text[:37] + "..."


def _check_class_counts(path, manifest: dict) -> None:
  """Every split's labels (its class_counts) name a class of the manifest's list: a model
  sized to the list cannot learn a label past its end (the memory pipeline refuses it too).
  Run after _check_layout: the keys are integer strings."""
  k = len(manifest["classes"])
  for split, entry in sorted(manifest["splits"].items()):
    labels = [int(label) for label in (entry.get("class_counts") or {})]
    outside = sorted(label for label in labels if not 0 <= label < k)
    if outside:
      label = outside[0] if outside[0] < 0 else outside[-1]
      raise errors.DataError(
          f"{path}: split {split!r} holds label {label} but \"classes\" lists {k} "
          f"class(es) (labels 0..{k - 1}); restore the class list, or rewrite the records "
          f"with {_CONVERT}")


def check_label(label: int, num_classes: int, where: str) -> int:
  """A record's label, DataError naming `where` when it is not a class of the manifest."""
  if not 0 <= label < num_classes:
    raise errors.DataError(f"{where} holds label {label}, outside the manifest's "
                           f"{num_classes} classes (0..{num_classes - 1}); rewrite the records "
                           f"with {_CONVERT}")
  return label


def manifest_crc(manifest: dict) -> int:
  """The identity of a records set: a resumed streaming run checks it is unchanged."""
  return zlib.crc32(json.dumps(manifest, sort_keys=True).encode()) & 0x7FFFFFFF


def open_reader(path: epath.Path):
  """An ArrayRecordReader for random access; DataError naming a file it cannot open."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  try:
    return array_record_module.ArrayRecordReader(os.fspath(path), _READ_OPTIONS)
  except Exception as e:  # noqa: BLE001  riegeli reports damage as several types.
    raise errors.DataError(
        f"{path} cannot be read as ArrayRecord ({_reason(e)}); rewrite the "
        f"records with {_CONVERT}") from None


def _reason(e: Exception) -> str:
  """riegeli's first clause ("Corrupted Riegeli/records file: chunk data hash mismatch"),
  without its hashes and offsets."""
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  return text.split(" (")[0].split("; ")[0][:150]


class SplitSource:
  """Random access to one split's records across its shards: len() and [i] -> (label,
  payload). Picklable (grain workers open their own readers)."""

  def __init__(self, data_dir, name: str, entry: dict):
    self.data_dir, self.name = os.fspath(data_dir), name
    self.files = [f["path"] for f in entry["files"]]
    self.offsets = np.cumsum([0] + [f["count"] for f in entry["files"]])
    self._readers, self._lock = {}, threading.Lock()

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def locate(self, i: int) -> tuple[int, int]:
    shard = int(np.searchsorted(self.offsets, i, side="right")) - 1
    return shard, int(i - self.offsets[shard])

  def path(self, shard: int) -> epath.Path:
    return epath.Path(self.data_dir) / self.files[shard]

  def where(self, i: int) -> str:
    """Example i in a message: its shard file, record and split."""
    shard, j = self.locate(i)
    return f"{self.path(shard)}: record {j} (split {self.name!r}, example {i})"

  def __getitem__(self, i: int) -> tuple[int, bytes]:
    if not 0 <= i < len(self):
      raise IndexError(i)
    shard, j = self.locate(int(i))
    try:
      # One reader per shard, shared by this process's threads (grain's, evaluation's):
      # opened, read and closed under the lock; decoding, the slow part, runs outside it.
      with self._lock:
        reader = self._readers.get(shard)
        if reader is None:
          if len(self._readers) >= _OPEN_READERS:  # ImageNet has ~1,300 shards: bound fds.
            self._readers.pop(next(iter(self._readers))).close()
          reader = self._readers[shard] = open_reader(self.path(shard))
        record = reader.read([j])[0]
    except errors.DataError:
      raise
    except Exception as e:  # noqa: BLE001
      raise errors.DataError(
          f"{self.path(shard)}: record {j} cannot be read ({_reason(e)}); "
          f"rewrite the records with {_CONVERT}") from None
    return decode(record, f"{self.path(shard)}: record {j}")

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k not in ("_readers", "_lock")}

  def __setstate__(self, state):
    self.__dict__.update(state, _readers={}, _lock=threading.Lock())


def open_split(data_dir, split: str, manifest: dict | None = None,
               verify_files: bool = False) -> SplitSource:
  """A split's source, every shard found with the manifest's size and record count (and,
  with verify_files, its CRC-32); DataError naming the first file that is not."""
  manifest = read_manifest(data_dir) if manifest is None else manifest
  if split not in manifest["splits"]:
    raise errors.DataError(
        f"{epath.Path(data_dir) / MANIFEST} has no split {split!r} (it has "
        f"{', '.join(sorted(manifest['splits']))}); set config.data.*_split to one of them")
  entry = manifest["splits"][split]
  rewrite = f"rewrite the records with {_CONVERT}"
  for f in entry["files"]:
    path = epath.Path(data_dir) / f["path"]
    if not path.exists():
      raise errors.DataError(f"{path} is missing (listed in {MANIFEST}); restore it or "
                             f"{rewrite}")
    size = path.stat().length
    if size != f["bytes"]:
      raise errors.DataError(f"{path} has {size} bytes, {MANIFEST} says {f['bytes']}; "
                             f"the file is truncated or replaced: {rewrite}")
    if verify_files and file_crc32(path) != f["crc32"]:
      raise errors.DataError(f"{path} does not match its CRC-32 in {MANIFEST}; {rewrite}")
    reader = open_reader(path)
    try:
      count = reader.num_records()
    finally:
      try:
        # riegeli checks the blocks it skipped over on close: damage past the first chunk
        # surfaces here, as a RuntimeError.
        reader.close()
      except Exception as e:  # noqa: BLE001
        raise errors.DataError(
            f"{path} is damaged ({_reason(e)}); {rewrite} (launch/make_records.py "
            "--verify=DIR checks every shard)") from None
    if count != f["count"]:
      raise errors.DataError(f"{path} holds {count} records, {MANIFEST} says {f['count']}; "
                             f"{rewrite}")
  source = SplitSource(data_dir, split, entry)
  if len(source) != entry["count"]:
    raise errors.DataError(f"{epath.Path(data_dir) / MANIFEST}: split {split!r} lists "
                           f"{len(source)} records in its files but a count of "
                           f"{entry['count']}; {rewrite}")
  return source


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How a record becomes a model input x_HxWxC float32: decode, (resize), crop, (flip,
  PCA jitter), standardize with the train split's per-channel mean and std."""
  encoding: str
  shape: tuple | None        # raw records: stored (H, W, C)
  channels: int
  image_size: int            # crop side; 0 = stored shape (raw) / resize side (image)
  resize: int
  mean: tuple
  std: tuple
  eigval: tuple = ()         # of the train split's pixel covariance (PCA jitter)
  eigvec: tuple = ()
  random_crop: bool = False
  flip: bool = False
  pca_jitter: float = 0.0

  @property
  def out_shape(self) -> tuple[int, int, int]:
    if self.image_size:
      return (self.image_size, self.image_size, self.channels)
    if self.encoding == "raw":
      return tuple(self.shape)
    return (self.resize, self.resize, self.channels)

  def pixels(self, payload: bytes, where: str) -> np.ndarray:
    """The stored image as uint8 HxWxC (an "image" one with its shorter side resized)."""
    if self.encoding == "raw":
      size = int(np.prod(self.shape))
      if len(payload) != size:
        raise errors.DataError(f"{where} holds {len(payload)} bytes, not the {size} of shape "
                               f"{tuple(self.shape)}; rewrite the records with {_CONVERT}")
      return np.frombuffer(payload, np.uint8).reshape(self.shape)
    img = decode_image(payload, self.channels, where)
    if self.resize:
      w, h = img.size
      s = self.resize / min(w, h)
      img = img.resize((max(self.resize, round(w * s)), max(self.resize, round(h * s))),
                       resample=_bilinear())
    x = np.asarray(img, np.uint8)
    return x.reshape(x.shape[0], x.shape[1], self.channels)

  def __call__(self, payload: bytes, where: str, rng: np.random.Generator | None) -> np.ndarray:
    """x_HxWxC float32; rng (None: evaluation, the centre crop, no augmentation) draws the
    crop offset, the flip and the jitter, in that order."""
    x = self.pixels(payload, where)
    h, w = self.out_shape[:2]
    if x.shape[0] < h or x.shape[1] < w:
      raise errors.DataError(f"{where}: image {x.shape[:2]} is smaller than the {h}x{w} crop; "
                             "lower config.data.image_size or set config.data.resize")
    if rng is not None and self.random_crop:
      top = int(rng.integers(0, x.shape[0] - h + 1))
      left = int(rng.integers(0, x.shape[1] - w + 1))
    else:
      top, left = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
    x = x[top:top + h, left:left + w].astype(np.float32)
    if rng is not None and self.flip and rng.random() < 0.5:
      x = x[:, ::-1]
    if rng is not None and self.pca_jitter > 0 and self.eigval:
      # Krizhevsky et al. 2012, sec. 4.1: add sum_i alpha_i lambda_i p_i to every pixel.
      alpha = rng.normal(0.0, self.pca_jitter, len(self.eigval))
      x = x + (np.asarray(self.eigvec) @ (alpha * np.asarray(self.eigval))).astype(np.float32)
    mean = np.asarray(self.mean, np.float32)
    std = np.asarray(self.std, np.float32)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def _bilinear():
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return Image.BILINEAR


def decode_image(payload: bytes, channels: int, where: str):
  """A PIL image in mode L (1 channel) or RGB (3); DataError naming `where` if unreadable."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    img = Image.open(io.BytesIO(payload))
    img.load()
  except Exception as e:  # noqa: BLE001  Pillow raises several types for bad files.
    raise errors.DataError(f"{where} is not a readable image ({type(e).__name__}); remove or "
                           "replace it, or convert with --on_bad=skip") from None
  return img.convert("L" if channels == 1 else "RGB")


def preprocess(cfg, manifest: dict, train: bool) -> Preprocess:
  """The Preprocess of config.data for a split (train: with the augmentation it asks for)."""
  stats = manifest.get("stats") or {}
  channels = manifest["channels"]
  mean = tuple(stats.get("mean", [0.0] * channels))
  std = tuple(max(s, 1e-3) for s in stats.get("std", [255.0] * channels))
  eigval, eigvec = (), ()
  if "cov" in stats:
    val, vec = np.linalg.eigh(np.asarray(stats["cov"], np.float64))
    eigval = tuple(np.sqrt(np.maximum(val, 0.0)).tolist())  # std along each principal axis
    eigvec = tuple(map(tuple, vec.tolist()))
  shape = tuple(manifest["shape"]) if manifest.get("shape") else None
  if manifest["encoding"] == "image" and not (cfg.get("image_size") or cfg.get("resize")):
    raise errors.ConfigError("config.data.image_size and resize are 0: image records have no "
                             "fixed shape; set config.data.image_size (e.g. 224)")
  return Preprocess(manifest["encoding"], shape, channels, cfg.get("image_size", 0),
                    cfg.get("resize", 0), mean, std, eigval, eigvec,
                    random_crop=train and cfg.get("random_crop", False),
                    flip=train and cfg.get("flip", False),
                    pca_jitter=float(cfg.get("pca_jitter", 0.0)) if train else 0.0)


class LazyImages:
  """x_NxHxWxC of a split, decoded on indexing (x[a:b], x[idx]): evaluation and the memory
  comparison read a split this way without holding it."""

  def __init__(self, source: SplitSource, prep: Preprocess):
    self.source, self.prep = source, prep
    self.shape = (len(source), *prep.out_shape)
    self.dtype = np.dtype(np.float32)
    self.ndim = 4

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index) -> np.ndarray:
    idx = np.atleast_1d(np.arange(len(self))[index])
    one = lambda i: self.prep(self.source[int(i)][1], f"{self.source.name}[{int(i)}]", None)
    # Pillow decodes outside the GIL: threads speed up evaluation's sequential reads.
    return np.stack(list(_pool().map(one, idx))).reshape(len(idx), *self.shape[1:])


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1),
                                               thread_name_prefix="records-decode")


class LazyLabels:
  """y_N int32 of a split, read on indexing (the record's header; its payload is read too,
  but not decoded): a streaming run never reads the whole train split up front. Every label
  returned is checked against the manifest's num_classes (DataError naming the record): the
  valid and test splits' labels reach evaluation only through here."""

  def __init__(self, source: SplitSource, num_classes: int):
    self.source, self.num_classes = source, int(num_classes)
    self.shape, self.dtype, self.ndim = (len(source),), np.dtype(np.int32), 1

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index) -> np.ndarray:
    idx = np.arange(len(self))[index]
    flat = np.atleast_1d(idx)
    out = np.array([self.source[int(i)][0] for i in flat], np.int32)
    outside = (out < 0) | (out >= self.num_classes)
    if outside.any():
      first = int(np.argmax(outside))
      check_label(int(out[first]), self.num_classes, self.source.where(int(flat[first])))
    return out if np.ndim(idx) else out[0]


def load_lazy(cfg) -> core.Dataset:
  """The records set as a Dataset whose splits read and decode on indexing (LazyImages,
  LazyLabels): what the streaming pipeline evaluates on; nothing is read up front."""
  check_config(cfg)
  manifest = read_manifest(cfg.data_dir)
  splits = {}
  for role in ("train", "valid", "test"):
    name = cfg.get(f"{role}_split", "")
    if not name:
      splits[role] = core.Split(np.zeros((0, 1, 1, manifest["channels"]), np.float32),
                                np.zeros((0,), np.int32))
      continue
    source = open_split(cfg.data_dir, name, manifest, cfg.get("verify_files", False))
    prep = preprocess(cfg, manifest, train=False)
    splits[role] = core.Split(LazyImages(source, prep),
                              LazyLabels(source, len(manifest["classes"])))
  # An empty split keeps the image shape, so evaluation compiles one shape.
  shape = splits["train"].x.shape[1:]
  for role, s in splits.items():
    if len(s) == 0:
      splits[role] = core.Split(np.zeros((0, *shape), np.float32), np.zeros((0,), np.int32))
  return core.Dataset("records", splits["train"], splits["valid"], splits["test"],
                      len(manifest["classes"]))


@core.register("records")
def records(cfg) -> core.Dataset:
  """A records directory loaded whole (pipeline "memory"): every split decoded (centre crop,
  standardized with the manifest's statistics) into arrays; augmentation is config.augment's,
  on the device. Pipeline "streaming" goes through research.data.streaming instead."""
  lazy = load_lazy(cfg)
  whole = lambda s: core.Split(np.asarray(s.x[:]), np.asarray(s.y[:])) if len(s) else s
  return dataclasses.replace(lazy, train=whole(lazy.train), valid=whole(lazy.valid),
                             test=whole(lazy.test))


class Stats:
  """Per-channel pixel mean, std and covariance of the images it is shown (every 4th pixel
  of each row and column of large images: the statistics, not the data, need precision)."""

  def __init__(self, channels: int):
    self.n, self.s = 0, np.zeros(channels)
    self.ss = np.zeros((channels, channels))

  def add(self, x_HxWxC: np.ndarray) -> None:
    step = 4 if x_HxWxC.shape[0] * x_HxWxC.shape[1] > 4096 else 1
    p = x_HxWxC[::step, ::step].reshape(-1, x_HxWxC.shape[-1]).astype(np.float64)
    self.n += len(p)
    self.s += p.sum(0)
    self.ss += p.T @ p

  def result(self) -> dict:
    if not self.n:
      return {}
    mean = self.s / self.n
    cov = self.ss / self.n - np.outer(mean, mean)
    return {"mean": mean.tolist(), "std": np.sqrt(np.maximum(np.diag(cov), 0)).tolist(),
            "cov": cov.tolist()}


def write_split(out_dir, split: str, examples, examples_per_shard: int,
                stats: "Stats | None" = None) -> dict:
  """Writes (label, payload, pixels_HxWxC or None) examples as split's shards; returns the
  manifest's entry for the split. pixels feed `stats` (the train split's)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  out_dir = epath.Path(out_dir)
  buffered, shards, class_counts = [], [], {}

  def flush():
    # Shard names need the total, unknown while streaming: written under a temporary name,
    # renamed once the split is complete.
    if not buffered:
      return
    tmp = out_dir / f".{split}-{len(shards):05d}.tmp"
    writer = array_record_module.ArrayRecordWriter(os.fspath(tmp), "group_size:1")
    for record in buffered:
      writer.write(record)
    writer.close()
    shards.append({"tmp": tmp, "count": len(buffered), "bytes": tmp.stat().length,
                   "crc32": file_crc32(tmp)})
    buffered.clear()

  for label, payload, pixels in examples:
    buffered.append(encode(label, payload))
    class_counts[int(label)] = class_counts.get(int(label), 0) + 1
    if stats is not None and pixels is not None:
      stats.add(pixels)
    if len(buffered) == examples_per_shard:
      flush()
  flush()
  files = []
  for i, shard in enumerate(shards):
    name = shard_name(split, i, len(shards))
    shard.pop("tmp").rename(out_dir / name)
    files.append({"path": name, **shard})
  return {"count": sum(f["count"] for f in files), "files": files,
          "class_counts": {str(k): v for k, v in sorted(class_counts.items())}}


def write_manifest(out_dir, *, source: str, classes, encoding: str, channels: int,
                   shape, splits: dict, stats: dict, skipped: list) -> dict:
  """Writes manifest.json last (whole or not at all): a directory without one is not a
  records set, so a conversion cut short is never read."""
  from research import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  manifest = {"format": FORMAT, "source": source, "classes": list(classes),
              "encoding": encoding, "channels": channels,
              "shape": list(shape) if shape else None, "splits": splits, "stats": stats,
              "skipped": skipped}
  workdir_lib.write_text(epath.Path(out_dir) / MANIFEST, json.dumps(manifest, indent=1) + "\n")
  return manifest


def verify_files(data_dir, flag: str = "--verify") -> dict:
  """Every split of a records directory against its manifest: each shard's size, record
  count and CRC-32, then every record decoded (its own CRC-32), its label one of the
  manifest's classes, a raw record's size the manifest's shape, and each split's labels
  counted against its class_counts; returns {split: count}. DataError names the first
  split, file and record that fails (WorkdirError naming `flag` for an unusable URL)."""
  manifest = read_manifest(data_dir, flag)
  counts = {}
  for split in manifest["splits"]:
    source = open_split(data_dir, split, manifest, verify_files=True)
    _verify_records(source, manifest)
    counts[split] = len(source)
  return counts


_VERIFY_CHUNK = 256   # records read at a time by verify_files


def _verify_records(source: SplitSource, manifest: dict) -> None:
  """Every record of a split decoded and its label checked (verify_files)."""
  num_classes = len(manifest["classes"])
  raw_size = int(np.prod(manifest["shape"])) if manifest["encoding"] == "raw" else None
  seen = {}
  for shard in range(len(source.files)):
    path = source.path(shard)
    n = int(source.offsets[shard + 1] - source.offsets[shard])
    reader = open_reader(path)
    try:
      for start in range(0, n, _VERIFY_CHUNK):
        try:
          chunk = reader.read(start, min(n, start + _VERIFY_CHUNK))
        except Exception as e:  # noqa: BLE001
          raise errors.DataError(
              f"{path}: records {start}..{min(n, start + _VERIFY_CHUNK) - 1} cannot be read "
              f"({_reason(e)}); rewrite the records with {_CONVERT}") from None
        for j, record in enumerate(chunk, start):
          where = f"{path}: record {j} (split {source.name!r})"
          label, payload = decode(record, where)
          check_label(label, num_classes, where)
          if raw_size is not None and len(payload) != raw_size:
            raise errors.DataError(
                f"{where} holds {len(payload)} bytes, not the {raw_size} of shape "
                f"{tuple(manifest['shape'])}; rewrite the records with {_CONVERT}")
          seen[label] = seen.get(label, 0) + 1
    finally:
      try:
        reader.close()
      except Exception:  # noqa: BLE001  Damage is reported by the reads above.
        pass
  listed = manifest["splits"][source.name].get("class_counts")
  if listed is not None:
    listed = {int(k): v for k, v in listed.items() if v}
    if listed != seen:
      label = min(k for k in set(listed) | set(seen) if listed.get(k, 0) != seen.get(k, 0))
      raise errors.DataError(
          f"{epath.Path(source.data_dir) / MANIFEST}: split {source.name!r} holds "
          f"{seen.get(label, 0)} records of label {label}, its class_counts say {listed.get(label, 0)}; rewrite "
          f"the records with {_CONVERT}")
