"""Optimizers on hard curvature.

The slide's list: local minima, fluctuating curvature, large gradients and ill-conditioning,
met with momentum, adaptive gradients and clipping. Three problems:

  quadratic   f(w) = 1/2 w^T H w, H = R diag(1, kappa) R^T rotated by `rotation` degrees: the
              step size that keeps the steep direction stable (eta < 2/kappa) crawls along the
              flat one. Rotated, so per-coordinate (adaptive) scaling cannot simply undo it.
  rosenbrock  f(x, y) = (1 - x)^2 + 100 (y - x^2)^2: a curved valley whose curvature changes
              along it, with large gradients on its walls; minimum f = 0 at (1, 1).
  deep_mlp    a deep sigmoid MLP on digits (research.models "mlp"): sigma' <= 1/4 at every
              layer, so dE/dw^l shrinks towards the input layers (vanishing gradients); the
              gradient norm of each layer is logged during training.

Every method is the library's chain: research.optim.make_optimizer(config_lib.optimizer(
name=..., clip_global_norm=...)), run once without clipping and once with the global norm of
the gradient clipped to experiment.clip_global_norm.

On the 2-D problems each method runs for each eta of experiment.learning_rates and the table
shows it at its best eta (fewest steps to f <= tolerance, else lowest final f). The chain
ends with scale_by_learning_rate on a constant schedule, so the update for eta is eta times
the update for eta = 1: building the chain with eta = 1 and scaling its update by eta is the
same optimizer, and lets one jitted jax.vmap run the whole grid of etas. The table also
counts the etas that diverged, which is where clipping shows: it bounds every SGD step to
eta * clip_global_norm.
"""
import time
from typing import Any, Callable

import jax
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

PROBLEMS_2D = ("quadratic", "rosenbrock")


def quadratic(kappa: float, rotation_deg: float) -> Callable:
  """f(w_2) = 1/2 w^T H w with H = R diag(1, kappa) R^T: condition number kappa, minimum 0."""
  theta = np.deg2rad(rotation_deg)
  r_2x2 = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  h_2x2 = jnp.asarray(r_2x2 @ np.diag([1.0, kappa]) @ r_2x2.T, jnp.float32)
  return lambda w_2: 0.5 * w_2 @ h_2x2 @ w_2


def rosenbrock(w_2: jax.Array) -> jax.Array:
  """(1 - x)^2 + 100 (y - x^2)^2: minimum 0 at (1, 1)."""
  x, y = w_2[..., 0], w_2[..., 1]
  return jnp.square(1 - x) + 100 * jnp.square(y - jnp.square(x))


def method_config(name: str, clip: float) -> ml_collections.ConfigDict:
  """config.optimizer for one method; eta = 1 (see the module doc), clip 0 = off."""
  return config_lib.optimizer(name=name, learning_rate=1.0, clip_global_norm=clip)


def run_2d(f: Callable, w0_2: jax.Array, opt_cfg, etas_L: jax.Array,
           num_steps: int) -> jax.Array:
  """Trajectories w_t, t = 0..num_steps, of opt_cfg's chain on f for every eta: (L, S+1, 2).

  opt_cfg must have learning_rate = 1 (the update is scaled by eta here).
  """
  if opt_cfg.learning_rate != 1.0 or opt_cfg.schedule != "constant":
    raise errors.ConfigError("run_2d scales the update by eta itself: build opt_cfg with "
                             "learning_rate=1.0 and schedule='constant'")
  optimizer = optim.make_optimizer(opt_cfg, num_steps)

  def trajectory(eta):
    def step(carry, _):
      w, opt_state = carry
      updates, opt_state = optimizer.update(jax.grad(f)(w), opt_state, w)
      w = w + eta * updates
      return (w, opt_state), w
    _, w_Sx2 = jax.lax.scan(step, (w0_2, optimizer.init(w0_2)), None, length=num_steps)
    return jnp.concatenate([w0_2[None], w_Sx2])

  return jax.jit(jax.vmap(trajectory))(etas_L)


def layer_grad_norms(grads) -> list[float]:
  """||dE/dw^l||_F for each layer l of an MLP's params (a list of {"w", "b"})."""
  return [float(jnp.linalg.norm(layer["w"])) for layer in grads]


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_curvature.py")
  for i, name in enumerate(exp.optimizers):
    errors.check_choice(f"experiment.optimizers[{i}]", name, optim.OPTIMIZERS)
  for i, name in enumerate(exp.problems):
    errors.check_choice(f"experiment.problems[{i}]", name, (*PROBLEMS_2D, "deep_mlp"))
  errors.check_positive("experiment.clip_global_norm", exp.clip_global_norm)
  errors.check_positive("experiment.kappa", exp.kappa)
  if not exp.learning_rates or any(not eta > 0 for eta in exp.learning_rates):
    raise errors.ConfigError(f"config.experiment.learning_rates={exp.learning_rates!r} must be "
                             "a non-empty tuple of positive numbers")
  missing = [n for n in exp.optimizers if n not in exp.deep_learning_rates]
  if "deep_mlp" in exp.problems and missing:
    raise errors.ConfigError(f"config.experiment.deep_learning_rates has no eta for {missing}; "
                             "add one per optimizer")


