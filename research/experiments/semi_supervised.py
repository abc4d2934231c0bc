"""Semi-supervised learning: few labels plus every unlabelled input.

A seeded slice of experiment.train_examples labelled digits; the unlabelled set is every input
of the training split (the labelled ones included) with its label replaced by -1, so no method
can read it. Each step reads b_l labelled and b_u unlabelled rows (variants.two_source_batches).
The MLP (config.model) and every other setting are shared; the methods:

  labels_only     CE on the labelled rows (no augmentation)
  labels_augment  CE on the labelled rows, augmented (config.augment's ops): the baseline the
                  two unlabelled methods must beat, since they augment too
  pseudo_label    labels_augment + lambda_u mean_u 1[max_k p_k(u) >= tau] CE(p(aug(u)), argmax_k
                  p_k(u)): the network's confident predictions on the clean unlabelled inputs
                  become targets for their augmented copies (tau = experiment.threshold; the
                  targets carry no gradient)
  consistency     labels_augment + lambda_u mean_u ||p(aug_1(u)) - p(aug_2(u))||^2: two
                  augmentations of the same input should get the same prediction (the Pi-model;
                  the gradient flows through both)

lambda_u = experiment.unlabelled_weight, constant from the first step. Measured: test accuracy
and loss; for pseudo_label, the fraction of unlabelled inputs confident enough to get a target
at the end and how many of those targets are right (read with the true labels, after training).
"""
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import augment
from research import config_lib
from research import data as data_lib
from research import errors
from research import losses
from research import metrics as metrics_lib
from research import models
from research.experiments import regularization
from research.experiments import report
from research.experiments import variants as variants_lib

METHODS = ("labels_only", "labels_augment", "pseudo_label", "consistency")
RANGES = {"subset_seed": config_lib.Range(True, 0), "repeats": config_lib.Range(True, 1),
          "unlabelled_batch_size": config_lib.Range(True, 1),
          "unlabelled_weight": config_lib.Range(False, 0.0, low_open=True),
          "threshold": config_lib.Range(False, 0.0, 1.0)}


def make_loss_fn(model: models.Model, k: int, method: str, b_l: int, augment_fn,
                 weight: float, threshold: float):
  """E(params, x, labels, rng) for one method (see the module doc): rows [:b_l] are labelled,
  rows [b_l:] unlabelled (their labels are -1 and are never read). aux: "data_loss" (the
  labelled CE), "unlabelled_loss", "accuracy" (labelled rows), "confident" (the fraction of
  unlabelled rows with a pseudo-label)."""
  errors.check_choice("experiment.methods[]", method, METHODS)

  def loss_fn(params, x, labels, rng):
    key_l, key_1, key_2 = jax.random.split(rng, 3)
    x_l, x_u, y_l = x[:b_l], x[b_l:], labels[:b_l]
    if method != "labels_only":
      x_l = augment_fn(key_l, x_l)
    logits_l = model.apply(params, x_l, train=True, rng=key_l)
    data_term = losses.softmax_cross_entropy(logits_l, losses.one_hot_targets(y_l, k)).mean()
    unlabelled, confident = jnp.zeros(()), jnp.zeros(())
    if method == "pseudo_label":
      p_u = jax.lax.stop_gradient(jax.nn.softmax(model.apply(params, x_u), axis=-1))
      mask = (p_u.max(axis=-1) >= threshold).astype(p_u.dtype)
      targets = losses.one_hot_targets(jnp.argmax(p_u, axis=-1), k, p_u.dtype)
      ce = losses.softmax_cross_entropy(model.apply(params, augment_fn(key_1, x_u), train=True,
                                                    rng=key_1), targets)
      unlabelled, confident = (mask * ce).mean(), mask.mean()
    elif method == "consistency":
      p_1 = jax.nn.softmax(model.apply(params, augment_fn(key_1, x_u), train=True, rng=key_1))
      p_2 = jax.nn.softmax(model.apply(params, augment_fn(key_2, x_u), train=True, rng=key_2))
      unlabelled = jnp.square(p_1 - p_2).sum(axis=-1).mean()
    accuracy = (losses.predictions(logits_l) == y_l).mean()
    return data_term + weight * unlabelled, {"data_loss": data_term, "accuracy": accuracy,
                                             "unlabelled_loss": unlabelled,
                                             "confident": confident}

  return loss_fn


