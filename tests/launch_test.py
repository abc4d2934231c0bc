"""launch/: sweep.py (grid, dry run, results tables, a real tiny sweep) and the shell launchers'
dry-run commands."""
import csv
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys

import processes
import pytest

from research import errors
from scripts import launch_script  # tests/ is on sys.path (tests/scripts.py)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sweep = launch_script("sweep")

_CONFIG = os.path.join(_REPO, "configs", "default.py")


@pytest.mark.parametrize("text,value", [("3", 3), ("-1", -1), ("0.1", 0.1), ("1e-3", 1e-3),
                                        ("true", True), ("False", False), ("sgd", "sgd"),
                                        ("(64,)", "(64,)")])
def test_parse_value_infers_type(text, value):
  got = sweep.parse_value(text)
  assert got == value and type(got) is type(value)


def test_parse_sweep_keeps_bracketed_commas():
  assert sweep.parse_sweep("model.hidden_sizes=(32,),(64, 32)") == (
      "model.hidden_sizes", ["(32,)", "(64, 32)"])
  assert sweep.parse_sweep("config.seed=0,1") == ("seed", ["0", "1"])
  for bad in ("optimizer.name", "=1,2", "seed=1,,2"):
    with pytest.raises(errors.ConfigError, match="field=v1,v2"):
      sweep.parse_sweep(bad)


def test_grid_and_random_subset():
  sweeps = [("a", ["1", "2", "3"]), ("b", ["x", "y"])]
  full = sweep.grid(sweeps)
  assert [i for i, _ in full] == list(range(6))
  assert full[1][1] == {"a": "1", "b": "y"}
  drawn = sweep.grid(sweeps, num_random=4, seed=7)
  assert len(drawn) == 4 and len({i for i, _ in drawn}) == 4
  assert all(full[i][1] == p for i, p in drawn)  # Indices name the same grid points.
  assert drawn == sweep.grid(sweeps, num_random=4, seed=7)
  assert len(sweep.grid(sweeps, num_random=100)) == 6
  with pytest.raises(errors.ConfigError, match="repeat"):
    sweep.grid([("a", ["1"]), ("a", ["2"])])


def test_dry_run_prints_one_command_per_grid_point(tmp_path, capsys):
  rc = sweep.main([f"--config={_CONFIG}", "--sweep=optimizer.name=sgd,momentum,adagrad",
                   "--sweep=optimizer.learning_rate=0.01,0.1", f"--workdir={tmp_path}",
                   "--parallel=2", "--dry_run", "--config.num_steps=50"])
  assert rc == 0
  commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
  assert len(commands) == 6
  assert commands[0][1:] == [
      "-m", "research.main", f"--config={_CONFIG}", "--config.num_steps=50",
      "--config.optimizer.name=sgd", "--config.optimizer.learning_rate=0.01",
      f"--workdir={tmp_path}/000-name=sgd-learning_rate=0.01"]
  assert commands[5][-1] == f"--workdir={tmp_path}/005-name=adagrad-learning_rate=0.1"
  assert os.listdir(tmp_path) == []  # A dry run creates nothing.


@pytest.mark.parametrize("args,message", [
    (["--sweep=optimizer.lr=0.1"], "'optimizer.lr' is not in .*learning_rate"),
    (["--sweep=seed=1", "--num_steps=5"], "unknown arguments"),
    ([], "at least one --sweep"),
    (["--sweep=seed=1", "--parallel=0"], "--parallel=0"),
])
def test_bad_arguments_fail_before_running(tmp_path, capsys, args, message):
  assert sweep.main([f"--config={_CONFIG}", f"--workdir={tmp_path}", *args]) == 2
  assert re.search(message, capsys.readouterr().err)


