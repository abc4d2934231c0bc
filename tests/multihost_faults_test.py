"""A 2-process run (jax.distributed over localhost, as launch/multihost_local.sh starts it)
whose peer dies: the survivor stops with one line naming the process that died and how to
resume, exit code 4, instead of Gloo's traceback and an abort."""
import os
import signal
import subprocess
import sys
import time

import processes
import pytest

from research import errors
from research import parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A guard against a hang, not a timing: the survivor answers within seconds once its peer is
# gone; a loaded machine may take minutes to reach the first record.
_GUARD_S = 1800


def _start(workdir, port: int, process_id: int, log):
  return subprocess.Popen(
      [sys.executable, "-m", "research.main", "--config=configs/default.py",
       "--config.num_steps=1000000", "--config.log_every=50", "--config.eval_every=1000000",
       "--config.checkpoint_every=1000000", f"--workdir={workdir}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={process_id}"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
                         **processes.MULTIPROCESS_ENV),
      stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def test_a_peers_death_is_one_line_in_the_survivor(tmp_path):
  workdir = tmp_path / "run"
  with processes.reserved_port() as port:
    procs = [_start(workdir, port, i, tmp_path / f"p{i}.log") for i in range(2)]
  try:
    # Killed once training is observed: process 0 has written a train record.
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + _GUARD_S
    while not (metrics.exists() and metrics.read_text().strip()):
      assert all(p.poll() is None for p in procs), (tmp_path / "p0.log").read_text()[-3000:]
      assert time.monotonic() < deadline, "no train record within the guard"
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    code = procs[0].wait(timeout=_GUARD_S)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  err = (tmp_path / "p0.log").read_text()
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert code == 4, err[-3000:]
  assert len(lines) == 1 and "Traceback" not in err and "Check failure" not in err, err[-3000:]
  assert lines[0].startswith("error: process 1 of this 2-process run stopped, so process 0 "
                             "stops too")
  assert "start every process again with the same command" in lines[0]


@pytest.mark.every_case  # Each is its own check, and instant.
@pytest.mark.parametrize("args, message", [
    (("127.0.0.1:1", 2, 2), "process_id=2 must be in [0, 2)"),
    (("127.0.0.1:1", 0, 0), "num_processes=0 must be a positive integer"),
    (("localhost", 2, 0), "must be host:port"),
    ((None, 2, 1), "need a --coordinator_address"),
])
def test_bad_multi_host_flags_are_one_line_before_jax_connects(args, message):
  with pytest.raises(errors.ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")) as e:
    parallel.maybe_initialize_distributed(*args)
  assert "\n" not in str(e.value)


def _pid_of(workdir, process_id: int) -> int | None:
  """The pid of research.main's process `process_id` training in `workdir`, from /proc."""
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        args = f.read().decode(errors="replace").split("\0")
    except OSError:
      continue
    if f"--workdir={workdir}" in args and f"--process_id={process_id}" in args:
      return int(pid)
  return None


def test_through_the_launcher_a_peers_death_is_named_with_how_to_resume(tmp_path):
  workdir, logs = tmp_path / "run", tmp_path / "logs"
  with processes.reserved_port() as port:
    launcher = subprocess.Popen(
        ["bash", os.path.join(REPO, "launch", "multihost_local.sh"), "-n", "2",
         f"--port={port}", f"--log_dir={logs}", "--", "--config=configs/default.py",
         "--config.num_steps=1000000", "--config.log_every=50",
         "--config.eval_every=1000000", "--config.checkpoint_every=1000000",
         f"--workdir={workdir}"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
                           PYTHON=sys.executable, **processes.MULTIPROCESS_ENV),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + _GUARD_S
    while not (metrics.exists() and metrics.read_text().strip()):
      assert launcher.poll() is None, launcher.stderr.read()[-3000:]
      assert time.monotonic() < deadline, "no train record within the guard"
      time.sleep(0.05)
    os.kill(_pid_of(workdir, 1), signal.SIGKILL)
    _, err = launcher.communicate(timeout=_GUARD_S)
  finally:
    if launcher.poll() is None:
      os.killpg(launcher.pid, signal.SIGKILL)
  assert launcher.returncode == 1, err[-3000:]
  assert "Traceback" not in err and "Check failure" not in err, err[-3000:]
  named = [line for line in err.splitlines() if "process 1" in line]
  assert named and all("resume" in line for line in named), err[-3000:]
  assert _pid_of(workdir, 0) is None  # The survivor stopped too.
