"""The records format, the converter and the streaming pipeline, on data the tests make.

An ImageNet-style tree of small JPEG/PNG files, and MNIST (IDX) and CIFAR-10 (binary) files
written in their real formats, are converted with launch/make_records.py. The streaming
pipeline must feed the in-memory pipeline's examples at every step, split each global batch
into disjoint host shares whose union is the epoch, resume exactly after a kill, and report
damaged records in one line with a non-zero exit.
"""
import glob
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import processes
import numpy as np
import pytest

pytest.importorskip("grain", reason="pip install -e '.[streaming]'")
pytest.importorskip("array_record", reason="pip install -e '.[streaming]'")
PIL = pytest.importorskip("PIL.Image", reason="pip install -e '.[streaming]'")

from configs import alexnet_imagenet  # noqa: E402
from research import errors  # noqa: E402
from research import metrics  # noqa: E402
from research import train  # noqa: E402
from research.data import cifar10  # noqa: E402
from research.data import core  # noqa: E402
from research.data import mnist  # noqa: E402
from research.data import records  # noqa: E402
from research.data import streaming  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "launch"))
import make_records  # noqa: E402  pylint: disable=g-import-not-at-top

CLASSES = ("ant", "bee", "cat")
TRAIN_PER_CLASS, VAL_PER_CLASS = 16, 4


