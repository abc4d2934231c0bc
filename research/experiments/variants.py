"""What the lecture's other regularizers share: train classifier variants on a
slice of the training split for several seeds, measure each run, tabulate mean ± std.

  Variant(name, model, loss_fn, ...)      one way of training: a model (init, and apply for
                                          evaluation), its cost E, optional augmentation, an
                                          optional hand-written gradient, an optional batch order
  standard_variant(name, config, ...)     the library's classifier of a config as a Variant
  fit(variant, config, x_all, y_all, seeds, writer)   -> params per seed, trained by the
                                          library's jitted train chunk (kernel.make_train_chunk,
                                          compiled once per variant for all seeds)
  run_variants(variants, config, x_all, y_all, seeds, measure, writer)
                                          -> {name: {field: {"mean", "std"}, "runs": [...]}}
  fit_replicas(config, loss_fn, params_R, x_R, y_R, batches, what)
                                          R replicas trained at once (vmap of the chunk)
  replica_measure_fn(model, output, k)    (params_R, x, y) -> (accuracy_R, data loss_R)
  accuracy_fn(model, output, k, batch)    the library's evaluator as (params, split) -> metrics
  two_source_batches(...)                 batches drawing b_a rows of one source and b_b of
                                          another (multi-task, semi-supervised learning)
  cell, bar_plot, size_plot               (the per-seed summary is report.summarize)

Every run starts from jax.random.key(seed) (init and per-step randomness), and its batches are
functions of (seed, step), so a rerun gives the same numbers. Runs are not checkpointed: they
take seconds; a killed experiment starts again (report.runner).
"""
import dataclasses
import functools
import textwrap
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import augment
from research import data as data_lib
from research import errors
from research import gradients
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research.experiments import report


@dataclasses.dataclass(frozen=True)
class Variant:
  """One way of training a classifier. loss_fn(params, x_B..., labels_B, rng) -> (E, aux of
  scalars); augment_fn(rng, x_B...) -> x_B... runs before it; value_and_grad, if given,
  replaces jax.value_and_grad(loss_fn, has_aux=True) (a hand-written backward pass);
  batches(seed, start_step, num_steps) -> idx_SxB into x_all (default: the library's
  batch order over every row of x_all, config.batch_size per step)."""
  name: str
  model: models.Model
  loss_fn: Callable
  augment_fn: Callable | None = None
  value_and_grad: Callable | None = None
  batches: Callable | None = None


def standard_variant(name: str, config: ml_collections.ConfigDict,
                     input_shape: tuple[int, ...], k: int, m: int) -> Variant:
  """The library's classifier of `config` as a Variant: config.model, the cost of config.loss
  (losses.make_loss_fn, m training examples in lambda/2m), config.augment, and config.grad
  (autodiff, or the model's hand-written backward pass: research.gradients)."""
  model = models.build(config.model, input_shape, k)
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, m, k, config.loss.l1)
  return Variant(name, model, loss_fn, augment.make_augment(config.augment),
                 gradients.make_value_and_grad(config, loss_fn, k, m, input_shape))


def fit(variant: Variant, config: ml_collections.ConfigDict, x_all, y_all,
        seeds: Sequence[int], writer: metrics_lib.MetricWriter | None = None) -> list[Any]:
  """Trains `variant` once per seed with config.optimizer for config.num_steps; returns the
  final params of each run. Chunks of config.eval_every steps; each chunk's mean E, data loss
  and accuracy go to `writer` (split "train", with the variant and the seed)."""
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  chunk = kernel.make_train_chunk(variant.loss_fn, optimizer, variant.augment_fn,
                                 variant.value_and_grad)
  x_all, y_all = jax.device_put(x_all), jax.device_put(y_all)
  n = len(y_all)
  batches = variant.batches or (lambda seed, start, num: data_lib.batch_indices(
      seed, n, config.batch_size, start, num))
  out = []
  for seed in seeds:
    t0 = time.time()
    state = kernel.init_state(variant.model, optimizer, jax.random.key(seed))
    step = 0
    while step < config.num_steps:
      stop = min(step + config.eval_every, config.num_steps)
      state, sums = chunk(state, x_all, y_all, batches(seed, step, stop - step))
      sums = jax.device_get(sums)
      if sums["first_bad_step"] >= 0:
        raise errors.NonFiniteLossError(
            f"{variant.name}, seed {seed}: the loss became NaN/inf at step "
            f"{int(sums['first_bad_step'])}; lower config.optimizer.learning_rate or the "
            "experiment's penalty")
      if writer is not None:
        writer.write({"step": stop, "split": "train", "variant": variant.name, "seed": seed,
                      **{k[:-len("_sum")]: float(v) / (stop - step) for k, v in sums.items()
                         if k.endswith("_sum")}})
      step = stop
    out.append(state["params"])
    logging.info("%s seed %d: %d steps in %.1f s", variant.name, seed, config.num_steps,
                 time.time() - t0)
  return out


