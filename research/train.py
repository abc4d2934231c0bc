"""train_and_evaluate(config, workdir): the library behind `python -m research.main`.

The train state is a plain dict {"params", "opt_state", "step", "rng"}. One jitted call runs
a chunk of steps with `lax.scan`, gathering each batch on the device from the batch indices
(see research.data.batch_indices), so the host is touched only at log, eval and checkpoint
points.

What a run promises (README, "What a run promises"):
  - resume is exact: whatever step a run is killed at, rerunning the same command ends with
    the same params, optimizer state and metrics.jsonl records (timing fields aside) as an
    uninterrupted run. The checkpoint carries the log window's running sums, so the first
    train record after a resume averages the same steps as it would have; records past the
    checkpoint are dropped and written again, identically; TensorBoard's events are rebuilt
    from metrics.jsonl, so each step shows once. A run killed before its first checkpoint
    starts again from step 0.
  - one run per workdir (research.workdir.claim), and the config is kept with the checkpoints:
    a different config in the same workdir is refused, also when config.json was deleted.
  - progress lines time training steps only (compilation, evaluation and checkpoints are
    excluded) and give an ETA.
"""
import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from absl import logging

from research import augment
from research import checkpoint
from research import cli
from research import config_lib
from research import data as data_lib
from research import errors
from research import gradients
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import parallel
from research import workdir as workdir_lib
from research.data import streaming


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails fast, with the field and the fix, on values the run cannot use."""
  for field in ("batch_size", "num_steps", "log_every", "eval_every", "eval_batch_size"):
    value = config[field]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise errors.ConfigError(f"config.{field}={value!r} must be a positive integer")
  if config.early_stopping_patience < 0:
    raise errors.ConfigError(f"config.early_stopping_patience={config.early_stopping_patience} "
                             "must be >= 0 (0 turns early stopping off)")
  errors.check_choice("loss.output", config.loss.output, sorted(losses.DATA_LOSSES))
  for field in ("l2", "l1"):
    if config.loss[field] < 0:
      raise errors.ConfigError(f"config.loss.{field}={config.loss[field]} must be >= 0")
  errors.check_choice("grad", config.grad, gradients.GRADS)
  errors.check_choice("matmul_precision", config.matmul_precision, MATMUL_PRECISIONS)
  errors.check_choice("compute_dtype", config.compute_dtype, models.core.COMPUTE_DTYPES)
  if not isinstance(config.deterministic, bool):
    raise errors.ConfigError(f"config.deterministic={config.deterministic!r} must be True or "
                             "False")
  start, stop = _profile_window(config)
  if not 0 <= start <= stop <= config.num_steps:
    raise errors.ConfigError(
        f"config.profile_steps={tuple(config.profile_steps)!r} must be (start, stop) with "
        f"0 <= start <= stop <= num_steps={config.num_steps}; (0, 0) turns profiling off")
  if config.checkpoint_every < 0 or config.keep_checkpoints < 1:
    raise errors.ConfigError(
        f"config.checkpoint_every={config.checkpoint_every} must be >= 0 (0: only at the end) "
        f"and config.keep_checkpoints={config.keep_checkpoints} >= 1")
  config_lib.check_ranges(config)


MATMUL_PRECISIONS = ("default", "high", "highest")
PROFILE_DIR = "profile"


def _profile_window(config) -> tuple[int, int]:
  window = tuple(config.get("profile_steps", (0, 0)))
  if len(window) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in window):
    raise errors.ConfigError(f"config.profile_steps={window!r} must be two integers "
                             "(start, stop); (0, 0) turns profiling off")
  return window


def profile_plan(config, step: int) -> tuple[int, int] | None:
  """The window to trace in a run that starts (or resumes) at `step`: None when it is empty
  or the run starts past its first step (a trace of half a window would mislead)."""
  start, stop = _profile_window(config)
  return (start, stop) if step <= start < stop else None


def precision(config):
  """The context the run traces under: jax.default_matmul_precision(config.matmul_precision),
  or none for "default" (the backend's own: full float32 on CPUs; bfloat16 passes on TPUs)."""
  if config.get("matmul_precision", "default") == "default":
    return contextlib.nullcontext()
  return jax.default_matmul_precision(config.matmul_precision)


def resolved(config) -> dict:
  """What the config leaves to the machine, as this run resolved it (config.json records it
  beside the config; it is not part of the run's identity)."""
  out = {"backend": jax.default_backend(), "devices": jax.device_count(),
         "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__}
  if "conv_impl" in config.model:
    out["model.conv_impl"] = models.conv_impl(config.model)
  return out


def weight_norms(tree) -> dict[str, jax.Array]:
  """||w^l|| of every weight leaf (losses.is_weight), keyed "0/w", "conv/c1/w", ...: the
  per-layer norms a run logs for the params, dE/dw and the optimizer's update."""
  return {_leaf_name(path): jnp.sqrt(jnp.sum(jnp.square(v.astype(jnp.float32))))
          for path, v in jax.tree_util.tree_leaves_with_path(tree) if losses.is_weight(path)}


def _leaf_name(path) -> str:
  parts = []
  for k in path:
    parts.append(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))))
  return "/".join(parts)


