"""launch/make_records.py on bad input: one `error:` line, exit 2, no traceback, the user's
files kept and nothing of the refused run left behind. Trees are a few 8x8 images."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import processes
import pytest

pytest.importorskip("array_record", reason="pip install -e '.[streaming]'")
PIL = pytest.importorskip("PIL.Image", reason="pip install -e '.[streaming]'")

from research.data import download  # noqa: E402
from research.data import mnist  # noqa: E402
from research.data import records  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "launch"))
import make_records  # noqa: E402  pylint: disable=g-import-not-at-top


def _tree(root, classes=("ant", "bee"), per_class=2):
  for split in ("train", "val"):
    for k, name in enumerate(classes):
      os.makedirs(root / split / name, exist_ok=True)
      for i in range(per_class):
        img = np.full((8, 8, 3), 40 * (k + 1) + i, np.uint8)
        PIL.fromarray(img).save(root / split / name / f"{i}.JPEG")
  return root


def _refused(capsys, *args):
  """(exit code, the one line on stderr) of a refused conversion."""
  with pytest.raises(SystemExit) as exit_info:
    make_records.main([*map(str, args), "--workers=1"])
  err = capsys.readouterr().err
  assert "Traceback" not in err
  return exit_info.value.code, err.splitlines()


def _one_line(capsys, *args):
  code, lines = _refused(capsys, *args)
  assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, n), root)
                for d, dirs, files in os.walk(root) for n in dirs + files)


# ------------------------------------------------------------------ 1: the user's files


@pytest.mark.every_case
@pytest.mark.parametrize("name", ["mydata-00000-of-00001.array_record",
                                  "train-00000-of-00001.array_record", "mine.array_record",
                                  ".train-00000.tmp", records.MANIFEST])
def test_an_out_holding_records_files_is_refused_and_kept(tmp_path, capsys, name):
  src, out = _tree(tmp_path / "src"), tmp_path / "out"
  out.mkdir()
  (out / name).write_text("precious")
  line = _one_line(capsys, "--format=imagefolder", f"--src={src}", f"--out={out}")
  said = "holds the temporary files of a conversion that stopped" if name.endswith(
      ".tmp") else "already holds"
  assert f"--out={out} {said}" in line and name in line and "new" in line
  assert os.listdir(out) == [name] and (out / name).read_text() == "precious"


def test_a_refused_conversion_removes_only_what_it_wrote(tmp_path, capsys):
  src, out = _tree(tmp_path / "src"), tmp_path / "out"
  (src / "val" / "ant" / "empty.JPEG").write_bytes(b"")  # Refused after train is written.
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  code, lines = _refused(capsys, "--format=imagefolder", f"--src={src}", f"--out={out}")
  assert code == 2 and lines[-1].startswith("error: 1 unreadable image(s)")
  assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
  # Folders it made (all of new/deep/rec) go too; ones that were there stay.
  code, _ = _refused(capsys, "--format=imagefolder", f"--src={src}",
                     f"--out={tmp_path / 'new' / 'deep' / 'rec'}")
  assert code == 2 and not (tmp_path / "new").exists()
  code, _ = _refused(capsys, "--format=imagefolder", f"--src={src}",
                     f"--out={tmp_path / 'new' / '..' / 'x'}")  # makedirs would make new/
  assert code == 2 and sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_cleanup_spares_shard_named_files_that_were_there_before(tmp_path):
  (tmp_path / "theirs-00000-of-00001.array_record").write_text("precious")
  (tmp_path / "train-00000-of-00001.array_record").write_text("ours")
  make_records._remove_partial(str(tmp_path), {"theirs-00000-of-00001.array_record"}, [])
  assert os.listdir(tmp_path) == ["theirs-00000-of-00001.array_record"]


# ----------------------------------------------------------------------------- 2: URLs


@pytest.mark.every_case
@pytest.mark.parametrize("flag,value,match", [
    ("--out", "gs://bucket/rec", "writes local directories only"),
    ("--out", "gs:/bucket/rec", "writes local directories only"),
    ("--out", "s3:bucket/rec", "writes local directories only"),
    ("--out", "file:///tmp/rec", "pass the local path itself"),
    ("--out", "rec:/x", "writes local directories only"),
    ("--src", "gs://bucket/imagenet", "reads local directories only"),
])
def test_a_url_src_or_out_is_refused_creating_nothing(tmp_path, capsys, monkeypatch, flag,
                                                      value, match):
  src = _tree(tmp_path / "src")
  monkeypatch.chdir(tmp_path)
  before = _listing(tmp_path)
  args = {"--src": str(src), "--out": str(tmp_path / "rec"), flag: value}
  line = _one_line(capsys, "--format=imagefolder", *(f"{k}={v}" for k, v in args.items()))
  assert line.startswith(f"error: {flag}={value}") and match in line, line
  if flag == "--out" and "://" in value and not value.startswith("file"):
    assert "gsutil -m cp -r OUT" in line
  assert _listing(tmp_path) == before


def test_a_local_folder_ending_in_a_colon_is_no_url(tmp_path, capsys):
  # Records paths, unlike checkpoint paths, are never read as URLs (records.data_path).
  src, out = _tree(tmp_path / "src"), tmp_path / "gs:" / "rec"
  make_records.main(["--format=imagefolder", f"--src={src}", f"--out={out}", "--workers=1"])
  make_records.main([f"--verify={out}"])
  assert capsys.readouterr().out.splitlines()[-1] == f"{out}: ok (train 4, val 4)"


@pytest.mark.every_case
@pytest.mark.parametrize("value,match", [
    ("http://host/rec", "http:// is not supported"),
    ("gs:/bucket/rec", "missing a slash"),
    ("gs://bucket/rec", "pip install gcsfs"),
])
def test_verify_of_a_url_is_one_line(tmp_path, capsys, monkeypatch, value, match):
  if "gcsfs" in match and importlib.util.find_spec("gcsfs"):
    pytest.skip("gcsfs is installed: gs:// can be reached")
  monkeypatch.chdir(tmp_path)
  line = _one_line(capsys, f"--verify={value}")
  assert line.startswith(f"error: --verify={value}") and match in line, line
  assert os.listdir(tmp_path) == []


def test_a_url_out_in_a_real_process_is_one_line_and_creates_nothing(tmp_path):
  src = _tree(tmp_path / "src")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "launch", "make_records.py"), "--format=imagefolder",
       f"--src={src}", "--out=gs://bucket/rec"],
      cwd=tmp_path, capture_output=True, text=True, timeout=processes.GUARD_S)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: --out=gs://")
  assert sorted(os.listdir(tmp_path)) == ["src"]


# --------------------------------------------------------------------------- 3: splits


@pytest.mark.every_case
@pytest.mark.parametrize("splits,match", [
    (",", "names no split"), ("train,train", "names train twice"),
    ("train,../val", "not a plain folder name"), ("train,val/ant", "not a plain folder name"),
])
def test_bad_splits_are_one_line(tmp_path, capsys, splits, match):
  src, out = _tree(tmp_path / "src"), tmp_path / "out"
  line = _one_line(capsys, "--format=imagefolder", f"--src={src}", f"--out={out}",
                   f"--splits={splits}")
  assert line.startswith(f"error: --splits={splits}") and match in line, line
  assert not out.exists()


# ---------------------------------------------------------------------- 4: out in src


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_out_inside_a_split_folder_is_refused(tmp_path, capsys, split):
  src = _tree(tmp_path / "src")
  before = _listing(src)
  line = _one_line(capsys, "--format=imagefolder", f"--src={src}",
                   f"--out={src / split / 'rec'}")
  assert f"is inside --src's {split}/ folder" in line and _listing(src) == before


def test_an_out_beside_the_splits_or_around_src_converts(tmp_path, capsys, monkeypatch):
  # Classes come only from SRC/<split>/, so SRC/records (or SRC itself) is no class; nor is
  # an --out that holds --src. "~" in --src=~/x reaches the converter unexpanded.
  src = _tree(tmp_path / "src")
  monkeypatch.setenv("HOME", str(tmp_path))
  for out in (src / "records", src, tmp_path / "around"):
    argv = ["--format=imagefolder", "--src=~/src", f"--out={out}", "--workers=1"]
    make_records.main(argv)
    assert records.read_manifest(str(out))["classes"] == ["ant", "bee"]
    assert records.verify_files(str(out)) == {"train": 4, "val": 4}
    for name in os.listdir(out):
      if name == records.MANIFEST or name.endswith(".array_record"):
        os.remove(out / name)
  assert "wrote" in capsys.readouterr().out


# ------------------------------------------------------------------- 5: hidden entries


def test_hidden_entries_are_left_out_and_listed(tmp_path, capsys):
  src, out = _tree(tmp_path / "src"), tmp_path / "out"
  (src / "train" / "ant" / ".hidden.JPEG").write_bytes(
      (src / "train" / "ant" / "0.JPEG").read_bytes())
  (src / "train" / ".DS_Store").write_bytes(b"\0")
  (src / "val" / "bee" / ".cache").mkdir()
  (src / "val" / ".more").mkdir()
  make_records.main(["--format=imagefolder", f"--src={src}", f"--out={out}", "--workers=1"])
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert lines == [
      f"left out 2 hidden entries in {src / 'train'} (names starting with '.'; rename one to "
      "include it): .DS_Store, ant/.hidden.JPEG",
      f"left out 2 hidden entries in {src / 'val'} (names starting with '.'; rename one to "
      "include it): .more/, bee/.cache/"], lines
  assert captured.out.rstrip().endswith("; left out 4 hidden")
  manifest = records.read_manifest(out)
  assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 4, "val": 4}
  assert manifest["classes"] == ["ant", "bee"]


# --------------------------------------------------------------------- 6: the right fix


def test_a_file_directly_in_a_split_is_called_a_file(tmp_path, capsys):
  src, out = _tree(tmp_path / "src"), tmp_path / "out"
  (src / "train" / "stray.JPEG").write_bytes((src / "train" / "ant" / "0.JPEG").read_bytes())
  (src / "val" / "cow").mkdir()
  line = _one_line(capsys, "--format=imagefolder", f"--src={src}", f"--out={out}")
  assert line == (f"error: {src / 'train'} has files directly in it (not in a class folder): "
                  "stray.JPEG; move them into their class folder or remove them")
  assert not out.exists()
  (src / "train" / "stray.JPEG").unlink()
  line = _one_line(capsys, "--format=imagefolder", f"--src={src}", f"--out={out}")
  assert "class folders not in train/: cow" in line and not out.exists()


@pytest.mark.every_case
@pytest.mark.parametrize("fmt", ["idx", "cifar10"])
def test_missing_source_files_name_src_not_the_download_cache(tmp_path, capsys, monkeypatch,
                                                              fmt):
  # The loaders also search the cache: a cache holding the data must not stand in for --src.
  cache = tmp_path / "cache"
  cache.mkdir()
  for name, _ in mnist.FILES.values():
    (cache / name).write_bytes(b"")
  monkeypatch.setattr(download, "cache_dir", lambda name: cache)
  out = tmp_path / "out"
  line = _one_line(capsys, f"--format={fmt}", f"--src={tmp_path / 'missing'}", f"--out={out}")
  assert line.startswith(f"error: --src={tmp_path / 'missing'} is not a directory"), line
  (tmp_path / "empty").mkdir()
  line = _one_line(capsys, f"--format={fmt}", f"--src={tmp_path / 'empty'}", f"--out={out}")
  assert line.startswith(f"error: --src={tmp_path / 'empty'} lacks ") and "--src" in line[8:]
  assert "config.data" not in line and not out.exists()
