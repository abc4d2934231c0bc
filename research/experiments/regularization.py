"""Regularization on a setting that overfits: each regularizer's effect on the train-test gap.

A wide MLP trained on a few labelled examples per class fits them perfectly and generalises
worse. Every method trains the same model from the same (regularizer-free) base config, with
exactly one regularizer turned on, tuned on the validation split equally in kind: every method
chooses its step size from experiment.learning_rates and, but for none, its one knob from
experiment.*'s candidates (the same number for every method); a choice at a grid's edge grows
that grid (harness.extend_grid, up to experiment.max_extensions steps):

  none            the base config, the learning rate alone: the baseline
  l2              E + (lambda/2m) sum w^2, lambda from l2_strengths (m: the subset's size)
  l1              E + (lambda_1/m) sum |w|, lambda_1 from l1_strengths
  dropout         inverted dropout of p (dropout_rates) on every hidden unit
  early_stopping  after every eval_every steps the validation loss; training stops after
                  `patience` (patiences) evals without a new best and keeps the best params
  augment         experiment.augment_ops (images: the MLP flattens them) with the noise's std
                  from noise_stds
  bagging         k members (bagging_members) on k bootstrap resamples of the subset, all
                  members of all seeds trained by train_seeds; predicts with the average of
                  the members' probabilities

The harness (research/experiments/harness.py) runs the protocol: sizes are labels per class
(stratified subsets, redrawn per seed); the knob is chosen by mean validation accuracy; the
test split is measured once for the chosen setting: test accuracy, the train-test gap (train
accuracy on the seed's own subset, in eval mode), the test data loss (cross-entropy, no
penalty) and sum w^2 (bagging: the mean member's, and its mean member's test accuracy).
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import augment
from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import models
from research import optim
from research.experiments import harness
from research.experiments import report

METHODS = ("none", "l2", "l1", "dropout", "early_stopping", "augment", "bagging")
# method -> (its knob in a setting, the config.experiment field of its candidates); every
# method (none alone) also tunes the learning rate over experiment.learning_rates.
KNOBS = {"l2": ("lambda", "l2_strengths"),
         "l1": ("lambda_1", "l1_strengths"), "dropout": ("p", "dropout_rates"),
         "early_stopping": ("patience", "patiences"), "augment": ("noise_std", "noise_stds"),
         "bagging": ("members", "bagging_members")}
# The interval each knob's grid may be extended within (harness.Arm's bounds).
BOUNDS = {"p": "(0, 1)", "patience": "[1, inf)", "members": "[2, inf)"}
RANGES = {"seeds": config_lib.Range(True, 2), "max_extensions": config_lib.Range(True, 0)}


# ------------------------------------------------------------------------------------ config


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the config.experiment fields; fails with the field and the fix."""
  exp = report.check_experiment(config, "configs/exp_regularization.py", RANGES, METHODS)
  sizes = errors.check_ints("experiment.labels_per_class", exp.labels_per_class,
                            " (labelled training examples per class)")
  errors.check_batch_size(config.batch_size, 10 * min(sizes),
                          "training examples of the smallest size")
  for field in ("patiences", "bagging_members"):
    errors.check_ints(f"experiment.{field}", exp[field])
  for field in ("learning_rates", "l2_strengths", "l1_strengths", "noise_stds"):
    if not tuple(exp[field]):
      raise errors.ConfigError(f"config.experiment.{field} is empty; give its method at least "
                               "one setting to choose from")
    for value in exp[field]:
      errors.check_positive(f"experiment.{field}[]", value)
  rates = tuple(exp.dropout_rates)
  if not rates or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1
                      for p in rates):
    raise errors.ConfigError(f"config.experiment.dropout_rates={rates!r} must be dropout "
                             "probabilities in (0, 1), e.g. (0.2, 0.5, 0.8)")
  if config.grad != "autodiff":
    raise errors.ConfigError(f"config.grad={config.grad!r}: the regularization experiment "
                             "trains with jax.value_and_grad; set config.grad='autodiff'")
  # "none" must really be none: each method switches on exactly one regularizer.
  base_on = {"loss.l2": config.loss.l2, "loss.l1": config.loss.l1,
             "model.dropout": config.model.get("dropout", 0.0),
             "early_stopping_patience": config.early_stopping_patience,
             "augment.ops": tuple(config.augment.ops)}
  for field, value in base_on.items():
    if value:
      raise errors.ConfigError(
          f"config.{field}={value!r} must be off in the regularization experiment (each "
          "method turns on one regularizer); set its candidates in config.experiment instead")


