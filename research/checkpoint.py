"""Checkpoints of the train state: atomic, keep-last-k, verified bit for bit on restore.

  save(workdir, state, step, keep=3)      -> writes workdir/checkpoints/<step>/
  latest_step(workdir)                    -> the newest step on disk, or None
  restore(workdir, target_state)          -> (state, step) from the newest step that verifies

The state is a pytree of arrays, e.g. the train state {"params", "opt_state", "step", "rng"}.
orbax writes each step into a temporary directory that is renamed (committed) only once it is
complete, so a crash mid-save leaves the earlier steps intact. Saves are synchronous: the state
is small next to a step's compute, and a save that has returned cannot be lost at exit, nor
(on a local disk) to a power loss: its files and directories are fsynced before it returns.

Each step also stores the run's config (the identity a resume is checked against, kept with
the checkpoints so it survives a deleted config.json) and a JSON manifest with every leaf's
path, shape, dtype and CRC-32. orbax's data files carry no checksum of their own (one flipped bit in a chunk restores silently as a
wrong number), so `restore` checks what it read against the manifest, and a step that fails to
read or to verify is logged and skipped for the one before it. Typed PRNG keys
(jax.random.key) are stored as their raw key data and re-wrapped with the target's
implementation. Nothing is unpickled.
"""
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from research import errors
from research import workdir as workdir_lib

SUBDIR = "checkpoints"
_FORMAT = 1  # Version of the manifest layout.


def checkpoint_dir(workdir) -> epath.Path:
  """workdir/checkpoints, absolute for local paths (orbax requires it); gs:// kept as is."""
  return workdir_lib.as_path(workdir, checkpoints=True) / SUBDIR


def latest_step(workdir) -> int | None:
  """The newest committed step under workdir/checkpoints (not yet verified), or None.

  Raises errors.WorkdirError when the directory cannot be read (e.g. no permission) or is
  not a directory (a file, a symbolic link loop, a dangling link): never None for checkpoints
  it cannot see, since a run with none starts over and drops its records.
  """
  workdir_lib.check_kinds(workdir, dirs=[SUBDIR])
  try:
    if not checkpoint_dir(workdir).exists():
      return None
    with _manager(workdir) as mgr:
      return mgr.latest_step()
  except OSError as e:
    raise errors.WorkdirError(
        f"{checkpoint_dir(workdir)} cannot be read ({errors.describe_os_error(e)}); restore "
        "read access to it, or pass another --workdir") from None


def save(workdir, state, step: int, *, keep: int = 3, config: dict | None = None,
         data: dict | None = None) -> None:
  """Writes `state` as checkpoint `step` and deletes all but the newest `keep` steps.

  `config` (the run's config as JSON-ready dicts) is stored with it, for saved_config;
  `data` (the input's identity, e.g. {"records": checksum}) too, for saved_item.
  Call it every N steps and at the end of training; every process must call it. Steps >= `step`
  already on disk (a run resumed from an earlier step, e.g. after a corrupt checkpoint was
  skipped) are deleted first: the history after `step` was abandoned, and orbax would otherwise
  skip a save that is not newer than the newest step. A failed write (disk full, permission
  lost) raises errors.StorageError; the steps saved before it are intact.
  """
  if not isinstance(keep, int) or keep < 1:
    raise errors.ConfigError(f"checkpoint keep={keep!r} must be a positive integer")
  step = int(step)
  on_disk = _to_disk(state)
  manifest = {"format": _FORMAT, "step": step,
              "leaves": [dict(spec, crc32=_crc32(x))
                         for spec, x in zip(_specs(state), jax.tree.leaves(on_disk))]}
  items = {"state": ocp.args.StandardSave(on_disk), "manifest": ocp.args.JsonSave(manifest)}
  if config is not None:
    items["config"] = ocp.args.JsonSave(config)
  if data is not None:
    items["data"] = ocp.args.JsonSave(data)
  try:
    with _manager(workdir, keep=keep, create=True) as mgr:
      for stale in [s for s in mgr.all_steps() if s >= step]:
        logging.warning("deleting checkpoint step %d in %s: saving step %d replaces it",
                        stale, checkpoint_dir(workdir), step)
        mgr.delete(stale)
      saved = mgr.save(step, args=ocp.args.Composite(**items))
      mgr.wait_until_finished()
  except Exception as e:  # noqa: BLE001  orbax and tensorstore wrap OSErrors in many types.
    raise workdir_lib.storage_error(checkpoint_dir(workdir), e) from None
  if not saved:
    raise RuntimeError(f"orbax skipped saving step {step} in {checkpoint_dir(workdir)}")
  # tensorstore fsyncs the arrays; orbax's JSON items and its renames of the temporary
  # directories are not: without this a power loss could keep the step's name, not its files.
  step_dir = checkpoint_dir(workdir) / str(step)
  workdir_lib.sync_tree(step_dir if step_dir.exists() else checkpoint_dir(workdir))


