"""Parameter tying and sharing: a convolution against a locally connected layer of the same
geometry, on few training examples.

Both models are research/models/local_cnn.py with config.model's geometry: the "conv" variant
ties each layer's kernel across all output positions (shared=True), the "local" variant gives
every position its own kernel and bias (shared=False), H' W' times the parameters. The local
model can represent every function the conv can, so any difference comes from the constraint:
sharing says one feature detector is worth applying everywhere, the prior a small training set
cannot teach.

The harness (research/experiments/harness.py) runs the protocol: its sizes are labels per
class (experiment.labels_per_class: stratified subsets, redrawn per seed); the arms are conv
(the baseline) and local, each choosing its learning rate from experiment.learning_rates on
the validation split (the same budget); config.grad=manual trains them with
research/backprop/local_cnn.py. Measured on the test split: accuracy, the gap (train accuracy
on the seed's own subset, eval mode, minus test accuracy), the test loss and the parameter
count.
"""
from typing import Any

import jax
import ml_collections

from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import optim
from research.experiments import harness
from research.experiments import report
from research.experiments import variants as variants_lib
from research.models import layers

VARIANTS = {"conv": True, "local": False}  # name -> config.model.shared
RANGES = {"seeds": config_lib.Range(True, 2), "max_extensions": config_lib.Range(True, 0)}


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_weight_sharing.py", RANGES)
  if config.model.name != "local_cnn":
    raise errors.ConfigError(f"config.model.name={config.model.name!r}: the weight sharing "
                             "experiment compares the two kinds of 'local_cnn'; set it to that")
  sizes = errors.check_ints("experiment.labels_per_class", exp.labels_per_class,
                            " (labelled training examples per class)")
  errors.check_batch_size(config.batch_size, 10 * min(sizes),
                          "training examples of the smallest size")
  if not tuple(exp.learning_rates):
    raise errors.ConfigError("config.experiment.learning_rates is empty; give each kind of "
                             "layer at least one step size to choose from")
  for lr in exp.learning_rates:
    errors.check_positive("experiment.learning_rates[]", lr)


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc): sizes are labels per class."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  k = losses.num_outputs(config, dataset)
  # Refuse a size no class can hold now, before any training.
  harness.stratified_indices(dataset.train.y, max(exp.labels_per_class), config.seed, k)
  draw = harness.labelled_draw(dataset.train, k)
  configs = {}
  for name, shared in VARIANTS.items():
    configs[name] = config.copy_and_resolve_references()
    configs[name].model.shared = shared
  models = {name: variants_lib.standard_variant(name, cfg, dataset.input_shape, k, 1).model
            for name, cfg in configs.items()}
  eval_fns = {name: kernel.make_eval_fn(m, config.loss.output, k) for name, m in models.items()}
  params = {name: layers.param_count(jax.eval_shape(m.init, jax.random.key(0)))
            for name, m in models.items()}
  splits = {"valid": dataset.valid, "test": dataset.test}
  bs = config.eval_batch_size

  def fit(name, setting, per_class, seeds, subsets):
    variant = variants_lib.standard_variant(name, configs[name], dataset.input_shape, k,
                                            k * per_class)
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": setting["learning_rate"]}),
        config.num_steps)
    return harness.train_seeds(
        variant.model, variant.loss_fn, optimizer, config.num_steps, config.batch_size,
        subsets, seeds, mode=exp.seed_mode, augment_fn=variant.augment_fn,
        value_and_grad=variant.value_and_grad, chunk_steps=config.eval_every,
        what=f"weight_sharing {name} at {per_class} labels per class", writer=writer,
        tag={"labels_per_class": per_class, "arm": name, **setting})

  def measure(name, setting, per_class, seed, p, split):
    out = kernel.evaluate(eval_fns[name], p, splits[split], bs, per_example=split == "test")
    record = harness.evaluation(out)
    if split == "test":
      train = kernel.evaluate(eval_fns[name], p, draw(per_class, seed), bs)["accuracy"]
      record.update(train_accuracy=train, gap=train - out["accuracy"], params=params[name])
    return record

  arms = [harness.Arm(name, {"learning_rate": tuple(exp.learning_rates)}) for name in VARIANTS]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "weight_sharing", arms, "conv", tuple(exp.labels_per_class), "labels per class", seeds,
      fit, measure, select="accuracy", draw=draw, family=harness.fields_of(FIELDS, LOSS_FIELDS))


FIELDS = [("accuracy", "test acc %", 100.0), ("gap", "train-test gap (points)", 100.0)]
LOSS_FIELDS = [("loss", "test loss", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """conv and local at every number of labels per class, under the harness's protocol; writes
  results.{md,json} and weight_sharing.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config, result) -> list[str]:
  m, exp = config.model, config.experiment
  arms = result["sizes"][0]["arms"]
  counts = ", ".join(f"{name} {int(arm['test'][0]['params']):,}" for name, arm in arms.items())
  return [f"{config.data.name}: labels per class drawn from the training split; layers "
          f"{tuple(m.kernel_sizes)} kernels, strides {tuple(m.strides)}, channels "
          f"{tuple(m.channels)}, {m.padding} padding, ReLU, then dense ({counts} parameters); "
          f"{config.num_steps} steps of {config.optimizer.name}, batch {config.batch_size}, "
          f"grad={config.grad}; each kind's learning rate chosen from "
          f"{tuple(exp.learning_rates)} on validation accuracy. conv = shared weights, local = "
          "one kernel per output position; the gap is train accuracy (on the seed's own subset) "
          "minus test accuracy."]


def write(workdir, config, result) -> None:
  """results.{md,json} and weight_sharing.png from the harness's results."""
  harness.write(workdir, result, "Parameter tying and sharing: conv vs locally connected",
                FIELDS, notes(config, result),
                extra=["Test data loss:", harness.table(result, LOSS_FIELDS, digits=3)])
  harness.plot(workdir / "weight_sharing.png", result, "accuracy", "test accuracy (%)",
               f"Shared (conv) vs unshared (locally connected) weights on {config.data.name}")
