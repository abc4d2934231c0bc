"""Cells on Ray (research/executor.py, config.experiment.executor="ray"), for real: no mock of
Ray anywhere. A local cluster of 2 CPUs and a two-node cluster on this machine run a small
experiment whose results.json, metrics.jsonl and params files must equal the local
executor's, bit for bit, also when a worker node is killed mid-run; launch/sweep.py's runs go
through the same executor.

Every cluster here is this test's own: `address="local"` or `ray start` with its own
--temp-dir (under a fresh /tmp directory: Ray's socket paths must stay short) and a free
port; teardown kills only the processes it started, by pid (never `ray stop`, which would stop
other users' clusters on this machine). Readiness is observed (the nodes Ray reports alive,
lines in harness/cells.jsonl), never a sleep."""
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from research import errors
from research import executor
from research import metrics as metrics_lib

ray = pytest.importorskip("ray")

REPO = pathlib.Path(__file__).resolve().parents[1]
RAY_CLI = str(pathlib.Path(sys.executable).parent / "ray")
DEADLINE_S = 600  # A last-resort guard on a loaded machine, never a synchronisation.


def _env(**extra) -> dict:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", RAY_USAGE_STATS_ENABLED="0")
  env.pop("RAY_ADDRESS", None)
  env.update(extra)
  return env


def _dropout_cmd(workdir, *extra):
  return [sys.executable, "-m", "research.main", "--config=configs/exp_dropout_ensemble.py",
          f"--workdir={workdir}", "--config.model.hidden_sizes=(32,)", "--config.num_steps=60",
          "--config.eval_every=30", "--config.log_every=30", "--config.experiment.seeds=2",
          "--config.experiment.dropout_rates=(0.2,0.5,0.8)",
          "--config.experiment.mask_counts=(1,16)", *extra]


def _run(cmd, env) -> subprocess.CompletedProcess:
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=DEADLINE_S)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _outcome(workdir: pathlib.Path) -> dict:
  """What must not depend on the executor: results.json (less its wall time), the records
  (less timing fields), the store's params files by name, byte for byte."""
  results = json.loads((workdir / "results.json").read_text())
  results.pop("wall_time")
  records = [{k: v for k, v in r.items() if k not in metrics_lib.TIMING_FIELDS}
             for r in metrics_lib.read_metrics(workdir)]
  params = {p.name: p.read_bytes() for p in (workdir / "harness" / "params").iterdir()}
  return {"results": results, "records": records, "params": params}


@pytest.fixture(scope="module")
def local_outcome(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("local") / "run"
  _run(_dropout_cmd(workdir), _env())
  return _outcome(workdir)


@pytest.fixture
def ray_tmp():
  path = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's unix sockets: keep paths short.
  yield path
  shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------- a local Ray cluster


@pytest.mark.slow
def test_a_local_ray_cluster_gives_the_local_executors_results_bit_for_bit(
    tmp_path, local_outcome, ray_tmp):
  """research.main with executor=ray and no address: ray.init(address="local") starts a
  cluster of this machine's CPUs (RAY_TMPDIR keeps its files in ray_tmp), runs every fit and
  test measurement as a task, and stops it at the end."""
  workdir = tmp_path / "ray"
  done = _run(_dropout_cmd(workdir, "--config.experiment.executor=ray"),
              _env(RAY_TMPDIR=ray_tmp))
  assert "Ray: started a local cluster" in done.stderr
  assert _outcome(workdir) == local_outcome


@pytest.mark.slow
def test_ray_init_with_two_cpus_in_process_runs_the_cells_as_tasks(tmp_path, local_outcome,
                                                                  ray_tmp):
  """ray.init(num_cpus=2) in this process (the executor joins the initialised Ray rather
  than starting one); the experiment runs in-process as a notebook would run it."""
  from configs import exp_dropout_ensemble  # pylint: disable=g-import-not-at-top
  from research import experiments  # pylint: disable=g-import-not-at-top
  config = exp_dropout_ensemble.get_config()
  config.model.hidden_sizes = (32,)
  config.num_steps, config.eval_every, config.log_every = 60, 30, 30
  config.experiment.update(seeds=2, dropout_rates=(0.2, 0.5, 0.8), mask_counts=(1, 16),
                           executor="ray")
  ray.init(address="local", num_cpus=2, _temp_dir=ray_tmp, include_dashboard=False,
           runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}})
  try:
    experiments.run(config, str(tmp_path / "ray"))
    assert ray.is_initialized()  # Not the executor's to stop.
  finally:
    ray.shutdown()
  assert _outcome(tmp_path / "ray") == local_outcome


