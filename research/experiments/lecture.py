"""The lecture's training procedure: gradient steps on misclassified examples, with restarts.

The slide's algorithm, for the lecture's MLP and its cost
E(w) = -(1/m) sum_examples sum_k [y_k log sigma_k + (1-y_k) log(1-sigma_k)] + (lambda/2m) sum w^2:

  1. Randomly initialise w.
  2. Forward pass for every training x; mark the misclassified ones.
  3. Backprop and take a gradient step on misclassified examples only.
  4. Keep doing 2-3 while E(w) shows a significant reduction: every `rounds_per_check` steps
     E must have fallen by at least `min_relative_decrease` of its value at the last check.
  5. Otherwise add N(0, perturbation_scale^2) noise to every parameter and restart from 2;
     after `max_restarts` restarts, a further stall ends training.

Training also stops when no training example is misclassified (converged) or after
`config.num_steps` gradient steps in all.

Choosing the examples. Each step runs the forward pass on the whole training set (the data is
small) and draws `lecture.batch_size` indices with `jax.random.choice(p=misclassified mask)`,
with replacement. The step's data term is the mean loss over those draws, an unbiased estimate
of the mean over the misclassified set, so the gradient comes from misclassified examples only.
The alternative, a uniform random batch with the correctly classified examples masked out,
gives steps whose size follows the error rate (at 1% error a batch of 32 holds 0.3
misclassified examples on average, so most late steps would be empty); sampling from the mask
gives every step `batch_size` misclassified examples whatever the error rate. The full forward
pass is the one the slide asks for ("forward pass for every x").

Restarts reset the optimizer state (momentum, moments, schedule count): the descent starts
afresh from the perturbed w. The returned params are the final ones, unless a descent that
ended before a restart reached a lower E(w) (and training did not converge): then those.

run_procedure (trainer "lecture_procedure") measures the procedure against mini-batch
training under the experiment harness; PROCEDURE_DOC says how.
"""
import math
import time
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import train
from research.experiments import harness
from research.experiments import report


# config.lecture's numeric fields (configs/lecture_algorithm.py documents them).
LECTURE_RANGES = {
    "rounds_per_check": config_lib.Range(True, 1), "batch_size": config_lib.Range(True, 1),
    "max_restarts": config_lib.Range(True, 0),
    # A fraction of E at the last check, e.g. 0.01.
    "min_relative_decrease": config_lib.Range(False, 0.0, 1.0),
    "perturbation_scale": config_lib.Range(False, 0.0, low_open=True),
}


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the config.lecture fields; fails with the field and the fix."""
  train.validate(config)
  if "lecture" not in config:
    raise errors.ConfigError(
        "config.lecture is missing; add the fields of configs/lecture_algorithm.py "
        "(rounds_per_check, min_relative_decrease, perturbation_scale, max_restarts, batch_size)")
  config_lib.check_ranges(config.lecture, LECTURE_RANGES, prefix="config.lecture")
  # Fields of the standard trainer that this one would otherwise silently ignore.
  if config.get("early_stopping_patience", 0):
    raise errors.ConfigError(
        f"config.early_stopping_patience={config.early_stopping_patience} is not used by the "
        "lecture trainer, which stops on its own E(w) checks; set it to 0")
  if "augment" in config and config.augment.ops:
    raise errors.ConfigError(
        f"config.augment.ops={tuple(config.augment.ops)!r} is not used by the lecture trainer, "
        "whose misclassified set is over the fixed training examples; set it to ()")


def sample_misclassified(key: jax.Array, wrong_N: jax.Array, batch_size: int) -> jax.Array:
  """idx_B: batch_size draws, with replacement, uniform over the indices where wrong_N is True.

  jax.random.choice searches the cumulative sum of p for r in (0, sum p], so an index with
  p = 0 is never drawn. With no True entry the result is meaningless (all zeros): callers must
  not use it then.
  """
  return jax.random.choice(key, wrong_N.shape[0], (batch_size,), replace=True,
                           p=wrong_N.astype(jnp.float32))


def perturb(params, key: jax.Array, scale: float):
  """w + N(0, scale^2) noise on every leaf (weights and biases), in absolute units."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  noisy = [w + scale * jax.random.normal(k, w.shape, w.dtype) for w, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, noisy)


