"""Records sets a user can get wrong, each refused in one line (research/data/records.py):
labels outside the manifest's classes in any split (streaming evaluation, --verify), a
manifest with missing or wrongly typed keys, and a records directory given as a URL that
cannot be opened here. Tiny raw record sets (2x2x1 pixels), written with write_split."""
import glob
import json
import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("array_record", reason="pip install -e '.[streaming]'")

from research import errors  # noqa: E402
from research import workdir as workdir_lib  # noqa: E402
from research.data import records  # noqa: E402
from research.data import streaming  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "launch"))
import make_records  # noqa: E402  pylint: disable=g-import-not-at-top

SHAPE = (2, 2, 1)
NUM_CLASSES = 3
REWRITE = "rewrite the records with launch/make_records.py"


def _write_set(out, labels: dict, shape=SHAPE, per_shard=3) -> dict:
  """A raw records set at `out`: split -> its labels, NUM_CLASSES classes."""
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(0)
  stats = records.Stats(shape[-1])
  entries = {}
  for split, ys in labels.items():
    xs = rng.integers(0, 256, (len(ys), *shape), dtype=np.uint8)
    examples = ((int(y), x.tobytes(), x) for x, y in zip(xs, ys))
    entries[split] = records.write_split(out, split, examples, per_shard,
                                         stats if split == "train" else None)
  return records.write_manifest(out, source="test", classes=[f"c{k}" for k in range(NUM_CLASSES)],
                                encoding="raw", channels=shape[-1], shape=shape,
                                splits=entries, stats=stats.result(), skipped=[])


GOOD = {"train": [0, 1, 2, 0, 1, 2, 0, 1], "val": [0, 1, 2, 0, 1], "test": [2, 1, 0, 2, 1]}


@pytest.fixture(scope="module")
def good_set(tmp_path_factory):
  out = tmp_path_factory.mktemp("good") / "rec"
  _write_set(out, GOOD)
  return out


def _edit_manifest(data_dir, edit) -> None:
  path = os.path.join(data_dir, records.MANIFEST)
  manifest = json.loads(open(path).read())
  edit(manifest)
  with open(path, "w") as f:
    json.dump(manifest, f)


def _config(data_dir, **overrides):
  return records.config(str(data_dir), pipeline="streaming", valid_split="val",
                        test_split="test", **overrides)


def _one_error_line(capsys) -> str:
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  return lines[0]


# ------------------------------------------------- 1. labels outside the manifest's classes


def _bad_label_set(tmp_path, split: str, label: int, class_counts: str):
  """GOOD with `label` at example 4 of `split` (the second shard's record 1); the manifest's
  class_counts for it dropped ("none") or edited to look valid ("hidden")."""
  labels = {k: list(v) for k, v in GOOD.items()}
  labels[split][4] = label
  out = tmp_path / "rec"
  _write_set(out, labels)

  def edit(manifest):
    entry = manifest["splits"][split]
    if class_counts == "none":
      del entry["class_counts"]
    else:  # Counts that agree with the class list: only the record holds the label.
      counts = entry["class_counts"]
      counts["0"] = counts.get("0", 0) + counts.pop(str(label))
  _edit_manifest(out, edit)
  shard = sorted(glob.glob(str(out / f"{split}-*")))[1]
  return out, shard


@pytest.mark.every_case
@pytest.mark.parametrize("class_counts", ["none", "hidden"])
@pytest.mark.parametrize("label", [NUM_CLASSES, -1])
@pytest.mark.parametrize("split", ["val", "test"])
def test_streaming_refuses_a_valid_or_test_label_outside_the_classes(tmp_path, split, label,
                                                                     class_counts):
  out, shard = _bad_label_set(tmp_path, split, label, class_counts)
  dataset = streaming.dataset(_config(out))  # The manifest alone does not show it.
  part = dataset.valid if split == "val" else dataset.test
  np.testing.assert_array_equal(part.y[:4], GOOD[split][:4])  # Good labels still read.
  for index in (slice(None), 4, [3, 4], slice(4, 5)):
    with pytest.raises(errors.DataError) as e:
      part.y[index]
    message = str(e.value)
    assert message.startswith(f"{shard}: record 1 (split {split!r}, example 4) holds label "
                              f"{label}, outside the manifest's 3 classes (0..2)"), message
    assert REWRITE in message and "\n" not in message