def make_train_chunk(loss_fn: Callable, optimizer, augment_fn: Callable | None = None,
                     value_and_grad: Callable | None = None,
                     max_traces: int | None = None, norms: bool = False,
                     batches_given: bool = False) -> Callable:
  """Returns jitted chunk(state, x_all, y_all, idx_SxB) -> (state, sums) running S steps;
  with batches_given (the streaming pipeline, research.data.streaming), chunk(state, x_SxB...,
  y_SxB) -> (state, sums) takes the S batches themselves instead of gathering them.

  sums holds E ("loss_sum") and every scalar of the loss's aux (e.g. "data_loss_sum",
  "accuracy_sum") summed over the chunk's steps (train records report E as "loss" and the data
  term, comparable with valid/test "loss", as "data_loss"); with norms=True (the run's loop,
  for its log records; the experiment runners do not read them) "norms", the per-layer norms
  {"grad", "param", "update"} of the chunk's last step (weight_norms; that step is written out
  after the scan, so it is traced and compiled a second time: a longer compile for no step
  cost); and the first step whose loss was not finite (or -1), so NaN detection costs no extra
  host sync.

  max_traces guards compilation: a run traces the chunk once per distinct chunk length S,
  and a retrace (a changed dtype, shape or sharding) would silently recompile every chunk; with
  the guard it fails instead. (chex.assert_max_traces counts per function definition, so it
  would count the chunks of every run of a process together.)
  """
  if value_and_grad is None:
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, x, y, with_norms=False):
    step = state["step"]
    # Per-step randomness is a function of (seed, step) alone, so resuming is exact.
    rng, aug_rng = jax.random.split(jax.random.fold_in(state["rng"], step))
    if augment_fn is not None:
      x = augment_fn(aug_rng, x)
    (E, aux), grads = value_and_grad(state["params"], x, y, rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(jnp.add, state["params"], updates)
    new_state = dict(state, params=params, opt_state=opt_state, step=step + 1)
    layer_norms = {"grad": weight_norms(grads), "update": weight_norms(updates),
                   "param": weight_norms(params)} if with_norms else None
    return new_state, ({"loss": E, **aux}, step), layer_norms

  def run(state, xs_S, batch):
    """S steps over xs_S (a pytree with leading axis S); batch(xs) -> (x_B..., y_B)."""
    # The last step is written out after the scan, with the per-layer norms: computed inside
    # the scan they would cost every step a pass over the gradients and updates (~10-30% of
    # a small MLP's step, also behind a lax.cond); here they cost one step's worth.
    head = jax.tree.map(lambda a: a[:-1], xs_S) if norms else xs_S
    state, (values_S, step_S) = jax.lax.scan(
        lambda s, xs: train_step(s, *batch(xs))[:2], state, head)
    out = {}
    if norms:
      state, (values_last, step_last), out["norms"] = train_step(
          state, *batch(jax.tree.map(lambda a: a[-1], xs_S)), with_norms=True)
      values_S = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), values_S,
                              values_last)
      step_S = jnp.concatenate([step_S, step_last[None]])
    E_S = values_S["loss"]
    bad = jnp.where(jnp.isfinite(E_S), jnp.iinfo(jnp.int32).max, step_S).min()
    sums = {f"{key}_sum": v.sum() for key, v in values_S.items()}
    out.update(sums, first_bad_step=jnp.where(bad == jnp.iinfo(jnp.int32).max, -1, bad))
    return state, out

  if batches_given:
    def chunk(state, x_SxB, y_SxB):
      return run(state, (x_SxB, y_SxB), lambda xy: xy)
  else:
    def chunk(state, x_all, y_all, idx_SxB):
      return run(state, idx_SxB, lambda idx_B: (x_all[idx_B], y_all[idx_B]))

  if max_traces is not None:
    chunk = _count_traces(chunk, max_traces)
  return jax.jit(chunk, donate_argnums=0)


