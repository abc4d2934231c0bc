"""Fault injection: real kills, concurrent starts, torn files, full and read-only disks.

Each case either reproduces an uninterrupted run exactly (params bit for bit, metrics.jsonl
records with the timing fields aside, TensorBoard scalars once per step) or ends with one
`error:` line, a non-zero exit code and every earlier result intact.
"""
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import jax
import processes
import numpy as np
import pytest

from configs import default
from research import checkpoint
from research import errors
from research import metrics
from research import run_config
from research import train
from research import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Log, eval and checkpoint steps do not line up: a checkpoint falls inside a log window.
FLAGS = ("--config.num_steps=900", "--config.log_every=40", "--config.eval_every=100",
         "--config.checkpoint_every=150", "--config.keep_checkpoints=10",
         "--config.model.hidden_sizes=(256,)")


def _config(**overrides):
  config = default.get_config()
  config.update(num_steps=900, log_every=40, eval_every=100, checkpoint_every=150,
                keep_checkpoints=10)
  config.model.hidden_sizes = (256,)
  config.update(overrides)
  return config


def _env():
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")


def _command(workdir, *extra):
  return [sys.executable, "-m", "research.main", f"--workdir={workdir}", *FLAGS, *extra]


def _run(workdir, *extra, check=True):
  result = subprocess.run(_command(workdir, *extra), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=processes.GUARD_S)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def _records(workdir):
  return [{k: v for k, v in r.items() if k not in metrics.TIMING_FIELDS}
          for r in metrics.read_metrics(str(workdir))]


def _params(workdir):
  state, step = train.restore_state(_config(), str(workdir))
  return [np.asarray(x) for x in jax.tree.leaves(state["params"])], step


def _tb_scalars(workdir) -> dict[tuple[str, int], float]:
  """Every (tag, step) of the event files, asserting that none appears twice."""
  seen = {}
  for tag, step, value in metrics.read_tensorboard(workdir):
    assert (tag, step) not in seen, f"{tag} at step {step} twice"
    seen[(tag, step)] = value
  return seen


def _timeless(scalars):
  return {k: v for k, v in scalars.items()
          if not any(k[0].endswith("/" + t) for t in metrics.TIMING_FIELDS)}


def _assert_same_run(workdir, reference):
  assert _records(workdir) == _records(reference)
  assert _timeless(_tb_scalars(workdir)) == _timeless(_tb_scalars(reference))
  want, want_step = _params(reference)
  got, got_step = _params(workdir)
  assert want_step == got_step == 900
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)