def fit_replicas(config: ml_collections.ConfigDict, loss_fn: Callable, params_R, x_R, y_R,
                 batches: Callable, what: str, value_and_grad: Callable | None = None):
  """Trains R replicas at once, jax.vmap of the library's train chunk, with config.optimizer
  for config.num_steps in chunks of config.eval_every steps. params_R, x_R (R, N, ...), y_R
  (R, N) carry a leading replica axis; batches(start, stop) -> idx_RxSxB. Returns the final
  params_R; a NaN/inf loss is a NonFiniteLossError naming `what`."""
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  r = len(x_R)
  chunk = jax.jit(jax.vmap(kernel.make_train_chunk(loss_fn, optimizer, None, value_and_grad)),
                  donate_argnums=0)
  state = jax.vmap(lambda p, rng: kernel.train_state(p, optimizer, rng))(
      params_R, jax.random.split(jax.random.key(0), r))
  for start in range(0, config.num_steps, config.eval_every):
    stop = min(start + config.eval_every, config.num_steps)
    state, sums = chunk(state, x_R, y_R, jnp.asarray(batches(start, stop)))
    bad = np.asarray(sums["first_bad_step"])
    if (bad >= 0).any():
      raise errors.NonFiniteLossError(
          f"{what}: the loss became NaN/inf at step {int(bad.max())}; lower "
          "config.optimizer.learning_rate")
  return state["params"]


def replica_measure_fn(model: models.Model, output: str, k: int) -> Callable:
  """jitted measure(params_R, x, y, shared_data=False) -> (accuracy_R, data loss_R): x, y
  with a leading replica axis, or one set for every replica (shared_data=True)."""
  data_loss = losses.DATA_LOSSES[output]

  def one(params, x, y):
    logits = model.apply(params, x)
    loss = data_loss(logits, losses.one_hot_targets(y, k, logits.dtype)).mean()
    return (losses.predictions(logits) == y).mean(), loss

  @functools.partial(jax.jit, static_argnames="shared_data")
  def measure(params_R, x, y, shared_data: bool = False):
    axes = None if shared_data else 0
    return jax.vmap(one, in_axes=(0, axes, axes))(params_R, x, y)

  return measure


def accuracy_fn(model: models.Model, output: str, k: int, batch_size: int) -> Callable:
  """(params, split) -> {"loss", "accuracy"}: the library's evaluator (kernel.make_eval_fn,
  kernel.evaluate), compiled once."""
  eval_fn = kernel.make_eval_fn(model, output, k)
  return lambda params, split: kernel.evaluate(eval_fn, params, split, batch_size)


def cell(summary: dict[str, float], scale: float = 100.0, digits: int = 1) -> str:
  """'93.2 ± 0.4': mean ± std, times scale (100: accuracies in %)."""
  return f"{scale * summary['mean']:.{digits}f} ± {scale * summary['std']:.{digits}f}"