def steps_to_tolerance(f_S: np.ndarray, tol: float) -> int | None:
  """The first step t from which f stays <= tol to the end (None if it never settles there):
  an oscillating run that dips below tol and climbs out again has not reached it."""
  above = np.flatnonzero(~(f_S <= tol))
  if not len(above):
    return 0
  return int(above[-1]) + 1 if above[-1] + 1 < len(f_S) else None


def _compare_2d(config, problem: str, writer) -> list[dict]:
  """Every method, with and without clipping, at its best eta of the grid."""
  exp = config.experiment
  if problem == "quadratic":
    f, w0 = quadratic(exp.kappa, exp.rotation), jnp.asarray(exp.quadratic_start, jnp.float32)
  else:
    f, w0 = rosenbrock, jnp.asarray(exp.rosenbrock_start, jnp.float32)
  etas = jnp.asarray(exp.learning_rates, jnp.float32)
  rows = []
  for name in exp.optimizers:
    for clip in (0.0, exp.clip_global_norm):
      traj_LxSx2 = run_2d(f, w0, method_config(name, clip), etas, exp.num_steps_2d)
      f_LxS = np.asarray(jax.vmap(jax.vmap(f))(traj_LxSx2), np.float64)
      final_L = np.where(np.isfinite(f_LxS).all(axis=1), f_LxS[:, -1], np.inf)
      diverged = int(np.sum(~np.isfinite(final_L) | (final_L > f_LxS[:, 0])))
      steps_L = [steps_to_tolerance(f_S, exp.tolerance) if np.isfinite(fin) else None
                 for f_S, fin in zip(f_LxS, final_L)]
      # Fastest to the tolerance; if no eta gets there, the lowest final f.
      best = min(range(len(etas)), key=lambda i: (steps_L[i] is None, steps_L[i] or 0,
                                                   final_L[i]))
      row = {"problem": problem, "optimizer": name, "clip": clip,
             "best_eta": float(etas[best]), "final_f": float(final_L[best]),
             "steps_to_tol": steps_L[best],
             "diverged_etas": f"{diverged}/{len(etas)}",
             "f_curve": f_LxS[best].tolist(), "trajectory": np.asarray(traj_LxSx2[best]).tolist()}
      rows.append(row)
      writer.write({"step": exp.num_steps_2d, "split": "result",
                    **{k: v for k, v in row.items() if k not in ("f_curve", "trajectory")}})
      logging.info("%s | %-8s clip %-4g | best eta %.3g | final f %.3g | steps to %.0e: %s | "
                   "diverged %s", problem, name, clip, row["best_eta"], row["final_f"],
                   exp.tolerance, row["steps_to_tol"], row["diverged_etas"])
  return rows