def longest_path(num_steps: int, num_processes: int = 1) -> tuple[str, ...]:
  """The longest path, relative to the workdir, that saving step <= num_steps writes: orbax's
  temporary directories, then tensorstore's data files (measured with strace on orbax 0.12.8's
  save; a 19-digit timestamp, which other orbax versions add to the temporary names, and a
  ".__lock" suffix are counted in as a margin)."""
  tmp = ".orbax-checkpoint-tmp-" + "0" * 19
  return (SUBDIR, f"{num_steps}{tmp}", f"state{tmp}", f"ocdbt.process_{num_processes - 1}",
          "d", "0" * 32 + ".__lock")


def restore(workdir: str, target_state) -> tuple[object, int]:
  """Returns (state, step) from the newest checkpoint that reads back and verifies.

  `target_state` gives the structure, shapes, dtypes and shardings: a state built the way the
  run builds it (concrete arrays) or its jax.ShapeDtypeStruct skeleton. A step that is damaged
  (unreadable, truncated, missing files, checksum mismatch) or does not match the target is
  logged as a warning and the previous step is tried. Raises errors.DataError when none is good.
  """
  ckpt_dir = checkpoint_dir(workdir)
  target_specs = _specs(target_state)
  abstract = jax.tree.map(_abstract_on_disk, target_state)
  problems = []  # (step, reason): logged only when an older step restores (else one error)
  with _manager(workdir) as mgr:
    steps = sorted(mgr.all_steps(), reverse=True) if epath.Path(ckpt_dir).exists() else []
    for step in steps:
      try:
        on_disk = _restore_step(mgr, step, abstract, target_specs)
      except Exception as e:  # noqa: BLE001  Damaged files raise many types (tensorstore, json).
        problems.append((step, str(e).splitlines()[0][:200] if str(e) else type(e).__name__))
        continue
      for bad, reason in problems:
        logging.warning("checkpoint step %d in %s is unusable (%s); restored step %d", bad,
                        ckpt_dir, reason, step)
      return _from_disk(on_disk, target_state), step
  if not steps:
    raise errors.DataError(
        f"no checkpoint in {ckpt_dir}; check --workdir, or start without restoring")
  by_reason = {}
  for step, reason in problems:
    by_reason.setdefault(reason, []).append(str(step))
  summary = "; ".join(f"step {', '.join(s)}: {r}" for r, s in by_reason.items())
  if all(r.startswith("state does not match") for r in by_reason):
    # Intact checkpoints of another state: a good run, never to be deleted.
    fix = ("they hold a state this config and data do not build (another model size, class "
           "count or code version); rerun with the config and data they were written with, "
           "or pass a new --workdir: this one is left as it is")
  else:
    # Not "move them aside": a workdir whose records passed a checkpoint refuses to start
    # over without one (train.py), so only a new workdir works.
    fix = ("they are damaged; pass a new --workdir to start over (this one is left as it "
           "is, its records in metrics.jsonl)")
  raise errors.DataError(f"no usable checkpoint in {ckpt_dir} ({summary[:400]}); {fix}")


