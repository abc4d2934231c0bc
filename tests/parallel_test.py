"""research.parallel: a data-parallel SGD chunk agrees with the single-device one.

JAX fixes its device count at import, and the rest of the suite runs on one device, so the
checks run in subprocesses: this file is also their script (`python tests/parallel_test.py
MODE`). "devices4" fakes 4 CPU devices in one process; "process" is one of 2 processes joined
with jax.distributed over localhost, each with 1 CPU device and half of every batch.
"""
import json
import os
import subprocess
import sys

import processes
import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = processes.GUARD_S


def _run(mode: str, *args: str, devices: int = 1) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_REPO,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             **processes.MULTIPROCESS_ENV)
  return subprocess.Popen([sys.executable, os.path.abspath(__file__), mode, *args], env=env,
                          cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
  out, err = proc.communicate(timeout=_TIMEOUT_S)
  assert proc.returncode == 0, f"worker failed:\n{err[-3000:]}"
  lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
  assert lines, f"no RESULT line in:\n{out}\n{err[-3000:]}"
  return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_batch_sharded_over_4_devices_matches_one_device():
  result = _result(_run("devices4", devices=4))
  assert result["device_count"] == 4
  assert result["idx_shard_shapes"] == [[3, 2]] * 4  # (S, B / D) on each device.
  assert result["max_abs_diff"] < 1e-5, result
  assert result["loss_decreased"] and result["same_stream"]
  assert "batch_size=6" in result["error"] and "4 devices" in result["error"]


# In the fast tier: the one check that 2 real processes train as one (13 s on 2 cores).
def test_two_processes_on_localhost_match_one_process(tmp_path):
  with processes.reserved_port() as port:
    procs = [_run("process", f"127.0.0.1:{port}", str(i), str(tmp_path)) for i in range(2)]
    try:
      results = [_result(p) for p in procs]
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
  for i, result in enumerate(results):
    assert (result["process_index"], result["process_count"]) == (i, 2)
    assert result["device_count"] == 2
    assert result["local_idx_shape"] == [3, 4]  # Half of each batch of 8.
    assert result["max_abs_diff"] < 1e-5, result
    assert result["same_stream"]
    assert result["checkpoint_step"] == 3 and result["checkpoint_exact"]
  # Both processes hold the same replicated params.
  assert results[0]["param_sum"] == results[1]["param_sum"]


# ---- The subprocess side. ----

_B, _S, _N, _D, _K = 8, 3, 32, 5, 3  # batch, steps per chunk, examples, inputs, classes


def _worker(mode: str, coordinator: str | None = None, process_id: str | None = None,
            workdir: str | None = None) -> dict:
  from research import checkpoint
  from research import errors
  from research import parallel
  if mode == "process":
    assert parallel.maybe_initialize_distributed(coordinator, 2, int(process_id))

  import jax
  import numpy as np
  import optax
  from research.models import mlp

  optimizer = optax.sgd(0.5)

  def loss_fn(params, x_BxD, y_B):
    logits_BxK = mlp.apply(params, x_BxD, "tanh")
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, y_B).mean()

  @jax.jit
  def chunk(state, x_NxD, y_N, idx_SxB):
    """S SGD steps, gathering each batch on the device, as research.train does."""
    def step(state, idx_B):
      params, opt_state = state
      loss, grads = jax.value_and_grad(loss_fn)(params, x_NxD[idx_B], y_N[idx_B])
      updates, opt_state = optimizer.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), loss
    return jax.lax.scan(step, state, idx_SxB)

  k_data, k_labels, k_init = jax.random.split(jax.random.key(0), 3)
  x_NxD = jax.random.normal(k_data, (_N, _D))
  y_N = jax.random.randint(k_labels, (_N,), 0, _K)
  params = mlp.init(k_init, (_D, 16, _K))
  state = (params, optimizer.init(params))
  idx_SxB = np.random.default_rng(0).permutation(_N)[:_S * _B].reshape(_S, _B)

  # Reference: everything on one local device.
  local = jax.local_devices()[0]
  ref_state, ref_loss = chunk(*jax.device_put((state, x_NxD, y_N, idx_SxB), local))

  mesh = parallel.make_mesh()
  local_idx = parallel.host_slice(idx_SxB, axis=-1)
  idx_sharded = parallel.shard_batch(local_idx, mesh, axis=1)
  par_state, par_loss = chunk(parallel.replicate(state, mesh), parallel.replicate(x_NxD, mesh),
                              parallel.replicate(y_N, mesh), idx_sharded)

  key = jax.random.key(1)
  rng = parallel.replicate(key, mesh)  # Typed keys need care to cross hosts.
  same_stream = bool((jax.random.uniform(rng, (3,)).addressable_data(0)
                      == jax.random.uniform(key, (3,))).all())

  def local_view(tree):
    """This process's copy of each replicated leaf (typed keys as their key data)."""
    def view(a):
      if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
      return np.asarray(a.addressable_data(0))
    return jax.tree.map(view, tree)
  diffs = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                       local_view(par_state[0]), jax.device_get(ref_state[0]))
  result = {"device_count": jax.device_count(), "process_index": jax.process_index(),
            "process_count": jax.process_count(), "local_idx_shape": list(local_idx.shape),
            "idx_shard_shapes": [list(s.data.shape) for s in idx_sharded.addressable_shards],
            "max_abs_diff": max(max(jax.tree.leaves(diffs)),
                                float(np.abs(local_view(par_loss) - ref_loss).max())),
            "loss_decreased": bool(ref_loss[-1] < ref_loss[0]), "same_stream": same_stream,
            "param_sum": float(sum(a.sum() for a in jax.tree.leaves(local_view(par_state[0]))))}
  if mode == "process":
    # Every process saves its part of the replicated state and restores it.
    train_state = {"params": par_state[0], "opt_state": par_state[1], "rng": rng}
    checkpoint.save(workdir, train_state, _S)
    restored, result["checkpoint_step"] = checkpoint.restore(workdir, train_state)
    result["checkpoint_exact"] = all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(local_view(restored)),
                                             jax.tree.leaves(local_view(train_state))))
  if mode == "devices4":
    try:
      parallel.shard_batch(np.zeros((6, 2)), mesh)
    except errors.ConfigError as e:
      result["error"] = str(e)
  return result


if __name__ == "__main__":
  print("RESULT " + json.dumps(_worker(*sys.argv[1:])), flush=True)
