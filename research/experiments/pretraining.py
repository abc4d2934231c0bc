"""Unsupervised pre-training of the first layers, then fine-tuning with few labels, under the
experiment harness (research/experiments/harness.py).

The lecture: "Pre-training: unsupervised learning of parameters in the first few layers of
the NN". For each seed:

  1. Greedy layer-wise pre-training on every training input, labels unused: hidden layer
     l = 1..k of config.model is the encoder of an autoencoder (research/models/autoencoder.py:
     sigmoid units, experiment.cost, tied weights w' = w^T when experiment.tied, masking
     noise experiment.noise) trained to reconstruct sigma^{l-1}, the output of the layers
     already pre-trained (x for l = 1). Its (w, b) become layer l. It is a function of the
     seed alone, done once per seed and shared by every size and step size of that arm.
  2. For each count in experiment.labels_per_class, the harness draws that many labelled
     examples of each class (stratified, redrawn per seed), and the whole network is
     fine-tuned on them with the lecture's cost E (config.loss) for config.num_steps steps of
     config.optimizer, from each init of experiment.inits (the arms):
       pretrained  the pre-trained layers, the rest initialised like "glorot"
       random      w ~ N(0, experiment.random_init_std^2), the classic small random weights
       glorot      w ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)
       lecun       w ~ N(0, 1/fan_in), the library's default (research/models/mlp.py)
       he          w ~ N(0, 2/fan_in) (He et al. 2015): the modern default for ReLU networks
       orthogonal  w = g Q, Q with orthonormal rows or columns (Saxe et al. 2014), g = 1: every
                   singular value of every layer is 1, so signals and gradients keep their
                   norm through the linear part of each layer
     (biases 0). Every arm chooses its step size from experiment.learning_rates on the
     validation split (the same budget); experiment.baseline (glorot) is what the others are
     paired with.

Inputs are scaled to [0, 1] (min and max of the training inputs; the cross-entropy of the
reconstruction needs targets in [0, 1]), so config.data.standardize must be "none". The seeds
of one (arm, step size, size) cell fine-tune as a loop over one compiled train chunk
(experiment.seed_mode="loop") or as one jax.vmap of it ("vmap"); config.grad
selects the gradients of both stages: manual = the hand-written autoencoder and MLP backward
passes (research/backprop/), autodiff = jax.value_and_grad.
"""
import json
import math
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
from research.experiments import harness
from research.experiments import report
from research.experiments import store
from research.models import autoencoder
from research.models import mlp

INITS = ("pretrained", "random", "glorot", "lecun", "he", "orthogonal")
LABELS = {"pretrained": "pre-trained (autoencoders)", "random": "random N(0, {s:g}^2)",
          "glorot": "Glorot uniform", "lecun": "LeCun normal (library default)",
          "he": "He normal", "orthogonal": "orthogonal"}


def label(name: str, exp) -> str:
  """The init's name in tables and legends (random's with its std)."""
  return LABELS[name].format(s=exp.random_init_std)

RANGES = {
    "max_extensions": config_lib.Range(True, 0),
    "seeds": config_lib.Range(True, 2), "pretrain_layers": config_lib.Range(True, 1),
    "pretrain_steps": config_lib.Range(True, 1), "pretrain_batch_size": config_lib.Range(True, 1),
    "pretrain_l2": config_lib.Range(False, 0.0), "noise": config_lib.Range(False, 0.0, 1.0,
                                                                           high_open=True),
    "random_init_std": config_lib.Range(False, 0.0, low_open=True),
    "num_filters": config_lib.Range(True, 1),
}
NESTED = {"pretrain_optimizer": "optimizer"}  # checked against config_lib.RANGES's optimizer.*


