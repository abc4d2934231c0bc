"""Optimizers on hard curvature.

The slide's list: local minima, fluctuating curvature, large gradients and ill-conditioning,
met with momentum, adaptive gradients and clipping. Three problems:

  quadratic   f(w) = 1/2 w^T H w, H = R diag(1, kappa) R^T rotated by `rotation` degrees: the
              step size that keeps the steep direction stable (eta < 2/kappa) crawls along the
              flat one. Rotated, so per-coordinate (adaptive) scaling cannot simply undo it.
  rosenbrock  f(x, y) = (1 - x)^2 + 100 (y - x^2)^2: a curved valley whose curvature changes
              along it, with large gradients on its walls; minimum f = 0 at (1, 1).
  deep_mlp    a deep sigmoid MLP on digits (research.models "mlp"): sigma' <= 1/4 at every
              layer, so dE/dw^l shrinks towards the input layers (vanishing gradients).

Every method is the library's chain: research.optim.make_optimizer(config_lib.optimizer(
name=..., clip_global_norm=...)).

The 2-D problems are illustrations: deterministic (one plotted start, no data), each method
run once without clipping and once with the global norm of the gradient clipped to
experiment.clip_global_norm, for each eta of experiment.learning_rates; the table shows it at
the eta chosen from a second, held-out start (*_tuning_start) by a rule fixed before the run:
fewest steps to f <= tolerance, else lowest final f. The chain
ends with scale_by_learning_rate on a constant schedule, so the update for eta is eta times
the update for eta = 1: building the chain with eta = 1 and scaling its update by eta is the
same optimizer, and lets one jitted jax.vmap run the whole grid of etas. The table also
counts the etas that diverged, which is where clipping shows: it bounds every SGD step to
eta * clip_global_norm.

The deep MLP is the comparison, under the harness (research/experiments/harness.py): its sizes
are depths (experiment.depths hidden layers of experiment.deep_width units), its arms the
optimizers (experiment.optimizers, baseline experiment.baseline), each with its own grid of
step sizes (experiment.deep_learning_rates[method], the same number of candidates for every
method) chosen by validation accuracy, over experiment.seeds seeds (the init and the batch
order; every seed trains on the whole training split). A step size that diverges for any seed
is disqualified (its validation accuracy counts as 0). Measured on the test split: accuracy
and cross-entropy; and on the training split: E and log10 ||dE/dw^1|| / ||dE/dw^L|| (the first
hidden layer's gradient over the output layer's) at the init and at the end. No clipping here:
the largest full-batch gradient norm seen in the one-seed version was 0.37, below the
threshold of 1, so clipping was a no-op.
"""
import math
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
from research import workdir as workdir_lib
from research.experiments import harness
from research.experiments import report

PROBLEMS_2D = ("quadratic", "rosenbrock")
RANGES = {"max_extensions": config_lib.Range(True, 0),
          "clip_global_norm": config_lib.Range(False, 0.0, low_open=True),
          "kappa": config_lib.Range(False, 0.0, low_open=True),
          "rotation": config_lib.Range(False),  # degrees, any angle
          "num_steps_2d": config_lib.Range(True, 1),
          "tolerance": config_lib.Range(False, 0.0, low_open=True),
          "seeds": config_lib.Range(True, 2), "deep_width": config_lib.Range(True, 1)}
SIZE_LABEL = "depth (hidden layers)"


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
  exp = report.check_experiment(config, "configs/exp_curvature.py", RANGES, optim.OPTIMIZERS,
                                arms="optimizers")
  for i, name in enumerate(exp.problems):
    errors.check_choice(f"experiment.problems[{i}]", name, (*PROBLEMS_2D, "deep_mlp"))
  if not exp.learning_rates or any(not eta > 0 for eta in exp.learning_rates):
    raise errors.ConfigError(f"config.experiment.learning_rates={exp.learning_rates!r} must be "
                             "a non-empty tuple of positive numbers")
  if "deep_mlp" not in exp.problems:
    return
  errors.check_ints("experiment.depths", exp.depths, " (hidden layers), e.g. (2, 8)")
  missing = [n for n in exp.optimizers if n not in exp.deep_learning_rates]
  if missing:
    raise errors.ConfigError(f"config.experiment.deep_learning_rates has no grid for {missing}; "
                             "add a tuple of step sizes per optimizer")
  for name in exp.optimizers:
    etas = exp.deep_learning_rates[name]
    if (not isinstance(etas, (tuple, list)) or not etas
        or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0
               or not math.isfinite(e) for e in etas)):
      raise errors.ConfigError(f"config.experiment.deep_learning_rates.{name}={etas!r} must be "
                               "a non-empty tuple of positive step sizes, e.g. (0.01, 0.1)")
  sizes = {len(exp.deep_learning_rates[n]) for n in exp.optimizers}
  if len(sizes) > 1:
    raise errors.ConfigError("config.experiment.deep_learning_rates: the optimizers' grids "
                             "differ in length; give every optimizer the same number of step "
                             "sizes (the same tuning budget)")


