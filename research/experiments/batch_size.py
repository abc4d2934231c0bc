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

The harness (research/experiments/harness.py) runs the protocol. Its arms are the batch sizes
of experiment.batch_sizes (0 = the full training set; the first is the baseline), each with
one setting: eta from experiment.lr_rule (nothing is tuned, so every arm has the same budget);
its sizes are the targets experiment.target_losses. Every seed trains the same model with
plain config.optimizer (SGD by default) on the whole training split from its own init and
batch order; the training-set E is computed after every step (inside the compiled scan), so
the examples to reach E <= target are exact to one step (B examples), and runs stop once every
seed is at or below the smallest target. Measured: examples, steps and epochs to each target,
paired against the baseline batch size over the same seeds. Wall time is not measured (the
steps column is what a parallel machine would pay for). Then, for the first seed, the
per-example gradients g_i (jax.vmap(jax.grad(...))) at its init and at the end of its
largest-batch run, and the measured variance of g_B over experiment.variance_batches random
batches against sigma^2 / B (m - B) / (m - 1).

Learning-rate rules (experiment.lr_rule; eta_1 = experiment.base_lr is the rate at B = 1):
  sqrt      eta_B = min(eta_1 sqrt(B), max_lr): keeps the variance of the step eta g_B, which
            is eta^2 sigma^2 / B, the same at every B, until the cap
  linear    eta_B = min(eta_1 B, max_lr): the "linear scaling rule" (Goyal et al., 2017): B
            steps of eta_1 ~ one step of B eta_1 while the gradient changes little
  constant  eta_B = eta_1