def _count_traces(fn: Callable, max_traces: int) -> Callable:
  """fn, raising AssertionError when traced more than max_traces times (a trace runs the
  Python body; a compiled call does not)."""
  traces = [0]

  @functools.wraps(fn)
  def counted(*args):
    traces[0] += 1
    if traces[0] > max_traces:
      raise AssertionError(
          f"the train chunk was traced {traces[0]} times, more than its {max_traces} chunk "
          "length(s): an argument's shape, dtype or sharding changed between chunks")
    return fn(*args)

  return counted


def make_eval_fn(model: models.Model, output: str, k: int) -> Callable:
  """Returns jitted eval(params, x_B..., labels_B..., mask_B) -> loss and accuracy summed over
  the unmasked examples. Labels may carry trailing axes (e.g. one per time step): those are
  averaged within each example."""
  data_loss = losses.DATA_LOSSES[output]

  def eval_batch(params, x, labels, mask):
    logits_BxK = model.apply(params, x, train=False)
    per_label = data_loss(logits_BxK, losses.one_hot_targets(labels, k, logits_BxK.dtype))
    hit = (losses.predictions(logits_BxK) == labels).astype(per_label.dtype)
    per_example = lambda v: v.reshape(v.shape[0], -1).mean(axis=1)
    return {"loss_sum": jnp.where(mask, per_example(per_label), 0).sum(),
            "correct": jnp.where(mask, per_example(hit), 0).sum()}

  return jax.jit(eval_batch)


def eval_batch_size(config, dataset: data_lib.Dataset) -> int:
  """One evaluation batch size for valid and test (one compilation), no larger than needed."""
  return max(1, min(config.eval_batch_size, max(len(dataset.valid), len(dataset.test))))


def evaluate(eval_fn: Callable, params, split: data_lib.Split, batch_size: int,
             mesh=None) -> dict:
  """Mean data loss and accuracy over a split; the last batch is padded and masked so every
  call has one shape: pass one batch_size for every split to compile once (see
  eval_batch_size). With a mesh, every batch is placed replicated (each host passes the same
  data)."""
  n = len(split)
  if n == 0:
    return {}
  totals = {"loss_sum": 0.0, "correct": 0}
  for start in range(0, n, batch_size):
    x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
    pad = batch_size - len(y)
    mask = np.arange(batch_size) < len(y)
    if pad:
      x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
      y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    batch = (x, y, mask) if mesh is None else parallel.replicate((x, y, mask), mesh)
    out = eval_fn(params, *batch)
    totals = {key: totals[key] + out[key] for key in totals}
  return {"loss": float(totals["loss_sum"]) / n, "accuracy": float(totals["correct"]) / n}


@dataclasses.dataclass
class _Functions:
  """What a run compiles, shared by runs that differ only in what does not change it (the
  seed, the log cadence): a regularization experiment's many runs compile once."""
  model: models.Model
  train_chunk: Callable
  eval_fn: Callable
  add_sums: Callable
  value_and_grad: Callable
  executables: dict  # chunk length S -> the compiled train chunk


