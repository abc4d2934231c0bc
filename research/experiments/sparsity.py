"""Sparse representations: an L1 penalty on the hidden units' values, next to L1 on the weights.

Two penalties that both say "sparse", on different things:

  activations  E + (lambda_h/B) sum_b sum_l sum_j |sigma^l_bj|   (losses.activation_l1_penalty)
               pushes each example's hidden values to 0: a sparse *representation*, with the
               weights free to be dense;
  weights      E + (lambda_1/m) sum_l sum_ij |w^l_ij|            (losses.l1_penalty)
               pushes parameters to 0: a sparse *model*.

The lecture's MLP (config.model, ReLU hidden units, no dropout) trains on a seeded slice of
experiment.train_examples examples once per strength of each penalty (experiment.activation_l1,
experiment.weight_l1, plus no penalty) and per seed. With config.grad="manual" it trains with
the hand-written backward pass (research/backprop/mlp.py), where the activation penalty adds
(lambda_h/B) sign(sigma^l_j) to dE/dsigma^l_j. On the test set it measures:

  test accuracy, test loss
  hidden near zero   the fraction of hidden units with |sigma^l_j| <= experiment.near_zero,
                     per example, averaged over the test examples (ReLU units at exactly 0
                     count): how sparse each example's representation is
  hidden exactly 0   the same with sigma = 0 exactly (a ReLU below its threshold): unlike the
                     near-zero count, it cannot be bought by shrinking every sigma and growing
                     the next layer's weights to match (which the penalty on |sigma| also
                     rewards)
  dead units         the fraction of hidden units that are near zero on *every* test example:
                     a unit that never fires is not a sparse code, it is a smaller network
  weights near zero  the fraction of weights w^l_ij (all layers) with |w| <= experiment.near_zero
"""
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from research import config_lib
from research import data as data_lib
from research import errors
from research import losses
from research import metrics as metrics_lib
from research import models
from research.backprop import mlp as backprop_mlp
from research.experiments import harness
from research.experiments import report
from research.experiments import variants as variants_lib

FIELDS = ("test_accuracy", "test_loss", "hidden_near_zero", "hidden_exact_zero", "dead_units",
          "weights_near_zero")
RANGES = {"train_examples": config_lib.Range(True, 0), "subset_seed": config_lib.Range(True, 0),
          "repeats": config_lib.Range(True, 1),
          "near_zero": config_lib.Range(False, 0.0, low_open=True)}


def validate(config: ml_collections.ConfigDict) -> None:
  report.check_experiment(config, "configs/exp_sparse_representations.py", RANGES)
  if config.model.name != "mlp" or config.model.get("dropout", 0.0):
    raise errors.ConfigError(
        f"config.model.name={config.model.name!r}, dropout={config.model.get('dropout', 0.0)!r}: "
        "the sparsity experiment penalises the hidden units of the MLP without dropout; set "
        "config.model.name='mlp' and config.model.dropout=0")
  for field in ("activation_l1", "weight_l1"):
    values = tuple(config.experiment[field])
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in values):
      raise errors.ConfigError(f"config.experiment.{field}={values!r} must be positive numbers "
                               "(no penalty is always trained as 'none')")
  if config.loss.l1:
    raise errors.ConfigError(f"config.loss.l1={config.loss.l1!r} must be 0: the experiment sets "
                             "lambda_1 from config.experiment.weight_l1")


def make_variant(name: str, config, model: models.Model, k: int, m: int, *,
                 lam_act: float = 0.0, lam1: float = 0.0) -> variants_lib.Variant:
  """The MLP with E + (lambda/2m) sum w^2 + lambda_1 and lambda_h penalties; with
  config.grad="manual" its gradient is the hand-written backward pass."""
  act, output = config.model.activation, config.loss.output
  loss_fn = losses.make_activation_l1_loss_fn(
      functools.partial(backprop_mlp.hidden_forward, activation=act), output, config.loss.l2,
      m, k, lam_act, lam1)
  value_and_grad = None
  if config.grad == "manual":
    value_and_grad = backprop_mlp.make_value_and_grad(act, output, config.loss.l2, m, k,
                                                      lam1=lam1, lam_act=lam_act)
  return variants_lib.Variant(name, model, loss_fn, value_and_grad=value_and_grad)


