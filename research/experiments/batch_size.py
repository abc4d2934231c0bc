"""Stochasticity vs redundancy: mini-batch size.

A mini-batch gradient g_B = (1/B) sum_{i in batch} g_i is an unbiased estimate of the
full-batch gradient g_bar = (1/m) sum_i g_i. Its variance falls as 1/B: with per-example
variance sigma^2 = (1/m) sum_i ||g_i - g_bar||^2 and the B examples drawn without replacement
(as the library's batches are),

  E ||g_B - g_bar||^2 = (sigma^2 / B) (m - B) / (m - 1),

which is sigma^2 / B for B << m and 0 at B = m. Training data is redundant (many examples
carry nearly the same gradient), so a small batch already points roughly the right way at a
fraction of the cost: per example processed, small batches make more progress; per step (and,
on parallel hardware, per second), big batches do.

The runner (1) trains the same model from the same init with plain config.optimizer (SGD by
default) at every batch size of experiment.batch_sizes (0 = the full training set), eta scaled
by experiment.lr_rule, until the training-set E falls to experiment.target_loss, and reports
the examples processed, steps and wall time that took (compilation excluded); (2) computes
the per-example gradients g_i with jax.vmap(jax.grad(...)) at the initial w and at the final
w of the largest batch size's run, and compares the measured variance of g_B over
experiment.variance_batches random batches with sigma^2 / B (m - B) / (m - 1).

Learning-rate rules (experiment.lr_rule; eta_1 = experiment.base_lr is the rate at B = 1):
  sqrt      eta_B = min(eta_1 sqrt(B), max_lr): keeps the variance of the step eta g_B, which
            is eta^2 sigma^2 / B, the same at every B, until the cap
  linear    eta_B = min(eta_1 B, max_lr): the "linear scaling rule" (Goyal et al., 2017): B
            steps of eta_1 ~ one step of B eta_1 while the gradient changes little
  constant  eta_B = eta_1
The cap max_lr is the largest rate full-batch descent tolerates (above it E oscillates or
diverges, whatever the batch size).
"""
import math
import time
from typing import Any, Callable

import jax
from jax import flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from matplotlib import figure

from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research.experiments import report

LR_RULES = ("sqrt", "linear", "constant")


def scaled_lr(rule: str, base_lr: float, batch_size: int, max_lr: float) -> float:
  """eta_B for the rule (see the module doc)."""
  errors.check_choice("experiment.lr_rule", rule, LR_RULES)
  factor = {"sqrt": math.sqrt(batch_size), "linear": float(batch_size), "constant": 1.0}[rule]
  return min(base_lr * factor, max_lr)


def per_example_grads(loss_fn: Callable, params, x_N, y_N) -> jax.Array:
  """g_NxP: row i is dE_i/dw flattened, E_i = loss_fn on example i alone (a batch of one)."""
  def grad_i(x, y):
    g = jax.grad(lambda p: loss_fn(p, x[None], y[None], None)[0])(params)
    return flatten_util.ravel_pytree(g)[0]
  return jax.vmap(grad_i)(x_N, y_N)


def minibatch_variance(g_NxP: jax.Array, batch_size: int | jax.Array, key: jax.Array,
                       num_batches: int) -> tuple[jax.Array, jax.Array]:
  """(measured, predicted) E ||g_B - g_bar||^2 for batches of batch_size drawn without
  replacement.

  measured averages num_batches random batches. ||g_B - g_bar||^2 = (1/B^2) m_b^T K m_b with
  K = (g - g_bar)(g - g_bar)^T (N x N) and m_b the batch's 0/1 mask, so no (batches x B x P)
  gather is needed. predicted = sigma^2 / B (N - B) / (N - 1). batch_size may be traced
  (one compilation serves every B); num_batches must be static.
  """
  n = g_NxP.shape[0]
  d_NxP = g_NxP - g_NxP.mean(axis=0)
  k_NxN = d_NxP @ d_NxP.T
  sigma2 = jnp.trace(k_NxN) / n

  def one(key):
    mask_N = (jax.random.permutation(key, n) < batch_size).astype(k_NxN.dtype)
    # K is positive semi-definite; rounding can take the full batch's exact 0 below it.
    return jnp.maximum(mask_N @ k_NxN @ mask_N, 0.0) / batch_size**2

  measured = jax.vmap(one)(jax.random.split(key, num_batches)).mean()
  predicted = sigma2 / batch_size * (n - batch_size) / jnp.maximum(n - 1, 1)
  return measured, predicted


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_batch_size.py")
  if not exp.batch_sizes or any(not isinstance(b, int) or b < 0 for b in exp.batch_sizes):
    raise errors.ConfigError(f"config.experiment.batch_sizes={exp.batch_sizes!r} must be "
                             "integers >= 1, or 0 for the full training set")
  errors.check_choice("experiment.lr_rule", exp.lr_rule, LR_RULES)
  for field in ("base_lr", "max_lr", "target_loss", "max_epochs", "eval_examples"):
    errors.check_positive(f"experiment.{field}", exp[field])
  if not isinstance(exp.variance_batches, int) or exp.variance_batches <= 0:
    raise errors.ConfigError(f"config.experiment.variance_batches={exp.variance_batches!r} "
                             "must be a positive integer")


