"""Universal approximation (the lecture's Section 6.4).

One hidden layer of H sigmoid units, y(x) = sum_j w^2_j sigma(sum_i w^1_ij x_i + b^1_j) + b^2,
can approximate any continuous function on a compact set as closely as we like, given enough
units (Cybenko, 1989; Hornik, 1991). The theorem says nothing about how many units, or
whether gradient descent finds the weights; this runner measures both together: for each width
H of experiment.widths it fits a smooth target on [-1, 1]^D by full-batch descent on the mean
squared error at experiment.train_points random points, and reports the error on a dense
grid (RMS and max |y - f|) against H.

Initialisation (experiment.init). "lecun" is the library's mlp.init: w ~ N(0, 1/D), b = 0,
so every hidden unit starts as sigma(w x) with its transition at x = 0 and descent has to
move them apart. "spread" (the default) puts each unit's transition at a random point of the
domain, as the constructive proof's steps do: w^1_j ~ N(0, init_scale^2 I) and
b^1_j = -w^1_j . c_j with c_j ~ U[-1, 1]^D, so sigma = 1/2 on the hyperplane through c_j; the
output layer keeps the library's init. With lecun the error stops falling beyond a few dozen
units within the step budget (an optimisation limit, not an approximation one).

Each width trains experiment.num_seeds networks at once: one jitted jax.vmap over the init
keys (the shapes differ between widths, so widths are a Python loop). The table gives the
median over seeds and the best seed (the theorem is about the best weights that exist).

Targets (experiment.targets):
  sines_1d   f(x) = sin(2 pi x) + 0.3 cos(5 pi x)                      on [-1, 1]
  bumps_2d   f(x, y) = sin(pi x) cos(pi y) + exp(-8 ((x - 0.4)^2 + (y + 0.3)^2))  on [-1, 1]^2
"""
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from matplotlib import figure

from research import config_lib
from research import errors
from research import metrics as metrics_lib
from research import models
from research import optim
from research.experiments import report


def _sines_1d(x_NxD: jax.Array) -> jax.Array:
  x = x_NxD[:, 0]
  return jnp.sin(2 * jnp.pi * x) + 0.3 * jnp.cos(5 * jnp.pi * x)


def _bumps_2d(x_NxD: jax.Array) -> jax.Array:
  x, y = x_NxD[:, 0], x_NxD[:, 1]
  return (jnp.sin(jnp.pi * x) * jnp.cos(jnp.pi * y)
          + jnp.exp(-8 * (jnp.square(x - 0.4) + jnp.square(y + 0.3))))


# name -> (input dimension D, f: x_NxD -> f_N)
TARGETS: dict[str, tuple[int, Callable]] = {"sines_1d": (1, _sines_1d), "bumps_2d": (2, _bumps_2d)}
INITS = ("spread", "lecun")
RANGES = {"init_scale": config_lib.Range(False, 0.0, low_open=True),
          "num_seeds": config_lib.Range(True, 1), "train_points": config_lib.Range(True, 1),
          "grid_points_1d": config_lib.Range(True, 1), "grid_points_2d": config_lib.Range(True, 1)}


def spread_init(model: models.Model, dim: int, width: int, scale: float) -> Callable:
  """init(key) -> params of `model` whose hidden units have w^1_j ~ N(0, scale^2 I) and
  sigma = 1/2 on a hyperplane through a random c_j in [-1, 1]^D (see the module doc)."""
  def init(key):
    k_model, k_w, k_c = jax.random.split(key, 3)
    params = model.init(k_model)
    w_DxH = scale * jax.random.normal(k_w, (dim, width))
    c_HxD = jax.random.uniform(k_c, (width, dim), minval=-1.0, maxval=1.0)
    params[0] = {"w": w_DxH, "b": -jnp.sum(c_HxD * w_DxH.T, axis=1)}
    return params
  return init


def dense_grid(dim: int, points_per_axis: int) -> np.ndarray:
  """x_GxD: a regular grid on [-1, 1]^dim, G = points_per_axis^dim."""
  axis = np.linspace(-1.0, 1.0, points_per_axis, dtype=np.float32)
  mesh = np.meshgrid(*[axis] * dim, indexing="ij")
  return np.stack([m.ravel() for m in mesh], axis=-1)