def test_finished_runs_are_reused(tmp_path, capsys):
  run_dir = tmp_path / "000-seed=1"
  run_dir.mkdir()
  records = [{"step": 50, "split": "train", "loss": 0.5, "accuracy": 0.75},
             {"step": 50, "split": "valid", "loss": 0.25, "accuracy": 0.8},
             {"step": 50, "split": "test", "loss": 0.3, "accuracy": 0.9, "wall_time": 2.0}]
  (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert sweep.main([f"--config={_CONFIG}", "--sweep=seed=1", f"--workdir={tmp_path}"]) == 0
  rows = list(csv.DictReader(open(tmp_path / "results.csv")))
  assert rows == [{"run": "000-seed=1", "seed": "1", "test_accuracy": "0.9", "test_loss": "0.3",
                   "valid_accuracy": "0.8", "valid_loss": "0.25", "wall_time": "2.0",
                   "process_s": "0.0", "status": "reused"}]
  assert "| 000-seed=1 | 1 | 0.9 | 0.3 | 0.8 | 0.25 | 2 |" in open(tmp_path / "results.md").read()
  assert (tmp_path / "comparison.png").stat().st_size > 0


@pytest.mark.slow
def test_real_sweep_records_results_and_failures(tmp_path):
  """Two short runs of configs/default.py plus one with an invalid learning rate."""
  proc = subprocess.run(
      [sys.executable, os.path.join(_REPO, "launch", "sweep.py"), f"--config={_CONFIG}",
       "--sweep=optimizer.learning_rate=0.05,0.2,-1", f"--workdir={tmp_path}", "--parallel=2",
       "--config.num_steps=50", "--config.log_every=25", "--config.eval_every=25"],
      capture_output=True, text=True, timeout=processes.GUARD_S)
  assert proc.returncode == 1, proc.stderr  # One run failed; the sweep still finished.
  rows = {r["optimizer.learning_rate"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
  assert [rows[lr]["status"] for lr in ("0.05", "0.2", "-1")] == ["ok", "ok", "failed (rc=2)"]
  for lr in ("0.05", "0.2"):
    assert 0.5 < float(rows[lr]["test_accuracy"]) <= 1
    assert float(rows[lr]["wall_time"]) > 0
  assert rows["-1"]["test_accuracy"] == ""
  report = open(tmp_path / "results.md").read()
  assert "## Failed runs" in report and "learning_rate=-1.0 must be a positive number" in report
  assert (tmp_path / "comparison.png").stat().st_size > 0


@pytest.mark.slow
def test_optimizer_sweep_3x2_on_digits(tmp_path):
  """The issue's sweep: 3 optimizers x 2 learning rates, with its table and plot."""
  proc = subprocess.run(
      [sys.executable, os.path.join(_REPO, "launch", "sweep.py"), f"--config={_CONFIG}",
       "--sweep=optimizer.name=sgd,momentum,adagrad", "--sweep=optimizer.learning_rate=0.01,0.1",
       f"--workdir={tmp_path}", "--parallel=2", "--config.num_steps=150",
       "--config.log_every=50", "--config.eval_every=50"],
      capture_output=True, text=True, timeout=processes.GUARD_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.DictReader(open(tmp_path / "results.csv")))
  grid = {(r["optimizer.name"], r["optimizer.learning_rate"]) for r in rows}
  assert grid == {(o, lr) for o in ("sgd", "momentum", "adagrad") for lr in ("0.01", "0.1")}
  assert all(r["status"] == "ok" and 0 < float(r["test_accuracy"]) <= 1 for r in rows)
  by = {(r["optimizer.name"], r["optimizer.learning_rate"]): float(r["test_accuracy"])
        for r in rows}
  # 150 steps of plain SGD at eta = 0.01 barely move a sigmoid net; momentum at 0.1 does.
  assert by[("momentum", "0.1")] > by[("sgd", "0.01")]
  table = open(tmp_path / "results.md").read()
  assert table.count("| ok") >= 6 or table.count("ok") >= 6
  assert (tmp_path / "comparison.png").stat().st_size > 10_000


# ---- Shell launchers. ----

def _sh(script: str, *args: str, env: dict | None = None,
        timeout: int = 120) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", os.path.join(_REPO, "launch", script), *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, **(env or {})))


def test_multihost_dry_run_commands():
  out = _sh("multihost_local.sh", "--dry-run", "-n", "3", "--port=12345", "--",
            f"--config={_CONFIG}", "--workdir=/tmp/a b")
  assert out.returncode == 0, out.stderr
  commands = [shlex.split(line) for line in out.stdout.splitlines()]
  assert len(commands) == 3
  for i, cmd in enumerate(commands):
    assert cmd == ["env", "JAX_PLATFORMS=cpu", "python", "-m", "research.main",
                   f"--config={_CONFIG}", "--workdir=/tmp/a b",
                   "--coordinator_address=127.0.0.1:12345", "--num_processes=3",
                   f"--process_id={i}"]


def test_multihost_bad_options():
  assert "positive integer" in _sh("multihost_local.sh", "-n", "0").stderr
  assert "after --" in _sh("multihost_local.sh", "--workdir=x").stderr


def test_multihost_first_failure_stops_the_others(tmp_path):
  """A fake python: process 1 fails once process 2 has started (its log says so), the others
  would wait forever; the launcher must stop them (else the timeout fails the test)."""
  fake = tmp_path / "python"
  fake.write_text('#!/bin/sh\necho "args: $*"\n'
                  'case "$*" in *--process_id=1*)\n'
                  f'  until grep -q process_id=2 {tmp_path}/process_2.log 2>/dev/null; do\n'
                  '    sleep 0.05\n  done\n'
                  '  echo boom >&2; exit 3;;\nesac\n'
                  "exec sleep infinity\n")
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  proc = subprocess.Popen(
      ["bash", os.path.join(_REPO, "launch", "multihost_local.sh"), "-n", "3", "--port=1",
       f"--log_dir={tmp_path}", "--", "--config.seed=4"],
      env=dict(os.environ, PYTHON=str(fake)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, start_new_session=True)
  try:
    # The launcher polls its processes every 0.2 s: once process 1's failure is on disk, a
    # launcher that stops the others exits within seconds; 10 minutes is only a guard.
    _, err = proc.communicate(timeout=600)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # The launcher and the processes it left running.
    raise AssertionError("the launcher kept the other processes running after process 1 "
                         "failed") from None
  assert proc.returncode == 1
  assert "process 1 failed" in err
  assert "boom" in (tmp_path / "process_1.log").read_text()
  assert "--config.seed=4 --coordinator_address=127.0.0.1:1 --num_processes=3 --process_id=2" \
      in (tmp_path / "process_2.log").read_text()


def test_tpu_vm_dry_run_commands():
  out = _sh("tpu_vm.sh", "--dry-run", "--create", "--spot", "--name=bp", "--project=proj",
            "--accelerator=v5litepod-8", "--workdir=runs/it's x", "--fetch=out", "--delete",
            "--", "--config.model.hidden_sizes=(64, 32)", env={"TPU_ZONE": "europe-west4-a"})
  assert out.returncode == 0, out.stderr
  lines = [shlex.split(line) for line in out.stdout.splitlines()]
  gcloud = ["gcloud", "compute", "tpus", "tpu-vm"]
  zone = ["--zone=europe-west4-a", "--project=proj"]
  assert lines[0] == [*gcloud, "create", "bp", *zone, "--accelerator-type=v5litepod-8",
                      "--version=tpu-ubuntu2204-base", "--spot"]
  assert lines[1][:3] == ["git", "-C", _REPO] and lines[1][3:5] == ["archive", "--format=tar.gz"]
  tarball = lines[1][-2]
  assert lines[2] == [*gcloud, "scp", tarball, "bp:research.tar.gz", "--worker=all", *zone]
  assert lines[3][:7] == [*gcloud, "ssh", "bp", "--worker=all"]
  remote = lines[3][-1].removeprefix("--command=")
  setup, _, main_cmd = remote.rpartition("; ")
  assert 'pip install -q -e . "jax[tpu]"' in setup
  # The image's Python 3.10 runs no JAX this project accepts: a 3.12 venv comes first.
  assert setup.index("uv venv -q --allow-existing --python 3.12 ~/venv") < setup.index(
      "pip install")
  assert shlex.split(main_cmd) == [
      "python", "-m", "research.main", "--config=configs/default.py", "--workdir=runs/it's x",
      "--coordinator_address=auto", "--config.model.hidden_sizes=(64, 32)"]
  assert lines[4] == ["mkdir", "-p", "out"]
  assert lines[5] == [*gcloud, "scp", "--recurse", "bp:research/runs/it's x", "out",
                      "--worker=0", *zone]
  assert lines[6] == [*gcloud, "delete", "bp", *zone, "--quiet"]


def test_tpu_vm_defaults_from_environment():
  out = _sh("tpu_vm.sh", "--dry-run", env={"TPU_NAME": "envtpu", "TPU_ZONE": "us-east1-d"})
  lines = [shlex.split(line) for line in out.stdout.splitlines()]
  assert len(lines) == 3  # No create / fetch / delete unless asked.
  assert lines[2][5] == "envtpu" and "--zone=us-east1-d" in lines[2]
  assert "--workdir=runs/default-" in lines[2][-1]
  assert "unknown option" in _sh("tpu_vm.sh", "--zone", "x").stderr


def test_the_model_zoo_leaves_out_configs_that_need_the_user_s_data(tmp_path, capsys):
  """`python launch/model_zoo.py --workdir=DIR` (the README's command) runs on a fresh clone:
  alexnet_imagenet, which needs a records directory, is left out with a line, every other
  single-model config is a row, and asking for it by name says how to run it."""
  zoo = launch_script("model_zoo")
  assert zoo.NEEDS_DATA == ("alexnet_imagenet",)
  singles = {f[:-3] for f in os.listdir(os.path.join(_REPO, "configs"))
             if f.endswith(".py") and not f.startswith("exp_")}
  assert {c.partition(":")[0] for c in zoo.ZOO} == singles - {"alexnet_imagenet"}
  with pytest.raises(errors.ConfigError, match="alexnet_imagenet reads data you provide"):
    zoo.main([f"--workdir={tmp_path / 'zoo'}", "--configs=alexnet_imagenet"])
  assert not os.path.exists(tmp_path / "zoo")


def test_lenet_vs_alexnet_times_the_kernel_s_chunk_from_kernel_init_state():
  """The timed step is kernel.make_train_chunk on kernel.init_state's state (no private copy
  of the training setup): a tiny LeNet trains and reports a positive rate."""
  bench = launch_script("lenet_vs_alexnet")
  from research import models  # pylint: disable=g-import-not-at-top
  name, cfg, shape, k, _ = bench.ROWS[0]
  assert name.startswith("LeNet")
  rate = bench.throughput(models.build(cfg, shape, k), shape, k, batch=4, seconds=0.0)
  assert rate > 0


@pytest.mark.slow
def test_input_throughput_step_rate_runs_the_kernel_s_chunk():
  """launch/input_throughput.py's step rate: the config's model (the :cpu variant, 64x64)
  through kernel.make_train_chunk from kernel.init_state."""
  bench = launch_script("input_throughput")
  out = bench.step_rate("cpu", batch=2, steps=1)
  assert out["side"] == 64 and out["images_per_sec"] > 0
