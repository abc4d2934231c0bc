"""research.cli: every entry point answers a mistyped flag, an unusable output path or a failed
write with one line and the right exit code."""
import errno
import os
import subprocess
import sys

import pytest

from research import cli
from research import errors
from research import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module", ["research.gradcheck", "research.benchmark",
                                    "research.selfcheck"])
def test_a_mistyped_flag_is_one_line_and_exit_2(module):
  result = subprocess.run([sys.executable, "-m", module, "--no_such_flag=1"], cwd=REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines == ["error: Unknown command line flag 'no_such_flag' (pass --help for the flags)"]


def _under_a_file(d):
  (d / "file").write_text("x")
  return d / "file" / "out.png"


@pytest.mark.parametrize("make, cause", [
    (lambda d: d, "it is a directory"),
    (lambda d: d / "missing" / "out.png", "does not exist"),
    (_under_a_file, "is not a directory"),
])
def test_an_unusable_output_file_is_refused_before_any_work(tmp_path, make, cause):
  with pytest.raises(errors.WorkdirError, match=cause):
    workdir.check_output_file(make(tmp_path), "--out")
  assert workdir.check_output_file(tmp_path / "ok.png") == str(tmp_path / "ok.png")


@pytest.mark.parametrize("code, fix", [
    (errno.ENOSPC, "free space"),
    (errno.EACCES, "restore write access"),
    (errno.ENOENT, "check the path"),
])
@pytest.mark.parametrize("resumes", [True, False])
def test_a_failed_write_names_the_path_the_cause_and_the_fix(capsys, code, fix, resumes):
  def write():
    raise OSError(code, os.strerror(code), "/data/out.png")

  with pytest.raises(SystemExit) as e:
    cli.guarded(write, resumes=resumes)()
  assert e.value.code == 4
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"error: a read or write failed (/data/out.png): {os.strerror(code)}; ")
  assert fix in err and "\n" not in err
  assert ("last checkpoint" in err) == resumes


def test_a_bug_is_not_swallowed():
  def buggy():
    raise ZeroDivisionError("a bug")

  with pytest.raises(ZeroDivisionError):
    cli.guarded(buggy)()


@pytest.mark.parametrize("script, args, message", [
    ("model_zoo.py", ["--workdir=W", "--configs=default,no_such"], "unknown config 'no_such'"),
    ("model_zoo.py", ["--workdir=W", "--seeds=a"], "--seeds=a: give integers"),
    ("scaling.py", ["--rounds=0"], "--rounds=0 and --window_seconds=1.0 must be positive"),
    ("scaling.py", ["--json=W/missing/s.json"], "--json=W/missing/s.json cannot be written"),
    ("scaling.py", ["--plot=W/s.txt"], "name a .png, .pdf or .svg file"),
    ("interleave_peers.py", ["--frameworks=torch,nope"], "'nope' is not a peer"),
    ("interleave_peers.py", ["--peers=W/none.py"], "no such Python file"),
    ("xla_options.py", ["--workloads=mlp", "--model=no_such=1", "--options=a=1"],
     "workload 'mlp' has no model field 'no_such'"),
])
def test_launch_scripts_refuse_bad_arguments_in_one_line_before_any_work(
    tmp_path, script, args, message):
  args = [a.replace("W", str(tmp_path)) for a in args]
  result = subprocess.run([sys.executable, os.path.join(REPO, "launch", script), *args],
                          cwd=REPO, capture_output=True, text=True, check=False)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert message.replace("W", str(tmp_path)) in lines[0]
  assert not any(tmp_path.iterdir())  # Nothing written.
