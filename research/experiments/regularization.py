"""Regularization on a setting that overfits: each regularizer's effect on the train-test gap.

A wide MLP trained on a seeded slice of `experiment.train_examples` training examples fits
them perfectly and generalises worse. Every method trains the same model on the same slice
from the same base config, with exactly one regularizer turned on:

  none            the base config
  l2              config.loss.l2 = lambda: E + (lambda/2m) sum w^2
  l1              config.loss.l1 = lambda_1: E + (lambda_1/m) sum |w|
  dropout         config.model.dropout = p on every hidden unit (inverted dropout)
  early_stopping  config.early_stopping_patience = evals without a better validation loss;
                  the params of the best validation loss are kept
  augment         config.augment.ops = experiment.augment_ops (images: the MLP flattens them)
  bagging         k members on k bootstrap resamples of the slice, trained as ONE jax.vmap of
                  the library's train chunk over stacked params / opt states / batch indices;
                  predicts with the average of the members' probabilities

m in lambda/2m is the slice size. Each method is repeated for `experiment.repeats` training
seeds (init, batch order, masks; the slice stays fixed) and the table reports the mean and
the spread over them of: train accuracy (on the whole slice, eval mode), test accuracy, the
gap between the two, the train and test data loss (cross-entropy, no penalty) and sum w^2.
"""
import dataclasses
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import augment
from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import train
from research import workdir as workdir_lib
from research.experiments import harness
from research.experiments import report

METHODS = ("none", "l2", "l1", "dropout", "early_stopping", "augment", "bagging")
RANGES = {"train_examples": config_lib.Range(True, 0), "subset_seed": config_lib.Range(True, 0)}


# ------------------------------------------------------------------------------------ config


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the config.experiment fields; fails with the field and the fix."""
  exp = report.check_experiment(config, "configs/exp_regularization.py", RANGES, METHODS)
  for field in ("repeats", "patience", "bagging_members"):
    if not _is_int(exp[field]) or exp[field] <= 0:
      raise errors.ConfigError(f"config.experiment.{field}={exp[field]!r} must be a positive "
                               "integer")
  for field in ("l2", "l1"):
    errors.check_positive(f"experiment.{field}", exp[field])
  if config.grad != "autodiff":
    raise errors.ConfigError(f"config.grad={config.grad!r}: the regularization experiment "
                             "trains with jax.value_and_grad; set config.grad='autodiff'")
  if not 0 < exp.dropout < 1:
    raise errors.ConfigError(f"config.experiment.dropout={exp.dropout!r} must be in (0, 1)")
  # "none" must really be none: each method switches on exactly one regularizer.
  base_on = {"loss.l2": config.loss.l2, "loss.l1": config.loss.l1,
             "model.dropout": config.model.get("dropout", 0.0),
             "early_stopping_patience": config.early_stopping_patience,
             "augment.ops": tuple(config.augment.ops)}
  for field, value in base_on.items():
    if value:
      raise errors.ConfigError(
          f"config.{field}={value!r} must be off in the regularization experiment (each "
          "method turns on one regularizer); set its strength in config.experiment instead")


def method_config(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """A copy of the (regularizer-free) base config with `method`'s one regularizer on."""
  errors.check_choice("experiment.methods[]", method, METHODS)
  cfg = config.copy_and_resolve_references()
  exp = config.experiment
  if method == "l2":
    cfg.loss.l2 = exp.l2
  elif method == "l1":
    cfg.loss.l1 = exp.l1
  elif method == "dropout":
    cfg.model.dropout = exp.dropout
  elif method == "early_stopping":
    cfg.early_stopping_patience = exp.patience
  elif method == "augment":
    cfg.augment.ops = tuple(exp.augment_ops)
  return cfg


# ------------------------------------------------------------------------ mixture predictive


def make_ensemble_eval_fn(model: models.Model, output: str) -> Callable:
  """Returns jitted eval(params_M, x_B..., labels_B, mask_B) for kernel.evaluate: the data loss
  and correct count of the M stacked members' averaged predictive (see mixture_nll), summed
  over the unmasked examples."""

  def eval_batch(params_M, x, labels_B, mask_B):
    logits_MxBxK = jax.vmap(lambda p: model.apply(p, x, train=False))(params_M)
    nll_B, pred_B = losses.mixture_nll(logits_MxBxK, labels_B, output)
    return {"loss_sum": jnp.where(mask_B, nll_B, 0).sum(),
            "correct": jnp.where(mask_B, pred_B == labels_B, 0).sum()}

  return jax.jit(eval_batch)