# ------------------------------------------------------------------------ mixture predictive


def make_ensemble_eval_fn(model: models.Model, output: str) -> Callable:
  """Returns jitted eval(params_M, x_B..., labels_B, mask_B) for kernel.evaluate: the data loss
  and correct count of the M stacked members' averaged predictive (see mixture_nll), summed
  over the unmasked examples."""

  def eval_batch(params_M, x, labels_B, mask_B):
    logits_MxBxK = jax.vmap(lambda p: model.apply(p, x, train=False))(params_M)
    nll_B, pred_B = losses.mixture_nll(logits_MxBxK, labels_B, output)
    hit_B = jnp.where(mask_B, pred_B == labels_B, 0)
    return {"loss_sum": jnp.where(mask_B, nll_B, 0).sum(), "correct": hit_B.sum(),
            "hit_B": hit_B}

  return jax.jit(eval_batch)


# ---------------------------------------------------------------------------------- training


def bootstrap_indices(seed: int, n: int, k: int) -> np.ndarray:
  """boot_kxn: k resamples of range(n) with replacement, member j's a function of (seed, j)."""
  return np.stack([np.random.default_rng([seed, j]).integers(0, n, n) for j in range(k)]
                  ).astype(np.int32)


def member_seed(seed: int, j: int) -> int:
  """The training seed (init, batch order) of bagging member j of a seed's ensemble."""
  return seed + 1000 * (j + 1)


def fit_early_stopping(model: models.Model, loss_fn: Callable, optimizer, num_steps: int,
                       batch_size: int, eval_every: int, patience: int,
                       subsets, seeds, valid: data_lib.Split, eval_fn: Callable,
                       eval_batch_size: int, what: str = "early_stopping") -> list[dict]:
  """Per seed, trains from kernel.init_state(key(seed)) in the library's batch order (as
  harness.train_seeds does) with a validation loss after every eval_every steps; stops after
  `patience` evals without a new best. Returns per seed {"params": the best eval's params,
  "best_step", "stop_step", "valid_losses": [(step, loss), ...]}: harness.train_seeds with
  its on_chunk hook measuring the validation loss."""
  track = {seed: {"best": np.inf, "best_step": 0, "params": None, "since": 0, "stop_step": 0,
                  "valid_losses": []} for seed in seeds}

  def on_chunk(seed, step, params, train):
    del train
    t = track[seed]
    loss = kernel.evaluate(eval_fn, params, valid, eval_batch_size)["loss"]
    t["valid_losses"].append((step, loss))
    t["stop_step"] = step
    if loss < t["best"]:
      t["best"], t["best_step"], t["since"] = loss, step, 0
      t["params"] = jax.tree.map(jnp.copy, params)  # The next chunk donates the state.
    else:
      t["since"] += 1
    return t["since"] >= patience

  harness.train_seeds(model, loss_fn, optimizer, num_steps, batch_size, subsets, seeds,
                      chunk_steps=eval_every, what=what, on_chunk=on_chunk)
  return [{"params": t["params"], "best_step": t["best_step"], "stop_step": t["stop_step"],
           "valid_losses": t["valid_losses"]} for t in (track[s] for s in seeds)]


