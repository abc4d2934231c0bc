"""Unsupervised pre-training of the first layers, then fine-tuning with few labels.

The lecture: "Pre-training: unsupervised learning of parameters in the first few layers of
the NN". For each seed:

  1. Greedy layer-wise pre-training on every training input, labels unused: hidden layer
     l = 1..k of config.model is the encoder of an autoencoder (research/models/autoencoder.py:
     sigmoid units, experiment.cost, tied weights w' = w^T when experiment.tied, masking
     noise experiment.noise) trained to reconstruct sigma^{l-1}, the output of the layers
     already pre-trained (x for l = 1). Its (w, b) become layer l.
  2. For each count in experiment.labels_per_class, a labelled set of that many examples of
     each class (nested: the 5 of a class include its 1), and the whole network (the
     pre-trained layers, the rest initialised like "glorot") fine-tuned on them with the
     lecture's cost E (config.loss) for config.num_steps steps of config.optimizer.
  3. The same fine-tuning from each other init of experiment.inits, with the same labelled
     set, batch order and steps:
       random   w ~ N(0, experiment.random_init_std^2), the classic small random weights
       glorot   w ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)
       lecun    w ~ N(0, 1/fan_in), the library's default (research/models/mlp.py)
     (biases 0).

Inputs are scaled to [0, 1] (min and max of the training inputs; the cross-entropy of the
reconstruction needs targets in [0, 1]), so config.data.standardize must be "none". Test
accuracy is measured on the data's test split, which pre-training never sees. Every (init,
seed) run of one label count is one jax.vmap of the library's train chunk; config.grad selects
the gradients of both stages: manual = the hand-written autoencoder and MLP backward passes
(research/backprop/), autodiff = jax.value_and_grad.
"""
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import config_lib
from research import data as data_lib
from research import errors
from research import gradients
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import workdir as workdir_lib
from research.experiments import report
from research.experiments import variants as variants_lib
from research.models import autoencoder
from research.models import mlp

INITS = ("pretrained", "random", "glorot", "lecun")
LABELS = {"pretrained": "pre-trained (autoencoders)", "random": "random N(0, {s:g}^2)",
          "glorot": "Glorot uniform", "lecun": "LeCun normal (library default)"}


def label(name: str, exp) -> str:
  """The init's name in tables and legends (random's with its std)."""
  return LABELS[name].format(s=exp.random_init_std)

_RANGES = {
    "repeats": config_lib.Range(True, 1), "pretrain_layers": config_lib.Range(True, 1),
    "pretrain_steps": config_lib.Range(True, 1), "pretrain_batch_size": config_lib.Range(True, 1),
    "pretrain_l2": config_lib.Range(False, 0.0), "noise": config_lib.Range(False, 0.0, 1.0,
                                                                           high_open=True),
    "random_init_std": config_lib.Range(False, 0.0, low_open=True),
    "num_filters": config_lib.Range(True, 1),
}


