"""Parameter tying and sharing: a convolution against a locally connected layer of the same
geometry, on few training examples.

Both models are research/models/local_cnn.py with config.model's geometry: the "conv" variant
ties each layer's kernel across all output positions (shared=True), the "local" variant gives
every position its own kernel and bias (shared=False), H' W' times the parameters. The local
model can represent every function the conv can, so any difference comes from the constraint:
sharing says one feature detector is worth applying everywhere, the prior a small training set
cannot teach.

For each size n of experiment.train_examples, a seeded slice of n training examples
(harness.seeded_slice) trains both variants for experiment.repeats seeds
(variants.fit, the library's train chunk; config.grad=manual trains them with
research/backprop/local_cnn.py). The table gives the parameter count, train accuracy (on the
slice, eval mode), test accuracy, the gap and the test loss, mean ± std over the seeds.
"""
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from research import config_lib
from research import data as data_lib
from research import errors
from research import losses
from research import metrics as metrics_lib
from research.experiments import harness
from research.experiments import report
from research.experiments import variants as variants_lib
from research.models import layers

VARIANTS = {"conv": True, "local": False}  # name -> config.model.shared
FIELDS = ("train_accuracy", "test_accuracy", "gap", "test_loss")
RANGES = {"subset_seed": config_lib.Range(True, 0), "repeats": config_lib.Range(True, 1)}


def validate(config: ml_collections.ConfigDict) -> None:
  report.check_experiment(config, "configs/exp_weight_sharing.py", RANGES)
  if config.model.name != "local_cnn":
    raise errors.ConfigError(f"config.model.name={config.model.name!r}: the weight sharing "
                             "experiment compares the two kinds of 'local_cnn'; set it to that")
  errors.check_ints("experiment.train_examples", config.experiment.train_examples,
                    " (0 = the whole train split)", minimum=0)


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains conv and local on every slice size; writes results.{md,json} and weight_sharing.png.

  Returns {"sizes": {n: {"conv"|"local": {field: {"mean", "std"}, "params", "runs"}}},
  "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  k = losses.num_outputs(config, dataset)
  seeds = [config.seed + r for r in range(exp.repeats)]
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  out, evaluators = {}, {}  # An evaluator per variant, compiled once for every size.
  for n in exp.train_examples:
    train_split = harness.seeded_slice(dataset.train, n, exp.subset_seed)
    n = len(train_split)
    errors.check_batch_size(config.batch_size, n, "examples of a slice")
    variants = []
    for name, shared in VARIANTS.items():
      cfg = config.copy_and_resolve_references()
      cfg.model.shared = shared
      variants.append(variants_lib.standard_variant(name, cfg, dataset.input_shape, k, n))
      if name not in evaluators:
        evaluators[name] = variants_lib.accuracy_fn(variants[-1].model, cfg.loss.output, k,
                                                    cfg.eval_batch_size)

    def measure(variant, params):
      tr = evaluators[variant.name](params, train_split)
      te = evaluators[variant.name](params, dataset.test)
      return {"train_accuracy": tr["accuracy"], "test_accuracy": te["accuracy"],
              "gap": tr["accuracy"] - te["accuracy"], "test_loss": te["loss"]}

    logging.info("%d training examples: %s", n, ", ".join(VARIANTS))
    out[n] = variants_lib.run_variants(variants, config, train_split.x, train_split.y, seeds,
                                       measure, writer, FIELDS, {"train_examples": n})
    for variant in variants:
      out[n][variant.name]["params"] = layers.param_count(
          jax.eval_shape(variant.model.init, jax.random.key(0)))
  result = {"sizes": out, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write(workdir, config, dataset, result)
  return result


def _write(workdir, config, dataset, result) -> None:
  rows = []
  for n, by_variant in result["sizes"].items():
    for name, r in by_variant.items():
      rows.append({"train examples": n, "layers": name, "params": f"{r['params']:,}",
                   "train acc %": variants_lib.cell(r["train_accuracy"]),
                   "test acc %": variants_lib.cell(r["test_accuracy"]),
                   "gap (points)": variants_lib.cell(r["gap"]),
                   "test loss": variants_lib.cell(r["test_loss"], 1.0, 3)})
  m = config.model
  notes = [f"{dataset.name} {dataset.input_shape}, {len(dataset.test)} test examples; "
           f"layers {tuple(m.kernel_sizes)} kernels, strides {tuple(m.strides)}, channels "
           f"{tuple(m.channels)}, {m.padding} padding, ReLU, then dense; "
           f"{config.num_steps} steps of {config.optimizer.name}; mean ± std over "
           f"{config.experiment.repeats} seeds. conv = shared weights, local = one kernel per "
           "output position."]
  report.write_results(workdir, "Parameter tying and sharing: conv vs locally connected",
                       list(rows[0]), rows, notes, result)
  sizes = result["sizes"]
  first = sizes[min(sizes)]
  variants_lib.size_plot(
      workdir / "weight_sharing.png", sizes,
      [("test_accuracy", "test accuracy (%)"), ("gap", "train - test accuracy (points)")],
      "training examples", f"Shared (conv) vs unshared (locally connected) weights on "
      f"{dataset.name}", labels={v: f"{v} ({first[v]['params']:,} params)" for v in first},
      colors=("#3182bd", "#e6550d"))

