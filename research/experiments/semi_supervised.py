"""Semi-supervised learning: few labels plus every unlabelled input.

experiment.labels_per_class labelled digits per class (stratified, redrawn per seed: the
harness); the unlabelled set is every input of the training split (the labelled ones included)
with its label replaced by -1, so no method can read it. Each step reads b_l labelled and b_u
unlabelled rows (variants.two_source_batches). The MLP (config.model) and every other setting
are shared; the methods:

  labels_only       CE on the labelled rows (no augmentation)
  labels_augment    CE on the labelled rows, augmented (config.augment's ops): the baseline
                    every method that uses the unlabelled inputs must beat, since they augment
  pseudo_label      Lee (2013): labels_augment + lambda_u(t) mean_u CE(p(u), argmax_k p_k(u)),
                    the network's own prediction on each unlabelled input as its target (no
                    threshold; targets carry no gradient), lambda_u(t) ramped linearly from 0
                    at ramp_start to lambda_u at ramp_end (fractions of the steps)
  fixmatch_style    labels_augment + lambda_u mean_u 1[max_k p_k(u) >= tau] CE(p(aug(u)),
                    argmax_k p_k(u)): confident predictions on the clean inputs become targets
                    for their augmented copies (FixMatch's rule with "clean" as the weak view),
                    tau = experiment.threshold
  consistency       the Pi-model: labels_augment + lambda_u(t) mean_u ||p(aug_1(u)) -
                    p(aug_2(u))||^2, two augmentations of one input should get one prediction
                    (the gradient flows through both), with Laine & Aila's ramp-up
                    lambda_u exp(-5 (1 - t/T)^2) over the first T = ramp_end steps
  mean_teacher      Tarvainen & Valpola (2017): labels_augment + lambda_u(t) mean_u
                    ||p_student(aug_1(u)) - p_teacher(aug_2(u))||^2, the teacher's weights an
                    exponential moving average of the student's, theta'_t = alpha theta'_{t-1}
                    + (1 - alpha) theta_t (alpha = experiment.ema_decay; no gradient reaches the
                    teacher), the same ramp-up as consistency; the teacher is the network
                    measured, as in the paper

Tuning, equal in kind: every method chooses its learning rate on the validation split from
experiment.learning_rates, the methods with unlabelled inputs jointly with their lambda_u from
experiment.unlabelled_weights (the two label-only methods: the learning rate alone); a choice
at a grid's edge grows that grid by up to experiment.max_extensions steps. Measured: test accuracy
and loss; and, read with the unlabelled inputs' true labels after training for the record,
the fraction with max p >= tau and how many of those predictions are right.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

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
from research.experiments import variants as variants_lib

METHODS = ("labels_only", "labels_augment", "pseudo_label", "fixmatch_style", "consistency",
           "mean_teacher")
USES_UNLABELLED = ("pseudo_label", "fixmatch_style", "consistency", "mean_teacher")
RANGES = {"seeds": config_lib.Range(True, 2), "max_extensions": config_lib.Range(True, 0),
          "ema_decay": config_lib.Range(False, 0.0, 1.0, high_open=True),
          "unlabelled_batch_size": config_lib.Range(True, 1),
          "threshold": config_lib.Range(False, 0.0, 1.0),
          "ramp_start": config_lib.Range(False, 0.0, 1.0),
          "ramp_end": config_lib.Range(False, 0.0, 1.0)}


def ramp(method: str, step, num_steps: int, ramp_start: float, ramp_end: float):
  """lambda_u(t) / lambda_u at step t: pseudo_label's linear ramp (Lee 2013), consistency's
  Gaussian ramp-up exp(-5 (1 - t/T)^2) (Laine & Aila 2017), 1 for the others."""
  t = jnp.asarray(step, jnp.float32)
  t1, t2 = ramp_start * num_steps, ramp_end * num_steps
  if method == "pseudo_label":
    return jnp.clip((t - t1) / max(t2 - t1, 1.0), 0.0, 1.0)
  if method in ("consistency", "mean_teacher"):
    phase = 1.0 - jnp.clip(t / max(t2, 1.0), 0.0, 1.0)
    return jnp.exp(-5.0 * phase * phase)
  return jnp.ones(())


def mean_teacher_optimizer(inner: optax.GradientTransformation,
                           ema_decay: float) -> optax.GradientTransformation:
  """The optimizer of params {"student", "teacher"}: `inner` updates the student from its
  gradient; the teacher moves to alpha teacher + (1 - alpha) student_new, alpha = ema_decay
  (its own gradient, zero, is never read)."""

  def init(params):
    return inner.init(params["student"])

  def update(grads, state, params):
    u_student, state = inner.update(grads["student"], state, params["student"])
    u_teacher = jax.tree.map(lambda s, u, t: (1 - ema_decay) * (s + u - t),
                             params["student"], u_student, params["teacher"])
    return {"student": u_student, "teacher": u_teacher}, state

  return optax.GradientTransformation(init, update)


def measured_params(method: str, params):
  """The network a method is measured with: mean teacher's teacher, everyone's own params."""
  return params["teacher"] if method == "mean_teacher" else params


def make_loss_fn(model: models.Model, k: int, method: str, b_l: int, augment_fn,
                 weight: float, threshold: float, schedule=lambda step: 1.0):
  """E(params, x, labels, rng, step) for one method (see the module doc): rows [:b_l] are
  labelled, rows [b_l:] unlabelled (their labels are -1 and are never read); the unlabelled
  term is weighted by weight * schedule(step). aux: "data_loss" (the labelled CE),
  "unlabelled_loss", "accuracy" (labelled rows), "confident" (the fraction of unlabelled rows
  with max p >= threshold). mean_teacher's params are {"student", "teacher"}."""
  errors.check_choice("experiment.methods[]", method, METHODS)

  def loss_fn(params, x, labels, rng, step=0):
    if method == "mean_teacher":
      params, teacher = params["student"], jax.lax.stop_gradient(params["teacher"])
    key_l, key_1, key_2 = jax.random.split(rng, 3)
    x_l, x_u, y_l = x[:b_l], x[b_l:], labels[:b_l]
    if method != "labels_only":
      x_l = augment_fn(key_l, x_l)
    logits_l = model.apply(params, x_l, train=True, rng=key_l)
    data_term = losses.softmax_cross_entropy(logits_l, losses.one_hot_targets(y_l, k)).mean()
    unlabelled, confident = jnp.zeros(()), jnp.zeros(())
    if method in ("pseudo_label", "fixmatch_style"):
      p_u = jax.lax.stop_gradient(jax.nn.softmax(model.apply(params, x_u), axis=-1))
      targets = losses.one_hot_targets(jnp.argmax(p_u, axis=-1), k, p_u.dtype)
      mask = (p_u.max(axis=-1) >= threshold).astype(p_u.dtype)
      confident = mask.mean()
      if method == "pseudo_label":
        ce = losses.softmax_cross_entropy(model.apply(params, x_u, train=True, rng=key_1),
                                          targets)
        unlabelled = ce.mean()
      else:
        ce = losses.softmax_cross_entropy(model.apply(params, augment_fn(key_1, x_u),
                                                      train=True, rng=key_1), targets)
        unlabelled = (mask * ce).mean()
    elif method == "consistency":
      p_1 = jax.nn.softmax(model.apply(params, augment_fn(key_1, x_u), train=True, rng=key_1))
      p_2 = jax.nn.softmax(model.apply(params, augment_fn(key_2, x_u), train=True, rng=key_2))
      unlabelled = jnp.square(p_1 - p_2).sum(axis=-1).mean()
    elif method == "mean_teacher":
      p_s = jax.nn.softmax(model.apply(params, augment_fn(key_1, x_u), train=True, rng=key_1))
      p_t = jax.nn.softmax(model.apply(teacher, augment_fn(key_2, x_u), train=True, rng=key_2))
      unlabelled = jnp.square(p_s - p_t).sum(axis=-1).mean()
    accuracy = (losses.predictions(logits_l) == y_l).mean()
    return data_term + weight * schedule(step) * unlabelled, {
        "data_loss": data_term, "accuracy": accuracy, "unlabelled_loss": unlabelled,
        "confident": confident}

  return loss_fn


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_semi_supervised.py", RANGES, METHODS)
  sizes = errors.check_ints("experiment.labels_per_class", exp.labels_per_class,
                            " (labelled examples per class)")
  errors.check_batch_size(config.batch_size, 10 * min(sizes),
                          "labelled examples of the smallest size")
  for field in ("unlabelled_weights", "learning_rates"):
    for v in exp[field]:
      errors.check_positive(f"experiment.{field}[]", v)
  if not exp.ramp_start <= exp.ramp_end:
    raise errors.ConfigError(f"config.experiment.ramp_start={exp.ramp_start} must be <= "
                             f"ramp_end={exp.ramp_end}")
  if not tuple(config.augment.ops):
    raise errors.ConfigError("config.augment.ops is empty: the augmenting methods need ops, e.g. "
                             "('translate', 'noise')")
  if config.loss.output != "softmax" or config.loss.l2 or config.loss.l1:
    raise errors.ConfigError("config.loss: the semi-supervised experiment uses softmax "
                             "cross-entropy without penalties; set output='softmax', l2=0, l1=0")


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc)."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  if dataset.train.x.ndim != 4:
    raise errors.ConfigError(
        f"the semi-supervised methods augment images x_NxHxWxC but {dataset.name} gives shape "
        f"{dataset.input_shape}; set config.data.image_size=8")
  k = dataset.num_classes
  model = models.build(config.model, dataset.input_shape, k)
  augment_fn = augment.make_augment(config.augment)
  eval_fn = kernel.make_eval_fn(model, "softmax", k)
  predict = jax.jit(lambda p, x: jax.nn.softmax(model.apply(p, x), axis=-1))
  unlabelled = dataset.train
  b_l, b_u = config.batch_size, exp.unlabelled_batch_size
  splits = {"valid": dataset.valid, "test": dataset.test}

  def fit(method, setting, per_class, seeds, subsets):
    n = per_class * k
    two = variants_lib.two_source_batches(n, b_l, len(unlabelled), b_u)
    data = [data_lib.Split(np.concatenate([s.x, unlabelled.x]),
                           np.concatenate([s.y, np.full(len(unlabelled), -1, np.int32)]))
            for s in subsets]
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": setting["learning_rate"]}),
        config.num_steps)
    schedule = lambda step: ramp(method, step, config.num_steps, exp.ramp_start, exp.ramp_end)
    loss_fn = make_loss_fn(model, k, method, b_l, augment_fn,
                           setting.get("unlabelled_weight", 0.0), exp.threshold, schedule)
    init_params = None
    if method == "mean_teacher":
      optimizer = mean_teacher_optimizer(optimizer, exp.ema_decay)

      def init_params(seed):  # kernel.init_state's init key: the teacher starts as the student
        student = model.init(jax.random.split(jax.random.key(seed))[0])
        # A copy: the train chunk donates its state, and one buffer cannot be donated twice.
        return {"student": student, "teacher": jax.tree.map(jnp.copy, student)}
    return harness.train_seeds(
        model, loss_fn, optimizer, config.num_steps, b_l, data, seeds, mode=exp.seed_mode,
        batches=lambda seed, _, start, num: two(seed, start, num),
        chunk_steps=config.eval_every, with_step=True, init_params=init_params,
        what=f"semi-supervised {method} at {per_class} labels per class", writer=writer,
        tag={"labels_per_class": per_class, "arm": method, **setting})

  def measure(method, setting, per_class, seed, params, split):
    params = measured_params(method, params)
    out = kernel.evaluate(eval_fn, params, splits[split], config.eval_batch_size,
                          per_example=split == "test")
    record = harness.evaluation(out)
    if split == "test":
      p_u = np.asarray(predict(params, unlabelled.x))
      confident = p_u.max(axis=1) >= exp.threshold
      right = (p_u.argmax(axis=1) == unlabelled.y)[confident]
      record.update(confident=float(confident.mean()),
                    confident_right=float(right.mean()) if len(right) else float("nan"))
    return record

  lrs = {"learning_rate": tuple(exp.learning_rates)}
  arms = [harness.Arm(m, {**lrs, "unlabelled_weight": tuple(exp.unlabelled_weights)}
                      if m in USES_UNLABELLED else lrs) for m in exp.methods]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "semi_supervised", arms, exp.baseline, tuple(exp.labels_per_class), "labels per class",
      seeds, fit, measure, select="accuracy", draw=harness.labelled_draw(dataset.train, k),
      family=harness.fields_of(FIELDS))