# ------------------------------------------------------------------------------------ runner


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc): sizes are labels per class."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  if "augment" in exp.methods and dataset.train.x.ndim != 4:
    raise errors.ConfigError(
        f"the augment method needs images x_NxHxWxC but {dataset.name} gives shape "
        f"{dataset.input_shape}; set config.data.image_size=8 (digits) or drop 'augment' from "
        "config.experiment.methods")
  if "early_stopping" in exp.methods and not len(dataset.valid):
    raise errors.ConfigError("early stopping needs a validation split; set "
                             "config.data.valid_fraction > 0")
  k = losses.num_outputs(config, dataset)
  # Refuse a size no class can hold now, before any training.
  harness.stratified_indices(dataset.train.y, max(exp.labels_per_class), config.seed, k)
  base = models.build(config.model, dataset.input_shape, k)
  output, bs, b = config.loss.output, config.eval_batch_size, config.batch_size
  eval_fn = kernel.make_eval_fn(base, output, k)  # Eval mode: no dropout, any p.
  ensemble_eval = make_ensemble_eval_fn(base, output)
  draw = harness.labelled_draw(dataset.train, k)
  splits = {"valid": dataset.valid, "test": dataset.test}

  def fit(method, setting, per_class, seeds, subsets):
    knob = setting.get(KNOBS[method][0]) if method in KNOBS else None
    lr = setting["learning_rate"]
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": lr}), config.num_steps)
    model = base
    if method == "dropout":
      model = models.build(ml_collections.ConfigDict(dict(config.model.to_dict(), dropout=knob)),
                           dataset.input_shape, k)
    m = len(subsets[0])
    loss_fn = losses.make_loss_fn(model, output, knob if method == "l2" else 0.0, m, k,
                                  knob if method == "l1" else 0.0)
    what = f"regularization {method} at {per_class} labels per class"
    tag = {"labels_per_class": per_class, "arm": method, **setting}
    if method == "early_stopping":
      fits = fit_early_stopping(model, loss_fn, optimizer, config.num_steps, b,
                                config.eval_every, knob, subsets, seeds, dataset.valid,
                                eval_fn, bs, what)
      # The steps travel with the params (the harness stores both), so a resumed run has them.
      return [{"net": f["params"], "best_step": f["best_step"], "stop_step": f["stop_step"]}
              for f in fits]
    augment_fn = None
    if method == "augment":
      augment_fn = augment.make_augment(ml_collections.ConfigDict(dict(
          config.augment.to_dict(), ops=tuple(exp.augment_ops), noise_std=knob)))
    if method != "bagging":
      return harness.train_seeds(model, loss_fn, optimizer, config.num_steps, b, subsets,
                                 seeds, mode=exp.seed_mode, augment_fn=augment_fn,
                                 chunk_steps=config.eval_every, what=what, writer=writer,
                                 tag=tag)
    # Bagging: every member of every seed as one replica of train_seeds, on its resample.
    resamples, members = [], []
    for seed, subset in zip(seeds, subsets):
      for j, boot in enumerate(bootstrap_indices(seed, m, knob)):
        resamples.append(data_lib.Split(subset.x[boot], subset.y[boot]))
        members.append(member_seed(seed, j))
    params = harness.train_seeds(model, loss_fn, optimizer, config.num_steps, b, resamples,
                                 members, mode=exp.seed_mode, chunk_steps=config.eval_every,
                                 what=what, writer=writer, tag=tag)
    return [jax.tree.map(lambda *a: jnp.stack(a), *params[i * knob:(i + 1) * knob])
            for i in range(len(seeds))]

  def measure(method, setting, per_class, seed, params, split):
    steps = {}
    if method == "early_stopping":
      steps = {"best_step": params["best_step"], "stop_step": params["stop_step"]}
      params = params["net"]
    if method == "bagging":
      ev = lambda p, s, per_example=False: kernel.evaluate(ensemble_eval, p, s, bs,
                                                           per_example=per_example)
    else:
      ev = lambda p, s, per_example=False: kernel.evaluate(eval_fn, p, s, bs,
                                                           per_example=per_example)
    record = harness.evaluation(ev(params, splits[split], split == "test"))
    if split != "test":
      return record
    record["train_accuracy"] = ev(params, draw(per_class, seed))["accuracy"]
    record["gap"] = record["train_accuracy"] - record["accuracy"]
    record["weight_norm_sq"] = float(losses.l2_penalty(params, 2.0, 1))
    if method == "bagging":
      members = setting["members"]
      record["weight_norm_sq"] /= members
      each = [kernel.evaluate(eval_fn, jax.tree.map(lambda a, j=j: a[j], params), splits[split],
                              bs) for j in range(members)]
      record["member_accuracy"] = float(np.mean([e["accuracy"] for e in each]))
      record["member_loss"] = float(np.mean([e["loss"] for e in each]))
    record.update(steps)
    return record

  lrs = {"learning_rate": tuple(exp.learning_rates)}
  arms = [harness.Arm(m, {**lrs, KNOBS[m][0]: tuple(exp[KNOBS[m][1]])} if m in KNOBS else lrs,
                      bounds={k: v for k, v in BOUNDS.items() if m in KNOBS and KNOBS[m][0] == k})
          for m in exp.methods]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "regularization", arms, exp.baseline, tuple(exp.labels_per_class), "labels per class",
      seeds, fit, measure, select="accuracy", draw=draw,
      family=harness.fields_of(FIELDS, LOSS_FIELDS, NORM_FIELDS))


