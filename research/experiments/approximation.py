"""Universal approximation (the lecture's Section 6.4).

One hidden layer of H sigmoid units, y(x) = sum_j w^2_j sigma(sum_i w^1_ij x_i + b^1_j) + b^2,
can approximate any continuous function on a compact set as closely as we like, given enough
units (Cybenko, 1989; Hornik, 1991). The theorem says nothing about how many units, or
whether gradient descent finds the weights; this runner measures both together: it fits a
smooth target on [-1, 1]^D by full-batch descent on the mean squared error at
experiment.train_points random points, and measures the error on a dense grid (RMS and
max |y - f|) against H.

The harness (research/experiments/harness.py) runs the protocol, once per target (its cells
under WORKDIR/<target>/harness). Its sizes are the widths H (experiment.widths); its arms the
inits (experiment.inits, baseline experiment.baseline):
  lecun   the library's mlp.init: w ~ N(0, 1/D), b = 0, so every hidden unit starts as
          sigma(w x) with its transition at x = 0 and descent has to move them apart.
  spread  each unit's transition at a random point of the domain, as the constructive proof's
          steps do: w^1_j ~ N(0, init_scale^2 I) and b^1_j = -w^1_j . c_j with
          c_j ~ U[-1, 1]^D, so sigma = 1/2 on the hyperplane through c_j; the output layer
          keeps the library's init.
Each seed draws its own training points and its own validation points (uniform on the
domain, the same for every width and init of that seed) and its init. Each arm chooses its
learning rate from experiment.learning_rates (the same budget) by the mean RMS error at the
validation points (lower is better); the test measure is the error on the dense grid, and the
training MSE at the end. The seeds of a cell train through harness.train_seeds (the
kernel's chunk; every step's "batch" is the whole training set).

Targets (experiment.targets):
  sines_1d   f(x) = sin(2 pi x) + 0.3 cos(5 pi x)                      on [-1, 1]
  bumps_2d   f(x, y) = sin(pi x) cos(pi y) + exp(-8 ((x - 0.4)^2 + (y + 0.3)^2))  on [-1, 1]^2
"""
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib import figure

from research import config_lib
from research import data as data_lib
from research import errors
from research import metrics as metrics_lib
from research import models
from research import optim
from research import workdir as workdir_lib
from research.experiments import harness
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
TITLES = {"sines_1d": "sin(2πx) + 0.3 cos(5πx)", "bumps_2d": "sin(πx) cos(πy) + bump"}
INITS = ("lecun", "spread")
RANGES = {"max_extensions": config_lib.Range(True, 0),
          "seeds": config_lib.Range(True, 2), "train_points": config_lib.Range(True, 1),
          "valid_points": config_lib.Range(True, 1),
          "grid_points_1d": config_lib.Range(True, 2), "grid_points_2d": config_lib.Range(True, 2),
          "init_scale": config_lib.Range(False, 0.0, low_open=True)}
SIZE_LABEL = "H (hidden units)"


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


def random_points(target: str, num_points: int, seed: int, stream: int) -> data_lib.Split:
  """num_points uniform points of [-1, 1]^D and f there, a function of (target, seed, stream)
  alone (stream 0: training, 1: validation): x (N, D) float32, y = f(x) (N,) float32."""
  dim, f = TARGETS[target]
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream),
                           sorted(TARGETS).index(target))
  x_NxD = jax.random.uniform(key, (num_points, dim), minval=-1.0, maxval=1.0)
  return data_lib.Split(np.asarray(x_NxD, np.float32), np.asarray(f(x_NxD), np.float32))


def mse_loss_fn(model: models.Model) -> Callable:
  """loss_fn(params, x_NxD, t_N, rng) -> (E, {}) with E = mean_n (y(x_n) - t_n)^2: the
  kernel's cost contract with a regression target in place of labels."""
  def loss_fn(params, x_NxD, t_N, rng):
    del rng
    return jnp.mean(jnp.square(model.apply(params, x_NxD)[:, 0] - t_N)), {}
  return loss_fn


def make_errors_fn(model: models.Model) -> Callable:
  """Jitted errors(params, x_NxD, t_N) -> {"rms", "max", "mse"} of y - t over the points."""
  @jax.jit
  def errors_fn(params, x_NxD, t_N):
    err_N = model.apply(params, x_NxD)[:, 0] - t_N
    mse = jnp.mean(jnp.square(err_N))
    return {"rms": jnp.sqrt(mse), "max": jnp.max(jnp.abs(err_N)), "mse": mse}
  return errors_fn


