"""train_and_evaluate(config, workdir): the library behind `python -m research.main`.

The loop around research.kernel: the train state (kernel.init_state) runs in chunks of steps,
one jitted `lax.scan` each (kernel.make_train_chunk), gathering each batch on the device from
the batch indices (research.data.batch_indices), so the host is touched only at log, eval and
checkpoint points. The run's identity in its workdir is research.run_config's.

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
    excluded) and give an ETA (_Eta: the wall-clock rate since the first log line, compiles
    excluded, so it does not jump with a compile, an eval or a short first window).
  - the final wall time, and every record's "elapsed", are the whole run's: a resumed run adds
    the time its earlier processes spent up to the checkpoint it resumed from (the "elapsed" of
    the last record kept there) to its own.
"""
import dataclasses
import functools
import json
import math
import os
import socket
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
from absl import logging

from research import augment
from research import checkpoint
from research import cli
from research import config_lib
from research import data as data_lib
from research import errors
from research import gradients
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import parallel
from research import run_config
from research import workdir as workdir_lib
from research.data import streaming


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails fast, with the field and the fix, on values the run cannot use: every numeric field
  against its one declared range (config_lib.RANGES), then the choices and the profile window."""
  config_lib.check_ranges(config)
  errors.check_choice("loss.output", config.loss.output, sorted(losses.DATA_LOSSES))
  errors.check_choice("grad", config.grad, gradients.GRADS)
  errors.check_choice("matmul_precision", config.matmul_precision, kernel.MATMUL_PRECISIONS)
  errors.check_choice("compute_dtype", config.compute_dtype, models.core.COMPUTE_DTYPES)
  if not isinstance(config.deterministic, bool):
    raise errors.ConfigError(f"config.deterministic={config.deterministic!r} must be True or "
                             "False")
  start, stop = _profile_window(config)
  if not 0 <= start <= stop <= config.num_steps:
    raise errors.ConfigError(
        f"config.profile_steps={tuple(config.profile_steps)!r} must be (start, stop) with "
        f"0 <= start <= stop <= num_steps={config.num_steps}; (0, 0) turns profiling off")


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
  train_chunk = kernel.make_train_chunk(loss_fn, optimizer, augment.make_augment(config.augment),
                                        value_and_grad, max_traces=len(lengths), norms=True,
                                        batches_given=streaming.enabled(config.data))
  add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
  return _Functions(model, train_chunk, kernel.make_eval_fn(model, config.loss.output, k), add,
                    value_and_grad, {})


def _inspect_workdir(config, workdir) -> int | None:
  """What the workdir holds, checked against config: the newest checkpoint step to resume
  from, or None to start at step 0 (a new workdir, or a run of this config killed before its
  first checkpoint). Raises ConfigError for another config's run or one whose results would
  be lost, WorkdirError for a path the run cannot use (a file where it makes a directory, a
  workdir too long for its file system), before anything is written."""
  workdir_lib.check_kinds(workdir, dirs=[checkpoint.SUBDIR, PROFILE_DIR],
                          files=[metrics_lib.FILENAME, "config.json"])
  if jax.process_index() == 0:
    # jax.profiler writes profile/plugins/profile/<YYYY_MM_DD_HH_MM_SS>/<host>.trace.json.gz.
    profile = [(PROFILE_DIR, "plugins", "profile", "0" * 19,
                f"{socket.gethostname()}.trace.json.gz")]
    workdir_lib.check_path_limits(workdir, [
        checkpoint.longest_path(config.num_steps, jax.process_count()),
        *metrics_lib.longest_names(), *(profile if profile_plan(config, 0) else [])])
  latest = checkpoint.latest_step(workdir)
  on_file = run_config.saved_config(workdir)
  if latest is not None:
    # The config kept with the checkpoints is the identity; config.json may be gone.
    run_config.check_same_config(config, checkpoint.saved_config(workdir, latest) or on_file,
                                 workdir)
    return latest
  metrics_path = workdir / metrics_lib.FILENAME
  if not metrics_path.exists() or not metrics_path.read_text().strip():
    return None  # Nothing to lose: a new workdir, or a run stopped before its first record.
  if on_file is None:
    raise errors.ConfigError(
        f"--workdir={workdir} already holds a run (metrics.jsonl) with no config.json and no "
        "checkpoint; pass a new --workdir so its results are kept")
  run_config.check_same_config(config, on_file, workdir)
  if metrics_lib.read_metrics(workdir, split="test"):
    raise errors.ConfigError(
        f"--workdir={workdir} already holds a run (metrics.jsonl) that finished, and its "
        "checkpoints are gone; pass a new --workdir so its results are kept")
  metrics_lib.check_restart(workdir, config.checkpoint_every)
  return None


def _finished_result(records: list[dict]) -> dict | None:
  """The test record of a run that already ran to the end, else None."""
  return records[-1] if records and records[-1]["split"] == "test" else None


def _raise_if_nonfinite(pending: list, last_good_step: int, path) -> None:
  """Host sync on the chunks' first-bad-step scalars: stop naming the step, what `path`
  (metrics.jsonl) holds, and a fix that works (this workdir refuses a changed config). The
  data were checked finite at load (research.data), so the optimizer is what diverged."""
  del last_good_step  # The file itself says what it holds (also after a resume).
  for first_bad in pending:
    if int(first_bad) >= 0:
      steps = ([r.get("step", 0) for r in metrics_lib.read_metrics(path.parent)]
               if path.exists() else [])
      kept = (f"the records up to step {max(steps)} are in {path}" if steps else
              "no record was written before it")
      raise errors.NonFiniteLossError(
          f"loss became NaN/inf at step {int(first_bad)}; {kept}; rerun with a new --workdir "
          "(this one refuses a changed config) and a lower config.optimizer.learning_rate or "
          "config.optimizer.clip_global_norm set, e.g. 1.0")
  pending.clear()


def init_tracked(config, model: models.Model, optimizer, mesh) -> dict:
  """Everything a checkpoint holds but the log window: {"state": train state[, "best":
  early stopping's memory]}; the run adds "window", the sums of the steps since the last log
  line, so a resumed run's first train record is the uninterrupted run's.

  The train state is {"params", "opt_state", "step", "rng"}, replicated over the mesh.
  """
  state = parallel.replicate(kernel.init_state(model, optimizer, jax.random.key(config.seed)),
                             mesh)
  tracked = {"state": state}
  if config.early_stopping_patience > 0:  # Part of the state, so resume stays exact.
    tracked["best"] = {"params": jax.tree.map(jnp.copy, state["params"]),
                       "loss": jnp.asarray(jnp.inf, jnp.float32),
                       "step": jnp.zeros((), jnp.int32), "evals_since": jnp.zeros((), jnp.int32)}
  return tracked


def _prepare(config, dataset: data_lib.Dataset) -> _Functions:
  """The run's compiled functions (cached across runs with the same compile-relevant config)."""
  k = losses.num_outputs(config, dataset)
  key = run_config.config_dict(config)
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


class _Eta:
  """The ETA of a run: the steps left over the wall-clock rate (evals and checkpoints included,
  as they will be in the time left; compiles excluded, as they happen once) measured from the
  first log line on, so a compile, the first window's warm-up or one slow window moves it
  little. Before the first log line, the rate since training started."""

  def __init__(self, now: float, compile_seconds: float):
    # (time, steps run, compile seconds) the rate is measured from.
    self._origin = (now, 0, compile_seconds)
    self._logged = False

  def update(self, now: float, steps_run: int, compile_seconds: float,
             steps_left: int) -> float:
    """Seconds left, at a log line: `steps_run` steps and `compile_seconds` of compiling so far
    in this process; resets the origin to this line the first time."""
    t0, steps0, compile0 = self._origin
    seconds = now - t0 - (compile_seconds - compile0)
    steps = steps_run - steps0
    eta = steps_left * seconds / steps if steps > 0 and seconds > 0 else float("nan")
    if not self._logged:
      self._origin, self._logged = (now, steps_run, compile_seconds), True
    return eta


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
  with (workdir_lib.claim(workdir, process_index=jax.process_index()) as path,
        kernel.precision(config)):
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
    if stream:  # Before the restore, which would fail on a changed class count, misleadingly.
      saved = checkpoint.saved_item(workdir, resume_step, "data") or {}
      streaming.check_identity(saved.get("records", identity), identity, config.data.data_dir,
                               workdir)
    tracked, step = checkpoint.restore(workdir, tracked)
    if stream:
      streaming.check_restored(tracked["data"], step, identity, config.data.data_dir)
    if run_config.saved_config(workdir) is None:
      run_config.write_config(config, workdir)  # Deleted since: the checkpoints' copy matched.
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
    kept = metrics_lib.truncate(workdir, step, records)
    # The earlier processes' time up to the checkpoint: the whole run's wall time adds it.
    t_start -= max((r["elapsed"] for r in kept if _is_seconds(r.get("elapsed"))), default=0.0)
    logging.info("resuming %s from step %d", workdir, step)
  else:
    if (workdir / metrics_lib.FILENAME).exists():
      logging.info("%s: restarting a run of this config that stopped before its first "
                   "checkpoint", workdir)
      metrics_lib.truncate(workdir, -1)
    run_config.write_config(config, workdir)
  writer = metrics_lib.MetricWriter(workdir)
  feeder = None
  try:
    state, window = tracked["state"], tracked["window"]
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    logging.info("%s: %d train / %d valid / %d test examples; %s with %d params on %d device(s)",
                 dataset.name, n, len(dataset.valid), len(dataset.test), config.model.name,
                 n_params, mesh.size)
    eval_bs = kernel.eval_batch_size(config, dataset)
    config_json = run_config.config_dict(config)
    patience = config.early_stopping_patience
    stopped_early = patience > 0 and int(tracked["best"]["evals_since"]) >= patience
    clock, eta, compile_seconds = _Clock(), None, 0.0
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
        t_compile = time.time()
        executable = fns.train_chunk.lower(state, *batches).compile()
        fns.executables[stop - start] = executable
        compile_seconds += time.time() - t_compile
      if eta is None:
        eta = _Eta(time.time(), compile_seconds)
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
        ran.update(log_steps=ran["steps"], log_seconds=clock.train_seconds)
        record = {"step": step, "split": "train",
                  **{key[:-len("_sum")]: float(v) / steps for key, v in window_host.items()},
                  "steps_per_sec": rate, "examples_per_sec": rate * config.batch_size,
                  "eta_sec": eta.update(time.time(), ran["steps"], compile_seconds,
                                        config.num_steps - step),
                  "elapsed": time.time() - t_start,
                  "norms": {kind: {name: float(v) for name, v in values.items()}
                            for kind, values in jax.device_get(sums["norms"]).items()}}
        writer.write(record)
        logging.info("step %6d | loss %.4f | acc %.4f | %7.1f steps/s %9.0f ex/s | eta %s",
                     step, record["loss"], record.get("accuracy", float("nan")),
                     rate, record["examples_per_sec"], _format_seconds(record["eta_sec"]))
        last_log_step, window = step, jax.tree.map(jnp.zeros_like, window)
      if at_eval:
        valid = kernel.evaluate(fns.eval_fn, state["params"], dataset.valid, eval_bs, mesh)
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
        writer.sync()  # The records up to this step, durable before the checkpoint is.
        checkpoint.save(workdir, tracked, step, keep=config.keep_checkpoints, config=config_json,
                        data={"records": identity} if stream else None)
      if stopped_early:
        break
      clock.start()

    final = _final_state(tracked)
    test = kernel.evaluate(fns.eval_fn, final["params"], dataset.test, eval_bs, mesh)
    wall = time.time() - t_start
    writer.write({"step": step, "split": "test", **test, "wall_time": wall})
    logging.info("done: test %s, wall time %.1f s (workdir %s)", _describe(test), wall, workdir)
    return {"state": final, "valid": valid, "test": test, "wall_time": wall}
  finally:
    writer.close()  # Also when the run stops on an error: no writer left to atexit.
    if feeder is not None:
      feeder.close()


def _is_seconds(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
      value) and value >= 0


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