# ---------------------------------------------------------------------------------- training


def _check_finite(sums, step: int, what: str) -> None:
  bad = np.asarray(sums["first_bad_step"])
  if (bad >= 0).any():
    raise errors.NonFiniteLossError(
        f"{what}: loss became NaN/inf at step {int(bad.max())} (before step {step}); lower "
        "config.optimizer.learning_rate or set config.optimizer.clip_global_norm")


def _weight_norm_sq(params) -> float:
  """sum_l sum_ij (w^l_ij)^2 over the "w" leaves (what l2_penalty decays)."""
  return float(losses.l2_penalty(params, 2.0, 1))


def fit(config: ml_collections.ConfigDict, dataset: data_lib.Dataset, seeds: list[int],
        workdir=None, tag: str = "fit") -> list[dict[str, Any]]:
  """Trains config's model on dataset.train once per seed, each a run of the library's
  train.train_and_evaluate (compiled once for all seeds) in workdir/<tag>/seed<N>.

  Every config.eval_every steps it evaluates on dataset.valid (when not empty); with
  config.early_stopping_patience > 0 a run stops after that many evals without a new best
  validation loss and keeps the best params. Being library runs, they resume: a rerun of a
  killed experiment finishes the seeds it had not. Without a workdir they go to a temporary
  directory. Returns per seed {"params", "best_step", "stop_step", "valid_losses": [(step,
  loss), ...]}.
  """
  if workdir is None:
    with tempfile.TemporaryDirectory() as tmp:
      return fit(config, dataset, seeds, tmp, tag)
  results = []
  for seed in seeds:
    cfg = config.copy_and_resolve_references()
    cfg.seed = seed
    run_dir = workdir_lib.as_path(workdir) / tag / f"seed{seed}"
    out = train.train_and_evaluate(cfg, run_dir, dataset=dataset)
    records = metrics_lib.read_metrics(run_dir)
    valid = [(r["step"], r["loss"]) for r in records if r["split"] == "valid"]
    last = records[-1]["step"]
    # With early stopping the run keeps the params of the first best validation loss.
    best = min(valid, key=lambda v: v[1])[0] if valid and cfg.early_stopping_patience else last
    results.append({"params": out["state"]["params"], "best_step": best, "stop_step": last,
                    "valid_losses": valid})
  return results


def bootstrap_indices(seed: int, n: int, k: int) -> np.ndarray:
  """boot_kxn: k resamples of range(n) with replacement, member j's a function of (seed, j)."""
  return np.stack([np.random.default_rng([seed, j]).integers(0, n, n) for j in range(k)]
                  ).astype(np.int32)


def bagging_batches(boot_kxn: np.ndarray, seed: int, batch_size: int, start_step: int,
                    num_steps: int) -> np.ndarray:
  """idx_kxSxB: member j's batches are its resample boot_kxn[j] read in the library's
  (seed, step) batch order, so every member sees n draws per epoch."""
  pos_SxB = data_lib.batch_indices(seed, boot_kxn.shape[1], batch_size, start_step, num_steps)
  return boot_kxn[:, pos_SxB]


def fit_bagging(config: ml_collections.ConfigDict, model: models.Model, num_outputs: int,
                train_split: data_lib.Split, k: int, seeds: list[int]) -> list[dict[str, Any]]:
  """Bagging: per seed, k members trained on k bootstrap resamples as one vmapped chunk.

  The library's jitted train chunk is vmapped over a leading k axis of the train state
  (params, opt_state, step, rng) and of the batch indices; the data is shared. Member j
  starts from kernel.init_state(model, optimizer, jax.random.split(key(seed), k)[j]) and is
  exactly the model the unvmapped chunk trains from that state on
  bagging_batches(...)[j]. Returns per seed {"params": params stacked k x ..., "boot": boot_kxn}.
  """
  n = len(train_split)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, num_outputs,
                               config.loss.l1)
  chunk = kernel.make_train_chunk(loss_fn, optimizer, augment.make_augment(config.augment))
  chunk_k = jax.jit(jax.vmap(chunk, in_axes=(0, None, None, 0)), donate_argnums=0)
  init_k = jax.jit(jax.vmap(lambda key: kernel.init_state(model, optimizer, key)))
  x_all, y_all = jax.device_put(train_split.x), jax.device_put(train_split.y)
  results = []
  for seed in seeds:
    boot_kxn = bootstrap_indices(seed, n, k)
    state = init_k(jax.random.split(jax.random.key(seed), k))
    step = 0
    while step < config.num_steps:
      stop = min(step + config.eval_every, config.num_steps)
      idx_kxSxB = bagging_batches(boot_kxn, seed, config.batch_size, step, stop - step)
      state, sums = chunk_k(state, x_all, y_all, idx_kxSxB)
      step = stop
      _check_finite(sums, step, "bagging")
    results.append({"params": state["params"], "boot": boot_kxn})
  return results