@pytest.mark.slow
def test_a_task_whose_worker_dies_on_every_try_is_one_clear_error(ray_tmp):
  ray.init(address="local", num_cpus=1, _temp_dir=ray_tmp, include_dashboard=False,
           runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}})
  try:
    pool = executor.Ray(max_retries=1)
    pool.submit(0, os._exit, 1, tag="cell")  # The worker process dies mid-task.
    with pytest.raises(errors.LostWorkerError, match=r"failed 2 time\(s\).*rerun the same"):
      pool.next()
    pool.close()
  finally:
    ray.shutdown()


# ------------------------------------------------------------------- a two-node cluster here


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_node(args, env) -> subprocess.Popen:
  """`ray start ... --block` in a session of its own (its process group is this node);
  returns once it prints that its runtime started (a client connecting earlier is refused)."""
  proc = subprocess.Popen([RAY_CLI, "start", "--block", "--disable-usage-stats", *args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if "Ray runtime started" in line:
      # Keep draining its output, so that a full pipe never blocks the node.
      threading.Thread(target=proc.stdout.read, daemon=True).start()
      return proc
  raise AssertionError("ray start exited: " + "".join(seen)[-2000:])


def _stop_node(proc: subprocess.Popen) -> None:
  for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      return
    try:
      proc.wait(timeout=30)
      return
    except subprocess.TimeoutExpired:
      continue


def _processes_of(marker: str) -> list[int]:
  """Pids whose command line names `marker` (this test's temp dir): ours, and only ours."""
  pids = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/cmdline", "rb") as f:
          if marker.encode() in f.read():
            pids.append(int(entry))
      except OSError:
        continue
  return pids


def _stat(pid: str) -> tuple[int, int, bytes] | None:
  """(parent pid, process group, command line) of a process; None once it is gone."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      fields = f.read().rsplit(b")", 1)[1].split()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return int(fields[1]), int(fields[2]), f.read()
  except OSError:
    return None


def _task_workers(pgid: int) -> list[int]:
  """Pids of the Ray workers of the node whose process group is `pgid` (its raylet's
  children, each in a group of its own) that are running a task: Ray titles them
  ray::<task function> while they run one, ray::IDLE otherwise."""
  stats = {pid: _stat(pid) for pid in os.listdir("/proc") if pid.isdigit()}
  group = {int(pid) for pid, st in stats.items() if st and st[1] == pgid}
  return [int(pid) for pid, st in stats.items()
          if st and st[0] in group and st[2].startswith(b"ray::_call")]


def _wait_for_nodes(address: str, count: int, env) -> None:
  """Returns once Ray reports `count` nodes alive at `address` (observed, not slept)."""
  probe = ("import time, ray\n"
           f"ray.init(address='{address}', include_dashboard=False, logging_level='ERROR')\n"
           f"while len([n for n in ray.nodes() if n['Alive']]) < {count}:\n"
           "  time.sleep(0.2)  # polling what the GCS reports\n")
  subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=DEADLINE_S,
                 capture_output=True)


@pytest.mark.slow
def test_two_nodes_with_the_worker_node_killed_mid_run_lose_nothing(
    tmp_path, local_outcome, ray_tmp):
  """A head (`ray start --head --port=P --num-cpus=1 --temp-dir=...`) and a worker node
  (`ray start --address=127.0.0.1:P --num-cpus=1`), both subprocesses with this test's auth
  token; research.main joins with --ray_address. Once the store shows a finished fit, the
  worker node's busy worker and its whole process group are killed: that task is retried on
  the head, and the results, records and params equal the local executor's."""
  port = _free_port()
  address = f"127.0.0.1:{port}"
  # Token authentication with this cluster's own token: ~/.ray/auth_token is shared with
  # whatever else runs Ray on this machine.
  token = pathlib.Path(ray_tmp) / "token"
  token.write_text(secrets.token_hex(32))
  env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
  head = _start_node(["--head", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                      f"--temp-dir={ray_tmp}", "--include-dashboard=false"], env)
  worker = None
  try:
    _wait_for_nodes(address, 1, env)
    worker = _start_node([f"--address={address}", "--num-cpus=1",
                          "--node-ip-address=127.0.0.1"], env)
    _wait_for_nodes(address, 2, env)
    workdir = tmp_path / "cluster"
    cells = workdir / "harness" / "cells.jsonl"
    driver = subprocess.Popen(_dropout_cmd(workdir, "--config.experiment.executor=ray",
                                           f"--ray_address={address}"), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = []
    reader = threading.Thread(target=lambda: stderr.append(driver.stderr.read()))
    reader.start()
    deadline = time.time() + DEADLINE_S
    # The kill point: the store shows a finished fit and the worker node is running a task.
    while driver.poll() is None and not (cells.exists() and cells.read_text().count("\n")
                                         and _task_workers(worker.pid)):
      assert time.time() < deadline, "no cell finished"
      time.sleep(0.05)
    assert driver.poll() is None, "the run ended before the kill point"
    lines_at_kill = cells.read_text().count("\n")
    busy = _task_workers(worker.pid)
    for pid in busy:  # The worker mid-cell, then its node.
      os.kill(pid, signal.SIGKILL)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=DEADLINE_S)
    driver.wait(timeout=DEADLINE_S)
    reader.join()
    assert driver.returncode == 0, stderr[0][-3000:]
    assert "joined " + address in stderr[0]
    assert busy and lines_at_kill < 3 + 9  # Killed with work left: 3 fits, 9 tests.
    assert cells.read_text().count("\n") == 3 + 9
    assert _outcome(workdir) == local_outcome
  finally:
    if worker is not None:
      _stop_node(worker)
    _stop_node(head)
    for pid in _processes_of(ray_tmp):  # Anything of this cluster still alive, by pid.
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


# -------------------------------------------------------------------------- sweep and errors


@pytest.mark.slow
def test_sweep_runs_on_ray_at_most_parallel_at_once(tmp_path, ray_tmp):
  """launch/sweep.py --executor=ray: each run a Ray task on a local cluster it starts."""
  proc = subprocess.run(
      [sys.executable, str(REPO / "launch" / "sweep.py"), "--config=configs/default.py",
       "--sweep=optimizer.learning_rate=0.05,0.2", f"--workdir={tmp_path}", "--parallel=2",
       "--executor=ray", "--config.num_steps=50", "--config.log_every=25",
       "--config.eval_every=25"],
      cwd=REPO, env=_env(RAY_TMPDIR=ray_tmp), capture_output=True, text=True,
      timeout=DEADLINE_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = (tmp_path / "results.csv").read_text().splitlines()
  assert len(rows) == 3 and all(",ok" in row for row in rows[1:])


def test_the_local_executor_runs_at_most_max_in_flight_jobs_at_once():
  # Two jobs meet at a barrier: only two running at once can pass it; a third would raise
  # the high-water mark to 3.
  barrier, lock, state = threading.Barrier(2, timeout=DEADLINE_S), threading.Lock(), [0, 0]

  def job(i):
    with lock:
      state[0] += 1
      state[1] = max(state[1], state[0])
    barrier.wait()
    with lock:
      state[0] -= 1
    return i * i

  ex = executor.Local(max_in_flight=2)
  for i in range(4):
    ex.submit(i, job, i, tag=i)
  out = {}
  while ex.pending:
    tag, value = ex.next()
    out[tag] = value
  ex.close()
  assert out == {i: i * i for i in range(4)} and state[1] == 2


def test_executor_ray_without_ray_installed_is_one_line_naming_the_extra(tmp_path):
  code = ("import sys; sys.modules['ray'] = None\n"  # This interpreter without Ray.
          "from research import main\n"
          "main.main(sys.argv)\n")
  done = subprocess.run(
      [sys.executable, "-c", code, "--config=configs/exp_dropout_ensemble.py",
       f"--workdir={tmp_path / 'w'}", "--config.experiment.executor=ray"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=DEADLINE_S)
  assert done.returncode == 2
  errors_ = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors_) == 1 and "pip install -e '.[cluster]'" in errors_[0], done.stderr[-2000:]
  with pytest.raises(errors.ConfigError, match="executor='dask' is not supported"):
    executor.make("dask")