def _train_to_target(config, batch_size: int, model, loss_fn, full_E, x_all, y_all,
                     n: int) -> dict:
  """Trains from config.seed's init at this batch size until E <= target or the budget;
  full_E(params) is the training-set E."""
  exp = config.experiment
  eta = scaled_lr(exp.lr_rule, exp.base_lr, batch_size, exp.max_lr)
  opt_cfg = config_lib.optimizer(**dict(config.optimizer.to_dict(), learning_rate=eta))
  steps_per_eval = max(1, round(exp.eval_examples / batch_size))
  # A whole number of chunks, so every chunk has one shape (one compilation).
  max_steps = steps_per_eval * math.ceil(exp.max_epochs * n / (batch_size * steps_per_eval))
  optimizer = optim.make_optimizer(opt_cfg, max_steps)
  chunk = kernel.make_train_chunk(loss_fn, optimizer)
  initial = kernel.init_state(model, optimizer, jax.random.key(config.seed))

  def fresh_state():
    return jax.tree.map(jnp.copy, initial)

  # Compile outside the timed loop, on a copy (the chunk donates its input state).
  idx = data_lib.batch_indices(config.seed, n, batch_size, 0, steps_per_eval)
  jax.block_until_ready(chunk(jax.tree.map(jnp.copy, fresh_state()), x_all, y_all, idx))
  state = fresh_state()
  curve = [{"examples": 0, "steps": 0, "wall": 0.0, "loss": float(full_E(initial["params"]))}]
  step, wall, reached = 0, 0.0, None
  while step < max_steps and reached is None:
    idx = data_lib.batch_indices(config.seed, n, batch_size, step, steps_per_eval)
    t0 = time.perf_counter()
    state, _ = chunk(state, x_all, y_all, idx)
    jax.block_until_ready(state)
    wall += time.perf_counter() - t0
    step += steps_per_eval
    E = float(full_E(state["params"]))
    if not math.isfinite(E):
      raise errors.NonFiniteLossError(
          f"E became NaN/inf at batch size {batch_size} (eta {eta:.3g}) by step {step}; lower "
          "config.experiment.max_lr or base_lr")
    curve.append({"examples": step * batch_size, "steps": step, "wall": wall, "loss": E})
    if E <= exp.target_loss:
      reached = curve[-1]
  return {"batch_size": batch_size, "eta": eta, "reached": reached is not None,
          "examples": reached["examples"] if reached else None,
          "epochs": reached["examples"] / n if reached else None,
          "steps": reached["steps"] if reached else None,
          "wall_s": reached["wall"] if reached else None,
          "final_loss": curve[-1]["loss"], "curve": curve, "params": state["params"]}


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains at every batch size and measures the gradient variance; writes results.{md,json}
  and batch_size.png. Returns {"runs": [...], "variance": [...], "sigma2": ..., ...}."""
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  n = len(dataset.train)
  sizes = [b or n for b in exp.batch_sizes]
  if max(sizes) > n:
    raise errors.ConfigError(f"config.experiment.batch_sizes={exp.batch_sizes!r} has a batch "
                             f"larger than the {n} training examples; use at most {n} (or 0)")
  k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  x_all, y_all = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)
  full_E = jax.jit(lambda p: loss_fn(p, x_all, y_all, None)[0])

  runs = []
  for b in sizes:
    out = _train_to_target(config, b, model, loss_fn, full_E, x_all, y_all, n)
    for point in out["curve"]:
      writer.write({"step": point["steps"], "split": "train", "batch_size": b, **point})
    runs.append(out)
    logging.info("B = %4d | eta %.3g | E <= %.3g: %s after %s examples (%s epochs), %s steps, "
                 "%s s", b, out["eta"], exp.target_loss, out["reached"], out["examples"],
                 None if out["epochs"] is None else round(out["epochs"], 2), out["steps"],
                 None if out["wall_s"] is None else round(out["wall_s"], 3))

  # Per-example gradient variance at the init and at the final w of the largest batch's run.
  grads_fn = jax.jit(lambda p: per_example_grads(loss_fn, p, x_all, y_all))
  variance_fn = jax.jit(minibatch_variance, static_argnums=3)
  init_params = model.init(jax.random.split(jax.random.key(config.seed))[0])
  variance = []
  trained = max(runs, key=lambda r: r["batch_size"])["params"]
  for where, params in (("init", init_params), ("trained", trained)):
    g_NxP = grads_fn(params)
    sigma2 = float(jnp.mean(jnp.sum(jnp.square(g_NxP - g_NxP.mean(axis=0)), axis=1)))
    for i, b in enumerate(sizes):
      measured, predicted = variance_fn(g_NxP, b, jax.random.key(config.seed + 100 + i),
                                        exp.variance_batches)
      row = {"w": where, "batch_size": b, "sigma2": sigma2, "measured": float(measured),
             "predicted": float(predicted), "sigma2_over_B": sigma2 / b,
             "ratio": float(measured / predicted) if predicted > 0 else None}
      variance.append(row)
      writer.write({"step": 0, "split": "variance", **row})
      logging.info("variance at %s w | B = %4d | measured %.4g | sigma^2/B (m-B)/(m-1) %.4g",
                   where, b, row["measured"], row["predicted"])
  writer.close()
  result = {"m": n, "target_loss": exp.target_loss, "lr_rule": exp.lr_rule,
            "runs": [{k: v for k, v in r.items() if k != "params"} for r in runs],
            "variance": variance, "wall_time": time.time() - t_start}
  _write_report(workdir, config, result)
  logging.info("done in %.1f s; results in %s", result["wall_time"],
               workdir / "results.md")
  return result


def _write_report(workdir: str, config, result: dict) -> None:
  exp = config.experiment
  m = result["m"]
  fmt = lambda v, spec: "not reached" if v is None else format(v, spec)
  rows = [{"B": r["batch_size"], "eta": r["eta"], "examples_to_target": fmt(r["examples"], "d"),
           "epochs": fmt(r["epochs"], ".2f"), "steps": fmt(r["steps"], "d"),
           "wall_s": fmt(r["wall_s"], ".3f"), "final_E": r["final_loss"]} for r in result["runs"]]
  var_lines = [report.markdown_table(
      ["w", "batch_size", "measured", "predicted", "sigma2_over_B", "ratio"],
      [{**v, "ratio": "exact 0" if v["ratio"] is None else v["ratio"]}
       for v in result["variance"]])]
  notes = [
      f"{config.model.name} {tuple(config.model.hidden_sizes)} {config.model.activation} on "
      f"{config.data.name} (m = {m} training examples), {config.optimizer.name}, eta by the "
      f"{exp.lr_rule!r} rule from base_lr {exp.base_lr} capped at {exp.max_lr}; target: "
      f"training-set E <= {exp.target_loss}, checked every ~{exp.eval_examples} examples; "
      f"wall_s = time in the training chunks only (compilation and checks excluded).",
      "",
      f"Mini-batch gradient variance E||g_B - g_bar||^2 over {exp.variance_batches} random "
      "batches (without replacement) vs sigma^2/B (m-B)/(m-1), from per-example gradients "
      "(jax.vmap(jax.grad)); sigma2_over_B is the with-replacement value sigma^2/B.",
      "", *var_lines, "", "Training to the target:",
  ]
  report.write_results(workdir, "Mini-batch size: stochasticity vs redundancy",
                          ["B", "eta", "examples_to_target", "epochs", "steps", "wall_s",
                           "final_E"], rows, notes, result)
  _plot(workdir / "batch_size.png", result)


def _plot(path: str, result: dict) -> None:
  fig = figure.Figure(figsize=(15, 4.2), layout="constrained")
  ax_ex, ax_wall, ax_var = fig.subplots(1, 3)
  for r in result["runs"]:
    c = r["curve"]
    label = f"B = {r['batch_size']} (eta {r['eta']:.2g})"
    ax_ex.plot([p["examples"] / result["m"] for p in c[1:]], [p["loss"] for p in c[1:]],
               label=label)
    ax_wall.plot([p["wall"] for p in c[1:]], [p["loss"] for p in c[1:]], label=label)
  for ax, xlabel in ((ax_ex, "epochs (examples processed / m)"), (ax_wall, "wall time [s]")):
    ax.axhline(result["target_loss"], color="k", ls=":", lw=1, label="target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training-set E")
    ax.legend(fontsize=7)
  ax_ex.set_title("progress per example processed")
  ax_wall.set_title("progress per second")
  for where, marker, color in (("init", "o", "tab:blue"), ("trained", "s", "tab:red")):
    rows = [v for v in result["variance"] if v["w"] == where and v["measured"] > 0]
    bs = np.array([v["batch_size"] for v in rows])
    ax_var.plot(bs, [v["measured"] for v in rows], marker, color=color,
                label=f"measured, {where} w")
    ax_var.plot(bs, [v["sigma2"] / v["batch_size"] for v in rows], "k--", lw=0.8)
    ax_var.plot(bs, [v["predicted"] for v in rows], "-", lw=1, color=color,
                label=f"sigma^2/B (m-B)/(m-1), {where} w")
  ax_var.set_xscale("log")
  ax_var.set_yscale("log")
  ax_var.set_xlabel("batch size B")
  ax_var.set_ylabel("E ||g_B - g_bar||^2")
  ax_var.set_title("mini-batch gradient variance (dashed: sigma^2/B)")
  ax_var.legend(fontsize=7)
  report.save_figure(fig, path)