def steps_to_tolerance(f_S: np.ndarray, tol: float) -> int | None:
  """The first step t from which f stays <= tol to the end (None if it never settles there):
  an oscillating run that dips below tol and climbs out again has not reached it."""
  above = np.flatnonzero(~(f_S <= tol))
  if not len(above):
    return 0
  return int(above[-1]) + 1 if above[-1] + 1 < len(f_S) else None


def _final_and_steps(f: Callable, traj_LxSx2, tolerance: float):
  """f along each eta's trajectory (L, S+1), its final value (inf where it went non-finite) and
  the steps until f <= tolerance (None if never)."""
  f_LxS = np.asarray(jax.vmap(jax.vmap(f))(traj_LxSx2), np.float64)
  final_L = np.where(np.isfinite(f_LxS).all(axis=1), f_LxS[:, -1], np.inf)
  steps_L = [steps_to_tolerance(f_S, tolerance) if np.isfinite(fin) else None
             for f_S, fin in zip(f_LxS, final_L)]
  return f_LxS, final_L, steps_L


def _compare_2d(config, problem: str, writer) -> list[dict]:
  """Every method, with and without clipping, at the eta of the grid chosen from a second,
  held-out start (the rule, fixed before the run: fastest to the tolerance from the tuning
  start; if no eta gets there, the lowest final f), then run from the plotted start."""
  exp = config.experiment
  if problem == "quadratic":
    f = quadratic(exp.kappa, exp.rotation)
    w0, w_valid = exp.quadratic_start, exp.quadratic_tuning_start
  else:
    f, w0, w_valid = rosenbrock, exp.rosenbrock_start, exp.rosenbrock_tuning_start
  w0, w_valid = (jnp.asarray(w, jnp.float32) for w in (w0, w_valid))
  etas = jnp.asarray(exp.learning_rates, jnp.float32)
  rows = []
  for name in exp.optimizers:
    for clip in (0.0, exp.clip_global_norm):
      opt = method_config(name, clip)
      _, final_valid_L, steps_valid_L = _final_and_steps(
          f, run_2d(f, w_valid, opt, etas, exp.num_steps_2d), exp.tolerance)
      chosen = min(range(len(etas)), key=lambda i: (
          steps_valid_L[i] is None, steps_valid_L[i] or 0, final_valid_L[i]))
      traj_LxSx2 = run_2d(f, w0, opt, etas, exp.num_steps_2d)
      f_LxS, final_L, steps_L = _final_and_steps(f, traj_LxSx2, exp.tolerance)
      diverged = int(np.sum(~np.isfinite(final_L) | (final_L > f_LxS[:, 0])))
      row = {"problem": problem, "optimizer": name, "clip": clip,
             "eta": float(etas[chosen]), "final_f": float(final_L[chosen]),
             "steps_to_tol": steps_L[chosen],
             "diverged_etas": f"{diverged}/{len(etas)}",
             "f_curve": f_LxS[chosen].tolist(),
             "trajectory": np.asarray(traj_LxSx2[chosen]).tolist()}
      rows.append(row)
      writer.write({"step": exp.num_steps_2d, "split": "result",
                    **{k: v for k, v in row.items() if k not in ("f_curve", "trajectory")}})
      logging.info("%s | %-8s clip %-4g | eta %.3g | final f %.3g | steps to %.0e: %s | "
                   "diverged %s", problem, name, clip, row["eta"],
                   row["final_f"], exp.tolerance, row["steps_to_tol"], row["diverged_etas"])
  return rows


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The deep MLP under the harness (module doc): sizes are depths, arms the optimizers, each
  with its own grid of step sizes (the same number of candidates)."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  n, k = len(dataset.train), losses.num_outputs(config, dataset)
  width = exp.deep_width
  by_depth = {d: models.build(ml_collections.ConfigDict(
      {**config.model.to_dict(), "hidden_sizes": (width,) * d}), dataset.input_shape, k)
              for d in exp.depths}
  loss_fns = {d: losses.make_loss_fn(m, config.loss.output, config.loss.l2, n, k,
                                     config.loss.l1) for d, m in by_depth.items()}
  eval_fns = {d: kernel.make_eval_fn(m, config.loss.output, k) for d, m in by_depth.items()}
  grad_fns = {d: jax.jit(jax.grad(lambda p, x, y, f=f: f(p, x, y, None)[0]))
              for d, f in loss_fns.items()}
  splits = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}

  def fit(method, setting, depth, seeds, subsets):
    del subsets  # Every seed trains on the whole training split.
    optimizer = optim.make_optimizer(config_lib.optimizer(
        name=method, learning_rate=setting["learning_rate"]), config.num_steps)
    try:
      return harness.train_seeds(
          by_depth[depth], loss_fns[depth], optimizer, config.num_steps, config.batch_size,
          [dataset.train] * len(seeds), seeds, mode=exp.seed_mode,
          chunk_steps=config.log_every, what=f"curvature {method} at depth {depth}",
          writer=writer, tag={"depth": depth, "arm": method, **setting})
    except errors.NonFiniteLossError as e:
      # A step size that diverges for any seed is a candidate that lost, not a failed run.
      logging.info("%s; that setting is disqualified", e)
      init = by_depth[depth].init(jax.random.key(0))
      return [jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), init) for _ in seeds]

  def measure(method, setting, depth, seed, params, split):
    if not all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(params)):
      # A diverged network gets every example wrong.
      return {"accuracy": 0.0, "diverged": 1.0,
              **({harness.PER_EXAMPLE: {"accuracy": np.zeros(len(splits[split]))}}
                 if split == "test" else {})}
    bs = config.eval_batch_size
    out = kernel.evaluate(eval_fns[depth], params, splits[split], bs, per_example=split == "test")
    record = {**harness.evaluation(out), "diverged": 0.0}
    if split == "test":
      train = kernel.evaluate(eval_fns[depth], params, dataset.train, bs)
      # The init of this seed (kernel.init_state's split of its key).
      init = by_depth[depth].init(jax.random.split(jax.random.key(seed))[0])
      ratio = lambda p: (lambda g: g[0] / g[-1])(layer_grad_norms(
          grad_fns[depth](p, dataset.train.x, dataset.train.y)))
      record.update(train_loss=train["loss"], log10_grad_ratio_init=float(np.log10(ratio(init))),
                    log10_grad_ratio_end=float(np.log10(ratio(params))))
    return record

  arms = [harness.Arm(m, {"learning_rate": tuple(exp.deep_learning_rates[m])})
          for m in exp.optimizers]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "curvature", arms, exp.baseline, tuple(exp.depths), SIZE_LABEL, seeds, fit, measure,
      select="accuracy", data_note="each trains on the whole training split: no subset to draw",
      family=harness.fields_of(FIELDS, FIELDS_E),
      # Each optimizer's step sizes live on its own scale (sgd's 0.1-10, adam's 3e-4-3e-2):
      # the same number of candidates, not the same values.
      step_sizes="own")