def make_fit(model: models.Model, optimizer: optax.GradientTransformation, f: Callable,
             num_steps: int) -> Callable:
  """Returns jitted fit(keys_S, x_NxD, x_GxD) -> dict of per-seed results, vmapped over keys.

  Each seed: init from its key, num_steps full-batch steps on E = mean_n (y(x_n) - f(x_n))^2,
  then the errors on the grid: "rms", "max" (S,), "train_mse" (S,), "pred" (S, G).
  """
  def fit_one(key, x_NxD, x_GxD):
    t_N = f(x_NxD)
    mse = lambda params: jnp.mean(jnp.square(model.apply(params, x_NxD)[:, 0] - t_N))

    def step(carry, _):
      params, opt_state = carry
      E, grads = jax.value_and_grad(mse)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), E

    params = model.init(key)
    (params, _), E_S = jax.lax.scan(step, (params, optimizer.init(params)), None,
                                    length=num_steps)
    pred_G = model.apply(params, x_GxD)[:, 0]
    err_G = pred_G - f(x_GxD)
    return {"rms": jnp.sqrt(jnp.mean(jnp.square(err_G))), "max": jnp.max(jnp.abs(err_G)),
            "train_mse": mse(params), "final_E": E_S[-1], "pred": pred_G}

  return jax.jit(jax.vmap(fit_one, in_axes=(0, None, None)))


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_approximation.py", RANGES)
  for i, name in enumerate(exp.targets):
    errors.check_choice(f"experiment.targets[{i}]", name, sorted(TARGETS))
  errors.check_ints("experiment.widths", exp.widths, ", e.g. (1, 2, 4, 8)")
  errors.check_choice("experiment.init", exp.init, INITS)
  if config.model.name != "mlp" or len(config.model.hidden_sizes) != 1:
    raise errors.ConfigError("config.model must be an mlp with one hidden layer (its width is "
                             "set from experiment.widths); got "
                             f"{config.model.name!r} with {config.model.hidden_sizes!r}")


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Fits every target at every width; writes results.{md,json} and approximation.png.

  Returns {"rows": one dict per (target, width), "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  keys_S = jax.random.split(jax.random.key(config.seed), exp.num_seeds)
  rows, fits = [], {}
  for t_index, name in enumerate(exp.targets):
    dim, f = TARGETS[name]
    x_NxD = np.asarray(jax.random.uniform(
        jax.random.fold_in(jax.random.key(config.seed + 1), t_index), (exp.train_points, dim),
        minval=-1.0, maxval=1.0))
    x_GxD = dense_grid(dim, exp.grid_points_1d if dim == 1 else exp.grid_points_2d)
    for width in exp.widths:
      model_cfg = ml_collections.ConfigDict(config.model.to_dict())
      model_cfg.hidden_sizes = (width,)
      model = models.build(model_cfg, (dim,), 1)
      if exp.init == "spread":
        model = models.Model(spread_init(model, dim, width, exp.init_scale), model.apply)
      out = jax.device_get(make_fit(model, optimizer, f, config.num_steps)(keys_S, x_NxD, x_GxD))
      best = int(np.argmin(out["rms"]))
      row = {"target": name, "width": width,
             "params": (dim + 2) * width + 1,  # w^1 (D x H), b^1 (H), w^2 (H), b^2
             "rms_median": float(np.median(out["rms"])), "max_median": float(np.median(out["max"])),
             "rms_best": float(out["rms"][best]), "max_best": float(out["max"][best]),
             "train_mse_median": float(np.median(out["train_mse"]))}
      rows.append(row)
      fits[(name, width)] = (x_GxD, out["pred"][best])
      writer.write({"step": config.num_steps, "split": "grid", **row,
                    "rms_per_seed": out["rms"].tolist(), "max_per_seed": out["max"].tolist()})
      logging.info("%s | H = %4d | RMS %.4f (best %.4f) | max %.4f (best %.4f)", name, width,
                   row["rms_median"], row["rms_best"], row["max_median"], row["max_best"])
  writer.close()
  result = {"rows": rows, "wall_time": time.time() - t_start}
  notes = [
      f"One hidden layer of H {config.model.activation} units, init {exp.init!r}"
      + (f" (scale {exp.init_scale})" if exp.init == "spread" else "")
      + f"; {config.num_steps} full-batch "
      f"{config.optimizer.name} steps (eta {config.optimizer.learning_rate}, "
      f"{config.optimizer.schedule}) on the MSE at {exp.train_points} uniform random points; "
      f"errors on a dense grid ({exp.grid_points_1d} points in 1-D, {exp.grid_points_2d}^2 in "
      f"2-D); median and best over {exp.num_seeds} seeds (one vmap).",
  ]
  columns = ["target", "width", "params", "rms_median", "max_median", "rms_best", "max_best",
             "train_mse_median"]
  report.write_results(workdir, "Universal approximation: error vs width", columns, rows,
                          notes, result)
  _plot(workdir / "approximation.png", exp, rows, fits)
  logging.info("done in %.1f s; results in %s", result["wall_time"],
               workdir / "results.md")
  return result


def _plot(path: str, exp, rows: list[dict], fits: dict) -> None:
  panels = ["error", *exp.targets]
  fig = figure.Figure(figsize=(5 * len(panels), 4.2), layout="constrained")
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  ax = axes[0]
  for name, color in zip(exp.targets, ("tab:blue", "tab:red", "tab:green")):
    widths = [r["width"] for r in rows if r["target"] == name]
    for stat, style in (("rms", "o-"), ("max", "s--")):
      ax.plot(widths, [r[f"{stat}_median"] for r in rows if r["target"] == name], style,
              color=color, ms=4, label=f"{name}: {stat} (median)")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("hidden units H")
  ax.set_ylabel("error on the dense grid")
  ax.set_title("approximation error vs width")
  ax.legend(fontsize=7)
  shown = [h for h in exp.widths if h in (1, 4, 16, max(exp.widths))] or list(exp.widths)
  for ax, name in zip(axes[1:], panels[1:]):
    dim, f = TARGETS[name]
    if dim == 1:
      x_G = fits[(name, exp.widths[0])][0]
      ax.plot(x_G[:, 0], np.asarray(f(jnp.asarray(x_G))), "k-", lw=2, label="target f")
      for h in shown:
        ax.plot(x_G[:, 0], fits[(name, h)][1], lw=1, label=f"H = {h} (best seed)")
      ax.set_xlabel("x")
      ax.set_title(f"{name}: fits")
      ax.legend(fontsize=7)
    else:
      h = max(exp.widths)
      x_G, pred_G = fits[(name, h)]
      n = exp.grid_points_2d
      err = np.abs(pred_G - np.asarray(f(jnp.asarray(x_G)))).reshape(n, n)
      im = ax.imshow(err.T, origin="lower", extent=(-1, 1, -1, 1), cmap="magma")
      fig.colorbar(im, ax=ax, label="|y - f|")
      ax.set_title(f"{name}: |error| at H = {h} (best seed)")
      ax.set_xlabel("x")
      ax.set_ylabel("y")
  report.save_figure(fig, path)
