"""train_and_evaluate(config, workdir): the library behind `python -m research.main`.

The train state is a plain dict {"params", "opt_state", "step", "rng"}. One jitted call runs
a chunk of steps with `lax.scan`, gathering each batch on the device from the batch indices
(see research.data.batch_indices), so the host is touched only at log and eval points.
"""
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import augment
from research import data as data_lib
from research import errors
from research import losses
from research import models
from research import optim

GRADS = ("autodiff",)


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
  errors.check_choice("grad", config.grad, GRADS)


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

  sums holds E and accuracy summed over the chunk's steps and the first step whose loss was
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
    return new_state, (E, aux["accuracy"], step)

  def chunk(state, x_all, y_all, idx_SxB):
    state, (E_S, acc_S, step_S) = jax.lax.scan(
        lambda s, idx: train_step(s, idx, x_all, y_all), state, idx_SxB)
    bad = jnp.where(jnp.isfinite(E_S), jnp.iinfo(jnp.int32).max, step_S).min()
    return state, {"loss_sum": E_S.sum(), "accuracy_sum": acc_S.sum(),
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


def evaluate(eval_fn: Callable, params, split: data_lib.Split, batch_size: int) -> dict:
  """Mean data loss and accuracy over a split; the last batch is padded and masked so every
  call has one shape (one compilation)."""
  n = len(split)
  if n == 0:
    return {}
  batch_size = min(batch_size, n)
  totals = {"loss_sum": 0.0, "correct": 0}
  for start in range(0, n, batch_size):
    x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
    pad = batch_size - len(y)
    mask = np.arange(batch_size) < len(y)
    if pad:
      x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
      y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    out = eval_fn(params, x, y, mask)
    totals = {key: totals[key] + out[key] for key in totals}
  return {"loss": float(totals["loss_sum"]) / n, "accuracy": float(totals["correct"]) / n}


class MetricWriter:
  """Appends one JSON object per line to workdir/metrics.jsonl (only process 0 writes)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = jax.process_index() == 0

  def write(self, record: dict) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


def prepare_workdir(config, workdir: str) -> None:
  """Creates workdir and writes config.json; refuses to mix two runs in one workdir."""
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise errors.ConfigError(
        f"--workdir={workdir} already holds a run (metrics.jsonl); pass a new --workdir so "
        "its results are kept")
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains config's model on config's data, logging to workdir; returns final state/metrics.

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
  prepare_workdir(config, workdir)
  writer = MetricWriter(workdir)

  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  params = model.init(init_key)
  state = {"params": params, "opt_state": optimizer.init(params),
           "step": jnp.zeros((), jnp.int32), "rng": train_key}
  n_params = sum(x.size for x in jax.tree.leaves(params))
  logging.info("%s: %d train / %d valid / %d test examples; %s with %d params",
               dataset.name, n, len(dataset.valid), len(dataset.test), config.model.name, n_params)

  # The lecture's m is the number of training examples.
  loss_fn = make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
  train_chunk = make_train_chunk(loss_fn, optimizer, augment.make_augment(config.augment))
  eval_fn = make_eval_fn(model, config.loss.output, k)
  x_all, y_all = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)

  step, last_log_step, last_log_time = 0, 0, time.time()
  loss_sum, acc_sum = 0.0, 0.0
  valid = {}
  patience = config.early_stopping_patience
  best = {"loss": math.inf, "step": 0, "params": None, "evals_since": 0}
  while step < config.num_steps:
    stop = min(_next_multiple(step, config.log_every), _next_multiple(step, config.eval_every),
               config.num_steps)
    idx = data_lib.batch_indices(config.seed, n, config.batch_size, step, stop - step)
    state, sums = train_chunk(state, x_all, y_all, idx)
    step = stop
    loss_sum, acc_sum = loss_sum + sums["loss_sum"], acc_sum + sums["accuracy_sum"]
    if step % config.log_every == 0 or step == config.num_steps:
      bad = int(sums["first_bad_step"])  # Host sync: only at log points.
      if bad >= 0:
        raise errors.NonFiniteLossError(
            f"loss became NaN/inf at step {bad}; lower config.optimizer.learning_rate or set "
            f"config.optimizer.clip_global_norm (results up to step {last_log_step} are in "
            f"{writer.path})")
      now = time.time()
      steps = step - last_log_step
      record = {"step": step, "split": "train", "loss": float(loss_sum) / steps,
                "accuracy": float(acc_sum) / steps,
                "examples_per_sec": steps * config.batch_size / (now - last_log_time),
                "elapsed": now - t_start}
      writer.write(record)
      logging.info("step %6d | loss %.4f | acc %.4f | %9.0f ex/s", step, record["loss"],
                   record["accuracy"], record["examples_per_sec"])
      last_log_step, last_log_time, loss_sum, acc_sum = step, now, 0.0, 0.0
    if (step % config.eval_every == 0 or step == config.num_steps) and len(dataset.valid):
      valid = evaluate(eval_fn, state["params"], dataset.valid, config.eval_batch_size)
      writer.write({"step": step, "split": "valid", **valid})
      logging.info("step %6d | valid loss %.4f | valid acc %.4f", step, valid["loss"],
                   valid["accuracy"])
      if patience > 0:
        if valid["loss"] < best["loss"]:
          # A copy: the next chunk donates (invalidates) state["params"].
          best = {"loss": valid["loss"], "step": step, "evals_since": 0,
                  "params": jax.tree.map(jnp.copy, state["params"])}
        else:
          best["evals_since"] += 1
        if best["evals_since"] >= patience:
          logging.info("early stopping at step %d: no better validation loss for %d evals; "
                       "keeping the params of step %d", step, patience, best["step"])
          writer.write({"step": step, "split": "early_stop", "best_step": best["step"],
                        "best_valid_loss": best["loss"]})
          break
  if patience > 0 and best["params"] is not None:
    state = dict(state, params=best["params"])

  test = evaluate(eval_fn, state["params"], dataset.test, config.eval_batch_size)
  wall = time.time() - t_start
  writer.write({"step": step, "split": "test", **test, "wall_time": wall})
  logging.info("done: test accuracy %.4f, test loss %.4f, wall time %.1f s (workdir %s)",
               test["accuracy"], test["loss"], wall, workdir)
  return {"state": state, "valid": valid, "test": test, "wall_time": wall}


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every