@pytest.mark.every_case
@pytest.mark.parametrize("label", [NUM_CLASSES, -1])
def test_verify_refuses_a_label_outside_the_classes(tmp_path, capsys, label):
  out, shard = _bad_label_set(tmp_path, "val", label, "none")
  with pytest.raises(errors.DataError) as e:
    records.verify_files(str(out))
  assert str(e.value).startswith(f"{shard}: record 1 (split 'val') holds label {label}, "
                                 "outside the manifest's 3 classes"), str(e.value)
  with pytest.raises(SystemExit) as e:
    make_records.main([f"--verify={out}"])
  assert e.value.code == 2
  line = _one_error_line(capsys)
  assert shard in line and f"holds label {label}" in line


def test_verify_counts_each_splits_labels_against_its_class_counts(tmp_path):
  out = tmp_path / "rec"
  _write_set(out, GOOD)
  assert records.verify_files(str(out)) == {"train": 8, "val": 5, "test": 5}

  def edit(manifest):  # val holds 0, 1, 2, 0, 1: claim one 0 is a 2.
    manifest["splits"]["val"]["class_counts"] = {"0": 1, "1": 2, "2": 2}
  _edit_manifest(out, edit)
  with pytest.raises(errors.DataError, match=r"manifest.json: split 'val' holds 2 records of "
                     r"label 0, its class_counts say 1; rewrite the records"):
    records.verify_files(str(out))


def test_verify_decodes_every_record(tmp_path):
  """A record whose payload no longer matches its own CRC-32, in a shard whose file CRC-32
  the manifest was updated to: only decoding every record finds it."""
  out = tmp_path / "rec"
  _write_set(out, GOOD)
  shard = sorted(glob.glob(str(out / "test-*")))[0]
  payloads = [records.encode(1, b"\0\0\0\0"), records.encode(1, b"\0\0\0\0")[:-1] + b"\1",
              records.encode(1, b"\0\0\0\0")]
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  writer = array_record_module.ArrayRecordWriter(shard, "group_size:1")
  for p in payloads:
    writer.write(p)
  writer.close()

  def edit(manifest):
    f = manifest["splits"]["test"]["files"][0]
    f["bytes"], f["crc32"] = os.path.getsize(shard), records.file_crc32(records.epath.Path(shard))
  _edit_manifest(out, edit)
  with pytest.raises(errors.DataError, match=r"record 1 \(split 'test'\) is corrupt "
                     r"\(checksum mismatch\)") as e:
    records.verify_files(str(out))
  assert shard in str(e.value)


@pytest.mark.slow
def test_a_streaming_run_with_an_out_of_range_val_label_exits_2_in_one_line(tmp_path, capsys):
  """research.main end to end: before the fix the run finished (exit 0), its metrics
  computed on label 3 of a 3-class set."""
  from research import main as main_lib  # pylint: disable=g-import-not-at-top
  labels = {"train": [k % 3 for k in range(8)], "val": [0, 1, 2, 3]}
  out = tmp_path / "rec"
  _write_set(out, labels, shape=(32, 32, 3), per_shard=4)
  _edit_manifest(out, lambda m: m["splits"]["val"].pop("class_counts"))
  with pytest.raises(SystemExit) as e:
    main_lib.main(["research.main", "--config=configs/alexnet_imagenet.py:cpu",
                   f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={out}",
                   "--config.data.image_size=32", "--config.data.resize=0",
                   "--config.data.num_workers=0", "--config.data.pca_jitter=0.0",
                   "--config.model.width=0.125", "--config.model.fc_sizes=(16, 16)",
                   "--config.model.conv1_stride=2", "--config.batch_size=4",
                   "--config.num_steps=2", "--config.eval_every=2", "--config.log_every=2",
                   "--config.eval_batch_size=4", "--config.checkpoint_every=0"])
  assert e.value.code == 2
  line = _one_error_line(capsys)
  assert "split 'val', example 3) holds label 3" in line, line


# ----------------------------------------------------- 2. the manifest's layout is checked


def _set(path, value):
  def edit(manifest):
    *keys, last = path
    target = manifest
    for key in keys:
      target = target[key]
    target[last] = value
  return edit


def _delete(path):
  def edit(manifest):
    *keys, last = path
    target = manifest
    for key in keys:
      target = target[key]
    del target[last]
  return edit