def _compare_deep(config, writer) -> list[dict]:
  """Trains the deep sigmoid MLP with every method (with and without clipping), logging the
  full-training-set gradient norm of every layer every config.log_every steps."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  n = len(dataset.train)
  k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
  grad_fn = jax.jit(jax.grad(lambda p, x, y: loss_fn(p, x, y, None)[0]))
  full_E = jax.jit(lambda p, x, y: loss_fn(p, x, y, None)[0])
  x_all, y_all = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)
  eval_fn = kernel.make_eval_fn(model, config.loss.output, k)
  rows = []
  for name in exp.optimizers:
    for clip in (0.0, exp.clip_global_norm):
      opt_cfg = config_lib.optimizer(name=name, learning_rate=exp.deep_learning_rates[name],
                                     clip_global_norm=clip)
      optimizer = optim.make_optimizer(opt_cfg, config.num_steps)
      chunk = kernel.make_train_chunk(loss_fn, optimizer)
      # The same init and batches for every method (made afresh: the chunk donates the state).
      state = kernel.init_state(model, optimizer, jax.random.key(config.seed))
      curve = []

      def log(step, state):
        norms = layer_grad_norms(grad_fn(state["params"], x_all, y_all))
        E = float(full_E(state["params"], x_all, y_all))
        record = {"step": step, "split": "train", "problem": "deep_mlp", "optimizer": name,
                  "clip": clip, "loss": E, "grad_norm_per_layer": norms}
        writer.write(record)
        curve.append(record)

      log(0, state)
      step = 0
      while step < config.num_steps:
        stop = min(step + config.log_every, config.num_steps)
        idx = data_lib.batch_indices(config.seed, n, config.batch_size, step, stop - step)
        state, sums = chunk(state, x_all, y_all, idx)
        step = stop
        if int(sums["first_bad_step"]) >= 0:
          logging.info("deep_mlp | %s clip %g diverged at step %d", name, clip,
                       int(sums["first_bad_step"]))
          break
        log(step, state)
      test = kernel.evaluate(eval_fn, state["params"], dataset.test, config.eval_batch_size)
      g0, g1 = curve[0]["grad_norm_per_layer"], curve[-1]["grad_norm_per_layer"]
      rows.append({"problem": "deep_mlp", "optimizer": name, "clip": clip,
                   "best_eta": opt_cfg.learning_rate, "final_f": curve[-1]["loss"],
                   "test_accuracy": test.get("accuracy", float("nan")),
                   "grad_ratio_first_last_init": g0[0] / g0[-1],
                   "grad_ratio_first_last_end": g1[0] / g1[-1],
                   # Full-batch ||g|| at the log points: clipping acts only above the threshold.
                   "max_grad_norm": max(float(np.linalg.norm(c["grad_norm_per_layer"]))
                                        for c in curve),
                   "curve": curve})
      logging.info("deep_mlp | %-8s clip %-4g | eta %.3g | train E %.4f | test acc %.4f | "
                   "|g^1|/|g^L| %.2g -> %.2g", name, clip, opt_cfg.learning_rate,
                   rows[-1]["final_f"], rows[-1]["test_accuracy"],
                   rows[-1]["grad_ratio_first_last_init"], rows[-1]["grad_ratio_first_last_end"])
  return rows


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Runs config.experiment.problems; writes results.{md,json}, trajectories.png, curves.png.

  Returns {"rows": one dict per (problem, optimizer, clip), "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  rows = []
  for problem in config.experiment.problems:
    if problem == "deep_mlp":
      rows += _compare_deep(config, writer)
    else:
      rows += _compare_2d(config, problem, writer)
  writer.close()
  result = {"rows": rows, "wall_time": time.time() - t_start}
  _write_report(workdir, config, result)
  logging.info("done in %.1f s; results in %s", result["wall_time"],
               workdir / "results.md")
  return result


def _write_report(workdir: str, config, result: dict) -> None:
  exp = config.experiment
  rows = result["rows"]
  columns = ["problem", "optimizer", "clip", "best_eta", "final_f", "steps_to_tol",
             "diverged_etas", "test_accuracy", "grad_ratio_first_last_init",
             "grad_ratio_first_last_end", "max_grad_norm"]
  columns = [c for c in columns if any(c in r for r in rows)]
  table_rows = [{**r, "steps_to_tol": "never" if r.get("steps_to_tol", 0) is None
                 else r.get("steps_to_tol", "")} for r in rows]
  notes = [
      f"2-D problems: {exp.num_steps_2d} steps from quadratic_start={tuple(exp.quadratic_start)}"
      f" (kappa={exp.kappa}, rotated {exp.rotation} deg) and rosenbrock_start="
      f"{tuple(exp.rosenbrock_start)}; each method at its best eta of {tuple(exp.learning_rates)}"
      f" (fewest steps to f <= tolerance, else lowest final f); steps_to_tol = first step "
      f"from which f stays <= {exp.tolerance}; diverged_etas = etas whose final f is NaN/inf "
      "or above the start's.",
      f"deep_mlp: hidden {tuple(config.model.hidden_sizes)} {config.model.activation} on "
      f"{config.data.name}, {config.num_steps} steps of batch {config.batch_size}, eta per method"
      f" from experiment.deep_learning_rates; final_f = train E on all training examples; "
      "grad_ratio = ||dE/dw^1|| / ||dE/dw^L|| (first over last layer) at init and at the end; "
      "max_grad_norm = the largest full-batch ||dE/dw|| (weights) seen at the log points.",
      "clip = the global-norm threshold of optax.clip_by_global_norm (0 = off).",
  ]
  slim = lambda r: {k: v for k, v in r.items() if k not in ("trajectory",)}
  report.write_results(workdir, "Optimizers on hard curvature", columns, table_rows, notes,
                          {"rows": [slim(r) for r in rows], "wall_time": result["wall_time"]})
  _plot_trajectories(workdir / "trajectories.png", config,
                     [r for r in rows if r["problem"] in PROBLEMS_2D])
  _plot_curves(workdir / "curves.png", rows)


_COLORS = {"sgd": "tab:gray", "momentum": "tab:blue", "nesterov": "tab:cyan",
           "adagrad": "tab:green", "adam": "tab:red", "rmsprop": "tab:purple"}


def _plot_trajectories(path: str, config, rows: list[dict]) -> None:
  problems = [p for p in PROBLEMS_2D if any(r["problem"] == p for r in rows)]
  if not problems:
    return
  exp = config.experiment
  fig = figure.Figure(figsize=(11, 4.8 * len(problems)), layout="constrained")
  axes = fig.subplots(len(problems), 2, squeeze=False)
  for i, problem in enumerate(problems):
    if problem == "quadratic":
      f, lim = quadratic(exp.kappa, exp.rotation), (-1.6, 1.6, -1.6, 1.6)
      levels = np.geomspace(1e-3, 50, 14)
    else:
      f, lim = rosenbrock, (-2.0, 2.0, -1.0, 3.0)
      levels = np.geomspace(1e-2, 2500, 14)
    gx, gy = np.meshgrid(np.linspace(lim[0], lim[1], 200), np.linspace(lim[2], lim[3], 200))
    grid_Gx2 = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], -1), jnp.float32)
    fz = np.asarray(jax.vmap(f)(grid_Gx2)).reshape(gx.shape)
    for j, clipped in enumerate((False, True)):
      ax = axes[i, j]
      ax.contour(gx, gy, fz, levels=levels, colors="0.8", linewidths=0.7)
      for r in rows:
        if r["problem"] != problem or (r["clip"] > 0) != clipped:
          continue
        w = np.asarray(r["trajectory"])
        w = w[np.isfinite(w).all(axis=1)]
        ax.plot(w[:, 0], w[:, 1], ".-", ms=2, lw=1, color=_COLORS.get(r["optimizer"]),
                label=f"{r['optimizer']} (eta {r['best_eta']:.2g})")
      optimum = (0, 0) if problem == "quadratic" else (1, 1)
      ax.plot(*optimum, "k*", ms=12)
      ax.set_xlim(lim[0], lim[1])
      ax.set_ylim(lim[2], lim[3])
      ax.set_title(f"{problem}: " + (f"global norm clipped to {exp.clip_global_norm}"
                                     if clipped else "no clipping"))
      ax.legend(fontsize=7, loc="lower right")
  report.save_figure(fig, path)


def _plot_curves(path: str, rows: list[dict]) -> None:
  problems = list(dict.fromkeys(r["problem"] for r in rows))
  deep = [r for r in rows if r["problem"] == "deep_mlp"]
  panels = len(problems) + (1 if deep else 0)
  nrows = (panels + 1) // 2
  fig = figure.Figure(figsize=(11, 4.2 * nrows), layout="constrained")
  axes = fig.subplots(nrows, 2, squeeze=False).ravel()
  for ax in axes[panels:]:
    ax.set_visible(False)
  for ax, problem in zip(axes, problems):
    for r in rows:
      if r["problem"] != problem:
        continue
      style = "--" if r["clip"] > 0 else "-"
      label = f"{r['optimizer']}{' + clip' if r['clip'] > 0 else ''}"
      if problem == "deep_mlp":
        steps = [c["step"] for c in r["curve"]]
        ax.plot(steps, [c["loss"] for c in r["curve"]], style, color=_COLORS.get(r["optimizer"]),
                label=label)
      else:
        ax.plot(np.maximum(r["f_curve"], 1e-12), style, color=_COLORS.get(r["optimizer"]),
                label=label, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train E" if problem == "deep_mlp" else "f(w_t) (best eta)")
    ax.set_title(problem)
    ax.legend(fontsize=7)
  if deep:
    ax = axes[len(problems)]
    for r in deep:
      if r["clip"] > 0:
        continue
      g0, g1 = r["curve"][0]["grad_norm_per_layer"], r["curve"][-1]["grad_norm_per_layer"]
      layers_l = np.arange(1, len(g0) + 1)
      if r is deep[0]:
        ax.plot(layers_l, g0, "k-o", ms=3, label="at init (all methods)")
      ax.plot(layers_l, g1, "-o", ms=3, color=_COLORS.get(r["optimizer"]),
              label=f"{r['optimizer']}, end")
    ax.set_yscale("log")
    ax.set_xlabel("layer l (1 = input side)")
    ax.set_ylabel("||dE/dw^l|| on the training set")
    ax.set_title("deep_mlp: gradient norm per layer")
    ax.legend(fontsize=7)
  report.save_figure(fig, path)