# ------------------------------------------------------------------------------------ runner


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains every method of config.experiment.methods, writes results.{md,json} and a plot.

  Returns {"methods": {method: {"train_accuracy", "test_accuracy", "gap", "train_loss",
  "test_loss", "weight_norm_sq": {"mean", "std"}, "runs": [per seed]}}, "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  train_split = harness.seeded_slice(dataset.train, exp.train_examples, exp.subset_seed)
  errors.check_batch_size(config.batch_size, len(train_split), "training examples of the slice")
  if "augment" in exp.methods and dataset.train.x.ndim != 4:
    raise errors.ConfigError(
        f"the augment method needs images x_NxHxWxC but {dataset.name} gives shape "
        f"{dataset.input_shape}; set config.data.image_size=8 (digits) or drop 'augment' from "
        "config.experiment.methods")
  if "early_stopping" in exp.methods and not len(dataset.valid):
    raise errors.ConfigError("early stopping needs a validation split; set "
                             "config.data.valid_fraction > 0")
  k = losses.num_outputs(config, dataset)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  seeds = [config.seed + r for r in range(exp.repeats)]
  logging.info("%s: a slice of %d of %d training examples, %d valid, %d test; methods %s, "
               "%d seeds each", dataset.name, len(train_split), len(dataset.train),
               len(dataset.valid), len(dataset.test), ", ".join(exp.methods), len(seeds))

  ensemble_eval = None
  results = {}
  for method in exp.methods:
    t_method = time.time()
    cfg = method_config(config, method)
    model = models.build(cfg.model, dataset.input_shape, k)
    if method == "bagging":
      fits = fit_bagging(cfg, model, k, train_split, exp.bagging_members, seeds)
      ensemble_eval = ensemble_eval or make_ensemble_eval_fn(model, cfg.loss.output)
      measure = lambda p, split: kernel.evaluate(ensemble_eval, p, split, cfg.eval_batch_size)
    else:
      fits = fit(cfg, dataclasses.replace(dataset, train=train_split), seeds,
                 workdir / "runs", method)
      eval_fn = kernel.make_eval_fn(model, cfg.loss.output, k)
      measure = lambda p, split: kernel.evaluate(eval_fn, p, split, cfg.eval_batch_size)
    runs = []
    for seed, out in zip(seeds, fits):
      tr, te = measure(out["params"], train_split), measure(out["params"], dataset.test)
      run_record = {"seed": seed, "train_accuracy": tr["accuracy"],
                    "test_accuracy": te["accuracy"], "gap": tr["accuracy"] - te["accuracy"],
                    "train_loss": tr["loss"], "test_loss": te["loss"],
                    "weight_norm_sq": _weight_norm_sq(out["params"])}
      if method == "bagging":
        # sum w^2 of the mean member, and the mean member's test loss/accuracy for contrast.
        run_record["weight_norm_sq"] /= exp.bagging_members
        members = [measure(jax.tree.map(lambda a: a[j:j + 1], out["params"]), dataset.test)
                   for j in range(exp.bagging_members)]
        run_record["member_test_loss"] = float(np.mean([m["loss"] for m in members]))
        run_record["member_test_accuracy"] = float(np.mean([m["accuracy"] for m in members]))
      else:
        run_record["best_step"], run_record["stop_step"] = out["best_step"], out["stop_step"]
      writer.write({"step": run_record.get("stop_step", cfg.num_steps), "split": "result",
                    "method": method, **run_record})
      runs.append(run_record)
    fields = ("train_accuracy", "test_accuracy", "gap", "train_loss", "test_loss",
              "weight_norm_sq")
    results[method] = report.summarize(runs, fields)
    results[method]["runs"] = runs
    logging.info("%-14s train %.3f  test %.3f  gap %.3f  test loss %.3f  (%.1f s)", method,
                 results[method]["train_accuracy"]["mean"],
                 results[method]["test_accuracy"]["mean"], results[method]["gap"]["mean"],
                 results[method]["test_loss"]["mean"], time.time() - t_method)

  wall = time.time() - t_start
  out = {"methods": results, "wall_time": wall}
  if jax.process_index() == 0:
    _write_results(workdir, config, dataset, len(train_split), out)
  logging.info("done in %.1f s; results in %s", wall, workdir / "results.md")
  return out


def _describe(config, method: str) -> str:
  exp = config.experiment
  return {"none": "-", "l2": f"lambda={exp.l2:g}", "l1": f"lambda_1={exp.l1:g}",
          "dropout": f"p={exp.dropout:g}", "early_stopping": f"patience={exp.patience} evals",
          "augment": "+".join(exp.augment_ops),
          "bagging": f"k={exp.bagging_members}"}[method]


def _write_results(workdir: str, config, dataset, n: int, out: dict) -> None:
  """results.json, results.md (one row per method) and regularization.png."""
  exp = config.experiment
  report.write_json(workdir / "results.json", out)
  fmt = lambda s, scale=100.0, d=1: f"{scale * s['mean']:.{d}f} ± {scale * s['std']:.{d}f}"
  lines = [
      f"Regularization: {dataset.name}, a slice of {n} training examples, "
      f"{len(dataset.test)} test examples; mean ± std over {exp.repeats} seeds.",
      "",
      "| method | setting | train acc % | test acc % | gap (points) | train loss | test loss "
      "| sum w^2 |",
      "|---|---|---|---|---|---|---|---|"]
  for method, r in out["methods"].items():
    lines.append(
        f"| {method} | {_describe(config, method)} | {fmt(r['train_accuracy'])} | "
        f"{fmt(r['test_accuracy'])} | {fmt(r['gap'])} | {fmt(r['train_loss'], 1.0, 4)} | "
        f"{fmt(r['test_loss'], 1.0, 3)} | "
        f"{fmt(r['weight_norm_sq'], 1.0, 0)} |")
  if "bagging" in out["methods"]:
    runs = out["methods"]["bagging"]["runs"]
    lines += ["", f"bagging: the mean member scores "
              f"{100 * np.mean([r['member_test_accuracy'] for r in runs]):.1f}% test accuracy "
              f"and {np.mean([r['member_test_loss'] for r in runs]):.3f} test loss; "
              "sum w^2 is the mean member's."]
  workdir_lib.write_text(workdir / "results.md", "\n".join(lines) + "\n")
  _plot(workdir / "regularization.png", out["methods"], dataset.name, n)


def _plot(path: str, results: dict, name: str, n: int) -> None:
  """Two panels, train vs test bars per method: accuracy (with the gap) and data loss."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  methods = list(results)
  x = np.arange(len(methods))
  fig = Figure(figsize=(1.6 * len(methods) + 3, 4.5), layout="constrained")
  acc_ax, loss_ax = fig.subplots(1, 2, width_ratios=(3, 2))
  for ax, key, scale in ((acc_ax, "accuracy", 100.0), (loss_ax, "loss", 1.0)):
    for offset, split, color in ((-0.2, "train", "#9ecae1"), (0.2, "test", "#3182bd")):
      field = f"{split}_{key}"
      means = [scale * np.mean([r[field] for r in results[m]["runs"]]) for m in methods]
      stds = [scale * np.std([r[field] for r in results[m]["runs"]]) for m in methods]
      ax.bar(x + offset, means, 0.4, yerr=stds, label=split, color=color, capsize=3)
    ax.set_xticks(x, methods, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)
  for i, m in enumerate(methods):
    acc_ax.annotate(f"gap\n{100 * results[m]['gap']['mean']:.1f}",
                    (i, 100 * results[m]["train_accuracy"]["mean"] + 0.5), ha="center",
                    fontsize=8)
  lowest = min(100 * results[m]["test_accuracy"]["mean"] for m in methods)
  acc_ax.set_ylim(max(0, lowest - 8), 104)
  acc_ax.set_ylabel("accuracy (%)")
  loss_ax.set_ylabel("data loss (cross-entropy)")
  acc_ax.legend(loc="lower left")
  fig.suptitle(f"Regularizers on a slice of {n} {name} training examples "
               "(mean ± std over seeds)")
  report.save_figure(fig, path)