@functools.lru_cache(maxsize=16)
def _functions(config_key: str, n: int, k: int, input_shape: tuple, x_dtype: str) -> _Functions:
  del x_dtype  # Part of the key: the compiled chunk is specialised to it.
  config = ml_collections.ConfigDict(json.loads(config_key))
  # Runs of this key share the cadence, hence the chunk lengths: each is traced once.
  lengths = {stop - start for start, stop in chunk_bounds(config)}
  model = models.build(config.model, input_shape, k, compute_dtype=config.compute_dtype)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  # The lecture's m is the number of training examples.
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
  value_and_grad = gradients.make_value_and_grad(config, loss_fn, k, n, input_shape)
  train_chunk = make_train_chunk(loss_fn, optimizer, augment.make_augment(config.augment),
                                 value_and_grad, max_traces=len(lengths), norms=True,
                                 batches_given=streaming.enabled(config.data))
  add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
  return _Functions(model, train_chunk, make_eval_fn(model, config.loss.output, k), add,
                    value_and_grad, {})


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def prepare_workdir(config, workdir) -> None:
  """Writes config.json into a new run's workdir (process 0); refuses a workdir that already
  holds a run. Runners without checkpoints call it inside research.workdir.claim."""
  path = workdir_lib.as_path(workdir)
  if (path / metrics_lib.FILENAME).exists():
    raise errors.WorkdirError(
        f"--workdir={path} already holds a run (metrics.jsonl); pass a new --workdir so "
        "its results are kept")
  write_config(config, path)


def write_config(config, workdir) -> None:
  """workdir/config.json (process 0), written whole or not at all: the config, and under
  "resolved" what it left to the machine (backend, conv_impl "auto", ...)."""
  if jax.process_index() == 0:
    record = dict(_config_dict(config), resolved=resolved(config))
    workdir_lib.write_text(workdir_lib.as_path(workdir) / "config.json",
                           json.dumps(record, indent=2, sort_keys=True) + "\n")


def saved_config(workdir) -> dict | None:
  """workdir/config.json as a dict, None if absent; WorkdirError if it is not valid JSON."""
  path = workdir_lib.as_path(workdir) / "config.json"
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    raise errors.WorkdirError(f"{path} is not valid JSON ({e}); restore it, or delete it to "
                              "resume from the config kept with the checkpoints") from None


def check_same_config(config, saved: dict | None, workdir) -> None:
  """Resuming with a different config would silently mix two experiments: refuse."""
  if saved is None:
    return
  # A top-level field missing on either side (a run saved before config_lib.base had it, or a
  # config that leaves an optional field out) counts as its base default, on both sides alike.
  base = _config_dict(config_lib.base())
  saved = {**base, **{k: v for k, v in saved.items() if k != "resolved"}}
  diffs = sorted(_diff(saved, {**base, **_config_dict(config)}))
  if diffs:
    raise errors.ConfigError(
        f"--workdir={workdir} holds a run with a different config ({', '.join(diffs[:5])}); "
        "resume it with the same config, or pass a new --workdir")


def _diff(a, b, prefix="config") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in sorted(set(a) | set(b)):
      out += _diff(a.get(key), b.get(key), f"{prefix}.{key}")
    return out
  return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]


def _inspect_workdir(config, workdir) -> int | None:
  """What the workdir holds, checked against config: the newest checkpoint step to resume
  from, or None to start at step 0 (a new workdir, or a run of this config killed before its
  first checkpoint). Raises ConfigError for another config's run or one whose results would
  be lost."""
  latest = checkpoint.latest_step(workdir)
  on_file = saved_config(workdir)
  if latest is not None:
    # The config kept with the checkpoints is the identity; config.json may be gone.
    check_same_config(config, checkpoint.saved_config(workdir, latest) or on_file, workdir)
    return latest
  metrics_path = workdir / metrics_lib.FILENAME
  if not metrics_path.exists() or not metrics_path.read_text().strip():
    return None  # Nothing to lose: a new workdir, or a run stopped before its first record.
  if on_file is None:
    raise errors.ConfigError(
        f"--workdir={workdir} already holds a run (metrics.jsonl) with no config.json and no "
        "checkpoint; pass a new --workdir so its results are kept")
  check_same_config(config, on_file, workdir)
  if metrics_lib.read_metrics(workdir, split="test"):
    raise errors.ConfigError(
        f"--workdir={workdir} already holds a run (metrics.jsonl) that finished, and its "
        "checkpoints are gone; pass a new --workdir so its results are kept")
  return None


