"""The runner end to end in real processes: SIGKILL + resume is bit-exact, a damaged newest
checkpoint falls back to the previous one, 4 devices and 2 processes match 1 device, and
manual backprop trains like jax.grad."""
import json
import os
import signal
import subprocess
import sys

import chex
import jax
import processes
import numpy as np
import pytest

from configs import default
from research import metrics
from research import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long enough to be killed mid-run, small enough for CI.
RUN_FLAGS = ("--config.num_steps=1500", "--config.checkpoint_every=100",
             "--config.log_every=100", "--config.eval_every=500",
             "--config.model.hidden_sizes=(256,)", "--config.keep_checkpoints=20")


def _config(flags):
  config = default.get_config()
  for flag in flags:
    key, value = flag[len("--config."):].split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = type(node[leaf])(eval(value)) if isinstance(node[leaf], tuple) else (
        type(node[leaf])(value))
  return config


def _env(**extra):
  # PYTHON: launch/multihost_local.sh runs this interpreter, not whatever `python` is on PATH
  # (an unactivated venv's pytest, as in .ci/run, has none with the project installed).
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", PYTHON=sys.executable, **extra)


def _main(workdir, *flags, env=None):
  return [sys.executable, "-m", "research.main", f"--workdir={workdir}", *flags]


def _run(workdir, *flags, env=None):
  result = subprocess.run(_main(workdir, *flags), cwd=REPO, env=env or _env(),
                          capture_output=True, text=True, timeout=processes.GUARD_S)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _params(workdir, flags):
  state, step = train.restore_state(_config(flags), str(workdir))
  return [np.asarray(x) for x in jax.tree.leaves(state["params"])], step


def _records(workdir):
  timing = set(metrics.TIMING_FIELDS)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted single-process run."""
  workdir = tmp_path_factory.mktemp("reference")
  _run(workdir, *RUN_FLAGS)
  return workdir


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path):
  workdir = tmp_path / "killed"
  # Killed right after its third checkpoint's commit, where the run waits for the test.
  proc = processes.start_until([f"--workdir={workdir}", *RUN_FLAGS], ("after_commit", 3),
                               str(tmp_path / "killed.log"), REPO, _env())
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  ckpts = workdir / "checkpoints"
  killed_at = max(int(d) for d in os.listdir(ckpts) if d.isdigit())
  assert killed_at == 300

  # Damage the newest checkpoint: the resume must warn and fall back to the one before.
  newest = ckpts / str(killed_at)
  for root, _, files in os.walk(newest):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 64 and "manifest" not in root:
        with open(path, "r+b") as f:
          f.seek(32)
          f.write(b"\xff" * 16)
  resumed = _run(workdir, *RUN_FLAGS)
  assert f"checkpoint step {killed_at}" in resumed.stderr and "unusable" in resumed.stderr
  assert "resuming" in resumed.stderr

  want, want_step = _params(reference, RUN_FLAGS)
  got, got_step = _params(workdir, RUN_FLAGS)
  assert want_step == got_step == 1500
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)  # Bit-identical, not merely close.
  assert _records(workdir) == _records(reference)


@pytest.mark.slow
def test_four_devices_match_one_device(reference, tmp_path):
  workdir = tmp_path / "four"
  result = _run(workdir, *RUN_FLAGS,
                env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert "on 4 device(s)" in result.stderr
  want, _ = _params(reference, RUN_FLAGS)
  got, _ = _params(workdir, RUN_FLAGS)
  for a, b in zip(want, got):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_two_processes_match_one_process(reference, tmp_path):
  workdir = tmp_path / "two"
  with processes.reserved_port() as port:
    result = subprocess.run(
        ["bash", os.path.join(REPO, "launch", "multihost_local.sh"), "-n", "2", f"--port={port}",
         "--", f"--workdir={workdir}", *RUN_FLAGS],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=processes.GUARD_S)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  want, _ = _params(reference, RUN_FLAGS)
  got, _ = _params(workdir, RUN_FLAGS)
  for a, b in zip(want, got):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_manual_backprop_trains_like_autodiff(tmp_path):
  """100 steps from the same init and batches: --config.grad=manual vs autodiff."""
  results = {}
  for grad in ("autodiff", "manual"):
    config = default.get_config()
    config.update(num_steps=100, log_every=50, eval_every=100, grad=grad)
    results[grad] = train.train_and_evaluate(config, str(tmp_path / grad))
  chex.assert_trees_all_close(results["autodiff"]["state"]["params"],
                              results["manual"]["state"]["params"], rtol=1e-4, atol=1e-6)
