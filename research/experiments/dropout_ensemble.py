"""Dropout as an ensemble: weight scaling vs a Monte Carlo average over dropout masks.

A network trained with dropout is an ensemble of the 2^H subnetworks its masks d pick:

  Pr(y|x) = sum_d Pr(d) Pr(y|x,d).

Two ways to predict with it, on the same trained params:
  weight scaling  one pass with every unit on and each unit's outgoing weights scaled by its
                  keep probability. The library's dropout is inverted (survivors are scaled by
                  1/(1-p) in training), so this is the standard `apply(train=False)`.
  Monte Carlo     (1/N) sum_{n=1..N} Pr(y|x,d_n) over N sampled masks: `apply(train=True)`
                  vmapped over N keys, averaged in probability space (research.experiments.
                  losses.mixture_nll).

The runner trains config's model with research.train.train_and_evaluate, draws
experiment.max_masks masks for the whole test set once, and for N = 1, 2, 4, ..., max_masks
cuts them into max_masks/N disjoint ensembles of N masks, reporting the mean (and std) over
those ensembles of test accuracy, mean test log-likelihood (1/n) sum log Pr(y|x) and
agreement with weight scaling's predictions. By Jensen's inequality (log is concave) the mean
log-likelihood of ensembles of 2N masks is never below that of their halves, so the
log-likelihood column can only grow with N.
"""
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import data as data_lib
from research import errors
from research import losses
from research import metrics as metrics_lib
from research import models
from research import train
from research import workdir as workdir_lib
from research.experiments import report


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the config.experiment fields; fails with the field and the fix."""
  exp = report.check_experiment(config, "configs/exp_dropout_ensemble.py")
  if not config.model.get("dropout", 0.0) > 0:
    raise errors.ConfigError(
        f"config.model.dropout={config.model.get('dropout', 0.0)!r}: with no dropout every mask "
        "is the same network; set it in (0, 1), e.g. 0.5")
  m = exp.max_masks
  if not isinstance(m, int) or isinstance(m, bool) or m <= 0 or m & (m - 1):
    raise errors.ConfigError(f"config.experiment.max_masks={m!r} must be a power of 2 "
                             "(N = 1, 2, 4, ... up to it), e.g. 256")
  chunk = exp.masks_per_call
  if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk <= 0:
    raise errors.ConfigError(f"config.experiment.masks_per_call={chunk!r} must be a positive "
                             "integer")


def make_mask_logits_fn(model: models.Model, masks_per_call: int) -> Callable:
  """Returns jitted fn(params, x_B..., keys_M) -> logits_MxBxK, one dropout mask per key.

  `apply(train=True, rng=key)` vmapped over the keys, masks_per_call of them at a time
  (lax.map's batch_size) so memory is masks_per_call x B x width, not M x B x width.
  """
  def mask_logits(params, x, keys_M):
    one = lambda key: model.apply(params, x, train=True, rng=key)
    return jax.lax.map(one, keys_M, batch_size=min(masks_per_call, keys_M.shape[0]))

  return jax.jit(mask_logits)


def split_logits(fn: Callable, params, x_N: np.ndarray, batch_size: int, *args) -> np.ndarray:
  """fn(params, x_batch, *args) -> (..., B, K) over x_N in batches; concatenated on axis -2."""
  parts = [np.asarray(fn(params, x_N[s:s + batch_size], *args))
           for s in range(0, len(x_N), batch_size)]
  return np.concatenate(parts, axis=-2)


def mc_curve(logits_MxNxK: np.ndarray, labels_N: np.ndarray, output: str,
             reference_pred_N: np.ndarray) -> list[dict[str, float]]:
  """For N = 1, 2, 4, ..., M: metrics of the M/N disjoint N-mask ensembles, mean and std.

  Each row: masks N, ensembles M/N, accuracy(_std), log_likelihood(_std) (mean over examples
  of log Pr(y|x)) and agreement(_std) with reference_pred_N (weight scaling's predictions).
  """
  m = logits_MxNxK.shape[0]
  sizes = [2 ** i for i in range(m.bit_length()) if 2 ** i <= m]
  stats = _ensemble_stats(jnp.asarray(logits_MxNxK), jnp.asarray(labels_N),
                          jnp.asarray(reference_pred_N), output, tuple(sizes))
  rows = []
  for size, per_group in zip(sizes, jax.device_get(stats)):
    row = {"masks": size, "ensembles": m // size}
    for key, values_G in per_group.items():
      row[key], row[key + "_std"] = float(values_G.mean()), float(values_G.std())
    rows.append(row)
  return rows


@functools.partial(jax.jit, static_argnums=(3, 4))
def _ensemble_stats(logits_MxNxK, labels_N, reference_pred_N, output, sizes):
  """Per size S: accuracy, log-likelihood and agreement of each of the M/S disjoint
  S-member ensembles (one compiled program for every size)."""
  out = []
  for size in sizes:
    groups_GxSxNxK = logits_MxNxK.reshape(-1, size, *logits_MxNxK.shape[1:])
    nll_GxN, pred_GxN = jax.vmap(
        lambda g: losses.mixture_nll(g, labels_N, output))(groups_GxSxNxK)
    out.append({"accuracy": (pred_GxN == labels_N).mean(axis=1),
                "log_likelihood": -nll_GxN.mean(axis=1),
                "agreement": (pred_GxN == reference_pred_N).mean(axis=1)})
  return out


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains with dropout, then compares weight scaling with N-mask Monte Carlo averages.

  Returns {"weight_scaling": {"accuracy", "log_likelihood"}, "monte_carlo": [rows of
  mc_curve], "train": train_and_evaluate's result, "wall_time": s}; writes results.{md,json}
  and dropout_ensemble.png into workdir (train_and_evaluate's run is in workdir/train).
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  # Its own run in workdir/train: resumable from its checkpoints whatever happens here.
  trained = train.train_and_evaluate(config, workdir / "train")
  params = trained["state"]["params"]
  dataset = data_lib.load(config.data)
  k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  test = dataset.test
  if not len(test):
    raise errors.ConfigError("the test split is empty; set config.data.test_fraction > 0")

  t_mc = time.time()
  ws_fn = jax.jit(lambda p, x: model.apply(p, x, train=False))
  ws_logits_NxK = split_logits(ws_fn, params, test.x, config.eval_batch_size)
  ws_nll_N, ws_pred_N = losses.mixture_nll(jnp.asarray(ws_logits_NxK)[None],
                                                   jnp.asarray(test.y), config.loss.output)
  ws_pred_N = np.asarray(ws_pred_N)
  weight_scaling = {"accuracy": float((ws_pred_N == test.y).mean()),
                    "log_likelihood": float(-ws_nll_N.mean())}
  keys_M = jax.random.split(jax.random.key(exp.mask_seed), exp.max_masks)
  logits_MxNxK = split_logits(make_mask_logits_fn(model, exp.masks_per_call), params, test.x,
                              config.eval_batch_size, keys_M)
  rows = mc_curve(logits_MxNxK, test.y, config.loss.output, ws_pred_N)
  logging.info("weight scaling: test accuracy %.4f, log-likelihood %.4f",
               weight_scaling["accuracy"], weight_scaling["log_likelihood"])
  step = int(trained["state"]["step"])
  with metrics_lib.MetricWriter(workdir, tensorboard=False) as writer:
    writer.write({"step": step, "split": "weight_scaling", **weight_scaling})
    for row in rows:
      writer.write({"step": step, "split": "mc_dropout", **row})
      logging.info("MC dropout N=%4d: test accuracy %.4f ± %.4f, log-likelihood %.4f ± %.4f, "
                   "agreement %.4f", row["masks"], row["accuracy"], row["accuracy_std"],
                   row["log_likelihood"], row["log_likelihood_std"], row["agreement"])
  out = {"weight_scaling": weight_scaling, "monte_carlo": rows,
         "mc_seconds": time.time() - t_mc, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write_results(workdir, config, dataset, out)
  return dict(out, train=trained)


def _write_results(workdir: str, config, dataset, out: dict) -> None:
  """results.json, results.md and dropout_ensemble.png."""
  report.write_json(workdir / "results.json", out)
  ws = out["weight_scaling"]
  lines = [
      f"Dropout as an ensemble: {dataset.name}, {len(dataset.test)} test examples, "
      f"dropout p={config.model.dropout:g}; N-mask rows are mean ± std over the "
      f"{config.experiment.max_masks}/N disjoint ensembles of N masks.",
      "",
      "| inference | masks N | test acc % | mean test log-likelihood | agreement with weight "
      "scaling % |",
      "|---|---|---|---|---|",
      f"| weight scaling | - | {100 * ws['accuracy']:.2f} | {ws['log_likelihood']:.4f} | 100 |"]
  for r in out["monte_carlo"]:
    lines.append(
        f"| Monte Carlo | {r['masks']} | {100 * r['accuracy']:.2f} ± "
        f"{100 * r['accuracy_std']:.2f} | {r['log_likelihood']:.4f} ± "
        f"{r['log_likelihood_std']:.4f} | {100 * r['agreement']:.1f} |")
  workdir_lib.write_text(workdir / "results.md", "\n".join(lines) + "\n")
  _plot(workdir / "dropout_ensemble.png", out, dataset.name)


def _plot(path: str, out: dict, name: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  rows, ws = out["monte_carlo"], out["weight_scaling"]
  n = np.array([r["masks"] for r in rows])
  fig = Figure(figsize=(10, 4), layout="constrained")
  axes = fig.subplots(1, 2)
  for ax, key, scale, label in ((axes[0], "accuracy", 100.0, "test accuracy (%)"),
                                (axes[1], "log_likelihood", 1.0, "mean test log Pr(y|x)")):
    mean = scale * np.array([r[key] for r in rows])
    std = scale * np.array([r[key + "_std"] for r in rows])
    ax.plot(n, mean, "o-", color="C0", label="Monte Carlo over N masks")
    ax.fill_between(n, mean - std, mean + std, color="C0", alpha=0.2,
                    label="± std over the disjoint N-mask ensembles")
    ax.axhline(scale * ws[key], color="C3", linestyle="--", label="weight scaling")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dropout masks N")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
  fig.suptitle(f"Dropout as an ensemble on {name}: Pr(y|x) = sum_d Pr(d) Pr(y|x,d)")
  report.save_figure(fig, path)