# ------------------------------------------------------------------------------------ config


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the model and config.experiment fields; one line naming the fix."""
  exp = report.check_experiment(config, "configs/exp_pretraining.py", RANGES, INITS,
                                nested=NESTED, arms="inits")
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
  counts = errors.check_ints("experiment.labels_per_class", exp.labels_per_class,
                             ", e.g. (1, 10, 100)")
  if list(counts) != sorted(set(counts)):
    raise errors.ConfigError(f"config.experiment.labels_per_class={counts!r} must be "
                             "increasing, without repeats")
  if not exp.learning_rates:
    raise errors.ConfigError("config.experiment.learning_rates is empty; give the fine-tuning "
                             "step sizes every init chooses from on validation, e.g. (0.1, 0.5)")
  for v in exp.learning_rates:
    errors.check_positive("experiment.learning_rates[]", v)
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



# ------------------------------------------------------------------------------------- inits


def init_mlp(key: jax.Array, sizes: tuple[int, ...], scheme: str,
             random_std: float = 0.01) -> list[dict]:
  """params of research/models/mlp.py for widths `sizes`, biases 0, w by `scheme`: random
  N(0, random_std^2), glorot U(+-sqrt(6/(fan_in + fan_out))), lecun N(0, 1/fan_in), he
  N(0, 2/fan_in), orthogonal (every singular value 1)."""
  if scheme == "lecun":
    return mlp.init(key, sizes)
  params = []
  for k, fan_in, fan_out in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]):
    if scheme == "random":
      w = random_std * jax.random.normal(k, (fan_in, fan_out))
    elif scheme == "glorot":
      a = math.sqrt(6.0 / (fan_in + fan_out))
      w = jax.random.uniform(k, (fan_in, fan_out), minval=-a, maxval=a)
    elif scheme == "he":
      w = math.sqrt(2.0 / fan_in) * jax.random.normal(k, (fan_in, fan_out))
    elif scheme == "orthogonal":
      w = jax.nn.initializers.orthogonal()(k, (fan_in, fan_out), jnp.float32)
    else:
      raise errors.ConfigError(f"init {scheme!r} is not one of {', '.join(INITS[1:])}")
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


# ------------------------------------------------------------------------ the harness's view


def load_dataset(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """config.data as the runner reads it (unit_interval's), with valid and test refused empty."""
  dataset = unit_interval(data_lib.load(config.data))
  for name, split in (("test", dataset.test), ("validation", dataset.valid)):
    if not len(split):
      raise errors.ConfigError(f"the {name} split is empty; set config.data."
                               f"{'test' if name == 'test' else 'valid'}_fraction > 0")
  return dataset


def pretrained_layers(config: ml_collections.ConfigDict, dataset: data_lib.Dataset, workdir,
                      writer=None, keep: bool = True) -> dict[str, Any]:
  """pretrain's output for the runner's seeds, computed once per workdir and kept in
  workdir/pretrained.npz (never pickled) with its "pretrain" records, which go to `writer`
  whether computed now or read back (so a resumed run's metrics.jsonl holds them once).
  Without a workdir, computed every time; keep=False (a Ray worker, which may not reach the
  driver's workdir) reads the file but never writes it."""
  seeds = [config.seed + i for i in range(config.experiment.seeds)]
  cache = workdir_lib.as_path(workdir) / "pretrained.npz" if workdir is not None else None
  saved = store.load_tree(cache) if cache is not None else None
  if not isinstance(saved, dict) or set(saved) != {"out", "records"}:
    saved = None  # An older file (no records): computed again, the same layers.
  if saved is None:
    collect = harness.CellWriter()
    collect.records = []
    out = jax.device_get(pretrain(config, dataset.train.x, seeds, collect))
    saved = {"out": out, "records": json.dumps(collect.records)}
    if keep and cache is not None and jax.process_index() == 0:
      store.save_tree(cache, saved)
  if writer is not None:
    for record in json.loads(str(saved["records"])):
      writer.write(record)
  return saved["out"]


def experiment(config: ml_collections.ConfigDict, workdir=None,
               writer: metrics_lib.MetricWriter | None = None) -> harness.Experiment:
  """The harness's view of the runner (module doc), on load_dataset(config). With the
  "pretrained" init, the pre-trained layers are read from workdir/pretrained.npz
  (pretrained_layers; the runner computes them before the cells, so a Ray worker reads
  them). The returned experiment's fit carries fit.memo {(init, learning rate, size): (initial w^1, fine-tuned w^1)} of the
  first seed, filled by every fit of the largest size in this process (the filter figure)."""
  exp = config.experiment
  dataset = load_dataset(config)
  k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  sizes = (math.prod(dataset.input_shape), *tuple(config.model.hidden_sizes), k)
  seeds = [config.seed + i for i in range(exp.seeds)]
  eval_fn = kernel.make_eval_fn(model, config.loss.output, k)
  eval_batch = kernel.eval_batch_size(config, dataset)
  splits = {"valid": dataset.valid, "test": dataset.test}
  draw = harness.labelled_draw(dataset.train, dataset.num_classes)
  held = {}
  memo = {}

  def pretrained() -> dict:
    if "out" not in held:
      # Computed by the runner before the cells: read here (or, where the workdir is out
      # of reach, computed again: a function of the config and seeds).
      held["out"] = pretrained_layers(config, dataset, workdir, keep=False)
    return held["out"]

  def fit(init, setting, per_class, fit_seeds, subsets):
    n = per_class * dataset.num_classes
    lr = setting["learning_rate"]
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": lr}), config.num_steps)
    loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k)
    pre = pretrained() if init == "pretrained" else None
    params = [initial_params(config, init, s, sizes, pre, seeds.index(s)) for s in fit_seeds]
    w1_at_init = np.asarray(params[0][0]["w"])  # params are donated below
    out = harness.train_seeds(
        model, loss_fn, optimizer, config.num_steps, min(config.batch_size, n), subsets,
        fit_seeds, mode=exp.seed_mode, init_params=lambda s: params[fit_seeds.index(s)],
        value_and_grad=gradients.make_value_and_grad(config, loss_fn, k, n, dataset.input_shape),
        chunk_steps=config.eval_every,
        what=f"fine-tuning {init} at {per_class} labels per class, eta={lr:g}",
        writer=writer, tag={"labels_per_class": per_class, "arm": init, **setting})
    if per_class == max(exp.labels_per_class):
      memo[(init, lr, per_class)] = (w1_at_init, np.asarray(out[0][0]["w"]))
    return out

  def measure(init, setting, per_class, seed, params, split):
    out = kernel.evaluate(eval_fn, params, splits[split], eval_batch,
                          per_example=split == "test")
    record = harness.evaluation(out)
    if split == "test":  # Did the init let it fit its labelled set?
      record["train_accuracy"] = kernel.evaluate(eval_fn, params, draw(per_class, seed),
                                                 eval_batch)["accuracy"]
    return record

  arms = [harness.Arm(name, {"learning_rate": tuple(exp.learning_rates)}) for name in exp.inits]
  note = ("labelled subsets redrawn per seed, stratified; the autoencoders pre-trained once per "
          "seed on the unlabelled training inputs")
  fit.memo = memo
  return harness.Experiment(
      "pretraining", arms, exp.baseline, tuple(exp.labels_per_class), "labels per class",
      seeds, fit, measure, select="accuracy", select_label="validation accuracy", draw=draw,
      data_note=note, family=harness.fields_of(FIELDS))