def make_sparsity_fn(activation: str, near_zero: float):
  """Jitted (params, x_NxD) -> {hidden_near_zero: mean over examples of the fraction of hidden
  units with |sigma| <= near_zero, hidden_exact_zero: the same for sigma == 0, dead_units:
  fraction near zero on every example, weights_near_zero: fraction of all w^l_ij with |w| <=
  near_zero}."""

  @jax.jit
  def sparsity(params, x):
    sigmas, _ = backprop_mlp.hidden_forward(params, x, activation)
    sigma_NxH = jnp.concatenate(sigmas, axis=1)
    near_NxH = jnp.abs(sigma_NxH) <= near_zero
    weights = jnp.concatenate([jnp.abs(layer["w"]).ravel() <= near_zero for layer in params])
    return {"hidden_near_zero": near_NxH.mean(), "hidden_exact_zero": (sigma_NxH == 0).mean(),
            "dead_units": near_NxH.all(axis=0).mean(), "weights_near_zero": weights.mean()}

  return sparsity


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains every penalty strength; writes results.{md,json} and sparsity.png.

  Returns {"variants": {name: {"penalty", "strength", field: {"mean", "std"}, "runs"}},
  "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  train_split = harness.seeded_slice(dataset.train, exp.train_examples, exp.subset_seed)
  m, k = len(train_split), losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  settings = ([("none", 0.0)] + [("activations", v) for v in exp.activation_l1]
              + [("weights", v) for v in exp.weight_l1])
  variants = []
  for penalty, strength in settings:
    name = "none" if penalty == "none" else f"{penalty} {strength:g}"
    kwargs = {"activations": {"lam_act": strength}, "weights": {"lam1": strength}}.get(penalty, {})
    variants.append(make_variant(name, config, model, k, m, **kwargs))
  evaluate = variants_lib.accuracy_fn(model, config.loss.output, k, config.eval_batch_size)
  sparsity = make_sparsity_fn(config.model.activation, exp.near_zero)
  x_test = jax.device_put(dataset.test.x)

  def measure(variant, params):
    te = evaluate(params, dataset.test)
    return {"test_accuracy": te["accuracy"], "test_loss": te["loss"],
            **{k: float(v) for k, v in sparsity(params, x_test).items()}}

  seeds = [config.seed + r for r in range(exp.repeats)]
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  logging.info("%s: %d training examples, %d test; %d settings x %d seeds, grad=%s",
               dataset.name, m, len(dataset.test), len(variants), len(seeds), config.grad)
  results = variants_lib.run_variants(variants, config, train_split.x, train_split.y, seeds,
                                      measure, writer, FIELDS)
  for (penalty, strength), variant in zip(settings, variants):
    results[variant.name].update(penalty=penalty, strength=strength)
  out = {"variants": results, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write(workdir, config, dataset, m, out)
  return out


def _write(workdir, config, dataset, m: int, out: dict) -> None:
  cell = variants_lib.cell
  rows = [{"penalty on": r["penalty"],
           "strength": "-" if r["penalty"] == "none" else (
               f"lambda_h={r['strength']:g}" if r["penalty"] == "activations"
               else f"lambda_1={r['strength']:g}"),
           "test acc %": cell(r["test_accuracy"]), "test loss": cell(r["test_loss"], 1.0, 3),
           "hidden near 0 %": cell(r["hidden_near_zero"]),
           "hidden = 0 %": cell(r["hidden_exact_zero"]),
           "dead units %": cell(r["dead_units"]),
           "weights near 0 %": cell(r["weights_near_zero"])}
          for r in out["variants"].values()]
  exp = config.experiment
  notes = [f"{dataset.name}: {m} training examples, {len(dataset.test)} test; MLP "
           f"{dataset.input_shape} -> {tuple(config.model.hidden_sizes)} "
           f"{config.model.activation} -> {config.loss.output}, {config.num_steps} steps of "
           f"{config.optimizer.name}, grad={config.grad}; near 0 means |.| <= {exp.near_zero:g}; "
           f"mean ± std over {exp.repeats} seeds."]
  report.write_results(workdir, "Sparse representations: L1 on the hidden units vs on the "
                       "weights", list(rows[0]), rows, notes, out)
  _plot(workdir / "sparsity.png", out["variants"], dataset.name, m)


def _plot(path, results: dict, name: str, m: int) -> None:
  """Test accuracy against the sparsity each penalty buys: of the hidden values (left) and of
  the weights (right); one line per penalty, points labelled with their strength."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(10, 4.2), layout="constrained")
  axes = fig.subplots(1, 2, sharey=True)
  none = results["none"]
  for ax, field, label in ((axes[0], "hidden_near_zero", "hidden units near 0 per example (%)"),
                           (axes[1], "weights_near_zero", "weights near 0 (%)")):
    for penalty, color, marker in (("activations", "#3182bd", "o"), ("weights", "#e6550d", "s")):
      rows = [none] + [r for r in results.values() if r.get("penalty") == penalty]
      xs = [100 * r[field]["mean"] for r in rows]
      ys = [100 * r["test_accuracy"]["mean"] for r in rows]
      errs = [100 * r["test_accuracy"]["std"] for r in rows]
      ax.errorbar(xs, ys, yerr=errs, color=color, marker=marker, capsize=3,
                  label=f"L1 on the {penalty}")
      for r, x, y in zip(rows[1:], xs[1:], ys[1:]):
        ax.annotate(f"{r['strength']:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color=color)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("test accuracy (%)")
  axes[0].legend(loc="lower left")
  fig.suptitle(f"Sparse representations vs sparse weights ({name}, {m} training examples; "
               "labels: lambda)")
  report.save_figure(fig, path)