def _finished_result(records: list[dict]) -> dict | None:
  """The test record of a run that already ran to the end, else None."""
  return records[-1] if records and records[-1]["split"] == "test" else None


def _raise_if_nonfinite(pending: list, last_good_step: int, path) -> None:
  """Host sync on the chunks' first-bad-step scalars: stop naming the step."""
  for first_bad in pending:
    if int(first_bad) >= 0:
      raise errors.NonFiniteLossError(
          f"loss became NaN/inf at step {int(first_bad)}; lower config.optimizer.learning_rate "
          f"or set config.optimizer.clip_global_norm (results up to step {last_good_step} are "
          f"in {path})")
  pending.clear()


def init_tracked(config, model: models.Model, optimizer, mesh) -> dict:
  """Everything a checkpoint holds but the log window: {"state": train state[, "best":
  early stopping's memory]}; the run adds "window", the sums of the steps since the last log
  line, so a resumed run's first train record is the uninterrupted run's.

  The train state is {"params", "opt_state", "step", "rng"}, replicated over the mesh.
  """
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  params = model.init(init_key)
  state = parallel.replicate({"params": params, "opt_state": optimizer.init(params),
                              "step": jnp.zeros((), jnp.int32), "rng": train_key}, mesh)
  tracked = {"state": state}
  if config.early_stopping_patience > 0:  # Part of the state, so resume stays exact.
    tracked["best"] = {"params": jax.tree.map(jnp.copy, state["params"]),
                       "loss": jnp.asarray(jnp.inf, jnp.float32),
                       "step": jnp.zeros((), jnp.int32), "evals_since": jnp.zeros((), jnp.int32)}
  return tracked


def _prepare(config, dataset: data_lib.Dataset) -> _Functions:
  """The run's compiled functions (cached across runs with the same compile-relevant config)."""
  k = losses.num_outputs(config, dataset)
  key = _config_dict(config)
  key.pop("seed")  # The seed changes the init and the batches, not what is compiled.
  return _functions(json.dumps(key, sort_keys=True), len(dataset.train), k,
                    tuple(dataset.input_shape), str(dataset.train.x.dtype))


def _window_template(fns: _Functions, params, x_all, y_all, batch_size: int) -> dict:
  """Zeros shaped like a train chunk's summed values (E and every scalar of the loss's aux):
  the log window's running sums. Traces the loss, not the chunk."""
  batch = lambda a: jax.ShapeDtypeStruct((batch_size, *a.shape[1:]), a.dtype)
  (E, aux), _ = jax.eval_shape(fns.value_and_grad, params, batch(x_all), batch(y_all),
                               jax.random.key(0))
  return {f"{key}_sum": jnp.zeros(v.shape, v.dtype) for key, v in {"loss": E, **aux}.items()}


def restore_state(config: ml_collections.ConfigDict, workdir) -> tuple[dict, int]:
  """(train state, step) of the newest good checkpoint of a run of `config` in workdir, with
  early stopping's best params in place when the config uses it. For notebooks and tests."""
  stream = streaming.enabled(config.data)
  dataset = streaming.dataset(config.data) if stream else data_lib.load(config.data)
  fns = _prepare(config, dataset)
  mesh = parallel.make_mesh()
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  tracked = init_tracked(config, fns.model, optimizer, mesh)
  tracked["window"] = parallel.replicate(_window_template(
      fns, tracked["state"]["params"], dataset.train.x, dataset.train.y, config.batch_size), mesh)
  if stream:
    tracked["data"] = streaming.iterator_state(0, 0, mesh)
  tracked, step = checkpoint.restore(workdir, tracked)
  return _final_state(tracked), step