FIELDS = [("accuracy", "test acc %", 100.0)]
FIELDS_E = [("train_loss", "train E (nats)", 1.0),
            ("log10_grad_ratio_end", "log10 ||dE/dw^1|| / ||dE/dw^L|| at the end", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """The 2-D illustrations (one deterministic run per method and eta) and the deep MLP under
  the harness's protocol; writes results.{md,json}, trajectories.png, curves.png and
  deep_mlp.png. Returns {"deep": the harness's results or None, "rows_2d": [...]}."""
  t_start = time.time()
  validate(config)
  harness.executor_of(config)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  rows = []
  for problem in config.experiment.problems:
    if problem in PROBLEMS_2D:
      rows += _compare_2d(config, problem, writer)
  deep = None
  if "deep_mlp" in config.experiment.problems:
    deep = harness.run_cells(config, workdir, harness.CellWriter(writer), experiment)
  writer.close()
  result = {"deep": deep, "rows_2d": rows, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write_report(workdir, config, result)
  logging.info("done in %.1f s; results in %s", result["wall_time"], workdir / "results.md")
  return result


def _table_2d(config, rows: list[dict]) -> str:
  columns = ["problem", "optimizer", "clip", "eta", "final_f", "steps_to_tol",
             "diverged_etas"]
  return report.markdown_table(columns, [
      {**r, "steps_to_tol": "never" if r["steps_to_tol"] is None else r["steps_to_tol"]}
      for r in rows])


def _write_report(workdir, config, result: dict) -> None:
  exp = config.experiment
  rows, deep = result["rows_2d"], result["deep"]
  parts = []
  if deep is not None:
    parts += [
        f"Deep sigmoid MLP on {config.data.name} (the comparison): depth = hidden layers of "
        f"{exp.deep_width} {config.model.activation} units, softmax output; {config.num_steps} "
        f"steps of batch {config.batch_size}; every method's step size chosen from its own grid "
        f"of {len(next(iter(exp.deep_learning_rates.values())))} candidates ("
        + "; ".join(f"{m} {tuple(exp.deep_learning_rates[m])}" for m in exp.optimizers)
        + ") by mean validation accuracy. train E = the cross-entropy on the whole training "
        "split at the end (ln 10 = 2.303 is the plateau of a net that outputs the class "
        "frequencies); the gradient ratio is the first hidden layer's ||dE/dw|| over the output "
        "layer's, on the training split, at the end (at init it is in results.json). A step "
        "size that diverged for any seed is disqualified.",
        harness.protocol_note(deep), harness.table(deep, FIELDS),
        harness.table(deep, FIELDS_E, digits=3)]
  if rows:
    parts += [
        f"Illustrations, not findings: the 2-D problems are deterministic (no data, no seed), "
        f"each method shown after {exp.num_steps_2d} steps from quadratic_start="
        f"{tuple(exp.quadratic_start)} (kappa={exp.kappa:g}, rotated {exp.rotation:g} deg) and "
        f"rosenbrock_start={tuple(exp.rosenbrock_start)}, at the eta of "
        f"{tuple(exp.learning_rates)} chosen from a held-out start (quadratic "
        f"{tuple(exp.quadratic_tuning_start)}, Rosenbrock {tuple(exp.rosenbrock_tuning_start)}) "
        f"by a rule fixed before the run: fewest steps to f <= {exp.tolerance:g} (the first "
        "step from which f stays there), else the lowest final f; final_f and steps_to_tol "
        "are from the plotted start; diverged_etas = etas whose final f from the plotted start "
        "is NaN/inf or above the start's; clip = the global-norm threshold (0 = off).",
        _table_2d(config, rows)]
  slim = {"deep": deep, "rows_2d": [{k: v for k, v in r.items() if k != "trajectory"}
                                    for r in rows], "wall_time": result["wall_time"]}
  report.write_json(workdir / "results.json", slim)
  workdir_lib.write_text(workdir / "results.md", "\n\n".join(
      ["# Optimizers on hard curvature", *parts]) + "\n")
  if rows:
    _plot_trajectories(workdir / "trajectories.png", config, rows)
    _plot_curves(workdir / "curves.png", rows)
  if deep is not None:
    harness.plot(workdir / "deep_mlp.png", deep, "accuracy", "test accuracy (%)",
                 "Deep sigmoid MLP: each optimizer at its chosen step size")


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
                label=f"{r['optimizer']} (eta {r['eta']:.2g})")
      optimum = (0, 0) if problem == "quadratic" else (1, 1)
      ax.plot(*optimum, "k*", ms=12)
      ax.set_xlim(lim[0], lim[1])
      ax.set_ylim(lim[2], lim[3])
      ax.set_title(f"{problem}: " + (f"global norm clipped to {exp.clip_global_norm}"
                                     if clipped else "no clipping"))
      ax.legend(fontsize=7, loc="lower right")
  report.save_figure(fig, path)


def _plot_curves(path: str, rows: list[dict]) -> None:
  """f(w_t) per step of each 2-D run at its eta (chosen from the tuning start)."""
  problems = list(dict.fromkeys(r["problem"] for r in rows))
  fig = figure.Figure(figsize=(11, 4.2), layout="constrained")
  axes = fig.subplots(1, max(2, len(problems)), squeeze=False).ravel()
  for ax in axes[len(problems):]:
    ax.set_visible(False)
  for ax, problem in zip(axes, problems):
    for r in rows:
      if r["problem"] != problem:
        continue
      style = "--" if r["clip"] > 0 else "-"
      label = f"{r['optimizer']}{' + clip' if r['clip'] > 0 else ''} (eta {r['eta']:.2g})"
      ax.plot(np.maximum(r["f_curve"], 1e-12), style, color=_COLORS.get(r["optimizer"]),
              label=label, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("f(w_t)")
    ax.set_title(f"{problem} (one deterministic run per method)")
    ax.legend(fontsize=7)
  report.save_figure(fig, path)
