"""Sparse representations: an L1 penalty on the hidden units' values, next to L1 on the weights.

Two penalties that both say "sparse", on different things:

  activations  E + (lambda_h/B) sum_b sum_l sum_j |sigma^l_bj|   (losses.activation_l1_penalty)
               pushes each example's hidden values to 0: a sparse *representation*, with the
               weights free to be dense;
  weights      E + (lambda_1/m) sum_l sum_ij |w^l_ij|            (losses.l1_penalty)
               pushes parameters to 0: a sparse *model*.

The harness (research/experiments/harness.py) runs the protocol. The lecture's MLP
(config.model, ReLU hidden units, no dropout) trains on the whole training split for every
seed (there is no subset to draw; the seeds differ in the init and the batch order); the arms
are the strengths of each penalty, "activations <lambda_h>" for experiment.activation_l1 and
"weights <lambda_1>" for experiment.weight_l1, beside "none" (the baseline). The section is a
sweep of the trade-off between sparsity and accuracy: every arm tunes only its step size, over
experiment.learning_rates (the same candidates, grown at an edge by up to
experiment.max_extensions steps), every strength is reported, paired with none over the seeds,
and a second block chooses each penalty's strength on validation (harness.regroup; both
penalties sweep as many strengths). With
config.grad="manual" it trains with the hand-written backward pass (research/backprop/mlp.py),
where the activation penalty adds (lambda_h/B) sign(sigma^l_j) to dE/dsigma^l_j. On the test
set it measures:

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
from research.backprop import mlp as backprop_mlp
from research.experiments import harness
from research.experiments import report
from research.experiments import variants as variants_lib

SPARSITY = ("hidden_near_zero", "hidden_exact_zero", "dead_units", "weights_near_zero")
RANGES = {"seeds": config_lib.Range(True, 2), "max_extensions": config_lib.Range(True, 0),
          "near_zero": config_lib.Range(False, 0.0, low_open=True)}


def validate(config: ml_collections.ConfigDict) -> None:
  report.check_experiment(config, "configs/exp_sparse_representations.py", RANGES)
  if config.model.name != "mlp" or config.model.get("dropout", 0.0):
    raise errors.ConfigError(
        f"config.model.name={config.model.name!r}, dropout={config.model.get('dropout', 0.0)!r}: "
        "the sparsity experiment penalises the hidden units of the MLP without dropout; set "
        "config.model.name='mlp' and config.model.dropout=0")
  for field in ("activation_l1", "weight_l1", "learning_rates"):
    values = tuple(config.experiment[field])
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                         for v in values):
      raise errors.ConfigError(f"config.experiment.{field}={values!r} must be positive numbers, "
                               "at least one (no penalty is always trained as 'none'; learning_rates: every "
                               "arm's step sizes)")
  if len(config.experiment.activation_l1) != len(config.experiment.weight_l1):
    raise errors.ConfigError(
        f"config.experiment.activation_l1 has {len(config.experiment.activation_l1)} strengths "
        f"and weight_l1 {len(config.experiment.weight_l1)}; give both penalties as many (each "
        "chooses its strength from them on validation: tuning equal in kind)")
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


def arm_names(exp) -> list[tuple[str, str, float]]:
  """[(arm, penalty, strength)]: none, then each strength of each penalty."""
  return ([("none", "none", 0.0)]
          + [(f"activations {v:g}", "activations", float(v)) for v in exp.activation_l1]
          + [(f"weights {v:g}", "weights", float(v)) for v in exp.weight_l1])


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc): one size, the whole training split."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  m, k = len(dataset.train), losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)
  eval_fn = kernel.make_eval_fn(model, config.loss.output, k)
  sparsity = make_sparsity_fn(config.model.activation, exp.near_zero)
  splits = {"valid": dataset.valid, "test": dataset.test}
  x_test = jax.device_put(dataset.test.x)
  penalties = {arm: (penalty, strength) for arm, penalty, strength in arm_names(exp)}

  def fit(arm, setting, size, seeds, subsets):
    del subsets  # Every seed trains on the whole training split.
    penalty, strength = penalties[arm]
    kwargs = {"activations": {"lam_act": strength}, "weights": {"lam1": strength}}.get(penalty,
                                                                                       {})
    variant = make_variant(arm, config, model, k, m, **kwargs)
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": setting["learning_rate"]}),
        config.num_steps)
    return harness.train_seeds(
        model, variant.loss_fn, optimizer, config.num_steps, config.batch_size,
        [dataset.train] * len(seeds), seeds, mode=exp.seed_mode,
        value_and_grad=variant.value_and_grad, chunk_steps=config.eval_every,
        what=f"sparsity {arm}", writer=writer, tag={"arm": arm, **setting})

  def measure(arm, setting, size, seed, params, split):
    out = kernel.evaluate(eval_fn, params, splits[split], config.eval_batch_size,
                          per_example=split == "test")
    record = harness.evaluation(out)
    if split == "test":
      record.update({f: float(v) for f, v in sparsity(params, x_test).items()})
    return record

  arms = [harness.Arm(arm, {"learning_rate": tuple(exp.learning_rates)}) for arm in penalties]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "sparsity", arms, "none", (m,), "training examples", seeds, fit, measure,
      select="accuracy", data_note="each trains on the whole training split: no subset to draw",
      family=harness.fields_of(FIELDS))


FIELDS = [("accuracy", "test acc %", 100.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every strength of both penalties, under the harness's protocol; writes results.{md,json}
  and sparsity.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config, result) -> list[str]:
  exp = config.experiment
  return [f"{config.data.name}: every seed trains on the whole training split "
          f"({result['sizes'][0]['size']} examples); MLP {tuple(config.model.hidden_sizes)} "
          f"{config.model.activation} -> {config.loss.output}, {config.num_steps} steps of "
          f"{config.optimizer.name}, grad={config.grad}. The methods are the strengths of L1 on "
          f"the hidden units (activations, lambda_h) and on the weights (weights, lambda_1): a "
          f"sweep, each arm with its learning rate chosen on validation from "
          f"{tuple(exp.learning_rates)}. Near 0 means |.| <= {exp.near_zero:g}."]


def sparsity_table(result) -> str:
  """Test loss and the sparsity each arm buys, mean ± sample std over seeds."""
  rows = []
  for entry in result["sizes"]:
    for name, arm in entry["arms"].items():
      st = arm["stats"]
      rows.append({"method": name, "test loss": harness.fmt_summary(st["loss"], 1.0, 3),
                   "hidden near 0 %": harness.fmt_summary(st["hidden_near_zero"]),
                   "hidden = 0 %": harness.fmt_summary(st["hidden_exact_zero"]),
                   "dead units %": harness.fmt_summary(st["dead_units"]),
                   "weights near 0 %": harness.fmt_summary(st["weights_near_zero"])})
  return report.markdown_table(report.columns_of(rows), rows)


def chosen_on_validation(config, result) -> dict:
  """The sweep as a choice: per penalty, the strength with the best mean validation
  accuracy over the seeds (harness.regroup), against no penalty; a results block of its own."""
  groups = {"none": [({}, "none")]}
  for arm, penalty, strength in arm_names(config.experiment):
    if penalty != "none":
      groups.setdefault(penalty, []).append(({"lambda": strength}, arm))
  return harness.regroup(result, groups)


def write(workdir, config, result) -> None:
  """results.{md,json} and sparsity.png from the harness's results; results.json also holds
  the block chosen on validation ("chosen_on_valid")."""
  chosen = {k: v for k, v in chosen_on_validation(config, result).items() if k != "wall_time"}
  result = {**result, "chosen_on_valid": chosen}
  harness.write(workdir, result, "Sparse representations: L1 on the hidden units vs on the "
                "weights", FIELDS, notes(config, result),
                extra=["Test loss and sparsity on the test set (mean ± sample std):",
                       sparsity_table(result),
                       "Each penalty at the strength chosen on validation (the sweep's own "
                       "runs; the table above reads every strength on test):",
                       harness.protocol_note(chosen), harness.table(chosen, FIELDS)])
  _plot(workdir / "sparsity.png", config, result)


def _plot(path, config, result: dict) -> None:
  """Test accuracy against the sparsity each penalty buys: of the hidden values (left) and of
  the weights (right); one line per penalty, points labelled with their strength; error bars
  the 95% t-interval of the mean."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  arms = result["sizes"][0]["arms"]
  names = arm_names(config.experiment)
  fig = Figure(figsize=(10, 4.2), layout="constrained")
  axes = fig.subplots(1, 2, sharey=True)
  for ax, field, label in ((axes[0], "hidden_exact_zero", "hidden units exactly 0 per example (%)"),
                           (axes[1], "weights_near_zero", "weights near 0 (%)")):
    for penalty, color, marker in (("activations", "#3182bd", "o"), ("weights", "#e6550d", "s")):
      rows = [(a, s) for a, p, s in names if p in ("none", penalty)]
      xs = [100 * arms[a]["stats"][field]["mean"] for a, _ in rows]
      accs = [[100 * r["accuracy"] for r in arms[a]["test"]] for a, _ in rows]
      ys = [float(np.mean(v)) for v in accs]
      cis = [harness.t_interval(v) for v in accs]
      ax.errorbar(xs, ys, yerr=[[y - lo for y, (lo, _) in zip(ys, cis)],
                                [hi - y for y, (_, hi) in zip(ys, cis)]],
                  color=color, marker=marker, capsize=3, label=f"L1 on the {penalty}")
      for (_, strength), x, y in zip(rows[1:], xs[1:], ys[1:]):
        ax.annotate(f"{strength:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color=color)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("test accuracy (%)")
  axes[0].legend(loc="center", title=f"mean, 95% CI (n={len(result['seeds'])})")
  fig.suptitle(f"Sparse representations vs sparse weights ({config.data.name}; "
               "labels: lambda)")
  report.save_figure(fig, path)