_VAL_FILE = ("splits", "val", "files", 0)
LAYOUTS = {
    "no_files": (_delete(("splits", "val", "files")),
                 '"splits".val.files is missing (expected a list of shard entries)'),
    "splits_a_list": (_set(("splits",), ["train", "val"]),
                      '"splits" is ["train", "val"], not an object of splits'),
    "split_a_string": (_set(("splits", "val"), "val-00000-of-00002.array_record"),
                       '"splits".val is "val-00000-of-00002.array_record", not an object'),
    "no_split_count": (_delete(("splits", "val", "count")),
                       '"splits".val.count is missing (expected a non-negative integer)'),
    "files_a_dict": (_set(("splits", "val", "files"), {}),
                     '"splits".val.files is {}, not a list of shard entries'),
    "file_a_string": (_set(_VAL_FILE, "val-00000-of-00002.array_record"),
                      '"splits".val.files[0] is "val-00000-of-00002.array_record", not an obj'),
    "no_bytes": (_delete((*_VAL_FILE, "bytes")),
                 '"splits".val.files[0].bytes is missing (expected a non-negative integer)'),
    "no_file_count": (_delete((*_VAL_FILE, "count")),
                      '"splits".val.files[0].count is missing'),
    "no_path": (_delete((*_VAL_FILE, "path")), '"splits".val.files[0].path is missing'),
    "path_outside": (_set((*_VAL_FILE, "path"), "../elsewhere.array_record"),
                     '"splits".val.files[0].path is "../elsewhere.array_record", not the name '
                     "of a shard file"),
    "no_crc32": (_delete((*_VAL_FILE, "crc32")), '"splits".val.files[0].crc32 is missing'),
    "bytes_a_string": (_set((*_VAL_FILE, "bytes"), "120"),
                       '"splits".val.files[0].bytes is "120", not a non-negative integer'),
    "count_negative": (_set((*_VAL_FILE, "count"), -1),
                       '"splits".val.files[0].count is -1, not a non-negative integer'),
    "count_a_bool": (_set(("splits", "val", "count"), True),
                     '"splits".val.count is true, not a non-negative integer'),
    "class_counts_key_x": (_set(("splits", "val", "class_counts"), {"x": 2}),
                           '"splits".val.class_counts has key "x", not a label (an integer)'),
    "class_counts_a_list": (_set(("splits", "val", "class_counts"), [2, 2, 1]),
                            '"splits".val.class_counts is [2, 2, 1], not an object'),
    "class_count_a_float": (_set(("splits", "val", "class_counts", "0"), 1.5),
                            "\"splits\".val.class_counts['0'] is 1.5, not a non-negative "),
    "classes_a_string": (_set(("classes",), "c0 c1 c2"),
                         '"classes" is "c0 c1 c2", not a list of class names'),
    "class_not_a_name": (_set(("classes", 1), 7), '"classes"[1] is 7, not a class name'),
    "no_classes_listed": (_set(("classes",), []), '"classes" lists no classes (a model needs '
                          "at least one); restore the class list, or rewrite the records"),
    "channels_a_string": (_set(("channels",), "1"), '"channels" is "1", not a positive integer'),
    "shape_missing": (_set(("shape",), None), '"shape" is null, not [height, width, 1]'),
    "shape_wrong_channels": (_set(("shape",), [2, 2, 3]), '"shape" is [2, 2, 3], not '),
    "stats_a_list": (_set(("stats",), [0.5]), '"stats" is [0.5], not an object'),
    "stats_mean_wrong_length": (_set(("stats", "mean"), [1.0, 2.0]),
                                '"stats".mean is [1.0, 2.0], not a list of 1 finite numbers'),
    "stats_mean_nan": (_set(("stats", "mean"), [float("nan")]),
                       '"stats".mean is [NaN], not a list of 1 finite numbers'),
    "stats_cov_text": (_set(("stats", "cov"), "identity"), '"stats".cov is "identity", not a '
                       "1x1 list of finite numbers"),
    "splits_empty": (_set(("splits",), {}), '"splits" is {}, not an object of splits'),
    "format_true": (_set(("format",), True), "is not a format-1 records manifest"),
    "label_negative": (_set(("splits", "val", "class_counts"), {"-1": 1, "0": 4}),
                       "split 'val' holds label -1 but \"classes\" lists 3 class(es)"),
}


