"""train_and_evaluate(config, workdir): the library behind `python -m research.main`.

The train state is a plain dict {"params", "opt_state", "step", "rng"}. One jitted call runs
a chunk of steps with `lax.scan`, gathering each batch on the device from the batch indices
(see research.data.batch_indices), so the host is touched only at log and eval points.
"""
import json
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
from research import data as data_lib
from research import errors
from research import gradients
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import parallel

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
  if config.checkpoint_every < 0 or config.keep_checkpoints < 1:
    raise errors.ConfigError(
        f"config.checkpoint_every={config.checkpoint_every} must be >= 0 (0: only at the end) "
        f"and config.keep_checkpoints={config.keep_checkpoints} >= 1")


def num_outputs(config, dataset: data_lib.Dataset) -> int:
  """K: one sigmoid unit for a binary task, else one unit per class."""
  if config.loss.output == "sigmoid" and dataset.num_classes == 2:
    return 1
  return dataset.num_classes


def make_loss_fn(model: models.Model, output: str, lam: float, m: int, k: int,
                 lam1: float = 0.0) -> Callable:
  """E(params, x, labels, rng) -> (E, aux): the data term averaged over the batch
  + (lambda/2m) sum w^2 [+ (lambda_1/m) sum |w|]."""
  data_loss = losses.DATA_LOSSES[output]

  def loss_fn(params, x, labels, rng):
    logits_BxK = model.apply(params, x, train=True, rng=rng)
    y_BxK = losses.one_hot_targets(labels, k, logits_BxK.dtype)
    data_term = data_loss(logits_BxK, y_BxK).mean()
    E = data_term + losses.l2_penalty(params, lam, m)
    if lam1:
      E = E + losses.l1_penalty(params, lam1, m)
    accuracy = (losses.predictions(logits_BxK) == labels).mean()
    return E, {"data_loss": data_term, "accuracy": accuracy}

  return loss_fn