def chunk_bounds(config, start: int = 0) -> list[tuple[int, int]]:
  """The run's chunks [(start, stop), ...]: each ends at the next log, eval or checkpoint
  step, at the ends of the profiled window, or at the last step, so the host syncs only
  there."""
  every = [config.log_every, config.eval_every]
  if config.checkpoint_every:
    every.append(config.checkpoint_every)
  marks = [s for s in _profile_window(config) if s > 0] + [config.num_steps]
  bounds, step = [], start
  while step < config.num_steps:
    stop = min([_next_multiple(step, e) for e in every] + [m for m in marks if m > step])
    bounds.append((step, stop))
    step = stop
  return bounds


class _Clock:
  """Wall time split into training (chunks running on the device) and the rest (compiling,
  evaluating, checkpointing): progress lines report training throughput only."""

  def __init__(self):
    self.train_seconds = 0.0
    self._since = None

  def start(self) -> None:
    """Training resumes now (after a sync, a compile, an eval or a save); no-op if running."""
    if self._since is None:
      self._since = time.time()

  def stop(self, state) -> None:
    """Waits for the dispatched chunks and books the time since start() as training."""
    if self._since is not None:
      jax.block_until_ready(state)
      self.train_seconds += time.time() - self._since
      self._since = None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       *, dataset: data_lib.Dataset | None = None) -> dict[str, Any]:
  """Trains config's model on config's data, logging to workdir; returns final state/metrics.

  The workdir is claimed first (created, checked writable, locked: research.workdir); a
  workdir holding checkpoints of the same config is resumed from its newest good one,
  exactly: the batch order, dropout and augmentation keys are functions of (seed, step), and
  the checkpoint carries the log window. With several devices (or hosts) the batch is split
  over a "data" mesh axis and the params are replicated; the code path is the same for one
  device. `dataset` replaces config.data's (e.g. an experiment's subset of the train split).

  Returns {"state": train state, "test": {"loss", "accuracy"}, "valid": ..., "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  _check_deterministic(config)
  with workdir_lib.claim(workdir, process_index=jax.process_index()) as path, precision(config):
    return _train(config, path, dataset, t_start)


def _check_deterministic(config) -> None:
  """config.deterministic on a GPU needs XLA's flag, which only works set before JAX starts."""
  if (config.get("deterministic") and jax.default_backend() == "gpu"
      and cli.DETERMINISTIC_FLAG not in os.environ.get("XLA_FLAGS", "")):
    raise errors.ConfigError(
        f"config.deterministic=True needs XLA_FLAGS={cli.DETERMINISTIC_FLAG} set before JAX "
        "starts (python -m research.main sets it; in a notebook, set os.environ['XLA_FLAGS'] in the "
        "first cell, before importing jax)")