def make_chunk(model: models.Model, loss_fn: Callable, optimizer,
               batch_size: int) -> Callable:
  """Returns jitted chunk(state, x_NxD, y_N, length=S) -> state after S lecture steps.

  One step: forward pass on all N examples, draw batch_size misclassified ones, one optimizer
  step on loss_fn over them. When none is misclassified the step leaves the state unchanged
  (step not incremented), so the caller sees convergence as state["step"] falling behind.
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def step(state, x_NxD, y_N):
    params = state["params"]
    key = jax.random.fold_in(state["rng"], state["step"])
    sample_key, loss_key = jax.random.split(key)
    wrong_N = losses.predictions(model.apply(params, x_NxD, train=False)) != y_N
    idx_B = sample_misclassified(sample_key, wrong_N, batch_size)
    grads, _ = grad_fn(params, x_NxD[idx_B], y_N[idx_B], loss_key)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_params = jax.tree.map(jnp.add, params, updates)
    done = ~wrong_N.any()
    keep = lambda old, new: jnp.where(done, old, new)
    return dict(state, params=jax.tree.map(keep, params, new_params),
                opt_state=jax.tree.map(keep, state["opt_state"], opt_state),
                step=state["step"] + jnp.where(done, 0, 1).astype(state["step"].dtype))

  def chunk(state, x_NxD, y_N, length):
    state, _ = jax.lax.scan(lambda s, _: (step(s, x_NxD, y_N), None), state, length=length)
    return state

  return jax.jit(chunk, static_argnames="length", donate_argnums=0)


def descend(lec, chunk: Callable, measure: Callable, perturb_fn: Callable, optimizer, state: dict,
            restart_key: jax.Array, x_all, y_all, num_steps: int,
            on_check: Callable | None = None, on_restart: Callable | None = None) -> dict:
  """The slide's loop (module doc, steps 2-5) from `state` for at most num_steps gradient
  steps: chunks of lec.rounds_per_check steps (chunk = make_chunk's), E(w) checked after each
  (measure(params, step) -> {"loss", "accuracy", "misclassified", ...}); a stall perturbs w
  (perturb_fn(params, key) -> (params, |dw|)) and resets the optimizer, at most
  lec.max_restarts times. on_check(step, params, train_metrics, restarts) and
  on_restart(step, restart, before, after, |dw|) report progress. Returns {"state", "step",
  "restarts", "converged", "kept_earlier"}: the final state, or, when a descent that ended
  before a restart reached a lower E(w) (and training did not converge), that one's params."""
  step, restarts, converged = 0, 0, False
  current = measure(state["params"], step)
  E_ref = current["loss"]  # E at the last check (or just after the last perturbation).
  if on_check:
    on_check(step, state["params"], current, restarts)
  best = None  # (E, params) of the best descent ended by a restart.
  while step < num_steps:
    length = min(lec.rounds_per_check, num_steps - step)
    state = chunk(state, x_all, y_all, length=length)
    new_step = int(state["step"])  # Host sync: only at checks.
    converged = new_step < step + length
    step = new_step
    current = measure(state["params"], step)
    if on_check:
      on_check(step, state["params"], current, restarts)
    if converged or current["misclassified"] == 0:
      converged = True
      logging.info("step %6d | converged: no training example is misclassified", step)
      break
    if current["loss"] <= E_ref * (1 - lec.min_relative_decrease):
      E_ref = current["loss"]
      continue
    # Stall: E fell by less than min_relative_decrease since the last check.
    if best is None or current["loss"] < best[0]:
      # A host copy: the next chunk donates (and so invalidates) state's buffers.
      best = (current["loss"], jax.device_get(state["params"]))
    if restarts == lec.max_restarts:
      logging.info("step %6d | E stalled at %.4f after %d restarts: stopping", step,
                   current["loss"], restarts)
      break
    restarts += 1
    new, delta = perturb_fn(state["params"], jax.random.fold_in(restart_key, restarts))
    state = dict(state, params=new, opt_state=optimizer.init(new))
    after = measure(new, step)
    if on_restart:
      on_restart(step, restarts, current, after, float(delta))
    E_ref = after["loss"]
  kept = not converged and best is not None and best[0] < current["loss"]
  if kept:
    logging.info("keeping the params of an earlier descent: E %.4f < final E %.4f", best[0],
                 current["loss"])
    state = dict(state, params=jax.device_put(best[1]))
  return {"state": state, "step": step, "restarts": restarts, "converged": converged,
          "kept_earlier": kept}


@report.runner
def train_lecture(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains config's model with the lecture's procedure, logging to workdir.

  Returns {"state": train state, "valid": {"loss", "accuracy"}, "test": ..., "wall_time": s},
  like train.train_and_evaluate. metrics.jsonl gets "train" and "valid" records at every
  check, one "restart" record per restart and a final "test" record.
  """
  t_start = time.time()
  validate(config)
  lec = config.lecture
  dataset = data_lib.load(config.data)
  n = len(dataset.train)
  if dataset.train.y.ndim != 1:
    raise errors.DataError(
        f"{dataset.name} has labels of shape {dataset.train.y.shape[1:]} per example; the "
        "lecture trainer needs one class label per example (use config.trainer='standard')")
  k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  writer = metrics_lib.MetricWriter(workdir)

  # Same init as train.train_and_evaluate; the rest of the seed's key is split between the
  # per-step sampling (fold_in step) and the restarts' noise (fold_in restart number).
  state = kernel.init_state(model, optimizer, jax.random.key(config.seed))
  sample_key, restart_key = jax.random.split(state["rng"])
  state["rng"] = sample_key
  logging.info("%s: %d train examples; lecture algorithm, %d misclassified per step, check "
               "every %d steps, at most %d restarts", dataset.name, n, lec.batch_size,
               lec.rounds_per_check, lec.max_restarts)

  # The lecture's m is the number of training examples.
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
  chunk = make_chunk(model, loss_fn, optimizer, lec.batch_size)

  @jax.jit
  def measure_fn(params, x_NxD, y_N):
    # loss_fn on all m training examples is E(w) itself (the lecture's MLP ignores train/rng).
    E, aux = loss_fn(params, x_NxD, y_N, None)
    return E, aux["data_loss"], aux["accuracy"]

  eval_fn = kernel.make_eval_fn(model, config.loss.output, k)
  eval_bs = kernel.eval_batch_size(config, dataset)  # One size for valid and test: one compile.

  @jax.jit
  def perturb_fn(params, key):
    new = perturb(params, key, lec.perturbation_scale)
    return new, optax.tree_utils.tree_norm(jax.tree.map(jnp.subtract, new, params))

  x_all, y_all = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)

  def measure(params, step) -> dict:
    """E(w) on the whole training set (loss_fn's data term + penalties) and its accuracy."""
    E, data_loss, accuracy = (float(v) for v in measure_fn(params, x_all, y_all))
    if not math.isfinite(E):
      raise errors.NonFiniteLossError(
          f"E(w) became NaN/inf by step {step}; lower config.optimizer.learning_rate or "
          "config.lecture.perturbation_scale")
    return {"loss": E, "data_loss": data_loss, "accuracy": accuracy,
            "misclassified": round(n * (1 - accuracy))}

  def log_check(step, params, train_metrics, restarts):
    valid = kernel.evaluate(eval_fn, params, dataset.valid, eval_bs)
    writer.write({"step": step, "split": "train", **train_metrics, "restarts": restarts,
                  "elapsed": time.time() - t_start})
    writer.write({"step": step, "split": "valid", **valid})
    logging.info("step %6d | E %.4f | train acc %.4f (%d wrong) | valid acc %.4f", step,
                 train_metrics["loss"], train_metrics["accuracy"],
                 train_metrics["misclassified"], valid["accuracy"])
    return valid

  def on_check(step, params, train_metrics, restarts):
    nonlocal valid
    valid = log_check(step, params, train_metrics, restarts)

  def on_restart(step, restart, before, after, delta):
    writer.write({"step": step, "split": "restart", "restart": restart,
                  "E_before": before["loss"], "E_after": after["loss"],
                  "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
                  "perturbation_norm": delta})
    logging.info("step %6d | restart %d/%d: E %.4f -> %.4f after perturbing w (|dw| %.3f)",
                 step, restart, lec.max_restarts, before["loss"], after["loss"], delta)

  valid = None
  out = descend(lec, chunk, measure, perturb_fn, optimizer, state, restart_key, x_all, y_all,
                config.num_steps, on_check=on_check, on_restart=on_restart)
  state, step, restarts, converged = out["state"], out["step"], out["restarts"], out["converged"]
  if out["kept_earlier"]:
    valid = kernel.evaluate(eval_fn, state["params"], dataset.valid, eval_bs)
  test = kernel.evaluate(eval_fn, state["params"], dataset.test, eval_bs)
  wall = time.time() - t_start
  writer.write({"step": step, "split": "test", **test, "restarts": restarts,
                "converged": converged, "wall_time": wall})
  logging.info("done: test accuracy %.4f, test loss %.4f, %d restarts, converged %s, wall "
               "time %.1f s (workdir %s)", test["accuracy"], test["loss"], restarts, converged,
               wall, workdir)
  return {"state": state, "valid": valid, "test": test, "wall_time": wall}


# ------------------------------------------------------------- the procedure as an experiment

PROCEDURE_DOC = """The slide's training procedure against plain mini-batch training, at equal
examples seen.

The lecture's algorithm (this module) changes two things about gradient
descent on E(w): which examples a step reads (misclassified ones only) and what happens when
E(w) stalls (a random perturbation of w and a fresh descent). The arms (experiment.methods)
separate the two:

  minibatch      uniform random mini-batches of lecture.batch_size examples: the baseline
  misclassified  every step on lecture.batch_size draws from the misclassified examples only
                 (the slide's steps 2-3), E(w) never checked: no restart, the whole budget
  lecture        the slide's whole procedure: misclassified steps, and at a stall (E fell by
                 less than lecture.min_relative_decrease over lecture.rounds_per_check steps)
                 N(0, lecture.perturbation_scale^2) noise on w and a fresh descent, at most
                 lecture.max_restarts times (lecture.descend, the code `trainer="lecture"` runs)

The harness runs the protocol. Its sizes are budgets of gradient steps (experiment.budgets):
every step backpropagates lecture.batch_size examples, so the arms see equally many examples
in their gradients (the misclassified arms also run the forward pass over the whole training
set that the slide asks for, and stop early when no training example is misclassified). Every
seed trains on the whole training split from the same init for every arm (kernel.init_state of
the seed's key). Tuning, with the same budget in kind: every arm chooses its step size eta
from experiment.learning_rates by mean validation accuracy. Measured on the test split:
accuracy and the cross-entropy, and, for the record, the gradient steps taken and the restarts.
"""

PROCEDURE_METHODS = ("minibatch", "misclassified", "lecture")
# config.experiment of the procedure experiment
RANGES = {"seeds": config_lib.Range(True, 2), "max_extensions": config_lib.Range(True, 0)}
PROCEDURE_SIZE_LABEL = "gradient steps (budget)"


def validate_procedure(config: ml_collections.ConfigDict) -> None:
  """validate plus the procedure experiment's config.experiment fields."""
  exp = report.check_experiment(config, "configs/exp_lecture_procedure.py", RANGES,
                                PROCEDURE_METHODS)
  validate(config)
  errors.check_ints("experiment.budgets", exp.budgets, " (gradient steps), e.g. (300, 3000)")
  if not tuple(exp.learning_rates):
    raise errors.ConfigError("config.experiment.learning_rates is empty; give every arm at "
                             "least one step size to choose from")
  for lr in exp.learning_rates:
    errors.check_positive("experiment.learning_rates[]", lr)
  if config.optimizer.name != "sgd":
    raise errors.ConfigError(f"config.optimizer.name={config.optimizer.name!r}: the slide's "
                             "procedure takes plain gradient steps; set it to 'sgd'")


def procedure_experiment(config: ml_collections.ConfigDict,
                         writer=None) -> harness.Experiment:
  """The harness's view of the procedure experiment (PROCEDURE_DOC): sizes are step budgets."""
  exp, lec = config.experiment, config.lecture
  dataset = data_lib.load(config.data)
  n = len(dataset.train)
  k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
  eval_fn = kernel.make_eval_fn(model, config.loss.output, k)
  eval_bs = kernel.eval_batch_size(config, dataset)
  splits = {"valid": dataset.valid, "test": dataset.test}
  x_all, y_all = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)
  train_measure = jax.jit(lambda p: loss_fn(p, x_all, y_all, None))
  # The misclassified arm: the lecture's loop with a stall test that never fires.
  never_stalls = types.SimpleNamespace(**{**lec.to_dict(), "max_restarts": 0,
                                          "min_relative_decrease": -math.inf})

  def measure_train(params, step):
    E, aux = train_measure(params)
    E = float(E)
    if not math.isfinite(E):
      raise errors.NonFiniteLossError(
          f"E(w) became NaN/inf by step {step}; lower the step sizes of "
          "config.experiment.learning_rates")
    accuracy = float(aux["accuracy"])
    return {"loss": E, "accuracy": accuracy, "misclassified": round(n * (1 - accuracy))}

  def fit(method, setting, budget, seeds, subsets):
    del subsets  # Every seed trains on the whole training split.
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": setting["learning_rate"]}), budget)
    if method == "minibatch":
      nets = harness.train_seeds(
          model, loss_fn, optimizer, budget, lec.batch_size, [dataset.train] * len(seeds),
          seeds, mode=exp.seed_mode, chunk_steps=lec.rounds_per_check,
          what=f"minibatch at {budget} steps", writer=writer,
          tag={"budget": budget, "arm": method, **setting})
      return [{"net": p, "steps": np.int32(budget), "restarts": np.int32(0)} for p in nets]
    chunk = make_chunk(model, loss_fn, optimizer, lec.batch_size)
    perturb_fn = jax.jit(lambda p, key: (lambda new: (new, optax.tree_utils.tree_norm(
        jax.tree.map(jnp.subtract, new, p))))(perturb(p, key, lec.perturbation_scale)))
    out = []
    for seed in seeds:
      # As train_lecture: the init of kernel.init_state, its rng split between the per-step
      # sampling and the restarts' noise.
      state = kernel.init_state(model, optimizer, jax.random.key(seed))
      sample_key, restart_key = jax.random.split(state["rng"])
      state["rng"] = sample_key

      def on_check(step, params, train_metrics, restarts, seed=seed):
        if writer is not None:
          writer.write({"step": step, "split": "train", "budget": budget, "arm": method,
                        **setting, "seed": seed, "restarts": restarts,
                        **{f: train_metrics[f] for f in ("loss", "accuracy")}})

      result = descend(lec if method == "lecture" else never_stalls, chunk,
                               measure_train, perturb_fn, optimizer, state, restart_key, x_all,
                               y_all, budget, on_check=on_check)
      out.append({"net": result["state"]["params"], "steps": np.int32(result["step"]),
                  "restarts": np.int32(result["restarts"])})
    return out

  def measure(method, setting, budget, seed, params, split):
    out = kernel.evaluate(eval_fn, params["net"], splits[split], eval_bs,
                          per_example=split == "test")
    record = harness.evaluation(out)
    if split == "test":
      record.update(steps=float(params["steps"]), restarts=float(params["restarts"]))
    return record

  arms = [harness.Arm(m, {"learning_rate": tuple(exp.learning_rates)}) for m in exp.methods]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "lecture_procedure", arms, exp.baseline, tuple(exp.budgets), PROCEDURE_SIZE_LABEL, seeds, fit,
      measure, select="accuracy", select_label="validation accuracy",
      data_note="each trains on the whole training split from the seed's init: no subset to "
                "draw", family=harness.fields_of(PROCEDURE_FIELDS))


PROCEDURE_FIELDS = [("accuracy", "test acc %", 100.0), ("loss", "test cross-entropy", 1.0, 3)]
PROCEDURE_DETAIL_FIELDS = [("steps", "gradient steps taken", 1.0, 0),
                 ("restarts", "restarts", 1.0, 1)]


@report.runner
def run_procedure(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every arm at every budget, under the harness's protocol; writes results.{md,json} and
  lecture_procedure.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate_procedure, procedure_experiment,
                                 write_procedure)


def procedure_notes(config) -> list[str]:
  exp, lec = config.experiment, config.lecture
  return [
      f"{config.data.name}: every seed trains on the whole training split; MLP "
      f"{tuple(config.model.hidden_sizes)} {config.model.activation} with "
      f"{config.loss.output} outputs, E = cross-entropy + (lambda/2m) sum w^2 (lambda = "
      f"{config.loss.l2:g}); plain gradient steps on {lec.batch_size} examples each (uniform "
      f"for minibatch, drawn from the misclassified ones for misclassified and lecture); "
      f"lecture checks E(w) every {lec.rounds_per_check} steps and perturbs w by "
      f"N(0, {lec.perturbation_scale:g}^2) when it fell by less than "
      f"{100 * lec.min_relative_decrease:g}%, at most {lec.max_restarts} times. Every arm's "
      f"step size eta chosen on validation accuracy from {tuple(exp.learning_rates)}."]


def write_procedure(workdir, config, result) -> None:
  """results.{md,json} and lecture_procedure.png from the harness's results."""
  harness.write(workdir, result, "The slide's training procedure vs mini-batch training",
                PROCEDURE_FIELDS, procedure_notes(config),
                extra=["Gradient steps taken (the misclassified arms stop when every training "
                       "example is classified correctly) and restarts:",
                       harness.table(result, PROCEDURE_DETAIL_FIELDS)])
  harness.plot(workdir / "lecture_procedure.png", result, "accuracy", "test accuracy (%)",
               "The slide's procedure vs mini-batch training, equal examples seen")