def make_train_chunk(loss_fn: Callable, optimizer, augment_fn: Callable | None = None,
                     value_and_grad: Callable | None = None) -> Callable:
  """Returns jitted chunk(state, x_all, y_all, idx_SxB) -> (state, sums) running S steps.

  sums holds E, its data term and accuracy summed over the chunk's steps (train records
  report E as "loss" and the data term, comparable with valid/test "loss", as "data_loss"),
  and the first step whose loss was
  not finite (or -1), so NaN detection costs no extra host sync.
  """
  if value_and_grad is None:
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, idx_B, x_all, y_all):
    step = state["step"]
    # Per-step randomness is a function of (seed, step) alone, so resuming is exact.
    rng, aug_rng = jax.random.split(jax.random.fold_in(state["rng"], step))
    x = x_all[idx_B]
    if augment_fn is not None:
      x = augment_fn(aug_rng, x)
    (E, aux), grads = value_and_grad(state["params"], x, y_all[idx_B], rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(jnp.add, state["params"], updates)
    new_state = dict(state, params=params, opt_state=opt_state, step=step + 1)
    return new_state, (E, aux["data_loss"], aux["accuracy"], step)

  def chunk(state, x_all, y_all, idx_SxB):
    state, (E_S, data_S, acc_S, step_S) = jax.lax.scan(
        lambda s, idx: train_step(s, idx, x_all, y_all), state, idx_SxB)
    bad = jnp.where(jnp.isfinite(E_S), jnp.iinfo(jnp.int32).max, step_S).min()
    return state, {"loss_sum": E_S.sum(), "data_loss_sum": data_S.sum(),
                   "accuracy_sum": acc_S.sum(),
                   "first_bad_step": jnp.where(bad == jnp.iinfo(jnp.int32).max, -1, bad)}

  return jax.jit(chunk, donate_argnums=0)


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


def prepare_workdir(config, workdir: str) -> None:
  """Creates workdir and writes config.json; refuses to mix two runs in one workdir."""
  if os.path.exists(os.path.join(workdir, metrics_lib.FILENAME)):
    raise errors.ConfigError(
        f"--workdir={workdir} already holds a run (metrics.jsonl); pass a new --workdir so "
        "its results are kept")
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _check_same_config(config, workdir: str) -> None:
  """Resuming with a different config would silently mix two experiments: refuse."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  now = json.loads(config.to_json_best_effort())
  diffs = sorted(_diff(saved, now))
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


def _truncate_metrics(path: str, last_step: int) -> None:
  """Drops records past `last_step`: the resumed run writes them again, identically."""
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(lines)
  os.replace(tmp, path)  # Atomic: a crash here leaves the old file.


def _finished_result(workdir: str) -> dict | None:
  """The test record of a run that already ran to the end, else None."""
  records = metrics_lib.read_metrics(workdir) if os.path.exists(
      os.path.join(workdir, metrics_lib.FILENAME)) else []
  if records and records[-1]["split"] == "test":
    return records[-1]
  return None


def _raise_if_nonfinite(pending: list, last_good_step: int, path: str) -> None:
  """Host sync on the chunks' first-bad-step scalars: stop naming the step."""
  for first_bad in pending:
    if int(first_bad) >= 0:
      raise errors.NonFiniteLossError(
          f"loss became NaN/inf at step {int(first_bad)}; lower config.optimizer.learning_rate "
          f"or set config.optimizer.clip_global_norm (results up to step {last_good_step} are "
          f"in {path})")
  pending.clear()


def init_tracked(config, model: models.Model, optimizer, mesh) -> dict:
  """Everything a checkpoint holds: {"state": train state[, "best": early stopping's memory]}.

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


def restore_state(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, int]:
  """(train state, step) of the newest good checkpoint of a run of `config` in workdir, with
  early stopping's best params in place when the config uses it. For notebooks and tests."""
  dataset = data_lib.load(config.data)
  model = models.build(config.model, dataset.input_shape, num_outputs(config, dataset))
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  tracked = init_tracked(config, model, optimizer, parallel.make_mesh())
  tracked, step = checkpoint.restore(workdir, tracked)
  return _final_state(tracked), step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains config's model on config's data, logging to workdir; returns final state/metrics.

  A workdir holding checkpoints of the same config is resumed from its newest good one,
  exactly: the batch order, dropout and augmentation keys are functions of (seed, step).
  With several devices (or hosts) the batch is split over a "data" mesh axis and the params
  are replicated; the code path is the same for one device.

  Returns {"state": train state, "test": {"loss", "accuracy"}, "valid": ..., "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  dataset = data_lib.load(config.data)
  n = len(dataset.train)
  if config.batch_size > n:
    raise errors.ConfigError(
        f"config.batch_size={config.batch_size} is larger than the {n} training examples of "
        f"{dataset.name}; use at most {n}")
  k = num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  # The lecture's m is the number of training examples.
  loss_fn = make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
  value_and_grad = gradients.make_value_and_grad(config, loss_fn, k, n, dataset.input_shape)
  train_chunk = make_train_chunk(loss_fn, optimizer, augment.make_augment(config.augment),
                                 value_and_grad)
  eval_fn = make_eval_fn(model, config.loss.output, k)

  mesh = parallel.make_mesh()
  tracked = init_tracked(config, model, optimizer, mesh)
  state, params = tracked["state"], tracked["state"]["params"]
  patience = config.early_stopping_patience

  step = 0
  resuming = checkpoint.latest_step(workdir) is not None
  # Every process reads the workdir before process 0 writes to it.
  multihost_utils.sync_global_devices("workdir inspected")
  if resuming:
    _check_same_config(config, workdir)
    finished = _finished_result(workdir)
    tracked, step = checkpoint.restore(workdir, tracked)
    state = tracked["state"]
    if finished is not None and step == finished["step"]:
      logging.info("%s already finished at step %d: test accuracy %.4f (nothing to do)",
                   workdir, step, finished["accuracy"])
      return {"state": _final_state(tracked), "valid": {}, "wall_time": finished["wall_time"],
              "test": {"loss": finished["loss"], "accuracy": finished["accuracy"]}}
    _truncate_metrics(os.path.join(workdir, metrics_lib.FILENAME), step)
    logging.info("resuming %s from step %d", workdir, step)
  else:
    prepare_workdir(config, workdir)
  writer = metrics_lib.MetricWriter(workdir)

  n_params = sum(x.size for x in jax.tree.leaves(params))
  logging.info("%s: %d train / %d valid / %d test examples; %s with %d params on %d device(s)",
               dataset.name, n, len(dataset.valid), len(dataset.test), config.model.name,
               n_params, mesh.size)
  x_all, y_all = parallel.replicate((dataset.train.x, dataset.train.y), mesh)
  eval_bs = eval_batch_size(config, dataset)
  evaluate_on = lambda split: evaluate(eval_fn, state["params"], split, eval_bs, mesh)

  last_log_step, last_log_time = step, time.time()
  sums_since_log, pending_bad = [], []
  valid = {}
  every = [config.log_every, config.eval_every]
  if config.checkpoint_every:
    every.append(config.checkpoint_every)
  while step < config.num_steps:
    stop = min([_next_multiple(step, e) for e in every] + [config.num_steps])
    idx_SxB = data_lib.batch_indices(config.seed, n, config.batch_size, step, stop - step)
    # Each host keeps its share of the batch; the mesh splits it over the devices.
    idx_SxB = parallel.shard_batch(parallel.host_slice(idx_SxB, axis=1), mesh, axis=1)
    state, sums = train_chunk(state, x_all, y_all, idx_SxB)
    step = stop
    sums_since_log.append(sums)
    pending_bad.append(sums["first_bad_step"])
    at_end = step == config.num_steps
    at_log = step % config.log_every == 0 or at_end
    at_eval = (step % config.eval_every == 0 or at_end) and len(dataset.valid) > 0
    at_ckpt = at_end or (config.checkpoint_every and step % config.checkpoint_every == 0)
    stopped_early = False
    if at_log or at_eval or at_ckpt:
      _raise_if_nonfinite(pending_bad, last_log_step, writer.path)
    if at_log:
      now = time.time()
      steps = step - last_log_step
      total = lambda key: float(sum(x[key] for x in sums_since_log)) / steps
      record = {"step": step, "split": "train", "loss": total("loss_sum"),
                "data_loss": total("data_loss_sum"), "accuracy": total("accuracy_sum"),
                "examples_per_sec": steps * config.batch_size / (now - last_log_time),
                "elapsed": now - t_start}
      writer.write(record)
      logging.info("step %6d | loss %.4f | acc %.4f | %9.0f ex/s", step, record["loss"],
                   record["accuracy"], record["examples_per_sec"])
      last_log_step, last_log_time, sums_since_log = step, now, []
    if at_eval:
      valid = evaluate_on(dataset.valid)
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
    tracked["state"] = state
    if at_ckpt or stopped_early:
      checkpoint.save(workdir, tracked, step, keep=config.keep_checkpoints)
    if stopped_early:
      break

  final = _final_state(tracked)
  test = evaluate(eval_fn, final["params"], dataset.test, eval_bs, mesh)
  wall = time.time() - t_start
  writer.write({"step": step, "split": "test", **test, "wall_time": wall})
  writer.close()
  logging.info("done: test accuracy %.4f, test loss %.4f, wall time %.1f s (workdir %s)",
               test["accuracy"], test["loss"], wall, workdir)
  return {"state": final, "valid": valid, "test": test, "wall_time": wall}


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