def full_batches(seed: int, n: int, start: int, num: int) -> np.ndarray:
  """idx_SxN: every step's batch is the whole training set (full-batch descent)."""
  del seed, start
  return np.broadcast_to(np.arange(n, dtype=np.int32), (num, n))


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_approximation.py", RANGES, INITS,
                                arms="inits")
  if not exp.targets:
    raise errors.ConfigError("config.experiment.targets is empty; name at least one of "
                             + ", ".join(sorted(TARGETS)))
  for i, name in enumerate(exp.targets):
    errors.check_choice(f"experiment.targets[{i}]", name, sorted(TARGETS))
  errors.check_ints("experiment.widths", exp.widths, ", e.g. (4, 16, 64, 256)")
  etas = tuple(exp.learning_rates)
  if not etas or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0
                     or not math.isfinite(e) for e in etas):
    raise errors.ConfigError(f"config.experiment.learning_rates={etas!r} must be a non-empty "
                             "tuple of positive step sizes, e.g. (3e-3, 1e-2, 3e-2)")
  if config.model.name != "mlp" or len(config.model.hidden_sizes) != 1:
    raise errors.ConfigError("config.model must be an mlp with one hidden layer (its width is "
                             "set from experiment.widths); got "
                             f"{config.model.name!r} with {config.model.hidden_sizes!r}")


def experiment(config: ml_collections.ConfigDict, target: str,
               writer=None) -> harness.Experiment:
  """The harness's view of one target (module doc): sizes are widths, arms the inits."""
  exp = config.experiment
  dim, f = TARGETS[target]
  x_GxD = dense_grid(dim, exp.grid_points_1d if dim == 1 else exp.grid_points_2d)
  grid = (jnp.asarray(x_GxD), f(jnp.asarray(x_GxD)))
  plain, spread, errors_fns = {}, {}, {}
  for width in exp.widths:
    model_cfg = ml_collections.ConfigDict({**config.model.to_dict(), "hidden_sizes": (width,)})
    plain[width] = models.build(model_cfg, (dim,), 1)
    spread[width] = models.Model(spread_init(plain[width], dim, width, exp.init_scale),
                                 plain[width].apply)
    errors_fns[width] = make_errors_fn(plain[width])
  by_init = {"lecun": plain, "spread": spread}
  draw = lambda width, seed: random_points(target, exp.train_points, seed, 0)
  valid = {}  # seed -> its validation points (the same for every width and init)

  def fit(init, setting, width, seeds, subsets):
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": setting["learning_rate"]}),
        config.num_steps)
    model = by_init[init][width]
    return harness.train_seeds(
        model, mse_loss_fn(model), optimizer, config.num_steps, exp.train_points, subsets,
        seeds, mode=exp.seed_mode, batches=full_batches,
        what=f"approximation {target} H={width} {init}", writer=writer,
        tag={"target": target, "width": width, "arm": init, **setting})

  def measure(init, setting, width, seed, params, split):
    del init, setting
    if split == "valid":
      if seed not in valid:
        valid[seed] = random_points(target, exp.valid_points, seed, 1)
      out = jax.device_get(errors_fns[width](params, valid[seed].x, valid[seed].y))
      return {"rms": float(out["rms"]), "max": float(out["max"])}
    train = draw(width, seed)
    out = jax.device_get(errors_fns[width](params, *grid))
    return {"rms": float(out["rms"]), "max": float(out["max"]),
            "train_mse": float(errors_fns[width](params, train.x, train.y)["mse"])}

  arms = [harness.Arm(name, {"learning_rate": tuple(exp.learning_rates)}) for name in exp.inits]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      f"approximation {target}", arms, exp.baseline, tuple(exp.widths), SIZE_LABEL, seeds, fit,
      measure, select="rms", higher_is_better=False, draw=draw,
      select_label="RMS error at the seed's validation points",
      data_note=f"each seed draws its own {exp.train_points} training points, uniform on "
      "[-1, 1]^D, its own validation points and its own init", family=harness.fields_of(FIELDS))