def _write_tree(root, bad=()):
  """root/{train,val}/<class>/<i>.{JPEG,png}: 40-56 px images (a few grayscale PNGs), each
  class a different mean colour so a model can learn something; `bad`: unreadable files."""
  rng = np.random.default_rng(0)
  for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
    for k, name in enumerate(CLASSES):
      folder = os.path.join(root, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(count):
        h, w = rng.integers(40, 57, 2)
        base = np.array([60, 120, 190])[np.roll(np.arange(3), k)]
        img = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
        if i % 5 == 4:
          PIL.fromarray(img[..., 0], "L").save(os.path.join(folder, f"{i}.png"))
        else:
          PIL.fromarray(img).save(os.path.join(folder, f"{i}.JPEG"), quality=90)
  for path in bad:
    with open(os.path.join(root, path), "wb") as f:
      f.write(b"\xff\xd8 not really a JPEG")


def _convert(*args):
  make_records.main([*map(str, args)])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("tree")
  _write_tree(root)
  return root


@pytest.fixture(scope="module")
def image_records(tree, tmp_path_factory):
  out = tmp_path_factory.mktemp("image_records") / "rec"
  _convert("--format=imagefolder", f"--src={tree}", f"--out={out}", "--examples_per_shard=7",
           "--workers=1")
  return str(out)


@pytest.fixture(scope="module")
def idx_files(tmp_path_factory):
  """MNIST's four gzipped IDX files with 40 train and 12 test images."""
  d = tmp_path_factory.mktemp("idx")
  rng = np.random.default_rng(1)
  for split, n in (("train", 40), ("test", 12)):
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(d / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
      f.write(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
    with gzip.open(d / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
      f.write(struct.pack(">II", 0x801, n) + y.tobytes())
  return d


@pytest.fixture(scope="module")
def idx_records(idx_files, tmp_path_factory):
  out = tmp_path_factory.mktemp("idx_records") / "rec"
  _convert("--format=idx", f"--src={idx_files}", f"--out={out}", "--examples_per_shard=16")
  return str(out)


@pytest.fixture(scope="module")
def cifar_files(tmp_path_factory):
  """CIFAR-10's six binary batches, 6 images each."""
  d = tmp_path_factory.mktemp("cifar") / cifar10.DIRNAME
  d.mkdir()
  rng = np.random.default_rng(2)
  for name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
    rows = rng.integers(0, 256, (6, cifar10.RECORD_BYTES), dtype=np.uint8)
    rows[:, 0] = rng.integers(0, 10, 6)
    (d / name).write_bytes(rows.tobytes())
  return d


def _records_config(data_dir, **overrides):
  return records.config(data_dir, **overrides)


def _image_config(data_dir, **overrides):
  return records.config(data_dir, test_split="val", image_size=32, resize=36, **overrides)


# ------------------------------------------------------------------------------ converter


def test_idx_records_hold_the_idx_pixels_and_labels(idx_files, idx_records):
  x_train, y_train, x_test, y_test = mnist.load_idx_arrays("mnist", str(idx_files))
  manifest = records.read_manifest(idx_records)
  assert manifest["encoding"] == "raw" and manifest["shape"] == [28, 28, 1]
  assert manifest["splits"]["train"]["count"] == 40
  assert len(manifest["splits"]["train"]["files"]) == 3  # 16 + 16 + 8
  for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
    source = records.open_split(idx_records, split)
    got = [source[i] for i in range(len(source))]
    np.testing.assert_array_equal([label for label, _ in got], y)
    np.testing.assert_array_equal(
        np.stack([np.frombuffer(p, np.uint8).reshape(28, 28) for _, p in got]), x)
  counts = manifest["splits"]["train"]["class_counts"]
  assert counts == {str(k): int(v) for k, v in zip(*np.unique(y_train, return_counts=True))}
  np.testing.assert_allclose(manifest["stats"]["mean"], [x_train.mean()], rtol=1e-6)


def test_cifar_records_hold_the_batches(cifar_files, tmp_path):
  out = tmp_path / "rec"
  _convert("--format=cifar10", f"--src={cifar_files.parent}", f"--out={out}")
  manifest = records.read_manifest(out)
  assert manifest["classes"] == list(cifar10.CLASSES) and manifest["shape"] == [32, 32, 3]
  x, y = cifar10.read_batch(cifar_files / cifar10.TEST_FILE)
  source = records.open_split(out, "test")
  assert [source[i][0] for i in range(6)] == list(y)
  np.testing.assert_array_equal(np.frombuffer(source[3][1], np.uint8).reshape(32, 32, 3), x[3])
  assert records.verify_files(out) == {"train": 30, "test": 6}


def test_image_tree_records_keep_the_files_bytes(tree, image_records):
  manifest = records.read_manifest(image_records)
  assert manifest["classes"] == list(CLASSES) and manifest["encoding"] == "image"
  assert {s: e["count"] for s, e in manifest["splits"].items()} == {
      "train": 3 * TRAIN_PER_CLASS, "val": 3 * VAL_PER_CLASS}
  source = records.open_split(image_records, "val")
  label, payload = source[VAL_PER_CLASS + 1]  # Sorted by class, then file name.
  assert label == 1
  assert payload == (tree / "val" / "bee" / "1.JPEG").read_bytes()
  assert len(manifest["stats"]["cov"]) == 3


def test_unreadable_images_are_one_line_each_then_refused_or_skipped(tmp_path, capsys):
  root = tmp_path / "tree"
  _write_tree(root)
  bad = ("train/ant/broken.JPEG", "val/cat/empty.png")
  _write_tree(root, bad=bad)
  with pytest.raises(SystemExit) as exit_info:
    _convert("--format=imagefolder", f"--src={root}", f"--out={tmp_path / 'refused'}",
             "--workers=1")
  err = capsys.readouterr().err
  assert exit_info.value.code == 2
  for path in bad:
    assert sum(str(root / path) in line for line in err.splitlines()) == 1, err
  assert err.splitlines()[-1].startswith("error: 2 unreadable image(s)")
  assert not (tmp_path / "refused").exists()  # No shards of either split left behind.
  _convert("--format=imagefolder", f"--src={root}", f"--out={tmp_path / 'kept'}",
           "--on_bad=skip", "--workers=1")
  manifest = records.read_manifest(tmp_path / "kept")
  assert sorted(manifest["skipped"]) == sorted(str(root / p) for p in bad)
  assert manifest["splits"]["train"]["count"] == 3 * TRAIN_PER_CLASS


def test_links_and_sub_folders_are_listed_and_a_refusal_leaves_no_shards(tmp_path, capsys):
  root = tmp_path / "tree"
  _write_tree(root)
  odd = {"train/ant/loop.JPEG": "a symbolic link loop",
         "val/bee/gone.JPEG": "a dangling symbolic link",
         "train/cat/more": "a folder (images in sub-folders are not read"}
  os.symlink("loop.JPEG", root / "train/ant/loop.JPEG")
  os.symlink(root / "nowhere.JPEG", root / "val/bee/gone.JPEG")
  os.makedirs(root / "train/cat/more")
  shutil.copy(root / "train/cat/0.JPEG", root / "train/cat/more/0.JPEG")
  out = tmp_path / "refused"
  with pytest.raises(SystemExit) as exit_info:
    _convert("--format=imagefolder", f"--src={root}", f"--out={out}", "--workers=1")
  err = capsys.readouterr().err
  assert exit_info.value.code == 2
  for path, what in odd.items():
    assert sum(f"{root / path} is {what}" in line for line in err.splitlines()) == 1, err
  assert err.splitlines()[-1].startswith("error: 3 unreadable image(s) or entries")
  assert not out.exists()  # Neither train's nor val's shards, nor the directory it made.
  (tmp_path / "kept_dir").mkdir()  # An --out that existed stays, empty.
  with pytest.raises(SystemExit):
    _convert("--format=imagefolder", f"--src={root}", f"--out={tmp_path / 'kept_dir'}",
             "--workers=1")
  assert os.listdir(tmp_path / "kept_dir") == []
  _convert("--format=imagefolder", f"--src={root}", f"--out={tmp_path / 'kept'}",
           "--on_bad=skip", "--workers=1")
  assert sorted(records.read_manifest(tmp_path / "kept")["skipped"]) == sorted(
      str(root / p) for p in odd)


# ------------------------------------------------------------------ damage is one line


def _damaged(src, tmp_path, how):
  out = tmp_path / how
  shutil.copytree(src, out)
  shard = sorted(glob.glob(str(out / "train-*")))[1]
  if how == "missing":
    os.remove(shard)
  elif how == "truncated":
    with open(shard, "r+b") as f:
      f.truncate(os.path.getsize(shard) - 100)
  elif how == "corrupt":
    data = bytearray(open(shard, "rb").read())
    data[200] ^= 0xFF  # Inside the first chunk's records.
    open(shard, "wb").write(bytes(data))
  elif how == "manifest":
    manifest = json.loads((out / records.MANIFEST).read_text())
    manifest["splits"]["train"]["files"][1]["count"] += 1
    (out / records.MANIFEST).write_text(json.dumps(manifest))
  elif how == "no_manifest":
    os.remove(out / records.MANIFEST)
  return out, shard


@pytest.mark.parametrize("how,match", [
    ("missing", "is missing"), ("truncated", "bytes, manifest.json says"),
    ("manifest", "records, manifest.json says"), ("no_manifest", "manifest.json is missing"),
])
def test_a_damaged_records_set_is_refused_at_load_naming_the_file(image_records, tmp_path, how,
                                                                  match):
  out, shard = _damaged(image_records, tmp_path, how)
  with pytest.raises(errors.DataError, match=match) as e:
    streaming.dataset(_image_config(str(out)))
  assert (str(out / records.MANIFEST) if how == "no_manifest" else shard) in str(e.value)
  assert "\n" not in str(e.value)


def test_a_corrupt_record_is_one_line_naming_the_file(image_records, tmp_path):
  out, shard = _damaged(image_records, tmp_path, "corrupt")
  source = records.open_split(str(out), "train")  # Sizes and counts still match.
  first = int(source.offsets[1])
  with pytest.raises(errors.DataError, match="cannot be read") as e:
    source[first]
  assert str(e.value).startswith(f"{shard}: record 0") and "\n" not in str(e.value)
  # Through grain: the worker's DataError reaches the caller as itself.
  examples = streaming.Examples(_image_config(str(out)), seed=0, batch_size=8)
  with pytest.raises(errors.DataError, match=os.path.basename(shard)):
    list(streaming.batches(examples, 0, examples.steps_per_epoch))


def test_a_block_header_damaged_past_the_first_chunk_is_one_line_at_load(image_records,
                                                                          tmp_path):
  out = tmp_path / "header"
  shutil.copytree(image_records, out)
  shard = sorted(glob.glob(str(out / "val-*")))[0]
  content = bytearray(open(shard, "rb").read())
  content[65536] ^= 0xFF  # riegeli notices on close(), after the record count read fine.
  open(shard, "wb").write(bytes(content))
  with pytest.raises(errors.DataError, match="block header hash mismatch") as e:
    records.open_split(str(out), "val")
  assert str(e.value).startswith(f"{shard} is damaged") and "--verify" in str(e.value)
  assert "\n" not in str(e.value)


def test_verify_reads_every_shard_against_its_crc32(image_records, tmp_path):
  out, shard = _damaged(image_records, tmp_path, "corrupt")  # Same size and record count.
  assert records.verify_files(image_records) == {"train": 48, "val": 12}
  with pytest.raises(errors.DataError, match="does not match its CRC-32") as e:
    records.verify_files(str(out))
  assert shard in str(e.value)


def test_a_payload_that_fails_its_checksum_is_one_line():
  record = bytearray(records.encode(3, b"pixels"))
  assert records.decode(bytes(record), "f: record 0") == (3, b"pixels")
  record[-1] ^= 1
  with pytest.raises(errors.DataError, match="f: record 0 is corrupt .checksum mismatch."):
    records.decode(bytes(record), "f: record 0")


@pytest.mark.slow
def test_the_runner_exits_2_with_one_line_for_a_missing_shard(image_records, tmp_path):
  out, shard = _damaged(image_records, tmp_path, "missing")
  result = subprocess.run(
      [sys.executable, "-m", "research.main", "--config=configs/alexnet_imagenet.py:cpu",
       f"--config.data.data_dir={out}", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=processes.GUARD_S)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and shard in lines[0] and "Traceback" not in result.stderr


# ---------------------------------------------------------------------- order and shards


@pytest.mark.parametrize("kind", ["image", "raw"])
def test_streaming_batches_are_the_memory_pipelines_batches(kind, image_records, idx_records):
  cfg = _image_config(image_records) if kind == "image" else _records_config(idx_records)
  memory = records.records(cfg)
  examples = streaming.Examples(cfg, seed=5, batch_size=8)
  n = len(memory.train)
  start, stop = 3, 3 + 2 * (n // 8) + 1  # Crosses two epoch boundaries.
  got = list(streaming.batches(examples, start, stop))
  idx_SxB = core.batch_indices(5, n, 8, start, stop - start)
  assert len(got) == stop - start
  for (x_B, y_B), idx_B in zip(got, idx_SxB):
    np.testing.assert_array_equal(x_B, memory.train.x[idx_B])
    np.testing.assert_array_equal(y_B, memory.train.y[idx_B])


@pytest.mark.slow
def test_grain_worker_processes_give_the_same_batches(image_records):
  cfg = _image_config(image_records, random_crop=True, flip=True, pca_jitter=0.1)
  examples = streaming.Examples(cfg, seed=1, batch_size=8)
  in_process = list(streaming.batches(examples, 0, 8))
  workers = list(streaming.batches(examples, 0, 8, num_workers=2))
  for (a, ya), (b, yb) in zip(in_process, workers, strict=True):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_read_disjoint_shares_whose_union_is_the_epoch(hosts):
  n, b = 50, 8
  steps = n // b  # One epoch; n % b examples are dropped, as in the memory pipeline.
  shares = [streaming.host_indices(3, n, b, 0, steps, p, hosts) for p in range(hosts)]
  flat = np.concatenate([s.ravel() for s in shares])
  assert len(flat) == len(set(flat.tolist())) == steps * b
  np.testing.assert_array_equal(np.sort(flat),
                                np.sort(core.epoch_permutation(3, 0, n)[:steps * b]))
  # Concatenated in process order, the shares are the global batches.
  np.testing.assert_array_equal(np.concatenate(shares, axis=1),
                                core.batch_indices(3, n, b, 0, steps))


def test_each_host_decodes_its_share_with_the_augmentation_of_one_host(image_records):
  cfg = _image_config(image_records, random_crop=True, flip=True, pca_jitter=0.1)
  one = streaming.Examples(cfg, seed=2, batch_size=8)
  halves = [streaming.Examples(cfg, seed=2, batch_size=8, process_index=p, process_count=2)
            for p in range(2)]
  for step in (0, 7):  # Epochs 0 and 1.
    whole = [one(step * 8 + j) for j in range(8)]
    split = [halves[j // 4](step * 4 + j % 4) for j in range(8)]
    for (xa, ya), (xb, yb) in zip(whole, split):
      np.testing.assert_array_equal(xa, xb)
      assert ya == yb
  # The augmentation does something, and differs between steps of one example.
  plain = streaming.Examples(_image_config(image_records), seed=2, batch_size=8)
  assert not np.array_equal(one(0)[0], plain(0)[0])


def test_streaming_needs_records_and_a_known_pipeline():
  from configs import default
  config = default.get_config()
  config.data.pipeline = "streaming"
  with pytest.raises(errors.ConfigError, match="launch/make_records.py"):
    streaming.enabled(config.data)
  with pytest.raises(errors.ConfigError, match="data.pipeline='disk'"):
    streaming.enabled(records.config("/x", pipeline="disk"))
  with pytest.raises(errors.ConfigError, match="data.num_workers=-1"):
    records.check_config(records.config("/x", num_workers=-1))


# --------------------------------------------------------------------------- training runs


def _tiny_overrides(data_dir, **extra):
  """configs/alexnet_imagenet.py:cpu made smaller still: 32x32 crops, conv1 stride 2, an
  eighth of the width."""
  return {"data.data_dir": str(data_dir), "data.image_size": 32, "data.resize": 36,
          "model.width": 0.125, "model.fc_sizes": (32, 32), "model.conv1_stride": 2, **extra}


def _tiny_config(data_dir, **extra):
  config = alexnet_imagenet.get_config("cpu")
  for key, value in _tiny_overrides(data_dir, **extra).items():
    group, _, field = key.rpartition(".")
    (config[group] if group else config)[field] = value
  return config


def _params(state):
  return [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(state["params"])]


def _records_of(workdir):
  return [{k: v for k, v in r.items() if k not in metrics.TIMING_FIELDS}
          for r in metrics.read_metrics(str(workdir))]


@pytest.mark.slow
def test_a_streaming_run_trains_as_the_memory_run_does(image_records, tmp_path):
  # The ImageNet config's cpu variant as it is (64x64 crops of the paper's augmentation).
  config = alexnet_imagenet.get_config("cpu")
  config.data.data_dir = image_records
  streamed = train.train_and_evaluate(config, tmp_path / "streaming")
  assert streamed["state"]["params"]["conv"][0]["w"].shape == (11, 11, 3, 24)
  # The host-side augmentation (crop, flip, jitter) is the streaming pipeline's own (its
  # effect: test_each_host_decodes_...); the two pipelines compare with it off.
  in_memory = train.train_and_evaluate(
      _tiny_config(image_records, **{"data.pipeline": "memory", "data.random_crop": False,
                                     "data.flip": False, "data.pca_jitter": 0.0}),
      tmp_path / "memory")
  plain = train.train_and_evaluate(
      _tiny_config(image_records, **{"data.random_crop": False, "data.flip": False,
                                     "data.pca_jitter": 0.0}), tmp_path / "plain")
  for a, b in zip(_params(plain["state"]), _params(in_memory["state"]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _records_of(tmp_path / "plain") == _records_of(tmp_path / "memory")
  assert np.isfinite(streamed["test"]["loss"])


def _flags(overrides):
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def _main(workdir, overrides, *extra):
  return [sys.executable, "-m", "research.main", "--config=configs/alexnet_imagenet.py:cpu",
          f"--workdir={workdir}", *_flags(overrides), *extra]


def _env():
  # PYTHON: launch/multihost_local.sh runs this interpreter, not whatever `python` is on PATH.
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", PYTHON=sys.executable)


@pytest.mark.slow
def test_a_streaming_run_killed_mid_run_resumes_exactly(image_records, tmp_path):
  # One chunk length (4): one compilation per process.
  fields = dict(num_steps=40, log_every=4, eval_every=20, checkpoint_every=8,
                keep_checkpoints=10)
  overrides = _tiny_overrides(image_records, **fields)
  config = _tiny_config(image_records, **fields)
  reference = tmp_path / "reference"
  subprocess.run(_main(reference, overrides), cwd=REPO, env=_env(), check=True,
                 capture_output=True, timeout=processes.GUARD_S)
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_main(workdir, overrides), cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  # Killed once the checkpoint at step 16 is committed, before the run ends.
  deadline = time.time() + processes.GUARD_S
  while not (workdir / "checkpoints" / "16").is_dir():
    assert proc.poll() is None, "the run ended before the kill point"
    assert time.time() < deadline
    time.sleep(0.001)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / "checkpoints" / "40").exists()
  result = subprocess.run(_main(workdir, overrides), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=processes.GUARD_S)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming" in result.stderr
  assert _records_of(workdir) == _records_of(reference)
  want, want_step = train.restore_state(config, str(reference))
  got, got_step = train.restore_state(config, str(workdir))
  assert want_step == got_step == 40
  for a, b in zip(_params(want), _params(got), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_two_processes_reach_the_params_of_one(image_records, tmp_path):
  overrides = _tiny_overrides(image_records, num_steps=6, checkpoint_every=6)
  config = _tiny_config(image_records, num_steps=6, checkpoint_every=6)
  one = train.train_and_evaluate(config, tmp_path / "one")
  # Robust under load: the coordinator's port is held from its choice to its bind (the
  # launcher's own pick is free only when chosen, and a loaded machine's other tests take
  # ports in between), and the only limit is a hang's guard, not a duration.
  with processes.reserved_port() as port:
    result = subprocess.run(
        ["bash", os.path.join(REPO, "launch", "multihost_local.sh"), "-n", "2",
         f"--port={port}", f"--log_dir={tmp_path / 'logs'}", "--",
         "--config=configs/alexnet_imagenet.py:cpu", f"--workdir={tmp_path / 'two'}",
         *_flags(overrides)],
        cwd=REPO, env=dict(_env(), PYTHON=sys.executable, **processes.MULTIPROCESS_ENV),
        capture_output=True, text=True,
        timeout=processes.GUARD_S)
  logs = "".join(p.read_text()[-1500:] for p in sorted((tmp_path / "logs").glob("*.log")))
  assert result.returncode == 0, result.stderr[-1500:] + logs
  two, step = train.restore_state(config, str(tmp_path / "two"))
  assert step == 6
  for a, b in zip(_params(one["state"]), _params(two), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert [r["split"] for r in _records_of(tmp_path / "two")] == [
      r["split"] for r in _records_of(tmp_path / "one")]


def test_a_resume_over_changed_records_is_refused(image_records, tmp_path):
  from research import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  identity = streaming.identity(_image_config(image_records))
  saved = streaming.iterator_state(16, identity, mesh)
  streaming.check_restored(saved, 16, identity, image_records)  # The same records: resumes.
  changed, _ = _damaged(image_records, tmp_path, "manifest")
  with pytest.raises(errors.DataError, match="changed since the checkpoint"):
    streaming.check_restored(saved, 16, streaming.identity(_image_config(str(changed))),
                             str(changed))
  with pytest.raises(errors.DataError, match="data position 16"):
    streaming.check_restored(saved, 24, identity, image_records)


# ------------------------------------------------- faults of a streaming run: one line each

# A guard against a hung process, never a timing: these commands take seconds, minutes on a
# machine loaded many times over.
_GUARD_S = processes.GUARD_S


def _snapshot(workdir) -> dict:
  """Every file under workdir (the lock aside) -> its bytes: what a refusal must not touch."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      if name != ".lock":
        path = os.path.join(root, name)
        out[os.path.relpath(path, workdir)] = open(path, "rb").read()
  return out


def _error_line(result) -> str:
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  return lines[0]


@pytest.fixture(scope="module")
def finished(image_records, tmp_path_factory):
  """(records, workdir, overrides) of a finished 4-step streaming run on its own copy of the
  records, which tests damage and restore in place (the run's config names the path)."""
  root = tmp_path_factory.mktemp("finished")
  data = root / "rec"
  shutil.copytree(image_records, data)
  overrides = _tiny_overrides(data, num_steps=4, checkpoint_every=4)
  subprocess.run(_main(root / "run", overrides), cwd=REPO, env=_env(), check=True,
                 capture_output=True, timeout=_GUARD_S)
  return data, root / "run", overrides


@pytest.fixture
def restored_after(finished):
  """Puts the finished run's records back as they were after the test."""
  data = finished[0]
  saved = {name: (data / name).read_bytes() for name in os.listdir(data)}
  yield finished
  for name, content in saved.items():
    (data / name).write_bytes(content)


def _without_last_class(data_dir, keep_counts=True):
  manifest = json.loads((data_dir / records.MANIFEST).read_text())
  manifest["classes"] = manifest["classes"][:-1]
  if not keep_counts:  # The counts agree with the list: only the records hold the label.
    for entry in manifest["splits"].values():
      entry["class_counts"].pop(str(len(manifest["classes"])), None)
  (data_dir / records.MANIFEST).write_text(json.dumps(manifest))


def test_labels_past_the_manifests_classes_are_refused(image_records, tmp_path):
  data = tmp_path / "rec"
  shutil.copytree(image_records, data)
  _without_last_class(data)
  with pytest.raises(errors.DataError, match=r"split 'train' holds label 2 but \"classes\" "
                     r"lists 2 class\(es\)") as e:
    train.train_and_evaluate(_tiny_config(data, num_steps=2), tmp_path / "run")
  assert "\n" not in str(e.value)
  assert not (tmp_path / "run").exists()  # Refused before anything: no workdir left behind.
  # A manifest whose counts were edited to agree: the record itself is refused when read.
  shutil.copy(os.path.join(image_records, records.MANIFEST), data / records.MANIFEST)
  _without_last_class(data, keep_counts=False)
  examples = streaming.Examples(_image_config(str(data)), seed=0, batch_size=8)
  with pytest.raises(errors.DataError, match=r"holds label 2, outside the manifest's 2 "
                     r"classes"):
    list(streaming.batches(examples, 0, examples.steps_per_epoch))


def test_a_records_dir_that_does_not_exist_leaves_no_workdir(tmp_path):
  with pytest.raises(errors.DataError, match="manifest.json is missing"):
    train.train_and_evaluate(_tiny_config(tmp_path / "nowhere", num_steps=2),
                             tmp_path / "new" / "run")
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "val"])
def test_a_damaged_shard_is_one_line_for_a_new_and_a_finished_run(restored_after, tmp_path,
                                                                   split):
  data, workdir, overrides = restored_after
  shard = sorted(glob.glob(str(data / f"{split}-*")))[0]
  content = bytearray(open(shard, "rb").read())
  content[65536] ^= 0xFF  # A block header past the first chunk: riegeli fails on close.
  open(shard, "wb").write(bytes(content))
  before = _snapshot(workdir)
  for run in (workdir, tmp_path / "new"):
    result = subprocess.run(_main(run, overrides), cwd=REPO, env=_env(), capture_output=True,
                            text=True, timeout=_GUARD_S)
    assert result.returncode == 2, result.stderr[-3000:]
    line = _error_line(result)
    assert shard in line and "block header hash mismatch" in line and "--verify" in line
  assert _snapshot(workdir) == before
  assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_finished_run_over_changed_records_says_so_and_keeps_the_run(restored_after):
  data, workdir, overrides = restored_after
  manifest = json.loads((data / records.MANIFEST).read_text())
  manifest["classes"].append("dog")  # Another class count: the saved state no longer fits.
  (data / records.MANIFEST).write_text(json.dumps(manifest))
  before = _snapshot(workdir)
  result = subprocess.run(_main(workdir, overrides), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=_GUARD_S)
  assert result.returncode == 2, result.stderr[-3000:]
  line = _error_line(result)
  assert f"the records in {data} changed since" in line and "delete" not in line
  assert "state does not match" not in result.stderr and "warning" not in result.stderr.lower()
  assert _snapshot(workdir) == before


_BATCHES_WITH_WORKERS = r"""
import sys
from research.data import records, streaming
if __name__ == "__main__":  # grain's workers are spawned: they import this file.
  cfg = records.config(sys.argv[1], test_split="val", image_size=32, resize=36)
  examples = streaming.Examples(cfg, seed=0, batch_size=8)
  it = streaming.batches(examples, 0, 4, num_workers=2)
  for _ in range(4):
    x, y = next(it)
  del x, y
  streaming.close_batches(it)
  print("done")
"""


def test_grain_workers_leave_no_shared_memory_behind(image_records, tmp_path):
  script = tmp_path / "batches.py"
  script.write_text(_BATCHES_WITH_WORKERS)
  result = subprocess.run([sys.executable, str(script), image_records], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=_GUARD_S)
  assert result.returncode == 0 and result.stdout == "done\n", result.stderr[-3000:]
  assert "leaked" not in result.stderr, result.stderr


@pytest.mark.slow
def test_a_run_with_workers_good_or_failed_prints_no_leak_warning(image_records, tmp_path):
  overrides = _tiny_overrides(image_records, num_steps=4, **{"data.num_workers": 2})
  result = subprocess.run(_main(tmp_path / "good", overrides), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=_GUARD_S)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "leaked" not in result.stderr and "warning" not in result.stderr.lower()
  out, shard = _damaged(image_records, tmp_path, "corrupt")  # Read by a worker: fails there
  # (within 40 steps, the first epoch).
  result = subprocess.run(_main(tmp_path / "failed", dict(overrides, num_steps=40, **{"data.data_dir": out})),
                          cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=_GUARD_S)
  assert result.returncode == 2 and shard in _error_line(result)
  assert "leaked" not in result.stderr