def _one_error_line(stderr: str) -> str:
  assert "Traceback" not in stderr, stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def _start(workdir, log=None):
  # stderr into a file: a pipe nobody reads fills up and blocks the run.
  return subprocess.Popen(_command(workdir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=open(log or os.devnull, "w"))


def _start_until(workdir, kill_point, log):
  return processes.start_until([f"--workdir={workdir}", *FLAGS], kill_point, log, REPO, _env())


def _kill_at(workdir, tmp_path, kill_point):
  """Runs until kill_point, then SIGKILLs the run there."""
  proc = _start_until(workdir, kill_point, str(tmp_path / "killed.log"))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL


def _n_records(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return len(open(path).read().splitlines()) if os.path.exists(path) else 0


def _checkpoints(workdir, tmp=False):
  root = os.path.join(workdir, "checkpoints")
  names = os.listdir(root) if os.path.isdir(root) else []
  return [n for n in names if ("tmp" in n) == tmp and (tmp or n.isdigit())]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run of FLAGS."""
  workdir = tmp_path_factory.mktemp("reference")
  _run(workdir)
  return workdir


# ------------------------------------------------------------------------- kills and resume


def _random_kill_point(reference):
  """Any record but the last, or any checkpoint before or after its commit."""
  records = len(_records(reference))
  commits = len(range(150, 901, 150))
  points = ([("record", n) for n in range(1, records)]
            + [(p, n) for p in ("before_commit", "after_commit") for n in range(1, commits + 1)])
  return random.choice(points)


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", ["before_first_checkpoint", "mid_checkpoint_write",
                                        "mid_window", "random"])
def test_sigkill_anywhere_then_rerun_reproduces_the_uninterrupted_run(reference, tmp_path,
                                                                      kill_point):
  workdir = str(tmp_path / "run")
  if kill_point == "before_first_checkpoint":
    # Some records are on disk, no checkpoint is: the rerun must start over, not refuse.
    _kill_at(workdir, tmp_path, ("record", 2))
    assert _n_records(workdir) == 2 and not _checkpoints(workdir)
  elif kill_point == "mid_checkpoint_write":
    # orbax writes a step into a temporary directory and renames it when complete.
    _kill_at(workdir, tmp_path, ("before_commit", 2))
    assert _checkpoints(workdir) == ["150"] and _checkpoints(workdir, tmp=True)
  elif kill_point == "mid_window":
    # After the checkpoint at 300 (inside the window 280-320), before the log at 320.
    _kill_at(workdir, tmp_path, ("after_commit", 2))
    assert sorted(_checkpoints(workdir)) == ["150", "300"]
    assert max(r["step"] for r in _records(workdir)) == 300
  else:
    point = _random_kill_point(reference)
    print(f"kill point: {point}")  # Shown with a failure, to reproduce it.
    _kill_at(workdir, tmp_path, point)
  _run(workdir)
  _assert_same_run(workdir, reference)


@pytest.mark.slow
def test_torn_last_metrics_line_is_dropped_and_rewritten(reference, tmp_path):
  workdir = str(tmp_path / "run")
  _kill_at(workdir, tmp_path, ("after_commit", 2))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 999, "split": "tra')  # A kill or a full disk mid-write.
  _run(workdir)
  _assert_same_run(workdir, reference)


@pytest.mark.slow
def test_two_concurrent_starts_leave_one_run_and_one_clear_refusal(reference, tmp_path):
  workdir = str(tmp_path / "run")
  # The first run holds the workdir (waiting after its first record) while the second starts:
  # the two overlap for certain, however fast or slow this machine is.
  first_log, second_log = str(tmp_path / "first.log"), str(tmp_path / "second.log")
  first = _start_until(workdir, ("record", 1), first_log)
  second = _start(workdir, second_log)
  second.wait(timeout=processes.GUARD_S)
  first.communicate("go on\n", timeout=processes.GUARD_S)
  first_err, second_err = open(first_log).read(), open(second_log).read()
  assert (first.returncode, second.returncode) == (0, 2), (first_err[-2000:], second_err[-2000:])
  assert "is in use by another run (pid" in _one_error_line(second_err)
  _assert_same_run(workdir, reference)


# ------------------------------------------------------------------------------- full disk


@contextlib.contextmanager
def _tmpfs(path, size):
  """A small tmpfs at path, or pytest.skip where this machine cannot mount one."""
  os.makedirs(path, exist_ok=True)
  if shutil.which("mount") is None or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
      capture_output=True).returncode != 0:
    pytest.skip("cannot mount a tmpfs here (the simulated-OSError tests cover this path)")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_is_one_line_then_resumes_exactly(reference, tmp_path):
  with _tmpfs(tmp_path / "small", "400k") as small:
    workdir = os.path.join(small, "run")
    result = _run(workdir, check=False)
    assert result.returncode == 4, result.stderr[-3000:]
    line = _one_error_line(result.stderr)
    assert "No space left on device" in line and "rerun the same command" in line
    kept = _records(workdir)
    assert kept and _checkpoints(workdir)
    moved = str(tmp_path / "moved")
    shutil.copytree(workdir, moved)  # The user frees space (here: moves the run).
  assert _records(moved) == _records(reference)[:len(kept)]
  _run(moved)
  _assert_same_run(moved, reference)


# ---------------------------------------------- in-process faults (simulated OSErrors; fast)


def _tiny(**overrides):
  config = default.get_config()
  config.update(num_steps=120, log_every=20, eval_every=40, checkpoint_every=30,
                keep_checkpoints=10)
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("tiny_reference")
  result = train.train_and_evaluate(_tiny(), str(workdir))
  return workdir, result


@pytest.mark.parametrize("fail_at", [50, 90])
def test_a_write_that_fails_mid_run_keeps_everything_and_resumes_exactly(
    tiny_reference, tmp_path, monkeypatch, fail_at):
  """Permission lost / disk full while appending a record, then the same command again."""
  reference, _ = tiny_reference
  workdir = str(tmp_path / "run")
  append = workdir_lib.append_line

  def failing(path, line):
    if json.loads(line)["step"] >= fail_at:
      append(path, line[:25])  # A torn record, then the error.
      raise workdir_lib.storage_error(path, PermissionError(13, "Permission denied"))
    append(path, line)

  monkeypatch.setattr(workdir_lib, "append_line", failing)
  with pytest.raises(errors.StorageError, match="Permission denied.*rerun the same command"):
    train.train_and_evaluate(_tiny(), workdir)
  monkeypatch.setattr(workdir_lib, "append_line", append)
  train.train_and_evaluate(_tiny(), workdir)
  assert _records(workdir) == _records(reference)
  assert _timeless(_tb_scalars(workdir)) == _timeless(_tb_scalars(reference))


def test_a_checkpoint_save_that_fails_is_a_storage_error_and_keeps_the_earlier_ones(
    tmp_path, monkeypatch, tiny_reference):
  reference, _ = tiny_reference
  workdir = str(tmp_path / "run")
  real_save = checkpoint.save

  def save(path, state, step, **kwargs):
    if step >= 90:
      raise workdir_lib.storage_error(path, OSError(28, "No space left on device"))
    return real_save(path, state, step, **kwargs)

  monkeypatch.setattr(checkpoint, "save", save)
  with pytest.raises(errors.StorageError, match="No space left on device"):
    train.train_and_evaluate(_tiny(), workdir)
  assert checkpoint.latest_step(workdir) == 60
  monkeypatch.setattr(checkpoint, "save", real_save)
  train.train_and_evaluate(_tiny(), workdir)
  assert _records(workdir) == _records(reference)


def test_a_file_write_cut_short_leaves_the_old_file_whole(tmp_path, monkeypatch):
  """config.json, results.* and plots: the new text goes to a temporary name renamed over the
  old file, so a write that dies midway (disk full) leaves the old file as it was."""
  path = tmp_path / "config.json"
  workdir_lib.write_text(path, '{"old": 1}')

  def dies_midway(fd):  # The bytes are written; making them durable fails (disk full).
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(workdir_lib.os, "fsync", dies_midway)
  with pytest.raises(errors.StorageError, match="No space left on device"):
    workdir_lib.write_text(path, '{"new": 2, "much": "longer"}')
  assert path.read_text() == '{"old": 1}'


def test_unreadable_checkpoints_directory_is_a_workdir_error(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)
  path_class = type(workdir_lib.as_path(workdir))
  real_exists = path_class.exists

  def exists(self, *args, **kwargs):
    if str(self).endswith("checkpoints"):  # As `ls` says for a directory without r/x rights.
      raise PermissionError(13, "Permission denied")
    return real_exists(self, *args, **kwargs)

  monkeypatch.setattr(path_class, "exists", exists)
  with pytest.raises(errors.WorkdirError, match="checkpoints cannot be read .Permission denied"):
    train.train_and_evaluate(_tiny(), str(workdir))


def test_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys; from research import workdir as w\n"
       "with w.claim(sys.argv[1]):\n  print('held', flush=True); sys.stdin.read()", workdir],
      cwd=REPO, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(errors.WorkdirError, match=rf"in use by another run \(pid {holder.pid}"):
      train.train_and_evaluate(_tiny(), workdir)
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  finally:
    holder.kill()
    holder.wait()
  # The OS released the dead holder's lock: the workdir is usable at once.
  train.train_and_evaluate(_tiny(num_steps=20, checkpoint_every=0), workdir)


def test_config_kept_with_the_checkpoints_refuses_another_config_without_config_json(
    tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_tiny(), workdir)
  os.remove(os.path.join(workdir, "config.json"))
  with pytest.raises(errors.ConfigError, match=r"different config \(config.seed: 0 -> 1\)"):
    train.train_and_evaluate(_tiny(seed=1), workdir)
  again = train.train_and_evaluate(_tiny(), workdir)  # The same config: finished, rewritten.
  assert "test" in again and os.path.exists(os.path.join(workdir, "config.json"))


def test_bad_config_json_is_a_workdir_error(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"seed": ')
  (workdir / "metrics.jsonl").write_text('{"step": 20, "split": "train"}\n')
  with pytest.raises(errors.WorkdirError, match="config.json is not valid JSON"):
    train.train_and_evaluate(_tiny(), str(workdir))


# ------------------------------------------------------------ the command line's one lines


def _main(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "research.main", *args], cwd=cwd, env=_env(),
                        capture_output=True, text=True, timeout=processes.GUARD_S)


@pytest.mark.parametrize("make, fragment", [
    (lambda d: (d / "f").write_text("x") and d / "f", "is a file, not a directory"),
    (lambda d: (d / "f").write_text("x") and d / "f" / "run", "cannot be created"),
])
def test_unusable_workdirs_exit_2_in_one_line_before_any_work(tmp_path, make, fragment):
  result = _main(f"--workdir={make(tmp_path)}", "--config.num_steps=10")
  assert result.returncode == 2
  assert fragment in _one_error_line(result.stderr)
  assert "step" not in result.stderr  # Nothing trained.


@pytest.mark.parametrize("text, fragment", [
    ("def get_config(:\n  pass\n", "line 1: invalid syntax"),
    ("def get_config():\n  raise RuntimeError('boom')\n", "get_config raised RuntimeError: boom"),
    ("x = 1\n", "has no get_config() function"),
    ("import no_such_module_here\n", "failed to load (ModuleNotFoundError"),
    ("def get_config():\n  return 3\n", "returned a int, not an ml_collections.ConfigDict"),
])
def test_broken_config_files_exit_2_in_one_line(tmp_path, text, fragment):
  path = tmp_path / "broken.py"
  path.write_text(text)
  result = _main(f"--config={path}", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2
  assert fragment in _one_error_line(result.stderr)
  assert not os.path.exists(tmp_path / "run")


def test_a_variant_of_a_config_without_variants_exits_2_in_one_line(tmp_path):
  result = _main("--config=configs/default.py:mnist", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2
  assert "configs/default.py has no variants" in _one_error_line(result.stderr)
  assert not os.path.exists(tmp_path / "run")


_OUT_OF_RANGE = [
    ("--config.data.split_seed=-1", "config.data.split_seed=-1 must be an integer >= 0"),
    ("--config.optimizer.b1=1.5", "config.optimizer.b1=1.5 must be a finite number in [0, 1)"),
    ("--config.optimizer.eps=-1e-8", "config.optimizer.eps=-1e-08 must be a finite number >= 0"),
    ("--config.loss.l2=nan", "config.loss.l2=nan must be a finite number >= 0"),
    ("--config.optimizer.learning_rate=inf", "config.optimizer.learning_rate=inf"),
    ("--config.model.dropout=1.0", "config.model.dropout=1.0 must be a finite number in [0, 1)"),
    ("--config.augment.flip_prob=2", "config.augment.flip_prob=2.0 must be a finite number in"),
]


@pytest.mark.parametrize("flag, fragment", _OUT_OF_RANGE + [
    ("--config.data.name=mnist1d", "config.data.name='mnist1d' needs config.data.shape"),
    # A model family switched by override gets its defaults; the digits vectors do not fit it.
    ("--config.model.name=lenet5", "model lenet5 needs 32x32xC images"),
])
def test_out_of_range_values_and_family_switches_exit_2_in_one_line(tmp_path, flag, fragment):
  result = _main(flag, f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert fragment in _one_error_line(result.stderr)
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


@pytest.mark.every_case  # In process, so cheap: the fast tier checks every range.
@pytest.mark.parametrize("flag, fragment", _OUT_OF_RANGE)
def test_out_of_range_values_are_config_errors_before_any_work(tmp_path, flag, fragment):
  key, value = flag[len("--config."):].split("=")
  config = default.get_config()
  *groups, field = key.split(".")
  node = config
  for group in groups:
    node = node[group]
  node[field] = type(node[field])(float(value) if isinstance(node[field], float) else value)
  with pytest.raises(errors.ConfigError, match=re.escape(fragment)):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


# ------------------------------------------------------------ runners without checkpoints


def _lecture_config():
  from configs import lecture_algorithm  # pylint: disable=g-import-not-at-top
  config = lecture_algorithm.get_config()
  config.update(num_steps=60, log_every=20, eval_every=30)
  return config


@pytest.mark.slow
def test_rerunning_a_finished_runner_does_nothing_and_an_interrupted_one_starts_over(
    tmp_path, monkeypatch):
  from research import experiments  # pylint: disable=g-import-not-at-top
  done = str(tmp_path / "done")
  experiments.run(_lecture_config(), done)
  before = open(os.path.join(done, "metrics.jsonl")).read()
  again = experiments.run(_lecture_config(), done)
  assert again["finished"] is True
  assert open(os.path.join(done, "metrics.jsonl")).read() == before  # No duplicate records.
  with pytest.raises(errors.ConfigError, match="different config"):
    experiments.run(_with_seed(_lecture_config(), 3), done)

  # Interrupted after two records: the rerun writes the run's records once, not twice.
  cut = str(tmp_path / "cut")
  append = workdir_lib.append_line
  calls = []

  def dies_on_the_third(path, line):
    calls.append(line)
    if len(calls) == 3:
      raise KeyboardInterrupt
    append(path, line)

  monkeypatch.setattr(workdir_lib, "append_line", dies_on_the_third)
  with pytest.raises(KeyboardInterrupt):
    experiments.run(_lecture_config(), cut)
  monkeypatch.setattr(workdir_lib, "append_line", append)
  experiments.run(_lecture_config(), cut)
  strip = lambda text: [{k: v for k, v in json.loads(l).items() if k not in metrics.TIMING_FIELDS}
                        for l in text.splitlines()]
  assert strip(open(os.path.join(cut, "metrics.jsonl")).read()) == strip(before)


def _with_seed(config, seed):
  config.seed = seed
  return config


def test_a_run_saved_before_a_top_level_field_existed_resumes_and_a_change_is_refused():
  config = default.get_config()
  saved = json.loads(config.to_json_best_effort())
  del saved["compute_dtype"], saved["profile_steps"]  # Fields the older version lacked.
  run_config.check_same_config(config, saved, "w")
  config.compute_dtype = "bfloat16"
  with pytest.raises(errors.ConfigError, match="compute_dtype: 'float32' -> 'bfloat16'"):
    run_config.check_same_config(config, saved, "w")


def test_a_config_that_leaves_an_optional_field_out_resumes_its_own_run():
  config = default.get_config()
  saved = json.loads(config.to_json_best_effort())
  del config["profile_steps"]  # Optional: read with its base default.
  run_config.check_same_config(config, saved, "w")  # Raises ConfigError on a difference...
  config.seed = saved["seed"] + 1
  with pytest.raises(errors.ConfigError, match="config.seed"):  # ... as here, for a real one.
    run_config.check_same_config(config, saved, "w")