FIELDS = [("rms", "grid RMS", 1.0), ("max", "grid max |y - f|", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every init at every width for every target, under the harness's protocol; writes
  results.{md,json} and approximation.png. Returns {target: the harness's results}."""
  validate(config)
  harness.executor_of(config)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  cells = harness.CellWriter(writer)
  result = {target: harness.run_cells(config, workdir / target, cells, experiment, target)
            for target in config.experiment.targets}
  writer.close()
  if jax.process_index() == 0:
    write(workdir, config, result)
  return result


def fold(result: dict, arm: str) -> dict[str, float]:
  """How many times the test RMS falls from the smallest width to the largest for `arm`,
  per seed (the same training points): the geometric mean over seeds and its 95% CI (the
  t-interval of log10 of the ratio)."""
  first, last = result["sizes"][0], result["sizes"][-1]
  ratios = [a["rms"] / b["rms"] for a, b in zip(first["arms"][arm]["test"],
                                               last["arms"][arm]["test"])]
  logs = np.log10(ratios)
  lo, hi = harness.t_interval(logs)
  return {"from": first["size"], "to": last["size"], "mean": float(10 ** logs.mean()),
          "ci": [float(10 ** lo), float(10 ** hi)]}


def fold_table(results: dict) -> str:
  rows = []
  for target, result in results.items():
    for arm in result["sizes"][0]["arms"]:
      fd = fold(result, arm)
      rows.append({"target": target, "init": arm,
                   f"grid RMS at H={fd['from']} / at H={fd['to']} (geometric mean) [95% CI]":
                   f"{fd['mean']:.1f}× [{fd['ci'][0]:.1f}, {fd['ci'][1]:.1f}]"})
  return report.markdown_table(report.columns_of(rows), rows)


def notes(config) -> list[str]:
  exp = config.experiment
  return [
      f"One hidden layer of H {config.model.activation} units, fitted by {config.num_steps} "
      f"full-batch {config.optimizer.name} steps ({config.optimizer.schedule} schedule) to the "
      f"MSE at {exp.train_points} uniform random points of [-1, 1]^D. Inits: lecun (the "
      f"library's: b = 0, every transition at x = 0) and spread (w¹ ~ N(0, "
      f"{exp.init_scale:g}²), each unit's σ = 1/2 hyperplane through a random point of the "
      f"domain). Each init's learning rate is chosen from {tuple(exp.learning_rates)} "
      f"(extended at its edges: the protocol notes) by the mean RMS error at "
      f"{exp.valid_points} fresh random validation points per seed (lower is better). Test: RMS and max |y - f| on a dense grid ({exp.grid_points_1d} points in "
      f"1-D, {exp.grid_points_2d}² in 2-D); Δ < 0 means spread's error is lower."]


def write(workdir, config, results: dict) -> None:
  """results.{md,json} (one table per target, then the fold from the smallest width to the
  largest) and approximation.png."""
  if jax.process_index() != 0:
    return
  parts = [*notes(config)]
  for target, result in results.items():  # One block (one Holm family) per target.
    parts += [f"Target {target}: f = {TITLES[target]}.", harness.protocol_note(result),
              harness.table(result, FIELDS, digits=4)]
  parts += ["How many times the grid RMS falls from the smallest width to the largest, paired "
            "over seeds (each init at its chosen learning rates):", fold_table(results)]
  report.write_json(workdir / "results.json", results)
  workdir_lib.write_text(workdir / "results.md", "\n\n".join(
      ["# Universal approximation: error vs width", *parts]) + "\n")
  _plot(workdir / "approximation.png", results)


def _plot(path, results: dict) -> None:
  """Grid RMS against H per target, each init's mean with its 95% t-interval, log-log."""
  fig = figure.Figure(figsize=(5.2 * len(results), 4.2), layout="constrained")
  axes = fig.subplots(1, len(results), squeeze=False)[0]
  for ax, (target, result) in zip(axes, results.items()):
    sizes = [e["size"] for e in result["sizes"]]
    for name in result["sizes"][0]["arms"]:
      means, lo, hi = [], [], []
      for e in result["sizes"]:
        values = [r["rms"] for r in e["arms"][name]["test"]]
        m = float(np.mean(values))
        a, b = harness.t_interval(values)
        means.append(m)
        lo.append(m - a)
        hi.append(b - m)
      ax.errorbar(sizes, means, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel(SIZE_LABEL)
    ax.set_ylabel("RMS error on the dense grid (units of f)")
    ax.set_title(f"{target}: {TITLES[target]}")
    ax.grid(alpha=0.3)
    ax.legend(title=f"init: mean, 95% CI (n={len(result['seeds'])})")
  report.save_figure(fig, path)