# ------------------------------------------------------------------------------------ config


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the model and config.experiment fields; one line naming the fix."""
  exp = report.check_experiment(config, "configs/exp_pretraining.py", _RANGES)
  if config.model.name != "mlp" or config.model.activation != "sigmoid":
    raise errors.ConfigError(
        f"config.model is {config.model.name!r} with {config.model.get('activation')!r} units; "
        "pre-training stacks sigmoid autoencoders, so set config.model.name='mlp' and "
        "config.model.activation='sigmoid'")
  if config.model.get("dropout", 0.0):
    raise errors.ConfigError(f"config.model.dropout={config.model.dropout!r} must be 0 in the "
                             "pre-training experiment")
  hidden = tuple(config.model.hidden_sizes)
  if exp.pretrain_layers > len(hidden):
    raise errors.ConfigError(
        f"config.experiment.pretrain_layers={exp.pretrain_layers} is more than the "
        f"{len(hidden)} hidden layers of config.model.hidden_sizes={hidden}; use at most "
        f"{len(hidden)} (the output layer is learnt from labels)")
  if not isinstance(exp.tied, bool):
    raise errors.ConfigError(f"config.experiment.tied={exp.tied!r} must be True or False")
  errors.check_choice("experiment.cost", exp.cost, autoencoder.COSTS)
  if not exp.inits:
    raise errors.ConfigError("config.experiment.inits is empty; name at least one of "
                             + ", ".join(INITS))
  for i, name in enumerate(exp.inits):
    errors.check_choice(f"experiment.inits[{i}]", name, INITS)
  counts = errors.check_ints("experiment.labels_per_class", exp.labels_per_class,
                             ", e.g. (1, 5, 10, 50)")
  if list(counts) != sorted(set(counts)):
    raise errors.ConfigError(f"config.experiment.labels_per_class={counts!r} must be "
                             "increasing, without repeats")
  if config.data.get("standardize") != "none":
    raise errors.ConfigError(
        f"config.data.standardize={config.data.get('standardize')!r}: the autoencoder "
        "reconstructs inputs in [0, 1], which the runner makes by min-max scaling; set "
        "config.data.standardize='none'")
  if config.loss.l1:
    raise errors.ConfigError(f"config.loss.l1={config.loss.l1!r} must be 0 here (the "
                             "fine-tuning cost is the lecture's E with lambda/2m sum w^2)")


# -------------------------------------------------------------------------------------- data


def unit_interval(dataset: data_lib.Dataset) -> data_lib.Dataset:
  """Flat inputs x_NxD scaled to [0, 1] by the training inputs' min and max (one for all
  features, so relative intensities are kept), other splits clipped to [0, 1]."""
  lo, hi = float(dataset.train.x.min()), float(dataset.train.x.max())
  d = math.prod(dataset.input_shape)
  if not hi > lo:
    raise errors.DataError(f"{dataset.name}: every training input is {lo}; nothing to learn")
  scale = lambda s: data_lib.Split(
      np.clip((s.x.reshape(len(s.x), -1 if len(s.x) else d) - lo) / (hi - lo), 0, 1).astype(np.float32), s.y)
  return data_lib.Dataset(dataset.name, scale(dataset.train), scale(dataset.valid),
                          scale(dataset.test), dataset.num_classes)


def labelled_indices(labels_N: np.ndarray, per_class: int, num_classes: int,
                     seed: int) -> np.ndarray:
  """per_class indices of each class, sorted, from one seeded order per class: the sets of
  one seed are nested (the first 5 of a class include its first 1)."""
  picked = []
  for c in range(num_classes):
    of_class = np.flatnonzero(labels_N == c)
    if len(of_class) < per_class:
      raise errors.ConfigError(
          f"config.experiment.labels_per_class asks for {per_class} labels of class {c}, but "
          f"the training split has only {len(of_class)}; lower it or shrink "
          "config.data.test_fraction / valid_fraction")
    order = np.random.default_rng([seed, c]).permutation(of_class)
    picked.append(order[:per_class])
  return np.sort(np.concatenate(picked)).astype(np.int32)


# ------------------------------------------------------------------------------------- inits


def init_mlp(key: jax.Array, sizes: tuple[int, ...], scheme: str,
             random_std: float = 0.01) -> list[dict]:
  """params of research/models/mlp.py for widths `sizes`, biases 0, w by `scheme`: random
  N(0, random_std^2), glorot U(+-sqrt(6/(fan_in + fan_out))), lecun N(0, 1/fan_in)."""
  if scheme == "lecun":
    return mlp.init(key, sizes)
  params = []
  for k, fan_in, fan_out in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]):
    if scheme == "random":
      w = random_std * jax.random.normal(k, (fan_in, fan_out))
    elif scheme == "glorot":
      a = math.sqrt(6.0 / (fan_in + fan_out))
      w = jax.random.uniform(k, (fan_in, fan_out), minval=-a, maxval=a)
    else:
      raise errors.ConfigError(f"init {scheme!r} is not one of random, glorot, lecun")
    params.append({"w": w, "b": jnp.zeros((fan_out,))})
  return params


# ---------------------------------------------------------------------------- pre-training


def make_pretrain_chunk(value_and_grad: Callable, optimizer) -> Callable:
  """Returns jitted chunk(state_R, x_RxNxI, idx_RxSxB) -> (state_R, reconstruction_RxS): S
  steps of an autoencoder per replica r (vmapped), each on the batch x[idx] with the denoising
  mask of fold_in(rng, step)."""

  def step(state, idx_B, x_all):
    rng = jax.random.fold_in(state["rng"], state["step"])
    (_, aux), grads = value_and_grad(state["params"], x_all[idx_B], rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(jnp.add, state["params"], updates)
    return dict(state, params=params, opt_state=opt_state,
                step=state["step"] + 1), aux["reconstruction"]

  def chunk(state, x_all, idx_SxB):
    return jax.lax.scan(lambda s, idx: step(s, idx, x_all), state, idx_SxB)

  return jax.jit(jax.vmap(chunk), donate_argnums=0)


def pretrain(config: ml_collections.ConfigDict, x_NxD: np.ndarray, seeds: list[int],
             writer: metrics_lib.MetricWriter | None = None) -> dict[str, Any]:
  """Greedy layer-wise pre-training of the first experiment.pretrain_layers hidden layers,
  once per seed (the seeds vmapped). Returns {"layers": [{"w": w_RxIxH, "b": b_RxH}, ...]
  (R = len(seeds)) and "reconstruction": per layer {"before", "after"} (the clean cost on
  every input, mean over seeds)}; the training cost of every chunk goes to `writer`."""
  exp = config.experiment
  hidden = tuple(config.model.hidden_sizes)[:exp.pretrain_layers]
  n = len(x_NxD)
  errors.check_batch_size(exp.pretrain_batch_size, n, "unlabelled inputs",
                          field="experiment.pretrain_batch_size")
  r = len(seeds)
  x_RxNxI = jnp.broadcast_to(jnp.asarray(x_NxD), (r, *x_NxD.shape))
  optimizer = optim.make_optimizer(exp.pretrain_optimizer, exp.pretrain_steps)
  out = {"layers": [], "reconstruction": []}
  every = min(config.eval_every, exp.pretrain_steps)
  for l, d_hidden in enumerate(hidden, start=1):
    d_in = x_RxNxI.shape[-1]
    loss_fn = autoencoder.make_loss_fn(exp.cost, exp.noise, exp.pretrain_l2, n)
    if config.grad == "manual":
      from research.backprop import autoencoder as backprop_ae  # pylint: disable=g-import-not-at-top
      value_and_grad = backprop_ae.make_value_and_grad(exp.cost, exp.noise, exp.pretrain_l2, n)
    else:
      value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    chunk = make_pretrain_chunk(value_and_grad, optimizer)
    clean = jax.jit(jax.vmap(lambda p, x: autoencoder.reconstruction_cost(
        autoencoder.apply(p, x), x, exp.cost).mean()))

    def init_state(seed, d_in=d_in, d_hidden=d_hidden, l=l):
      key = jax.random.fold_in(jax.random.key(seed), 1000 + l)
      params = autoencoder.init(jax.random.fold_in(key, 0), d_in, d_hidden, tied=exp.tied)
      return kernel.train_state(params, optimizer, jax.random.fold_in(key, 1))

    states = [init_state(s) for s in seeds]
    state = jax.tree.map(lambda *a: jnp.stack(a), *states)
    before = float(np.mean(clean(state["params"], x_RxNxI)))
    for start in range(0, exp.pretrain_steps, every):
      stop = min(start + every, exp.pretrain_steps)
      idx = np.stack([data_lib.batch_indices(s * 1000 + l, n, exp.pretrain_batch_size, start,
                                             stop - start) for s in seeds])
      state, cost_RxS = chunk(state, x_RxNxI, idx)
      value = float(np.mean(cost_RxS))
      if not math.isfinite(value):
        raise errors.NonFiniteLossError(
            f"pre-training layer {l}: the reconstruction cost became NaN/inf before step "
            f"{stop}; lower config.experiment.pretrain_optimizer.learning_rate")
      if writer is not None:
        writer.write({"step": stop, "split": "pretrain", "layer": l, "reconstruction": value})
    after = float(np.mean(clean(state["params"], x_RxNxI)))
    logging.info("pre-trained layer %d (%d -> %d, %s, %s, noise %g): reconstruction cost %.4f "
                 "-> %.4f per example", l, d_in, d_hidden, "tied" if exp.tied else "untied",
                 exp.cost, exp.noise, before, after)
    ae = state["params"]
    out["layers"].append({"w": ae["w"], "b": ae["b"]})
    out["reconstruction"].append({"layer": l, "before": before, "after": after})
    # The next autoencoder reads this layer's clean hidden units.
    x_RxNxI = jax.jit(jax.vmap(autoencoder.encode))(ae, x_RxNxI)
  return out


# ------------------------------------------------------------------------------ fine-tuning


def initial_params(config: ml_collections.ConfigDict, scheme: str, seed: int, sizes: tuple,
                   pretrained: dict | None, replica: int) -> list[dict]:
  """The MLP's params for one (init, seed): `pretrained` (its layers at index `replica`)
  replaces the first layers of a glorot init drawn with the same key."""
  key = jax.random.fold_in(jax.random.key(seed), 7)
  exp = config.experiment
  if scheme != "pretrained":
    return init_mlp(key, sizes, scheme, exp.random_init_std)
  params = init_mlp(key, sizes, "glorot")
  for l, layer in enumerate(pretrained["layers"]):
    params[l] = {"w": layer["w"][replica], "b": layer["b"][replica]}
  return params


def finetune(config: ml_collections.ConfigDict, dataset: data_lib.Dataset, per_class: int,
             seeds: list[int], pretrained: dict | None) -> dict[str, Any]:
  """Fine-tunes every (init, seed) on per_class labels of each class, as one vmapped chunk.

  Returns {"runs": [{"init", "seed", "train_accuracy", "test_accuracy", "test_loss"}],
  "params": {init: params stacked over seeds}, "initial_w1": {init: seed 0's w^1 at init}}.
  """
  exp = config.experiment
  inits = list(exp.inits)
  k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  sizes = (math.prod(dataset.input_shape), *tuple(config.model.hidden_sizes), k)
  n = per_class * dataset.num_classes
  batch = min(config.batch_size, n)
  idx_seeds = [labelled_indices(dataset.train.y, per_class, dataset.num_classes, s)
               for s in seeds]
  # Replica order: init-major, seed-minor.
  combos = [(name, j, s) for name in inits for j, s in enumerate(seeds)]
  x_R = jnp.asarray(np.stack([dataset.train.x[idx_seeds[j]] for _, j, _ in combos]))
  y_R = jnp.asarray(np.stack([dataset.train.y[idx_seeds[j]] for _, j, _ in combos]))
  params_list = [initial_params(config, name, s, sizes, pretrained, j) for name, j, s in combos]
  params_R = jax.tree.map(lambda *a: jnp.stack(a), *params_list)
  # The filter figure's "at init" row; params_list is not donated (the chunk gets params_R).
  initial_w1 = {name: params_list[i * len(seeds)][0]["w"] for i, name in enumerate(inits)}

  loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k)
  params_R = variants_lib.fit_replicas(
      config, loss_fn, params_R, x_R, y_R,
      lambda start, stop: np.stack([data_lib.batch_indices(s, n, batch, start, stop - start)
                                    for _, _, s in combos]),
      f"fine-tuning with {per_class} labels per class",
      gradients.make_value_and_grad(config, loss_fn, k, n, dataset.input_shape))
  measure = variants_lib.replica_measure_fn(model, config.loss.output, k)
  train_acc, _ = measure(params_R, x_R, y_R)
  test_acc, test_loss = measure(params_R, jnp.asarray(dataset.test.x), jnp.asarray(dataset.test.y),
                                shared_data=True)
  runs = [{"init": name, "seed": s, "train_accuracy": float(train_acc[i]),
           "test_accuracy": float(test_acc[i]), "test_loss": float(test_loss[i])}
          for i, (name, _, s) in enumerate(combos)]
  r = len(seeds)
  final = {name: jax.tree.map(lambda a, i=i: a[i * r:(i + 1) * r], params_R)
           for i, name in enumerate(inits)}
  return {"runs": runs, "params": final, "initial_w1": initial_w1}


# ------------------------------------------------------------------------------------ runner


def _summary(values) -> dict[str, float]:
  return {**report.mean_std(values), "min": float(np.min(values)), "max": float(np.max(values))}


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Pre-trains, fine-tunes every init at every label count; writes results.{md,json},
  filters.png and accuracy_vs_labels.png.

  Returns {"reconstruction": per layer {"before", "after"}, "table": [{"labels_per_class",
  init: {"mean", "std", "min", "max"} of test accuracy, ...}], "runs": every run,
  "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = unit_interval(data_lib.load(config.data))
  if not len(dataset.test):
    raise errors.ConfigError("the test split is empty; set config.data.test_fraction > 0")
  # Too many labels asked for fails now, not after pre-training.
  labelled_indices(dataset.train.y, max(exp.labels_per_class), dataset.num_classes, 0)
  seeds = [config.seed + i for i in range(exp.repeats)]
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  logging.info("%s: %d unlabelled training inputs (%d features in [0, 1]), %d test examples; "
               "network %s; seeds %s", dataset.name, len(dataset.train),
               math.prod(dataset.input_shape), len(dataset.test),
               (math.prod(dataset.input_shape), *config.model.hidden_sizes,
                dataset.num_classes), seeds)

  t_pre = time.time()
  pretrained = (pretrain(config, dataset.train.x, seeds, writer)
                if "pretrained" in exp.inits else None)
  pretrain_time = time.time() - t_pre

  table, runs, fine = [], [], {}
  for per_class in exp.labels_per_class:
    t_fine = time.time()
    out = finetune(config, dataset, per_class, seeds, pretrained)
    row = {"labels_per_class": per_class, "labelled": per_class * dataset.num_classes}
    for name in exp.inits:
      mine = [r for r in out["runs"] if r["init"] == name]
      row[name] = _summary([r["test_accuracy"] for r in mine])
      row[name + "_loss"] = _summary([r["test_loss"] for r in mine])
      row[name + "_train"] = _summary([r["train_accuracy"] for r in mine])
    for r in out["runs"]:
      r["labels_per_class"] = per_class
      writer.write({"step": config.num_steps, "split": "result", **r})
    runs += out["runs"]
    table.append(row)
    fine[per_class] = out
    logging.info("%3d labels per class: %s (%.1f s)", per_class, ", ".join(
        f"{name} {100 * row[name]['mean']:.1f} ± {100 * row[name]['std']:.1f}%"
        for name in exp.inits), time.time() - t_fine)

  wall = time.time() - t_start
  result = {"reconstruction": pretrained["reconstruction"] if pretrained else [],
            "table": table, "runs": runs, "pretrain_time": pretrain_time, "wall_time": wall}
  if jax.process_index() == 0:
    _write_results(workdir, config, dataset, result)
    _plot_filters(workdir / "filters.png", config, dataset, fine)
    _plot_curve(workdir / "accuracy_vs_labels.png", config, dataset, table)
  logging.info("done in %.1f s; results in %s", wall, workdir / "results.md")
  return result


def _write_results(workdir, config, dataset, result: dict) -> None:
  exp = config.experiment
  report.write_json(workdir / "results.json", result)
  fmt = lambda s: f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
  sizes = (math.prod(dataset.input_shape), *config.model.hidden_sizes, dataset.num_classes)
  lines = [
      f"Pre-training: {dataset.name}, network {' -> '.join(map(str, sizes))} (sigmoid units, "
      f"{config.loss.output} outputs, lambda={config.loss.l2:g}), the first "
      f"{exp.pretrain_layers} hidden layer(s) pre-trained as {'tied' if exp.tied else 'untied'}"
      f" {exp.cost} autoencoders (masking noise {exp.noise:g}) on all {len(dataset.train)} "
      f"training inputs; fine-tuned for {config.num_steps} steps of {config.optimizer.name} "
      f"(eta={config.optimizer.learning_rate:g}); test accuracy % on {len(dataset.test)} test "
      f"examples, mean ± std over {exp.repeats} seeds (seed = labelled set, inits, "
      "pre-training).", ""]
  if result["reconstruction"]:
    lines += ["| layer | reconstruction cost at init | after pre-training |", "|---|---|---|"]
    lines += [f"| {r['layer']} | {r['before']:.3f} | {r['after']:.3f} |"
              for r in result["reconstruction"]]
    lines.append("")
  inits = list(exp.inits)
  lines += ["| labels / class | labelled | " + " | ".join(label(n, exp) for n in inits) + " |",
            "|---|---|" + "---|" * len(inits)]
  for row in result["table"]:
    lines.append(f"| {row['labels_per_class']} | {row['labelled']} | "
                 + " | ".join(fmt(row[n]) for n in inits) + " |")
  lines += ["", "Train accuracy % on the labelled set (did the init let it fit?):", "",
            "| labels / class | " + " | ".join(inits) + " |", "|---|" + "---|" * len(inits)]
  for row in result["table"]:
    lines.append(f"| {row['labels_per_class']} | "
                 + " | ".join(fmt(row[n + "_train"]) for n in inits) + " |")
  lines += ["", "Test loss (data term, mean ± std):", "",
            "| labels / class | " + " | ".join(inits) + " |", "|---|" + "---|" * len(inits)]
  for row in result["table"]:
    lines.append(f"| {row['labels_per_class']} | " + " | ".join(
        f"{row[n + '_loss']['mean']:.3f} ± {row[n + '_loss']['std']:.3f}" for n in inits) + " |")
  workdir_lib.write_text(workdir / "results.md", "\n".join(lines) + "\n")


def _filter_image(w_I: np.ndarray) -> np.ndarray:
  side = math.isqrt(len(w_I))
  return w_I.reshape(side, side) if side * side == len(w_I) else w_I.reshape(1, -1)


def _plot_filters(path, config, dataset, fine: dict) -> None:
  """The first layer's filters (columns of w^1, seed 0): each init at init and after
  fine-tuning with the most labels; each filter scaled to its own max |w|."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  exp = config.experiment
  most = max(fine)
  rows = []
  for name in exp.inits:
    what = "autoencoder" if name == "pretrained" else "init"
    rows.append((f"{name}: {what}", np.asarray(fine[most]["initial_w1"][name])))
    rows.append((f"{name}: fine-tuned ({most}/class)",
                 np.asarray(fine[most]["params"][name][0]["w"][0])))
  count = min(exp.num_filters, rows[0][1].shape[1])
  fig = Figure(figsize=(0.9 * count + 2.2, 1.0 * len(rows) + 0.6), layout="constrained")
  axes = fig.subplots(len(rows), count, squeeze=False)
  for i, (row_label, w_IxH) in enumerate(rows):
    for j in range(count):
      ax = axes[i, j]
      img = _filter_image(w_IxH[:, j])
      bound = float(np.abs(img).max()) or 1.0
      ax.imshow(img, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest",
                aspect="auto" if img.shape[0] == 1 else "equal")
      ax.set_xticks([])
      ax.set_yticks([])
    axes[i, 0].set_ylabel(row_label, rotation=0, ha="right", va="center", fontsize=8)
  fig.suptitle(f"First-layer filters w^1 (seed {config.seed}, {dataset.name}; red > 0 > blue, "
               "each scaled to its own max |w|)", fontsize=9)
  report.save_figure(fig, path)


def _plot_curve(path, config, dataset, table: list[dict]) -> None:
  exp = config.experiment
  sizes = {row["labels_per_class"]: {name: {"test_accuracy": row[name]} for name in exp.inits}
           for row in table}
  variants_lib.size_plot(
      path, sizes, [("test_accuracy", "test accuracy (%)")], "labels per class",
      f"{dataset.name}: fine-tuning after pre-training vs from scratch (mean ± std over "
      f"{exp.repeats} seeds)", labels={name: label(name, exp) for name in exp.inits})