def validate(config: ml_collections.ConfigDict) -> None:
  report.check_experiment(config, "configs/exp_semi_supervised.py", RANGES, METHODS)
  sizes = errors.check_ints("experiment.train_examples", config.experiment.train_examples,
                            " (labelled examples)")
  errors.check_batch_size(config.batch_size, min(sizes), "labelled examples of the smallest size")
  if not tuple(config.augment.ops):
    raise errors.ConfigError("config.augment.ops is empty: the augmenting methods need ops, e.g. "
                             "('translate', 'noise')")
  if config.loss.output != "softmax" or config.loss.l2 or config.loss.l1:
    raise errors.ConfigError("config.loss: the semi-supervised experiment uses softmax "
                             "cross-entropy without penalties; set output='softmax', l2=0, l1=0")


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains every method at every number of labels; writes results.{md,json} and
  semi_supervised.png. Returns {"sizes": {n: {method: {field: {"mean", "std"}, "runs"}}}, ...}."""
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  if dataset.train.x.ndim != 4:
    raise errors.ConfigError(
        f"the semi-supervised methods augment images x_NxHxWxC but {dataset.name} gives shape "
        f"{dataset.input_shape}; set config.data.image_size=8")
  k = dataset.num_classes
  model = models.build(config.model, dataset.input_shape, k)
  augment_fn = augment.make_augment(config.augment)
  evaluate = variants_lib.accuracy_fn(model, "softmax", k, config.eval_batch_size)
  predict = jax.jit(lambda p, x: jax.nn.softmax(model.apply(p, x), axis=-1))
  unlabelled = dataset.train
  seeds = [config.seed + r for r in range(exp.repeats)]
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  b_l, b_u = config.batch_size, exp.unlabelled_batch_size
  out = {}
  for n in exp.train_examples:
    labelled = regularization.train_subset(dataset.train, n, exp.subset_seed)
    x_all = np.concatenate([labelled.x, unlabelled.x])
    y_all = np.concatenate([labelled.y, np.full(len(unlabelled), -1, np.int32)])
    batches = variants_lib.two_source_batches(n, b_l, len(unlabelled), b_u)
    variants = [variants_lib.Variant(method, model, make_loss_fn(
        model, k, method, b_l, augment_fn, exp.unlabelled_weight, exp.threshold),
        batches=batches) for method in exp.methods]

    def measure(variant, params):
      te = evaluate(params, dataset.test)
      p_u = np.asarray(predict(params, unlabelled.x))
      confident = p_u.max(axis=1) >= exp.threshold
      right = (p_u.argmax(axis=1) == unlabelled.y)[confident]
      return {"test_accuracy": te["accuracy"], "test_loss": te["loss"],
              "confident": float(confident.mean()),
              "pseudo_label_accuracy": float(right.mean()) if len(right) else float("nan")}

    logging.info("%d labelled + %d unlabelled examples: %s", n, len(unlabelled),
                 ", ".join(exp.methods))
    out[n] = variants_lib.run_variants(variants, config, x_all, y_all, seeds, measure, writer,
                                       tag={"train_examples": n})
  result = {"sizes": out, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write(workdir, config, dataset, result)
  return result


def _write(workdir, config, dataset, result) -> None:
  exp, cell = config.experiment, variants_lib.cell
  rows = []
  for n, by_method in result["sizes"].items():
    for method, r in by_method.items():
      rows.append({"labels": n, "method": method, "test acc %": cell(r["test_accuracy"]),
                   "test loss": cell(r["test_loss"], 1.0, 3),
                   f"unlabelled with max p >= {exp.threshold:g} %": cell(r["confident"]),
                   "of those, right %": cell(r["pseudo_label_accuracy"])})
  notes = [f"{dataset.name} {dataset.input_shape}: n labelled training examples (a seeded slice) "
           f"+ all {len(dataset.train)} training inputs unlabelled, {len(dataset.test)} test "
           f"examples; MLP {tuple(config.model.hidden_sizes)} {config.model.activation}, "
           f"{config.num_steps} steps of {config.optimizer.name}, {config.batch_size} labelled + "
           f"{exp.unlabelled_batch_size} unlabelled rows per step; augmentation "
           f"{'+'.join(config.augment.ops)}; lambda_u = {exp.unlabelled_weight:g}, tau = "
           f"{exp.threshold:g}; mean ± std over {exp.repeats} seeds. The last two columns read "
           "the unlabelled inputs' true labels after training, for the record only."]
  report.write_results(workdir, "Semi-supervised learning: few labels + unlabelled inputs",
                       list(rows[0]), rows, notes, result)
  variants_lib.size_plot(workdir / "semi_supervised.png", result["sizes"],
                         [("test_accuracy", "test accuracy (%)")],
                         f"labelled {dataset.name} training examples",
                         "Semi-supervised learning: what the unlabelled inputs add")