FIELDS = [("accuracy", "test acc %", 100.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every method at every number of labels per class, under the harness's protocol; writes
  results.{md,json} and semi_supervised.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config) -> list[str]:
  exp = config.experiment
  return [f"digits 8x8: labels per class drawn from the training split + all its inputs "
          f"unlabelled; MLP {tuple(config.model.hidden_sizes)} {config.model.activation}, "
          f"{config.num_steps} steps of {config.optimizer.name}, {config.batch_size} labelled + "
          f"{exp.unlabelled_batch_size} unlabelled rows per step; augmentation "
          f"{'+'.join(config.augment.ops)}; every method's learning rate chosen from "
          f"{tuple(exp.learning_rates)}, jointly with lambda_u from "
          f"{tuple(exp.unlabelled_weights)} (the label-only methods: alone); tau = {exp.threshold:g}; ramps from "
          f"{exp.ramp_start:g} to {exp.ramp_end:g} of the steps; mean teacher's EMA decay "
          f"{exp.get('ema_decay', 0.99):g}, its teacher measured."]


def confidence_table(result, threshold: float) -> str:
  """For the record: how confident each method ends on the unlabelled inputs, and how often
  its confident predictions are right (read with their true labels after training)."""
  rows = []
  for entry in result["sizes"]:
    for name, arm in entry["arms"].items():
      st = arm["stats"]
      rows.append({result["size_label"]: entry["size"], "method": name,
                   f"unlabelled with max p >= {threshold:g} %":
                       harness.fmt_summary(st["confident"]),
                   "of those, right %": harness.fmt_summary(st["confident_right"])})
  return report.markdown_table(report.columns_of(rows), rows)


def write(workdir, config, result) -> None:
  """results.{md,json} and semi_supervised.png from the harness's results."""
  harness.write(workdir, result, "Semi-supervised learning: few labels + unlabelled inputs",
                FIELDS, notes(config), extra=[confidence_table(result,
                                                               config.experiment.threshold)])
  harness.plot(workdir / "semi_supervised.png", result, "accuracy", "test accuracy (%)",
               "Semi-supervised learning: what the unlabelled inputs add")