def saved_item(workdir, step: int, name: str) -> dict | None:
  """A JSON item stored with checkpoint `step` ("config", "data"); None for one saved
  without it, or unreadable."""
  with _manager(workdir) as mgr:
    try:
      restored = mgr.restore(step, args=ocp.args.Composite(**{name: ocp.args.JsonRestore()}))
    except Exception:  # noqa: BLE001  No such item, or unreadable: there is no identity.
      return None
    return restored[name]


def saved_config(workdir, step: int) -> dict | None:
  """The config stored with checkpoint `step` (None for one saved without)."""
  return saved_item(workdir, step, "config")


def _restore_step(mgr: ocp.CheckpointManager, step: int, abstract, target_specs: list[dict]):
  try:
    manifest = mgr.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
    manifest = manifest["manifest"]
  except Exception:  # noqa: BLE001  orbax names the missing item at length.
    manifest = None
  if manifest is None or manifest.get("format") != _FORMAT:
    raise ValueError("missing or unknown manifest")
  saved_specs = [{k: v for k, v in leaf.items() if k != "crc32"} for leaf in manifest["leaves"]]
  if saved_specs != target_specs:
    raise ValueError(_first_difference(saved_specs, target_specs))
  restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  on_disk = restored["state"]
  for leaf, x in zip(manifest["leaves"], jax.tree.leaves(on_disk)):
    crc = _crc32(x)
    if crc is not None and leaf["crc32"] is not None and crc != leaf["crc32"]:
      raise ValueError(f"checksum mismatch in {leaf['path']}")
  return on_disk


def _first_difference(saved: list[dict], target: list[dict]) -> str:
  for s, t in zip(saved, target):
    if s != t:
      return f"state does not match: checkpoint has {s}, the run has {t}"
  return f"state does not match: checkpoint has {len(saved)} arrays, the run has {len(target)}"


def _manager(workdir, keep: int | None = None, create: bool = False):
  # LatestN: the preservation policy that replaces the deprecated max_to_keep. Temporary
  # directories of a save cut short by a kill are removed when the manager opens.
  policy = ocp.checkpoint_managers.LatestN(keep) if keep else None
  options = ocp.CheckpointManagerOptions(create=create, enable_async_checkpointing=False,
                                         preservation_policy=policy,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_impl(x):
  """The PRNG implementation of a typed key array or of its ShapeDtypeStruct."""
  impls = []
  jax.eval_shape(lambda k: impls.append(jax.random.key_impl(k)), x)
  return impls[0]


def _to_disk(tree):
  """Typed keys -> their uint32 key data; every other leaf unchanged."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _from_disk(tree, target):
  return jax.tree.map(
      lambda x, t: jax.random.wrap_key_data(x, impl=_key_impl(t)) if _is_key(t) else x,
      tree, target)


def _abstract_on_disk(x) -> jax.ShapeDtypeStruct:
  """What orbax should read for target leaf x: shape, dtype and (if known) sharding."""
  if _is_key(x):
    if not isinstance(x, jax.Array):
      return jax.eval_shape(jax.random.key_data, x)
    x = jax.random.key_data(x)
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))


def _specs(tree) -> list[dict]:
  """Path, on-disk shape and dtype (and key implementation) of every leaf, JSON-ready."""
  specs = []
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    disk = _abstract_on_disk(x)
    spec = {"path": jax.tree_util.keystr(path), "shape": list(disk.shape),
            "dtype": str(disk.dtype)}
    if _is_key(x):
      spec["key_impl"] = str(_key_impl(x))
    specs.append(spec)
  return specs


def _crc32(x) -> int | None:
  """CRC-32 of the leaf's bytes; None for an array sharded across hosts (no host sees it all)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      return None
    x = x.addressable_data(0)
  x_host = np.ascontiguousarray(np.asarray(x))
  return zlib.crc32(x_host.reshape(-1).view(np.uint8))
