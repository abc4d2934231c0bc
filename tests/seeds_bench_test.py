"""launch/seeds_in_one_program.py: its argument checks, and the project's two seed forms
training the same params as each other and as harness.train_seeds (no timing is asserted)."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from research import data as data_lib
from research.experiments import harness
from scripts import launch_script  # tests/ is on sys.path (tests/scripts.py)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_REPO, "launch", "seeds_in_one_program.py")
seeds_bench = launch_script("seeds_in_one_program")

_TORCH = importlib.util.find_spec("torch") is not None


def _run(tmp_path, *args):
  args = [a.replace("W", str(tmp_path)) for a in args]
  return subprocess.run([sys.executable, _SCRIPT, *args], cwd=_REPO, capture_output=True,
                        text=True, check=False)


@pytest.mark.parametrize("args,message", [
    (["--seeds=0,2"], "--seeds=0,2: give distinct positive integers"),
    (["--seeds=2,2"], "--seeds=2,2: give distinct positive integers"),
    (["--seeds=a"], "--seeds=a: give distinct positive integers"),
    (["--seeds="], "--seeds=: give distinct positive integers"),
    (["--workloads=digits_mlp,nope"], "--workloads: 'nope' is not a workload"),
    (["--forms=vmap,jit"], "--forms: 'jit' is not a form"),
    (["--rounds=0", "--forms=vmap"], "--rounds=0 and --window_seconds=1.0 must be positive"),
    (["--torch_threads=-1", "--forms=vmap"], "--torch_threads=-1: give a thread count"),
    (["--forms=vmap", "--json=W/missing/s.json"], "--json=W/missing/s.json cannot be written"),
])
def test_refuses_bad_arguments_in_one_line_before_any_work(tmp_path, args, message):
  result = _run(tmp_path, *args)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert message.replace("W", str(tmp_path)) in lines[0]
  assert not result.stdout and not any(tmp_path.iterdir())


@pytest.mark.skipif(_TORCH, reason="PyTorch is installed here: nothing to refuse")
def test_refuses_torch_forms_without_torch_in_one_line(tmp_path):
  result = _run(tmp_path, "--forms=vmap,torch_loop", "--json=W/s.json")
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert "PyTorch is not installed here" in lines[0] and "--forms=vmap,loop" in lines[0]
  assert not any(tmp_path.iterdir())


def _close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("workload", ["digits_mlp", "semi_mlp"])
def test_vmap_and_loop_train_the_harness_params(workload):
  """Both timed forms, run 2 chunks of 3 steps, end at the params harness.train_seeds gives
  for the same seeds, steps and batches: what is timed is the harness's program."""
  k, seeds = 3, [0, 1]
  setup = seeds_bench.project_setup(workload, seeds)
  trained = {}
  for form in seeds_bench.PROJECT_FORMS:
    run, sync, params = seeds_bench.project_runner(
        seeds_bench.project_setup(workload, seeds), seeds, form, k)
    run(2 * k)
    sync()
    trained[form] = params()
  _close(trained["vmap"], trained["loop"])
  subsets = [data_lib.Split(x, y) for x, y in zip(setup.xs, setup.ys)]
  reference = harness.train_seeds(
      num_steps=2 * k, batch_size=setup.batch, subsets=subsets, seeds=seeds, mode="loop",
      batches=lambda seed, n, start, num: setup.batches(seed, start, num), chunk_steps=k,
      **setup.train_seeds_args)
  _close(trained["loop"], reference)
  # Trained, not the initial params: the check could not pass by running nothing.
  assert not np.allclose(np.asarray(jax.tree.leaves(reference[0])[0]),
                         np.asarray(jax.tree.leaves(setup.states[0]["params"])[0]))


def test_one_seed_vmapped_is_the_loop():
  k = 2
  trained = {}
  for form in seeds_bench.PROJECT_FORMS:
    run, sync, params = seeds_bench.project_runner(
        seeds_bench.project_setup("digits_mlp", [3]), [3], form, k)
    run(k)
    sync()
    trained[form] = params()
  _close(trained["vmap"], trained["loop"])


def test_measure_reports_every_n_and_picks_a_seed_mode():
  out = seeds_bench.measure("digits_mlp", [1, 2], ["vmap", "loop"], rounds=1,
                            window_seconds=1e-3, log=lambda line: None)
  assert [c["n"] for c in out["cells"]] == [1, 2]
  for cell in out["cells"]:
    assert set(cell["seed_steps_per_sec"]) == {"vmap", "loop"}
    assert cell["project_best"] in ("vmap", "loop") and cell["torch_best"] is None
    assert cell["vmap_over_loop"]["median"] > 0
  assert out["seed_mode"] in harness.SEED_MODES
  table = seeds_bench.markdown([out])
  assert table.count("| digits_mlp |") == 2


@pytest.mark.slow
def test_command_writes_json_and_table(tmp_path):
  result = _run(tmp_path, "--workloads=semi_mlp", "--seeds=1,2", "--forms=loop,vmap",
                "--rounds=1", "--window_seconds=0.001", "--json=W/s.json", "--markdown=W/s.md")
  assert result.returncode == 0, result.stderr
  out = json.loads((tmp_path / "s.json").read_text())
  assert out["meta"]["seeds"] == [1, 2] and out["results"][0]["workload"] == "semi_mlp"
  assert (tmp_path / "s.md").read_text().count("| semi_mlp |") == 2