The cap max_lr is the rate full-batch descent tolerates best (above it E oscillates or
diverges, whatever the batch size). choose_cap picks it before the measured runs, from
experiment.max_lr_grid, by full-batch descent from a held-out seed (experiment.cap_seed, none
of the reported seeds): the fewest steps to the smallest target (ties: the smaller rate; none
reaching it: the lowest final E). A one-entry grid fixes the cap.
"""
import math
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
from research import workdir as workdir_lib
from research.experiments import harness
from research.experiments import report

LR_RULES = ("sqrt", "linear", "constant")
RANGES = {"seeds": config_lib.Range(True, 2), "variance_batches": config_lib.Range(True, 1),
          "base_lr": config_lib.Range(False, 0.0, low_open=True),
          "cap_seed": config_lib.Range(True, 0),
          "max_epochs": config_lib.Range(False, 0.0, low_open=True)}
SIZE_LABEL = "target training E"
EXAMPLES_PER_CALL = 4096  # examples per compiled call (S = this // B steps): a host sync each


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
  exp = report.check_experiment(config, "configs/exp_batch_size.py", RANGES)
  if not exp.batch_sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 0
                                for b in exp.batch_sizes):
    raise errors.ConfigError(f"config.experiment.batch_sizes={exp.batch_sizes!r} must be "
                             "integers >= 1, or 0 for the full training set")
  if len(set(exp.batch_sizes)) != len(exp.batch_sizes):
    raise errors.ConfigError(f"config.experiment.batch_sizes={exp.batch_sizes!r} repeats a "
                             "batch size; name each once")
  errors.check_choice("experiment.lr_rule", exp.lr_rule, LR_RULES)
  grid = tuple(exp.max_lr_grid)
  if not grid or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                     or not math.isfinite(v) for v in grid):
    raise errors.ConfigError(f"config.experiment.max_lr_grid={grid!r} must be a non-empty tuple "
                             "of positive step sizes, e.g. (1.0, 2.0, 4.0, 8.0, 16.0) (one entry "
                             "fixes the cap)")
  if config.seed <= exp.cap_seed < config.seed + exp.seeds:
    raise errors.ConfigError(
        f"config.experiment.cap_seed={exp.cap_seed} is one of the reported seeds "
        f"({config.seed}..{config.seed + exp.seeds - 1}); choose the cap on a held-out seed, "
        f"e.g. {config.seed + 1000}")
  targets = tuple(exp.target_losses)
  if not targets or any(isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0
                        or not math.isfinite(t) for t in targets):
    raise errors.ConfigError(f"config.experiment.target_losses={targets!r} must be a non-empty "
                             "tuple of positive training-set E values, e.g. (0.3, 0.1)")


def arm_name(batch_size: int) -> str:
  """"B=8"; 0 (the full training set) is "B=full"."""
  return f"B={batch_size or 'full'}"


def first_step_at_or_below(E_T: np.ndarray, target: float) -> int | None:
  """The first t with E_T[t] <= target (E_T[0] is the init's E), or None."""
  hit = np.flatnonzero(E_T <= target)
  return int(hit[0]) if len(hit) else None


def make_steps_with_E(loss_fn: Callable, optimizer) -> Callable:
  """Jitted run(states_R, x_all, y_all, idx_RxSxB) -> (states_R, E_RxS): S steps of the kernel's
  chunk for each of R stacked seeds, with the training-set E after every step (so the first
  step at or below a target is exact, not rounded up to a check interval)."""
  chunk = kernel.make_train_chunk(loss_fn, optimizer)

  def steps(state, x_all, y_all, idx_SxB):
    def one(state, idx_B):
      state, _ = chunk(state, x_all, y_all, idx_B[None])
      return state, loss_fn(state["params"], x_all, y_all, None)[0]
    return jax.lax.scan(one, state, idx_SxB)

  return jax.jit(jax.vmap(steps, in_axes=(0, None, None, 0)))


class _Problem:
  """The model, E and the training split of config, and descent at batch size b to the smallest
  target (train); shared by choose_cap and experiment."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config, exp = config, config.experiment
    dataset = data_lib.load(config.data)
    self.n = n = len(dataset.train)
    k = losses.num_outputs(config, dataset)
    self.model = models.build(config.model, dataset.input_shape, k)
    self.loss_fn = losses.make_loss_fn(self.model, config.loss.output, config.loss.l2, n, k,
                                       config.loss.l1)
    self.x_all, self.y_all = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)
    self.full_E = jax.jit(lambda p: self.loss_fn(p, self.x_all, self.y_all, None)[0])
    self.goal = min(exp.target_losses)

  def train(self, b: int, seeds, eta: float) -> list[dict]:
    """Trains every seed at batch size b and step size eta until each is at or below the
    smallest target (or max_epochs); per seed {"params": the final params, "E": E after every
    step, E[0] at init, "eta"}."""
    n, exp, config = self.n, self.config.experiment, self.config
    max_steps = math.ceil(exp.max_epochs * n / b)
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **dict(config.optimizer.to_dict(), learning_rate=eta)), max_steps)
    run = make_steps_with_E(self.loss_fn, optimizer)
    states = [kernel.init_state(self.model, optimizer, jax.random.key(s)) for s in seeds]
    curves = [[float(self.full_E(st["params"]))] for st in states]
    state = jax.tree.map(lambda *a: jnp.stack(a), *states)
    per_call = max(1, EXAMPLES_PER_CALL // b)
    step = 0
    while step < max_steps and not all(min(c) <= self.goal for c in curves):
      num = min(per_call, max_steps - step)
      idx = np.stack([data_lib.batch_indices(s, n, b, step, num) for s in seeds])
      state, E_RxS = run(state, self.x_all, self.y_all, idx)
      E_RxS = np.asarray(E_RxS, np.float64)
      if not np.isfinite(E_RxS).all():
        raise errors.NonFiniteLossError(
            f"E became NaN/inf at batch size {b} (eta {eta:.3g}) by step {step + num}; lower "
            "config.experiment.max_lr_grid or base_lr")
      for c, E_S in zip(curves, E_RxS):
        c.extend(E_S.tolist())
      step += num
    logging.info("B = %d (eta %.3g): %d steps", b, eta, step)
    return [{"params": jax.tree.map(lambda a, i=i: a[i], state["params"]),
             "E": np.asarray(c, np.float32), "eta": eta} for i, c in enumerate(curves)]


_CAPS: dict[str, dict] = {}  # config JSON -> choose_cap's answer (the driver asks twice)


def choose_cap(config: ml_collections.ConfigDict, problem: _Problem | None = None) -> dict:
  """The cap max_lr (module doc), chosen before the measured runs by full-batch descent from
  the held-out seed experiment.cap_seed: {"chosen", "seed", "goal", "candidates": [{"eta",
  "steps" (to the smallest target, None if never), "final_E" (inf if it diverged)}]}."""
  key = config.to_json_best_effort(sort_keys=True)
  if key not in _CAPS:
    _CAPS[key] = _choose_cap(config, problem or _Problem(config))
  return _CAPS[key]


def _choose_cap(config: ml_collections.ConfigDict, problem: _Problem) -> dict:
  exp = config.experiment
  held_out = []
  for eta in exp.max_lr_grid:
    try:
      E = problem.train(problem.n, [exp.cap_seed], float(eta))[0]["E"]
      t = first_step_at_or_below(E, problem.goal)
      held_out.append({"eta": float(eta), "steps": t, "final_E": float(E[-1])})
    except errors.NonFiniteLossError:
      held_out.append({"eta": float(eta), "steps": None, "final_E": float("inf")})
  chosen = min(held_out, key=lambda r: (r["steps"] is None, r["steps"] or 0, r["final_E"],
                                        r["eta"]))
  return {"chosen": chosen["eta"], "seed": exp.cap_seed, "goal": problem.goal,
          "candidates": held_out}


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view (module doc): sizes are target E values, arms the batch sizes (one
  setting each: eta from the rule, capped at choose_cap's choice), every seed training on the
  whole training split."""
  exp = config.experiment
  problem = _Problem(config)
  n, model = problem.n, problem.model
  max_lr = choose_cap(config, problem)["chosen"]
  x_all, y_all, loss_fn = problem.x_all, problem.y_all, problem.loss_fn
  sizes = {arm_name(b): b or n for b in exp.batch_sizes}
  largest = max(sizes.values())
  grads_fn = jax.jit(lambda p: per_example_grads(loss_fn, p, x_all, y_all))
  variance_fn = jax.jit(minibatch_variance, static_argnums=3)
  runs = {}

  def train(b: int, seeds) -> list[dict]:
    return problem.train(b, seeds, scaled_lr(exp.lr_rule, exp.base_lr, b, max_lr))

  def fit(arm, setting, target, seeds, subsets):
    del setting, target, subsets  # One setting (the rule's eta); every seed uses all data.
    key = (arm, tuple(seeds))
    if key not in runs:
      runs[key] = train(sizes[arm], seeds)
    return runs[key]

  def measure(arm, setting, target, seed, rec, split):
    del setting
    b = sizes[arm]
    t = first_step_at_or_below(rec["E"], target)
    steps = len(rec["E"]) - 1 if t is None else t
    record = {"examples": float(steps * b), "steps": float(steps), "epochs": steps * b / n,
              "reached": float(t is not None), "eta": rec["eta"]}
    if split == "valid":
      # The curve, thinned to about 200 points, for the plot.
      every = max(1, len(rec["E"]) // 200)
      record["curve"] = {"examples": [i * b for i in range(0, len(rec["E"]), every)],
                         "E": rec["E"][::every].tolist()}
      if b == largest and seed == seeds[0] and target == targets[0]:
        record["variance"] = variance_rows(rec["params"])
    return record

  def variance_rows(trained) -> list[dict]:
    """The measured mini-batch gradient variance vs the law, at seed seeds[0]'s init and at
    trained (the end of its largest-batch run)."""
    init = model.init(jax.random.split(jax.random.key(seeds[0]))[0])
    rows = []
    for where, params in (("init", init), ("trained", trained)):
      g_NxP = grads_fn(params)
      sigma2 = float(jnp.mean(jnp.sum(jnp.square(g_NxP - g_NxP.mean(axis=0)), axis=1)))
      for i, b in enumerate(sizes.values()):
        measured, predicted = variance_fn(g_NxP, b, jax.random.key(seeds[0] + 100 + i),
                                          exp.variance_batches)
        rows.append({"w": where, "batch_size": b, "sigma2": sigma2,
                     "measured": float(measured), "predicted": float(predicted),
                     "sigma2_over_B": sigma2 / b,
                     "ratio": float(measured / predicted) if predicted > 0 else None})
    return rows

  seeds = [config.seed + i for i in range(exp.seeds)]
  targets = tuple(float(t) for t in exp.target_losses)
  return harness.Experiment(
      "batch_size", [harness.Arm(a) for a in sizes], arm_name(exp.batch_sizes[0]), targets,
      SIZE_LABEL, seeds, fit, measure, select="examples", higher_is_better=False,
      select_label="examples to the target (one setting per batch size: eta from the rule; "
      "nothing is tuned)",
      data_note="each trains on the whole training split from its seed's init and batch order",
      family=harness.fields_of(FIELDS))  # steps and epochs restate examples per batch size


FIELDS = [("examples", "examples to target", 1.0)]
FIELDS_STEPS = [("steps", "steps to target", 1.0), ("epochs", "epochs to target", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every batch size to every target E, under the harness's protocol, and the gradient
  variance check; writes results.{md,json} and batch_size.png. Returns the harness's results."""
  validate(config)
  dataset = data_lib.load(config.data)
  n = len(dataset.train)
  if max(config.experiment.batch_sizes) > n:
    raise errors.ConfigError(
        f"config.experiment.batch_sizes={config.experiment.batch_sizes!r} has a batch larger "
        f"than the {n} training examples; use at most {n} (or 0)")
  harness.executor_of(config)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  result = harness.run_cells(config, workdir, harness.CellWriter(writer), experiment)
  writer.close()
  result["m"] = n
  result["cap"] = choose_cap(config)
  if jax.process_index() == 0:
    _write_report(workdir, config, result)
  return result


def variance_of(result) -> list[dict]:
  for arm in result["sizes"][0]["arms"].values():
    for v in arm["grid"][0]["valid"]:
      if "variance" in v:
        return v["variance"]
  return []


def _write_report(workdir, config, result: dict) -> None:
  exp = config.experiment
  m, cap = result["m"], result["cap"]
  etas = {name: arm["test"][0]["eta"] for name, arm in result["sizes"][0]["arms"].items()}
  reached = [f"{name} at E <= {e['size']:g}: {int(sum(r['reached'] for r in arm['test']))} of "
             f"{len(arm['test'])}" for e in result["sizes"] for name, arm in e["arms"].items()
             if not all(r["reached"] for r in arm["test"])]
  notes = [
      f"{config.model.name} {tuple(config.model.hidden_sizes)} {config.model.activation} on "
      f"{config.data.name} (m = {m} training examples), {config.optimizer.name}, eta by the "
      f"{exp.lr_rule!r} rule from base_lr {exp.base_lr:g} capped at {cap['chosen']:g} ("
      + ", ".join(f"{name}: {eta:.3g}" for name, eta in etas.items()) + "). The cap was "
      f"chosen before the measured runs by full-batch descent from the held-out seed "
      f"{cap['seed']} (not a reported seed): steps to E <= {cap['goal']:g} at eta "
      + ", ".join(f"{r['eta']:g}: " + ("never" if r["steps"] is None else str(r["steps"]))
                  for r in cap["candidates"])
      + " (the fewest wins; ties go to the smaller eta). The training-set "
      "E is computed after every step, so examples to the target are exact to one step (B "
      "examples): a tie between two batch sizes is a tie, not the check interval. Budget "
      f"{exp.max_epochs:g} epochs" + ("; not reached: " + "; ".join(reached) if reached
                                       else "; every run reached every target") + "."]
  variance = variance_of(result)
  extra = [harness.table(result, FIELDS_STEPS, digits=1)]
  if variance:
    extra += [
        f"Mini-batch gradient variance E||g_B - g_bar||^2 over {exp.variance_batches} random "
        f"batches (without replacement) vs sigma^2/B (m-B)/(m-1), from per-example gradients "
        f"(jax.vmap(jax.grad)), at seed {result['seeds'][0]}'s init and at the end of its "
        "largest-batch run (one seed: a check of the law, not a comparison); sigma2_over_B is "
        "the with-replacement value sigma^2/B.",
        report.markdown_table(
            ["w", "batch_size", "measured", "predicted", "sigma2_over_B", "ratio"],
            [{**v, "ratio": "exact 0" if v["ratio"] is None else v["ratio"]}
             for v in variance])]
  report.write_json(workdir / "results.json", result)
  workdir_lib.write_text(workdir / "results.md", "\n\n".join([
      "# Mini-batch size: stochasticity vs redundancy", *notes,
      harness.protocol_note(result), harness.table(result, FIELDS, digits=0), *extra]) + "\n")
  _plot(workdir / "batch_size.png", result, variance)


def _plot(path, result: dict, variance: list[dict]) -> None:
  fig = figure.Figure(figsize=(11, 4.2), layout="constrained")
  ax_ex, ax_var = fig.subplots(1, 2)
  entry = result["sizes"][0]
  for j, (name, arm) in enumerate(entry["arms"].items()):
    for i, v in enumerate(arm["grid"][0]["valid"]):
      c = v["curve"]
      # From the first step on: the init (0 examples) has no place on a log axis.
      ax_ex.plot(np.asarray(c["examples"][1:]) / result["m"], c["E"][1:], color=f"C{j}",
                 lw=0.8, label=f"{name} (eta {v['eta']:.2g})" if i == 0 else None)
  for t in (e["size"] for e in result["sizes"]):
    ax_ex.axhline(t, color="k", ls=":", lw=1)
  ax_ex.set_xscale("log")
  ax_ex.set_yscale("log")
  ax_ex.set_xlabel("epochs (examples processed / m)")
  ax_ex.set_ylabel("training-set E (nats)")
  ax_ex.set_title("progress per example processed (one line per seed; dotted: targets)")
  ax_ex.legend(fontsize=7)
  for where, marker, color in (("init", "o", "tab:blue"), ("trained", "s", "tab:red")):
    rows = [v for v in variance if v["w"] == where and v["measured"] > 0]
    if not rows:
      continue
    bs = np.array([v["batch_size"] for v in rows])
    ax_var.plot(bs, [v["measured"] for v in rows], marker, color=color,
                label=f"measured, {where} w")
    ax_var.plot(bs, [v["sigma2"] / v["batch_size"] for v in rows], "k--", lw=0.8)
    ax_var.plot(bs, [v["predicted"] for v in rows], "-", lw=1, color=color,
                label=f"sigma^2/B (m-B)/(m-1), {where} w")
  ax_var.set_xscale("log")
  ax_var.set_yscale("log")
  ax_var.set_xlabel("batch size B (examples)")
  ax_var.set_ylabel("E ||g_B - g_bar||^2")
  ax_var.set_title("mini-batch gradient variance (dashed: sigma^2/B)")
  ax_var.legend(fontsize=7)
  report.save_figure(fig, path)
