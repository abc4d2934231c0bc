"""The workdir's paths and durability: what the run expects to be a directory, object-store
schemes, path lengths, fsync at checkpoints, the lock's mode and the NaN line.

Each case ends with one clear error (a WorkdirError, exit code 2, before anything is written)
and every earlier record intact, or with the promised file operations observed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import types

import pytest

from configs import default
from research import checkpoint
from research import errors
from research import metrics
from research import train
from research import workdir as workdir_lib
from research.experiments import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A guard against a hung process, not a timing: a run here takes seconds even under load.
_GUARD_S = 1800


def _tiny(**overrides):
  config = default.get_config()
  config.update(num_steps=120, log_every=20, eval_every=40, checkpoint_every=30,
                keep_checkpoints=10)
  config.update(overrides)
  return config


def _read(path) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _main(*args):
  return subprocess.run([sys.executable, "-m", "research.main", *args], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=_GUARD_S)


def _one_error_line(stderr: str) -> str:
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
  return lines[0]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
  """A run of _tiny() stopped after step 90 (its last record, the test one, removed as a kill
  would have left it): records reach past checkpoint_every, checkpoints 30..120 exist."""
  workdir = tmp_path_factory.mktemp("interrupted") / "run"
  train.train_and_evaluate(_tiny(), str(workdir))
  lines = _read(workdir / metrics.FILENAME).splitlines(keepends=True)
  kept = [line for line in lines if json.loads(line)["step"] <= 90]
  (workdir / metrics.FILENAME).write_text("".join(kept))
  shutil.rmtree(workdir / "checkpoints" / "120")
  return workdir


def _break(path, how: str) -> None:
  """Puts a regular file, a symbolic link loop or a dangling link at `path`."""
  if how == "file":
    path.write_text("not a directory")
  elif how == "loop":
    os.symlink(path.name, path)  # A link to itself: ELOOP when followed.
  else:
    os.symlink(path.parent / "nowhere", path)


@pytest.mark.parametrize("how, what", [("file", "is a file, not a directory"),
                                       ("loop", "is a symbolic link loop, not a directory"),
                                       ("dangling", "is a dangling symbolic link")])
def test_checkpoints_that_are_not_a_directory_keep_every_record(interrupted, tmp_path, how,
                                                                 what):
  workdir = tmp_path / "run"
  shutil.copytree(interrupted, workdir, symlinks=True)
  before = {name: _read(workdir / name) for name in (metrics.FILENAME, "config.json")}
  events = sorted(f for f in os.listdir(workdir) if f.startswith("events."))
  (workdir / "checkpoints").rename(tmp_path / "aside")
  _break(workdir / "checkpoints", how)
  with pytest.raises(errors.WorkdirError, match=what):
    checkpoint.latest_step(str(workdir))
  with pytest.raises(errors.WorkdirError, match=what):
    train.train_and_evaluate(_tiny(), str(workdir))
  assert {name: _read(workdir / name) for name in before} == before
  assert sorted(f for f in os.listdir(workdir) if f.startswith("events.")) == events
  # Put back, the same command resumes from step 90 and finishes.
  os.remove(workdir / "checkpoints")
  (tmp_path / "aside").rename(workdir / "checkpoints")
  train.train_and_evaluate(_tiny(), str(workdir))
  records = [json.loads(line) for line in _read(workdir / metrics.FILENAME).splitlines()]
  assert records[-1]["split"] == "test" and records[-1]["step"] == 120
  assert [r["step"] for r in records if r["split"] == "train"] == [20, 40, 60, 80, 100, 120]


def test_a_dangling_checkpoints_link_exits_2_in_one_line(interrupted, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(interrupted, workdir, symlinks=True)
  before = _read(workdir / metrics.FILENAME)
  shutil.rmtree(workdir / "checkpoints")
  _break(workdir / "checkpoints", "dangling")
  result = _main(f"--workdir={workdir}", "--config.num_steps=120", "--config.log_every=20",
                 "--config.eval_every=40", "--config.checkpoint_every=30",
                 "--config.keep_checkpoints=10")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "checkpoints is a dangling symbolic link" in _one_error_line(result.stderr)
  assert _read(workdir / metrics.FILENAME) == before


def test_records_past_checkpoint_every_without_a_checkpoint_are_never_dropped(interrupted,
                                                                               tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(interrupted, workdir, symlinks=True)
  before = _read(workdir / metrics.FILENAME)
  shutil.rmtree(workdir / "checkpoints")  # Moved or deleted: the directory is gone.
  with pytest.raises(errors.WorkdirError, match=r"records up to step 80, past "
                     r"config.checkpoint_every=30, but .*checkpoints holds no checkpoint"):
    train.train_and_evaluate(_tiny(), str(workdir))
  (workdir / "checkpoints").mkdir()  # An empty directory: the same.
  with pytest.raises(errors.WorkdirError, match="holds no checkpoint"):
    train.train_and_evaluate(_tiny(), str(workdir))
  assert _read(workdir / metrics.FILENAME) == before


def test_records_before_the_first_checkpoint_still_start_over(interrupted, tmp_path):
  """A kill before the first checkpoint leaves records up to checkpoint_every: no checkpoint
  was due, so the run starts again from step 0 (and ends as an uninterrupted run)."""
  workdir = tmp_path / "run"
  shutil.copytree(interrupted, workdir, symlinks=True)
  lines = _read(workdir / metrics.FILENAME).splitlines(keepends=True)
  (workdir / metrics.FILENAME).write_text(
      "".join(line for line in lines if json.loads(line)["step"] <= 30))
  shutil.rmtree(workdir / "checkpoints")
  train.train_and_evaluate(_tiny(), str(workdir))
  records = [json.loads(line) for line in _read(workdir / metrics.FILENAME).splitlines()]
  assert [r["step"] for r in records if r["split"] == "train"] == [20, 40, 60, 80, 100, 120]


@pytest.mark.parametrize("name, kind, what", [
    ("profile", "dir", "is a file, not a directory"),
    (metrics.FILENAME, "file", "is a directory, not a file"),
    ("config.json", "file", "is a dangling symbolic link"),
])
def test_other_paths_of_the_wrong_kind_are_refused_before_any_write(tmp_path, name, kind, what):
  workdir = tmp_path / "run"
  workdir.mkdir()
  if kind == "dir":
    _break(workdir / name, "file")
  elif name == metrics.FILENAME:
    (workdir / name).mkdir()
  else:
    _break(workdir / name, "dangling")
  config = _tiny(num_steps=20, profile_steps=(5, 10))
  with pytest.raises(errors.WorkdirError, match=f"{name} {what}"):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir)) == sorted([".lock", name])


@pytest.mark.parametrize("how, what", [("loop", "is a symbolic link loop, not a directory"),
                                       ("dangling", "is a dangling symbolic link")])
def test_a_workdir_link_to_nowhere_is_refused(tmp_path, how, what):
  _break(tmp_path / "run", how)
  with pytest.raises(errors.WorkdirError, match=f"--workdir=.*run {what}"):
    train.train_and_evaluate(_tiny(), str(tmp_path / "run"))
  assert os.listdir(tmp_path) == ["run"]


# ------------------------------------------------------------------------ object stores


def _absent(monkeypatch, *names):
  """Makes `import name` raise ImportError, as when the package is not installed."""
  for name in names:
    monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("scheme, package", [("gs", "gcsfs"), ("s3", "s3fs")])
def test_an_object_store_without_its_package_is_one_line_naming_it(monkeypatch, scheme,
                                                                   package):
  _absent(monkeypatch, package, "tensorflow")
  with pytest.raises(errors.WorkdirError,
                     match=f"needs the {package} package to reach {scheme}://; pip install "
                           f"{package}"):
    train.train_and_evaluate(_tiny(), f"{scheme}://bucket/run")
  # With the package, the path is accepted (nothing is opened yet).
  monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
  assert str(workdir_lib.as_path(f"{scheme}://bucket/run")) == f"{scheme}://bucket/run"


def test_an_unknown_scheme_exits_2_listing_the_supported_ones(tmp_path):
  result = _main("--workdir=foo://x", "--config.num_steps=10")
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_error_line(result.stderr)
  assert "foo:// is not supported" in line
  assert "gs:// (with pip install gcsfs)" in line and "s3:// (with pip install s3fs)" in line


# -------------------------------------------------------------------------- path limits


def _long_workdir(tmp_path, room: int):
  """A directory whose absolute path leaves `room` characters of PATH_MAX (4096) free."""
  path = str(tmp_path)
  target = 4095 - room  # PATH_MAX counts the terminating NUL.
  while len(path) < target:
    path = os.path.join(path, "d" * max(1, min(200, target - len(path) - 1)))
  os.makedirs(path)
  return path


def test_a_workdir_too_long_for_the_file_system_exits_before_any_work(tmp_path):
  limit = os.pathconf(str(tmp_path), "PC_PATH_MAX")
  if limit != 4096:
    pytest.skip(f"PATH_MAX is {limit} here")
  # Room for metrics.jsonl, not for a checkpoint's temporary files.
  workdir = _long_workdir(tmp_path, 80)
  with pytest.raises(errors.WorkdirError, match="is too long for its file system: the run "
                     r"writes paths such as .*checkpoints/120\.orbax-checkpoint-tmp"):
    train.train_and_evaluate(_tiny(), workdir)
  assert os.listdir(workdir) == []  # The probe and the lock are gone; nothing was written.
  # A workdir that did not exist: its directory chain is not left behind either.
  missing = os.path.join(workdir, "new", "run")
  with pytest.raises(errors.WorkdirError, match="is too long for its file system"):
    train.train_and_evaluate(_tiny(), missing)
  assert not os.path.exists(os.path.dirname(missing))


@pytest.mark.parametrize("workdir", ["gs:/bucket/run", "s3:/bucket/run"])
def test_a_url_with_one_slash_is_refused_before_anything_is_created(tmp_path, workdir):
  result = subprocess.run([sys.executable, "-m", "research.main", f"--workdir={workdir}"],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO,
                                                 JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=_GUARD_S)
  assert result.returncode == 2, result.stderr[-3000:]
  scheme = workdir.split(":")[0]
  assert f"{scheme}:// URL missing a slash; write {scheme}://bucket/run" in _one_error_line(
      result.stderr)
  assert os.listdir(tmp_path) == []  # No ./gs:/bucket/run left behind.


@pytest.mark.parametrize("text, says", [
    ("gs:bucket/run", "looks like a gs:// URL missing a slash; write gs://bucket/run"),
    ("S3:/bucket/run", "looks like a S3:// URL missing a slash; write s3://bucket/run"),
    ("file:/tmp/run", "looks like a file:// URL missing a slash; write /tmp/run for a local"),
    ("./gs:/bucket/run", "the folder name 'gs:' in "),
    ("runs/s3:", "the folder name 's3:' in "),
    ("gs:", "looks like a gs:// URL"),
])
def test_a_path_the_checkpoint_writer_would_read_as_a_url_is_refused(tmp_path, text, says):
  # "./gs:/x" trained and then failed at its first checkpoint (tensorstore read "gs:/" as a
  # URL); every such path is refused before anything is created, naming the flag.
  with pytest.raises(errors.WorkdirError, match=re.escape(says)) as e:
    workdir_lib.as_path(text, flag="--workdir", checkpoints=True)
  assert str(e.value).startswith(f"--workdir={text}")
  assert "\n" not in str(e.value)


def test_a_relative_workdir_inside_a_folder_ending_in_a_colon_is_refused(tmp_path,
                                                                        monkeypatch):
  # The check reads the absolute path: run from inside ".../gs:", "run1" is ".../gs:/run1".
  (tmp_path / "gs:").mkdir()
  monkeypatch.chdir(tmp_path / "gs:")
  with pytest.raises(errors.WorkdirError, match=re.escape("the folder name 'gs:'")):
    train.train_and_evaluate(_tiny(), "run1")
  assert os.listdir(tmp_path / "gs:") == []
  # Reading such a path (records, reports) is fine: only checkpoint writes misread it.
  assert str(workdir_lib.as_path("run1")) == str(tmp_path / "gs:" / "run1")


def test_the_path_probe_leaves_nothing_and_accepts_a_short_workdir(tmp_path):
  workdir_lib.check_path_limits(str(tmp_path), [checkpoint.longest_path(10**6, 8),
                                                *metrics.longest_names()])
  assert os.listdir(tmp_path) == []


# -------------------------------------------------------------------------------- fsync


def _spy_fsync(monkeypatch):
  """Records (resolved path, the file's text if it is metrics.jsonl) of every os.fsync."""
  synced = []
  real = os.fsync

  def fsync(fd):
    path = os.readlink(f"/proc/self/fd/{fd}")
    text = _read(path) if os.path.basename(path) == metrics.FILENAME else None
    synced.append((path, text))
    return real(fd)

  monkeypatch.setattr(os, "fsync", fsync)
  return synced


def test_fsync_of_records_before_each_checkpoint_and_at_the_end(tmp_path, monkeypatch):
  if not os.path.isdir("/proc/self/fd"):
    pytest.skip("needs /proc to name a file descriptor")
  workdir = tmp_path / "run"
  synced = _spy_fsync(monkeypatch)
  saves = []
  real_save = checkpoint.save

  def save(path, state, step, **kwargs):
    # What fsync last saw of metrics.jsonl is all of it: the checkpoint's records are durable.
    last = [text for p, text in synced if text is not None][-1]
    saves.append((step, last == _read(workdir / metrics.FILENAME)))
    before = len(synced)
    real_save(path, state, step, **kwargs)
    after = [p for p, _ in synced[before:]]
    step_dir = os.path.join(workdir, "checkpoints", str(step))
    assert any(p.startswith(step_dir + os.sep) for p in after), after  # Its files,
    assert step_dir in after and os.path.join(workdir, "checkpoints") in after  # its names.

  monkeypatch.setattr(checkpoint, "save", save)
  train.train_and_evaluate(_tiny(num_steps=90), str(workdir))
  assert saves == [(30, True), (60, True), (90, True)]
  # The end: the test record is durable.
  last = [text for p, text in synced if text is not None][-1]
  assert last == _read(workdir / metrics.FILENAME) and '"split": "test"' in last
  paths = [p for p, _ in synced]
  assert any(os.path.basename(p).startswith(".config.json.tmp-") for p in paths)
  assert str(workdir) in paths  # The directory, for the renames and the new files' names.


def test_an_experiment_runner_fsyncs_its_records_before_it_says_finished(tmp_path, monkeypatch):
  """A runner that never closes its writer still leaves durable records under finished.json."""
  if not os.path.isdir("/proc/self/fd"):
    pytest.skip("needs /proc to name a file descriptor")
  synced = _spy_fsync(monkeypatch)

  @report.runner
  def runner(config, workdir):
    metrics.MetricWriter(workdir, tensorboard=False).write({"step": 1, "split": "train"})
    return {}

  runner(_tiny(), str(tmp_path / "run"))
  names = [os.path.basename(p) for p, _ in synced]
  finished = next(i for i, n in enumerate(names) if n.startswith(".finished.json.tmp-"))
  records = [text for p, text in synced[:finished] if text is not None]
  assert records and records[-1] == _read(tmp_path / "run" / metrics.FILENAME)


def test_write_text_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path,
                                                                              monkeypatch):
  if not os.path.isdir("/proc/self/fd"):
    pytest.skip("needs /proc to name a file descriptor")
  events = []
  real_fsync, real_replace = os.fsync, os.replace
  monkeypatch.setattr(os, "fsync", lambda fd: (
      events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
  monkeypatch.setattr(os, "replace", lambda a, b: (
      events.append(("replace", os.fspath(b))), real_replace(a, b))[1])
  workdir_lib.write_text(workdir_lib.as_path(tmp_path) / "results.json", "{}\n")
  tmp = os.path.join(tmp_path, f".results.json.tmp-{os.getpid()}")
  assert events == [("fsync", tmp), ("replace", os.path.join(tmp_path, "results.json")),
                    ("fsync", str(tmp_path))]


# --------------------------------------------------------------------------------- lock


def test_the_lock_file_is_readable_by_its_owner_only(tmp_path):
  old = tmp_path / "old"
  old.mkdir()
  (old / workdir_lib.LOCK_FILE).write_text("")
  os.chmod(old / workdir_lib.LOCK_FILE, 0o644)  # Left by an older version.
  for workdir in (tmp_path / "new", old):
    with workdir_lib.claim(str(workdir)):
      assert os.stat(workdir / workdir_lib.LOCK_FILE).st_mode & 0o777 == 0o600
      assert "pid" in _read(workdir / workdir_lib.LOCK_FILE)


# ------------------------------------------------------------------------------ NaN line


def _diverging(**overrides):
  config = _tiny(num_steps=40, checkpoint_every=0, **overrides)
  config.model.activation = "relu"
  config.optimizer.learning_rate = 1e6
  return config


def test_the_nan_line_says_what_exists_and_a_fix_that_works(tmp_path):
  # Nothing logged before the NaN: the line must not point at a file that does not exist.
  workdir = tmp_path / "early"
  with pytest.raises(errors.NonFiniteLossError) as e:
    train.train_and_evaluate(_diverging(log_every=40, eval_every=40), str(workdir))
  assert "no record was written before it" in str(e.value)
  assert "metrics.jsonl" not in str(e.value) and not (workdir / metrics.FILENAME).exists()
  # Records before the NaN: the line names the last step the file holds.
  workdir = tmp_path / "late"
  config = _diverging(log_every=1, eval_every=40)
  with pytest.raises(errors.NonFiniteLossError) as e:
    train.train_and_evaluate(config, str(workdir))
  records = [json.loads(line) for line in _read(workdir / metrics.FILENAME).splitlines()]
  assert records, "the run logged no step before diverging: raise the learning rate's step"
  bad = int(str(e.value).split("at step ")[1].split(";")[0])
  assert (f"the records up to step {records[-1]['step']} are in {workdir / metrics.FILENAME}"
          in str(e.value)) and records[-1]["step"] <= bad
  assert "new --workdir" in str(e.value) and "learning_rate" in str(e.value)
  # The fix as the line gives it: the same workdir refuses the change, a new one works.
  config.optimizer.learning_rate = 0.1
  with pytest.raises(errors.ConfigError, match="different config"):
    train.train_and_evaluate(config, str(workdir))
  result = train.train_and_evaluate(config, str(tmp_path / "new"))
  assert result["test"]["loss"] < 10