FIELDS = [("accuracy", "test acc %", 100.0), ("gap", "train-test gap (points)", 100.0)]
LOSS_FIELDS = [("loss", "test loss", 1.0)]
NORM_FIELDS = [("weight_norm_sq", "sum w^2", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every method at every number of labels per class, under the harness's protocol; writes
  results.{md,json} and regularization.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config) -> list[str]:
  exp = config.experiment
  knobs = "; ".join(f"{m} {KNOBS[m][0]} from {tuple(exp[KNOBS[m][1]])}" for m in exp.methods
                    if m in KNOBS)
  return [
      f"{config.data.name}: labels per class drawn from the training split; "
      f"{config.model.name} {tuple(config.model.get('hidden_sizes', ()))} "
      f"{config.model.get('activation', '')}, {config.num_steps} steps of "
      f"{config.optimizer.name}, batch {config.batch_size}; augment: "
      f"{'+'.join(exp.augment_ops)}; early stopping evaluates every {config.eval_every} steps. "
      f"Every method's learning rate chosen by validation accuracy from "
      f"{tuple(exp.learning_rates)}, jointly with its one knob: {knobs}. The gap is train "
      f"accuracy (on the seed's own subset) minus test accuracy; losses are the data term "
      "only."]


def extra_notes(result) -> str:
  """The bagged ensemble against its own mean member, paired over seeds (one Holm family: both
  fields at every size); the steps early stopping kept."""
  lines, bagged = [], []
  for entry in result["sizes"]:
    arm = entry["arms"].get("early_stopping")
    if arm is not None:
      lines.append(
          f"At {entry['size']} labels per class, early stopping (patience "
          f"{arm['chosen']['patience']}) kept the params of steps "
          f"{', '.join(str(r['best_step']) for r in arm['test'])} and stopped at "
          f"{', '.join(str(r['stop_step']) for r in arm['test'])}.")
    arm = entry["arms"].get("bagging")
    if arm is not None:
      get = lambda f, arm=arm: [r[f] for r in arm["test"]]
      bagged.append((entry["size"], arm["chosen"]["members"],
                     harness.paired(get("accuracy"), get("member_accuracy")),
                     harness.paired(get("loss"), get("member_loss"))))
  diffs = harness.holm_family([d for _, _, *pair in bagged for d in pair])
  for i, (size, members, _, _) in enumerate(bagged):
    lines.append(
        f"At {size} labels per class, bagging's ensemble of {members} minus its mean member "
        f"(95% t-interval over seeds; Holm within these {len(diffs)} comparisons): test "
        f"accuracy in points {harness.fmt_paired(diffs[2 * i])}; test loss "
        f"{harness.fmt_paired(diffs[2 * i + 1], 1.0, 3)}.")
  return " ".join(lines)


def write(workdir, config, result) -> None:
  """results.{md,json} and regularization.png from the harness's results."""
  extra = ["Test data loss (cross-entropy, no penalty):",
           harness.table(result, LOSS_FIELDS, digits=3),
           "sum w^2 (bagging: its mean member's):", harness.table(result, NORM_FIELDS, digits=0)]
  note = extra_notes(result)
  harness.write(workdir, result, "Regularization on a setting that overfits", FIELDS,
                notes(config), extra=extra + ([note] if note else []))
  plot(workdir / "regularization.png", result, "accuracy", "test accuracy (%)",
       "Regularizers on a few labelled examples per class")


def plot(path, result: dict, field: str, ylabel: str, title: str, scale: float = 100.0) -> None:
  """harness.plot over several sizes; at one size (where its lines would stack on one x),
  each method's mean with its 95% t-interval side by side."""
  if len(result["sizes"]) > 1:
    harness.plot(path, result, field, ylabel, title, scale)
    return
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  entry = result["sizes"][0]
  names = list(entry["arms"])
  fig = Figure(figsize=(1.1 * len(names) + 3, 4.4), layout="constrained")
  ax = fig.subplots()
  for i, name in enumerate(names):
    values = [scale * r[field] for r in entry["arms"][name]["test"]]
    mean, (lo, hi) = float(np.mean(values)), harness.t_interval(values)
    ax.errorbar([i], [mean], yerr=[[mean - lo], [hi - mean]], fmt="o", capsize=4,
                color=f"C{i}")
  ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
  ax.set_xlabel(f"method (mean and 95% CI over n={len(result['seeds'])} seeds)")
  ax.set_ylabel(ylabel)
  ax.grid(axis="y", alpha=0.3)
  ax.set_title(f"{title}\n{entry['size']} {result['size_label']}")
  report.save_figure(fig, path)