# ------------------------------------------------------------------------------------ runner


FIELDS = [("accuracy", "test acc %", 100.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Pre-trains, fine-tunes every init at every label count under the harness's protocol;
  writes results.{md,json}, accuracy_vs_labels.png and filters.png. Returns the harness's
  results with "reconstruction" (per pre-trained layer {"layer", "before", "after"}, mean
  over seeds) added."""
  validate(config)
  exp = config.experiment
  harness.executor_of(config)
  dataset = load_dataset(config)
  # Too many labels asked for fails now, not after pre-training.
  harness.stratified_indices(dataset.train.y, max(exp.labels_per_class), 0,
                             dataset.num_classes)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  logging.info("%s: %d unlabelled training inputs (%d features in [0, 1]), %d validation and "
               "%d test examples; network %s", dataset.name, len(dataset.train),
               math.prod(dataset.input_shape), len(dataset.valid), len(dataset.test),
               (math.prod(dataset.input_shape), *config.model.hidden_sizes,
                dataset.num_classes))
  cells = harness.CellWriter(writer)
  # Per-seed artifacts before the cells: cached in workdir, read there by every fit.
  reconstruction = []
  if "pretrained" in exp.inits:
    reconstruction = pretrained_layers(config, dataset, workdir, cells)["reconstruction"]
  spec = experiment(config, str(workdir), cells)
  result = harness.run_cells(config, workdir, cells, experiment, str(workdir), built=spec)
  result["reconstruction"] = reconstruction
  if jax.process_index() == 0:
    write(workdir, config, dataset, result)
    with cells.muted():  # A figure's re-fit is no cell: its records are not the run's.
      _plot_filters(workdir / "filters.png", config, dataset, result, spec)
  writer.close()
  return result


def notes(config, dataset) -> list[str]:
  exp = config.experiment
  sizes = (math.prod(dataset.input_shape), *config.model.hidden_sizes, dataset.num_classes)
  return [
      f"Pre-training: {dataset.name}, network {' -> '.join(map(str, sizes))} (sigmoid units, "
      f"{config.loss.output} outputs, lambda={config.loss.l2:g}); the first "
      f"{exp.pretrain_layers} hidden layer(s) pre-trained as {'tied' if exp.tied else 'untied'}"
      f" {exp.cost} autoencoders (masking noise {exp.noise:g}, {exp.pretrain_steps} steps of "
      f"{exp.pretrain_optimizer.name} per layer) on all {len(dataset.train)} training inputs, "
      f"labels unused; fine-tuned for {config.num_steps} steps of {config.optimizer.name}, "
      f"batch min({config.batch_size}, labelled set), each init's eta chosen from "
      f"{tuple(exp.learning_rates)} on {len(dataset.valid)} validation examples; "
      f"{len(dataset.test)} test examples. Inits: "
      + "; ".join(f"{n}: {label(n, exp)}" for n in exp.inits) + "."]


def reconstruction_table(result) -> str:
  """The autoencoders' clean reconstruction cost per example, mean over seeds."""
  rows = [{"layer": r["layer"], "reconstruction cost at init": f"{r['before']:.3f}",
           "after pre-training": f"{r['after']:.3f}"} for r in result["reconstruction"]]
  return report.markdown_table(report.columns_of(rows), rows)


def fit_table(result) -> str:
  """For the record: the labelled set's train accuracy (did the init fit it?) and the test
  loss (data term), mean ± sample std, at each init's chosen eta."""
  rows = []
  for entry in result["sizes"]:
    for name, arm in entry["arms"].items():
      st = arm["stats"]
      rows.append({result["size_label"]: entry["size"], "init": name,
                   "train acc % (labelled set)": harness.fmt_summary(st["train_accuracy"]),
                   "test loss": harness.fmt_summary(st["loss"], 1.0, 3),
                   "test loss: Δ vs " + result["baseline"] + " [95% CI, seeds] (p)":
                       "(baseline)" if name == result["baseline"] else
                       harness.fmt_paired(harness.outside_family(
                           st["loss"].get("vs_baseline")), 1.0, 3)})
  return report.markdown_table(report.columns_of(rows), rows)


def versus_pretrained(result) -> list[str]:
  """Pre-training against every other init (the strongest cheap init not known in advance):
  the same networks, each init's Δ vs pretrained, its own Holm family; [] without that arm."""
  arms = result["sizes"][0]["arms"]
  if "pretrained" not in arms or result["baseline"] == "pretrained" or len(arms) < 2:
    return []
  return ["Each init against pre-training (the same networks and test measurements as above; "
          "a family of its own, Holm-adjusted within it; Δ < 0: pre-training is ahead):",
          harness.table({**result, "baseline": "pretrained"}, FIELDS)]


def grid_table(result) -> str:
  """Mean validation accuracy % of every (init, eta) cell: what each choice was made from."""
  rows, etas = [], set()
  column = lambda eta: f"valid acc % at eta={eta:g}"
  for entry in result["sizes"]:
    for name, arm in entry["arms"].items():
      row = {result["size_label"]: entry["size"], "init": name}
      for cell in arm["grid"]:  # Every cell, an extension's too ("-": not tried for that arm).
        eta = cell["setting"]["learning_rate"]
        etas.add(eta)
        acc = 100 * float(np.mean([v["accuracy"] for v in cell["valid"]]))
        mark = " (chosen)" if cell["setting"] == arm["chosen"] else ""
        row[column(eta)] = f"{acc:.1f}{mark}"
      rows.append(row)
  columns = [result["size_label"], "init", *(column(eta) for eta in sorted(etas))]
  return report.markdown_table(columns, [{c: r.get(c, "-") for c in columns} for r in rows])


def write(workdir, config, dataset, result) -> None:
  """results.{md,json} and accuracy_vs_labels.png from the harness's results."""
  extra = [*versus_pretrained(result), grid_table(result), fit_table(result)]
  if result["reconstruction"]:
    extra.append(reconstruction_table(result))
  harness.write(workdir, result, "Unsupervised pre-training, then fine-tuning with few labels",
                FIELDS, notes(config, dataset), extra=extra)
  harness.plot(workdir / "accuracy_vs_labels.png", result, "accuracy", "test accuracy (%)",
               f"{dataset.name}: fine-tuning from each init")


def _filter_image(w_I: np.ndarray) -> np.ndarray:
  side = math.isqrt(len(w_I))
  return w_I.reshape(side, side) if side * side == len(w_I) else w_I.reshape(1, -1)


def _plot_filters(path, config, dataset, result: dict, spec: harness.Experiment) -> None:
  """The first layer's filters (columns of w^1, first seed): each init at init and after
  fine-tuning with the most labels at its chosen eta; each filter scaled to its own max |w|.
  A cell trained before a resume is trained again for its first seed (fit is a function of
  its arguments)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  exp = config.experiment
  entry = result["sizes"][-1]
  most, seed = entry["size"], result["seeds"][0]
  rows = []
  for name in exp.inits:
    chosen = entry["arms"][name]["chosen"]
    key = (name, chosen["learning_rate"], most)
    memo = spec.fit.memo
    if key not in memo:
      spec.fit(name, chosen, most, [seed], [spec.draw(most, seed)])
    at_init, tuned = memo[key]
    what = "autoencoder" if name == "pretrained" else "init"
    rows.append((f"{name}: {what}", at_init))
    rows.append((f"{name}: fine-tuned ({most}/class, eta={chosen['learning_rate']:g})", tuned))
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
  fig.suptitle(f"First-layer filters w^1 (seed {seed}, {dataset.name}; red > 0 > blue, "
               "each scaled to its own max |w|)", fontsize=9)
  report.save_figure(fig, path)
