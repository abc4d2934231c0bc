"""The slide's training procedure against plain mini-batch training, at equal examples seen.

The lecture's algorithm (research/experiments/lecture.py) changes two things about gradient
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
import math
import types
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import models
from research import optim
from research.experiments import harness
from research.experiments import lecture
from research.experiments import report

METHODS = ("minibatch", "misclassified", "lecture")
RANGES = {"seeds": config_lib.Range(True, 2)}
LECTURE_RANGES = lecture.LECTURE_RANGES  # config.lecture, checked by lecture.validate
SIZE_LABEL = "gradient steps (budget)"


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_lecture_procedure.py", RANGES, METHODS)
  lecture.validate(config)
  errors.check_choice("experiment.baseline", exp.baseline, tuple(exp.methods))
  errors.check_ints("experiment.budgets", exp.budgets, " (gradient steps), e.g. (300, 3000)")
  if not tuple(exp.learning_rates):
    raise errors.ConfigError("config.experiment.learning_rates is empty; give every arm at "
                             "least one step size to choose from")
  for lr in exp.learning_rates:
    errors.check_positive("experiment.learning_rates[]", lr)
  if config.optimizer.name != "sgd":
    raise errors.ConfigError(f"config.optimizer.name={config.optimizer.name!r}: the slide's "
                             "procedure takes plain gradient steps; set it to 'sgd'")


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc): sizes are step budgets."""
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
    chunk = lecture.make_chunk(model, loss_fn, optimizer, lec.batch_size)
    perturb = jax.jit(lambda p, key: (lambda new: (new, optax.tree_utils.tree_norm(
        jax.tree.map(jnp.subtract, new, p))))(lecture.perturb(p, key, lec.perturbation_scale)))
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

      result = lecture.descend(lec if method == "lecture" else never_stalls, chunk,
                               measure_train, perturb, optimizer, state, restart_key, x_all,
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
      "lecture_procedure", arms, exp.baseline, tuple(exp.budgets), SIZE_LABEL, seeds, fit,
      measure, select="accuracy", select_label="validation accuracy",
      data_note="each trains on the whole training split from the seed's init: no subset to "
                "draw", family=harness.fields_of(FIELDS))


FIELDS = [("accuracy", "test acc %", 100.0), ("loss", "test cross-entropy", 1.0, 3)]
DETAIL_FIELDS = [("steps", "gradient steps taken", 1.0, 0),
                 ("restarts", "restarts", 1.0, 1)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every arm at every budget, under the harness's protocol; writes results.{md,json} and
  lecture_procedure.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config) -> list[str]:
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


def write(workdir, config, result) -> None:
  """results.{md,json} and lecture_procedure.png from the harness's results."""
  harness.write(workdir, result, "The slide's training procedure vs mini-batch training",
                FIELDS, notes(config),
                extra=["Gradient steps taken (the misclassified arms stop when every training "
                       "example is classified correctly) and restarts:",
                       harness.table(result, DETAIL_FIELDS)])
  harness.plot(workdir / "lecture_procedure.png", result, "accuracy", "test accuracy (%)",
               "The slide's procedure vs mini-batch training, equal examples seen")