def run_variants(variants: Sequence[Variant], config: ml_collections.ConfigDict, x_all, y_all,
                 seeds: Sequence[int], measure: Callable[[Variant, Any], dict],
                 writer: metrics_lib.MetricWriter, fields: Sequence[str] | None = None,
                 tag: dict | None = None) -> dict[str, dict]:
  """fit() every variant for every seed, measure(variant, params) -> {field: float} each run,
  and report.summarize. Each run's measurements go to `writer` (split "result", with `tag`).
  Returns {variant name: {field: {"mean", "std"}, "runs": [{"seed", **measured}]}}."""
  results = {}
  for variant in variants:
    t0 = time.time()
    runs = []
    for seed, params in zip(seeds, fit(variant, config, x_all, y_all, seeds, writer)):
      record = {"seed": seed, **measure(variant, params)}
      writer.write({"step": config.num_steps, "split": "result", "variant": variant.name,
                    **(tag or {}), **record})
      runs.append(record)
    keys = fields or [f for f in runs[0] if f != "seed"]
    results[variant.name] = {**report.summarize(runs, keys), "runs": runs}
    logging.info("%s: %s (%.1f s)", variant.name, ", ".join(
        f"{f} {cell(results[variant.name][f], 1.0, 4)}" for f in keys), time.time() - t0)
  return results


def two_source_batches(n_a: int, b_a: int, n_b: int, b_b: int) -> Callable:
  """batches(seed, start, num) -> idx_Sx(b_a+b_b): each step b_a rows of source a (rows
  0..n_a-1 of x_all) then b_b rows of source b (rows n_a..n_a+n_b-1), each source in its own
  library batch order (data.batch_indices: a fresh permutation per epoch of that source)."""
  def batches(seed, start, num):
    idx_a = data_lib.batch_indices(seed, n_a, b_a, start, num)
    idx_b = data_lib.batch_indices(seed + 10_000, n_b, b_b, start, num)
    return np.concatenate([idx_a, n_a + idx_b], axis=1)
  return batches


def bar_plot(path, results: dict[str, dict], panels: Sequence[tuple[str, str, float]],
             title: str) -> None:
  """One panel per (field, y label, scale): a bar per variant, mean ± std over seeds, the
  seeds' values as dots."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  names = list(results)
  x = np.arange(len(names))
  fig = Figure(figsize=(2.0 + 1.3 * len(names) * len(panels), 4.2), layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, (field, label, scale) in zip(axes, panels):
    means = [scale * results[n][field]["mean"] for n in names]
    stds = [scale * results[n][field]["std"] for n in names]
    ax.bar(x, means, 0.6, yerr=stds, capsize=3, color="#9ecae1")
    for i, n in enumerate(names):
      values = [scale * r[field] for r in results[n]["runs"]]
      ax.plot(np.full(len(values), i), values, "o", color="#08519c", ms=3)
    lo, hi = min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))
    pad = max(0.15 * (hi - lo), 1e-3 * max(abs(hi), 1e-9))
    if lo > 0 and lo - 3 * pad > 0:
      ax.set_ylim(lo - 3 * pad, hi + pad)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle(title)
  report.save_figure(fig, path)


_COLORS = ("#636363", "#9ecae1", "#3182bd", "#e6550d", "#31a354", "#756bb1")


def size_plot(path, sizes: dict[int, dict[str, dict]], panels: Sequence[tuple[str, str]],
              xlabel: str, title: str, labels: dict[str, str] | None = None,
              colors: Sequence[str] = _COLORS) -> None:
  """One panel per (field, y label): each variant's mean ± std (in %) against the number of
  training examples n, on a log axis. sizes: {n: {variant: {field: {"mean", "std"}}}}."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  ns = sorted(sizes)
  width = 3.0 + 3.0 * len(panels)
  fig = Figure(figsize=(width, 4.2), layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for name, color in zip(sizes[ns[0]], colors):
    for ax, (field, _) in zip(axes, panels):
      mean = [100 * sizes[n][name][field]["mean"] for n in ns]
      std = [100 * sizes[n][name][field]["std"] for n in ns]
      ax.errorbar(ns, mean, yerr=std, marker="o", capsize=3, color=color,
                  label=(labels or {}).get(name, name))
  for ax, (_, ylabel) in zip(axes, panels):
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(textwrap.fill(title, int(12 * width)))  # About 12 characters an inch.
  report.save_figure(fig, path)