@pytest.mark.every_case
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_manifest_with_a_missing_or_mistyped_key_is_one_line_naming_it(good_set, tmp_path,
                                                                          capsys, layout):
  edit, fragment = LAYOUTS[layout]
  out = tmp_path / "rec"
  shutil.copytree(good_set, out)
  _edit_manifest(out, edit)
  manifest_path = str(out / records.MANIFEST)
  for load in (records.read_manifest, records.verify_files,
               lambda d: streaming.dataset(_config(d)),
               lambda d: streaming.identity(_config(d))):
    with pytest.raises(errors.DataError) as e:
      load(str(out))
    message = str(e.value)
    assert message.startswith(manifest_path) and fragment in message, message
    assert "\n" not in message
    if layout not in ("format_true",):
      assert "rewrite the records with launch/make_records.py" in message, message
  with pytest.raises(SystemExit) as e:
    make_records.main([f"--verify={out}"])
  assert e.value.code == 2
  line = _one_error_line(capsys)
  assert manifest_path in line and fragment.split(",")[0] in line


def test_a_written_manifest_passes_the_layout_check(good_set, tmp_path):
  assert records.read_manifest(str(good_set))["splits"]["val"]["count"] == 5
  out = tmp_path / "rec"  # "image" records: shape null, 3 channels, no stats.
  out.mkdir()
  records.write_manifest(out, source="t", classes=["a"], encoding="image",
                         channels=3, shape=None,
                         splits={"train": records.write_split(out, "train", [], 4)}, stats={},
                         skipped=[])
  assert records.read_manifest(str(out))["splits"]["train"] == {
      "count": 0, "files": [], "class_counts": {}}


# ------------------------------------------------------------- 3. a records dir as a URL


@pytest.fixture
def without_gcsfs(monkeypatch):
  """gs:// as on a machine without gcsfs (and without TensorFlow's gfile)."""
  monkeypatch.setattr(workdir_lib, "_can_open", lambda scheme: False)


URLS = {
    "gs://bucket/rec": "needs the gcsfs package to reach gs://; pip install gcsfs",
    "http://h/rec": "http:// is not supported; use a local path or one of gs://",
    "gs:/bucket/rec": "looks like a gs:// URL missing a slash; write gs://bucket/rec",
}


@pytest.mark.every_case
@pytest.mark.parametrize("url", sorted(URLS))
def test_a_records_dir_url_that_cannot_be_opened_is_one_line(without_gcsfs, capsys, url):
  with pytest.raises(errors.WorkdirError) as e:
    records.read_manifest(url)
  assert str(e.value).startswith(f"--config.data.data_dir={url}") and URLS[url] in str(e.value)
  for load in (lambda: streaming.dataset(_config(url)),
               lambda: streaming.identity(_config(url))):
    with pytest.raises(errors.WorkdirError, match=f"--config.data.data_dir={url}"):
      load()
  with pytest.raises(errors.WorkdirError, match=f"--verify={url}"):
    records.verify_files(url)
  with pytest.raises(SystemExit) as e:
    make_records.main([f"--verify={url}"])
  assert e.value.code == 2
  line = _one_error_line(capsys)
  assert line.startswith(f"error: --verify={url}") and URLS[url] in line


def test_the_runner_reports_a_records_url_in_one_line_and_exits_2(tmp_path, capsys):
  from research import main as main_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    main_lib.main(["research.main", "--config=configs/alexnet_imagenet.py:cpu",
                   f"--workdir={tmp_path / 'run'}", "--config.data.data_dir=http://h/rec"])
  assert e.value.code == 2
  line = _one_error_line(capsys)
  assert line.startswith("error: --config.data.data_dir=http://h/rec: http:// is not "
                         "supported"), line
  assert not (tmp_path / "run").exists()


def test_a_relative_records_dir_still_loads(good_set, tmp_path, monkeypatch):
  monkeypatch.chdir(good_set.parent)
  assert records.read_manifest("rec")["classes"] == ["c0", "c1", "c2"]
  assert records.verify_files("rec") == {"train": 8, "val": 5, "test": 5}
  dataset = streaming.dataset(_config("rec"))
  np.testing.assert_array_equal(dataset.valid.y[:], GOOD["val"])
  np.testing.assert_array_equal(dataset.test.y[:], GOOD["test"])
  # A folder named like a scheme is refused only where checkpoints go, not for data.
  shutil.copytree("rec", os.path.join("data", "gs:", "rec"))
  assert records.read_manifest(os.path.join("data", "gs:", "rec"))["classes"] == ["c0", "c1",
                                                                                  "c2"]
