"""Data parallelism with jax.sharding: one mesh axis, "data", over every device of every host.

Parameters and optimizer state are replicated; each batch is split along its batch axis, so
a jitted step computes per-device gradients on B / D examples and XLA inserts the all-reduce
(the mean over the global batch) itself. No pmap, and the step code does not change.

Multi-host: every process runs the same program. `maybe_initialize_distributed` connects
them; each process draws the same global batch indices, keeps its rows with `host_slice`,
and `shard_batch` assembles the process-local rows into one global array.

  mesh = make_mesh()
  state = replicate(state, mesh)
  idx_SxB = shard_batch(host_slice(data.batch_indices(...)), mesh, axis=1)
"""
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from research import errors

AXIS = "data"


def maybe_initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                                 process_id: int | None) -> bool:
  """Calls jax.distributed.initialize only when asked; returns whether it did.

  coordinator_address "host:port" with num_processes and process_id: an explicit cluster
  (e.g. launch/multihost_local.sh). "auto": let JAX detect the cluster (Cloud TPU VMs,
  SLURM). None or "": a single process, nothing to do. Call before any other JAX call.
  """
  if not coordinator_address:
    if num_processes not in (None, 0, 1) or process_id not in (None, 0):
      raise errors.ConfigError(
          f"num_processes={num_processes}, process_id={process_id} need a "
          "--coordinator_address=host:port (or 'auto')")
    return False
  if coordinator_address == "auto":
    jax.distributed.initialize()
  else:
    if not isinstance(num_processes, int) or num_processes < 1:
      raise errors.ConfigError(
          f"num_processes={num_processes!r} must be a positive integer with "
          f"--coordinator_address={coordinator_address}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
      raise errors.ConfigError(
          f"process_id={process_id!r} must be in [0, {num_processes}) "
          f"(num_processes={num_processes})")
    if ":" not in coordinator_address:
      raise errors.ConfigError(
          f"coordinator_address={coordinator_address!r} must be host:port, e.g. 127.0.0.1:12345")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  if jax.process_count() > 1 and jax.default_backend() == "cpu":
    # A persistent compilation cache entry, once written, leaves every process of a CPU
    # (gloo) run waiting forever at its first chunk (jax 0.12.1); compiling costs seconds.
    jax.config.update("jax_enable_compilation_cache", False)
  logging.info("process %d of %d; %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis "data" over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` whole on every device of `mesh` (params, optimizer state,
  typed PRNG keys). Multi-host: each process must pass the same values (same seed, same init).
  """
  sharding = NamedSharding(mesh, P())

  def put(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    # Not jax.device_put: given a jax.Array and a sharding that spans hosts, jax 0.10 returns
    # a malformed array (its addressable_shards raise, so orbax cannot save it).
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, tree)


def host_slice(global_batch, axis: int = -1) -> np.ndarray:
  """This process's contiguous share of `global_batch` along its batch `axis`.

  Every process computes the same global batch (e.g. data.batch_indices, shaped (S, B): batch
  axis -1) and keeps rows [p * B / P, (p + 1) * B / P) for process p of P.
  """
  global_batch = np.asarray(global_batch)
  b, count = global_batch.shape[axis], jax.process_count()
  if b % count:
    raise errors.ConfigError(
        f"batch_size={b} is not divisible by the {count} processes; use a multiple of {count}")
  per_host = b // count
  start = jax.process_index() * per_host
  return np.take(global_batch, np.arange(start, start + per_host), axis=axis)


def shard_batch(local_batch, mesh: Mesh, axis: int = 0):
  """Assembles each process's rows into one global array split over "data" along `axis`.

  With one process, `local_batch` is the whole batch. With several, it is this process's
  `host_slice` and the global batch is their concatenation in process order. Works on a pytree.
  """
  def shard(x):
    x = np.asarray(x)
    axis_ = axis % x.ndim
    global_b = x.shape[axis_] * jax.process_count()
    if global_b % mesh.size:
      raise errors.ConfigError(
          f"batch_size={global_b} is not divisible by the {mesh.size} devices; use a multiple "
          f"of {mesh.size}")
    spec = P(*([None] * axis_), AXIS)
    global_shape = x.shape[:axis_] + (global_b,) + x.shape[axis_ + 1:]
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x, global_shape)

  return jax.tree.map(shard, local_batch)
