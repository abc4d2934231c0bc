"""The command line: a real subprocess, its exit code and its one-line errors."""
import glob
import json
import os
import subprocess
import sys

import processes
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, cwd=None):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "research.main", *args], cwd=cwd or REPO,
                        env=env, capture_output=True, text=True, timeout=processes.GUARD_S)


@pytest.mark.parametrize("args, fragment", [
    (["--config.optimizer.lrr=1"], "config.optimizer has no field 'lrr'; its fields are:"),
    (["--config.optimizer.name=adamw"], "config.optimizer.name='adamw' is not supported"),
    (["--config=configs/missing.py"], "no such config file; available: configs/"),
    (["--config.batch_size=abc"], "--config.batch_size=abc"),
])
def test_bad_flags_give_one_line_and_exit_2(tmp_path, args, fragment):
  result = run_main(*args, f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_nan_loss_exits_3_naming_the_step_and_keeps_earlier_metrics(tmp_path):
  workdir = tmp_path / "run"
  result = run_main("--config.model.activation=relu", "--config.optimizer.learning_rate=1e6",
                    "--config.log_every=1", "--config.num_steps=50", "--config.eval_every=50",
                    f"--workdir={workdir}")
  assert result.returncode == 3, result.stderr
  assert "Traceback" not in result.stderr
  assert "loss became NaN/inf at step" in result.stderr
  assert os.path.exists(workdir / "config.json")


@pytest.mark.slow
def test_no_flags_runs_the_default_experiment_into_a_new_workdir(tmp_path):
  """`python -m research.main` alone (the README's first command), shortened."""
  result = run_main("--config.num_steps=100", "--config.log_every=50", cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  (workdir,) = glob.glob(str(tmp_path / "runs" / "default-*"))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert records[-1]["split"] == "test"
  assert "step     50 | loss" in result.stderr and "test accuracy" in result.stderr


# research.main's own code, with a spy on JAX's backend start, where XLA reads XLA_FLAGS once
# (importing jax reads nothing: the config files import it before main() runs).
_XLA_FLAGS_AT_BACKEND_START = r"""
import os, runpy, sys
from jax._src import xla_bridge
backends = xla_bridge.backends
def spy():
  if not getattr(spy, "said", False):
    spy.said = True
    print("XLA_FLAGS at backend start: " + os.environ.get("XLA_FLAGS", ""), flush=True)
  return backends()
xla_bridge.backends = spy
sys.argv = ["research.main"] + sys.argv[1:]
runpy.run_module("research.main", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_sets_xla_s_flag_before_the_backend_starts(tmp_path, deterministic):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_dump_to=")
  result = subprocess.run(
      [sys.executable, "-c", _XLA_FLAGS_AT_BACKEND_START, f"--config.deterministic={deterministic}",
       "--config.num_steps=10", "--config.log_every=10", "--config.eval_every=10",
       f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=processes.GUARD_S)
  assert result.returncode == 0, result.stderr[-3000:]
  (line,) = [l for l in result.stdout.splitlines() if l.startswith("XLA_FLAGS at backend start")]
  flags = line.split(": ", 1)[1].split()
  assert "--xla_dump_to=" in flags  # The user's own flags are kept.
  assert ("--xla_gpu_deterministic_ops=true" in flags) == deterministic, line