def _train(config, workdir, dataset, t_start: float) -> dict[str, Any]:
  resume_step = _inspect_workdir(config, workdir)
  # Every process reads the workdir before process 0 writes to it.
  multihost_utils.sync_global_devices("workdir inspected")
  # Streaming: batches come from the records files (research.data.streaming), the splits
  # decode on indexing; memory: every split is on the device and batches are gathered there.
  stream = streaming.enabled(config.data)
  if stream and dataset is not None:
    raise errors.ConfigError("config.data.pipeline='streaming' reads config.data's records; "
                             "pass no dataset, or use pipeline 'memory'")
  if dataset is None:
    dataset = streaming.dataset(config.data) if stream else data_lib.load(config.data)
  n = len(dataset.train)
  errors.check_batch_size(config.batch_size, n, f"training examples of {dataset.name}")
  fns = _prepare(config, dataset)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  mesh = parallel.make_mesh()
  x_all, y_all = (dataset.train.x, dataset.train.y) if stream else parallel.replicate(
      (dataset.train.x, dataset.train.y), mesh)

  def indices(start, stop):
    idx_SxB = data_lib.batch_indices(config.seed, n, config.batch_size, start, stop - start)
    # Each host keeps its share of the batch; the mesh splits it over the devices.
    return parallel.shard_batch(parallel.host_slice(idx_SxB, axis=1), mesh, axis=1)

  tracked = init_tracked(config, fns.model, optimizer, mesh)
  tracked["window"] = parallel.replicate(_window_template(
      fns, tracked["state"]["params"], x_all, y_all, config.batch_size), mesh)
  if stream:  # The iterator's state: position and the records' identity.
    identity = streaming.identity(config.data)
    tracked["data"] = streaming.iterator_state(0, identity, mesh)
  step = 0
  if resume_step is not None:
    tracked, step = checkpoint.restore(workdir, tracked)
    if stream:
      streaming.check_restored(tracked["data"], step, identity, config.data.data_dir)
    if saved_config(workdir) is None:
      write_config(config, workdir)  # Deleted since: the checkpoints' copy matched.
    # Read once: the finished-run check and truncate share it (and its torn-line warning).
    records = metrics_lib.read_metrics(workdir) if (
        workdir / metrics_lib.FILENAME).exists() else []
    finished = _finished_result(records)
    if finished is not None and step == finished["step"]:
      test = {k: finished[k] for k in ("loss", "accuracy") if k in finished}
      logging.info("%s already finished at step %d: test %s (nothing to do)", workdir, step,
                   _describe(test))
      return {"state": _final_state(tracked), "valid": {}, "wall_time": finished["wall_time"],
              "test": test}
    metrics_lib.truncate(workdir, step, records)
    logging.info("resuming %s from step %d", workdir, step)
  else:
    if (workdir / metrics_lib.FILENAME).exists():
      logging.info("%s: restarting a run of this config that stopped before its first "
                   "checkpoint", workdir)
      metrics_lib.truncate(workdir, -1)
    write_config(config, workdir)
  writer = metrics_lib.MetricWriter(workdir)
  feeder = None
  try:
    state, window = tracked["state"], tracked["window"]
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    logging.info("%s: %d train / %d valid / %d test examples; %s with %d params on %d device(s)",
                 dataset.name, n, len(dataset.valid), len(dataset.test), config.model.name,
                 n_params, mesh.size)
    eval_bs = eval_batch_size(config, dataset)
    config_json = _config_dict(config)
    patience = config.early_stopping_patience
    stopped_early = patience > 0 and int(tracked["best"]["evals_since"]) >= patience
    clock, t_train_start = _Clock(), None
    # The window holds the steps since the last log step (a resumed run restored its sums).
    last_log_step = step // config.log_every * config.log_every
    ran = {"steps": 0, "log_steps": 0, "log_seconds": 0.0}  # Steps run by this process.
    pending_bad, valid = [], {}
    profile = profile_plan(config, step)
    bounds = [] if stopped_early else chunk_bounds(config, step)
    if stream:
      feeder = streaming.Feeder(config.data, config.seed, config.batch_size, bounds, mesh)
    for start, stop in bounds:
      batches = feeder.next(start, stop) if stream else (x_all, y_all, indices(start, stop))
      executable = fns.executables.get(stop - start)
      if executable is None:  # Compiled outside the training clock.
        clock.stop(state)
        executable = fns.train_chunk.lower(state, *batches).compile()
        fns.executables[stop - start] = executable
      if t_train_start is None:
        t_train_start = time.time()
      if profile and start == profile[0]:
        clock.stop(state)
        jax.profiler.start_trace(str(workdir / PROFILE_DIR), create_perfetto_trace=True)
      clock.start()
      state, sums = executable(state, *batches)
      if profile and stop == profile[1]:
        clock.stop(state)
        jax.profiler.stop_trace()
        logging.info("profiled steps %d-%d into %s (tensorboard --logdir %s, or ui.perfetto.dev)",
                     profile[0], profile[1], workdir / PROFILE_DIR, workdir)
      window = fns.add_sums(window, {k: v for k, v in sums.items() if k in window})
      step = stop
      ran["steps"] += stop - start
      pending_bad.append(sums["first_bad_step"])
      at_end = step == config.num_steps
      at_log = step % config.log_every == 0 or at_end
      at_eval = (step % config.eval_every == 0 or at_end) and len(dataset.valid) > 0
      at_ckpt = at_end or (config.checkpoint_every and step % config.checkpoint_every == 0)
      if not (at_log or at_eval or at_ckpt):
        continue
      clock.stop(state)
      _raise_if_nonfinite(pending_bad, last_log_step, writer.path)
      if at_log:
        window_host = jax.device_get(window)
        steps = step - last_log_step
        seconds = clock.train_seconds - ran["log_seconds"]
        rate = (ran["steps"] - ran["log_steps"]) / seconds if seconds > 0 else float("nan")
        wall_rate = ran["steps"] / max(time.time() - t_train_start, 1e-9)
        ran.update(log_steps=ran["steps"], log_seconds=clock.train_seconds)
        record = {"step": step, "split": "train",
                  **{key[:-len("_sum")]: float(v) / steps for key, v in window_host.items()},
                  "steps_per_sec": rate, "examples_per_sec": rate * config.batch_size,
                  "eta_sec": (config.num_steps - step) / wall_rate,
                  "elapsed": time.time() - t_start,
                  "norms": {kind: {name: float(v) for name, v in values.items()}
                            for kind, values in jax.device_get(sums["norms"]).items()}}
        writer.write(record)
        logging.info("step %6d | loss %.4f | acc %.4f | %7.1f steps/s %9.0f ex/s | eta %s",
                     step, record["loss"], record.get("accuracy", float("nan")),
                     rate, record["examples_per_sec"], _format_seconds(record["eta_sec"]))
        last_log_step, window = step, jax.tree.map(jnp.zeros_like, window)
      if at_eval:
        valid = evaluate(fns.eval_fn, state["params"], dataset.valid, eval_bs, mesh)
        writer.write({"step": step, "split": "valid", **valid})
        logging.info("step %6d | valid loss %.4f | valid acc %.4f", step, valid["loss"],
                     valid["accuracy"])
        if patience > 0:
          tracked["best"] = _update_best(tracked["best"], valid["loss"], step, state["params"])
          best = tracked["best"]
          if int(best["evals_since"]) >= patience:
            logging.info("early stopping at step %d: no better validation loss for %d evals; "
                         "keeping the params of step %d", step, patience, int(best["step"]))
            writer.write({"step": step, "split": "early_stop", "best_step": int(best["step"]),
                          "best_valid_loss": float(best["loss"])})
            stopped_early = True
      tracked["state"], tracked["window"] = state, window
      if stream:
        tracked["data"] = streaming.iterator_state(step, identity, mesh)
      if at_ckpt or stopped_early:
        checkpoint.save(workdir, tracked, step, keep=config.keep_checkpoints, config=config_json)
      if stopped_early:
        break
      clock.start()

    final = _final_state(tracked)
    test = evaluate(fns.eval_fn, final["params"], dataset.test, eval_bs, mesh)
    wall = time.time() - t_start
    writer.write({"step": step, "split": "test", **test, "wall_time": wall})
    logging.info("done: test %s, wall time %.1f s (workdir %s)", _describe(test), wall, workdir)
    return {"state": final, "valid": valid, "test": test, "wall_time": wall}
  finally:
    writer.close()  # Also when the run stops on an error: no writer left to atexit.
    if feeder is not None:
      feeder.close()


def _describe(test: dict) -> str:
  if not test:
    return "split empty"
  return f"accuracy {test['accuracy']:.4f}, test loss {test['loss']:.4f}"


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if (
      seconds >= 3600) else f"{seconds // 60}:{seconds % 60:02d}"


def _update_best(best: dict, valid_loss: float, step: int, params) -> dict:
  if valid_loss < float(best["loss"]):
    # A copy: the next chunk donates (invalidates) the state's params.
    return {"params": jax.tree.map(jnp.copy, params),
            "loss": jnp.asarray(valid_loss, jnp.float32),
            "step": jnp.asarray(step, jnp.int32), "evals_since": jnp.zeros((), jnp.int32)}
  return dict(best, evals_since=best["evals_since"] + 1)


def _final_state(tracked: dict) -> dict:
  """The train state, with early stopping's best params in place of the last ones."""
  if "best" in tracked and bool(jnp.isfinite(tracked["best"]["loss"])):
    return dict(tracked["state"], params=tracked["best"]["params"])
  return tracked["state"]


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every
