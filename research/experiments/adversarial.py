"""Adversarial examples and adversarial training.

The fast gradient sign method (Goodfellow et al., 2015) moves every input pixel by eps in the
direction that raises the cost fastest, to first order:

  x_adv = clip(x + eps sign(dE/dx)),   E the data term for the true label y,

clipped to the pixel range of the data. dE/dx comes from jax.grad with respect to the input,
and, for the MLP, from the hand-written backward pass continued one layer further down:
dE/dx_i = sum_j delta^1_j w^1_ij (research/backprop/mlp.py manual_grads_and_input_grad). The
runner checks on the whole test set that the two agree, and attacks with both.

eps is a fraction of the pixel range (experiment.epsilons; digits: 16 grey levels, so 0.1 is
1.6 grey levels), the convention of MNIST's [0, 1] pixels.

Methods (experiment.methods), the lecture's MLP on a seeded slice of the train split:
  standard     the data term alone
  adversarial  E = alpha E(x) + (1 - alpha) E(x_adv), x_adv the FGSM example of the current
               weights at eps = experiment.train_epsilon (treated as data: no gradient flows
               through its construction), alpha = experiment.alpha
For each trained network: clean test accuracy, and test accuracy under an FGSM attack on that
same network (white box) at every eps.
"""
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

METHODS = ("standard", "adversarial")
RANGES = {"train_examples": config_lib.Range(True, 0), "subset_seed": config_lib.Range(True, 0),
          "repeats": config_lib.Range(True, 1),
          "train_epsilon": config_lib.Range(False, 0.0, low_open=True),
          "alpha": config_lib.Range(False, 0.0, 1.0)}


def fgsm(x: jax.Array, dE_dx: jax.Array, eps, low, high) -> jax.Array:
  """x + eps sign(dE/dx), clipped to [low, high] (the data's pixel range)."""
  return jnp.clip(x + eps * jnp.sign(dE_dx), low, high)


def input_grad_autodiff(model: models.Model, k: int):
  """(params, x, labels) -> dE/dx of the mean softmax cross-entropy, by jax.grad."""
  def grad(params, x, labels):
    y = losses.one_hot_targets(labels, k, x.dtype)
    return jax.grad(lambda x: losses.softmax_cross_entropy(model.apply(params, x), y).mean())(x)
  return grad


def input_grad_manual(activation: str, k: int):
  """(params, x, labels) -> dE/dx of the same E by the hand-written MLP backward pass."""
  def grad(params, x, labels):
    y = losses.one_hot_targets(labels, k, x.dtype)
    return backprop_mlp.manual_grads_and_input_grad(params, x, y, 0.0, 1, activation=activation,
                                                    output="softmax")[1]
  return grad


def make_adversarial_loss_fn(model: models.Model, k: int, eps, low, high, alpha: float):
  """E = alpha E(x) + (1 - alpha) E(x_adv), x_adv = fgsm at the current weights (stopped)."""
  input_grad = input_grad_autodiff(model, k)

  def loss_fn(params, x, labels, rng):
    y = losses.one_hot_targets(labels, k, x.dtype)
    x_adv = jax.lax.stop_gradient(fgsm(x, input_grad(params, x, labels), eps, low, high))
    logits = model.apply(params, x, train=True, rng=rng)
    clean = losses.softmax_cross_entropy(logits, y).mean()
    adv = losses.softmax_cross_entropy(model.apply(params, x_adv, train=True, rng=rng), y).mean()
    accuracy = (losses.predictions(logits) == labels).mean()
    return alpha * clean + (1 - alpha) * adv, {"data_loss": clean, "adversarial_loss": adv,
                                               "accuracy": accuracy}

  return loss_fn


def make_attack_fn(model: models.Model, activation: str, k: int, epsilons, low, high):
  """Jitted (params, x, labels) -> {"autodiff"|"manual": accuracy under FGSM at each eps
  (eps in the data's units), "grad_rel_err": max |manual - autodiff| / max |autodiff| of dE/dx,
  "sign_agreement": fraction of pixels where the two signs agree, "sign_flip_rel": the largest
  |dE/dx| where they do not, relative to max |dE/dx|}."""
  grads = {"autodiff": input_grad_autodiff(model, k), "manual": input_grad_manual(activation, k)}

  @jax.jit
  def attack(params, x, labels):
    g = {name: fn(params, x, labels) for name, fn in grads.items()}
    out = {name: jnp.stack([(losses.predictions(model.apply(params, fgsm(x, g_x, eps, low, high)))
                             == labels).mean() for eps in epsilons])
           for name, g_x in g.items()}
    out["grad_rel_err"] = (jnp.abs(g["manual"] - g["autodiff"]).max()
                           / jnp.abs(g["autodiff"]).max())
    differ = jnp.sign(g["manual"]) != jnp.sign(g["autodiff"])
    out["sign_agreement"] = 1 - differ.mean()
    # Where the signs differ, |dE/dx| is at rounding level: how large it gets, relative.
    out["sign_flip_rel"] = (jnp.where(differ, jnp.abs(g["autodiff"]), 0).max()
                            / jnp.abs(g["autodiff"]).max())
    return out

  return attack


def validate(config: ml_collections.ConfigDict) -> None:
  report.check_experiment(config, "configs/exp_adversarial.py", RANGES, METHODS)
  if config.model.name != "mlp" or config.model.get("dropout", 0.0):
    raise errors.ConfigError("config.model: the adversarial experiment compares jax.grad's dE/dx "
                             "with the manual MLP's; set config.model.name='mlp', dropout=0")
  if config.loss.output != "softmax" or config.loss.l2 or config.loss.l1:
    raise errors.ConfigError("config.loss: the adversarial experiment uses softmax cross-entropy "
                             "without penalties; set output='softmax', l2=0, l1=0")
  eps = tuple(config.experiment.epsilons)
  if not eps or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e <= 1
                    for e in eps):
    raise errors.ConfigError(f"config.experiment.epsilons={eps!r} must be fractions of the pixel "
                             "range in [0, 1], e.g. (0.0, 0.05, 0.1)")


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains every method; attacks each network; writes results.{md,json} and adversarial.png.

  Returns {"methods": {name: {"clean_accuracy", "eps=<e>": {"mean", "std"}, "runs"}},
  "gradients": {"grad_rel_err", "sign_flip_rel" (max over runs), "sign_agreement" (min),
  "max_accuracy_difference"}, "pixel_range": (low, high), "wall_time": s}.
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  train_split = harness.seeded_slice(dataset.train, exp.train_examples, exp.subset_seed)
  k = dataset.num_classes
  model = models.build(config.model, dataset.input_shape, k)
  low, high = float(dataset.train.x.min()), float(dataset.train.x.max())
  epsilons = tuple(float(e) for e in exp.epsilons)
  scaled = tuple(e * (high - low) for e in epsilons)
  data_loss = losses.make_loss_fn(model, "softmax", 0.0, len(train_split), k)
  adversarial_loss = lambda: make_adversarial_loss_fn(
      model, k, exp.train_epsilon * (high - low), low, high, exp.alpha)
  make = {"standard": lambda: variants_lib.Variant("standard", model, data_loss),
          "adversarial": lambda: variants_lib.Variant("adversarial", model, adversarial_loss())}
  variants = [make[m]() for m in exp.methods]
  attack = make_attack_fn(model, config.model.activation, k, scaled, low, high)
  x_test, y_test = jax.device_put(dataset.test.x), jax.device_put(dataset.test.y)
  fields = [f"eps={e:g}" for e in epsilons]

  def measure(variant, params):
    out = jax.device_get(attack(params, x_test, y_test))
    return {**{f: float(a) for f, a in zip(fields, out["autodiff"])},
            **{f"manual {f}": float(a) for f, a in zip(fields, out["manual"])},
            **{f: float(out[f]) for f in ("grad_rel_err", "sign_agreement", "sign_flip_rel")}}

  seeds = [config.seed + r for r in range(exp.repeats)]
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  logging.info("%s: %d training examples, %d test; pixel range [%.3f, %.3f]; methods %s",
               dataset.name, len(train_split), len(dataset.test), low, high,
               ", ".join(exp.methods))
  results = variants_lib.run_variants(variants, config, train_split.x, train_split.y, seeds,
                                      measure, writer)
  runs = [r for res in results.values() for r in res["runs"]]
  gradients = {"grad_rel_err": max(r["grad_rel_err"] for r in runs),
               "sign_agreement": min(r["sign_agreement"] for r in runs),
               "sign_flip_rel": max(r["sign_flip_rel"] for r in runs),
               "max_accuracy_difference": max(abs(r[f] - r[f"manual {f}"])
                                              for r in runs for f in fields)}
  out = {"methods": results, "gradients": gradients, "pixel_range": (low, high),
         "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write(workdir, config, dataset, len(train_split), fields, out)
    _plot(workdir / "adversarial.png", results, epsilons, dataset.name)
  return out


def _write(workdir, config, dataset, n: int, fields, out: dict) -> None:
  exp = config.experiment
  rows = [{"method": name, **{f"test acc % at {f}": variants_lib.cell(r[f]) for f in fields}}
          for name, r in out["methods"].items()]
  g = out["gradients"]
  notes = [
      f"{dataset.name}: {n} training examples, {len(dataset.test)} test; MLP "
      f"{tuple(config.model.hidden_sizes)} {config.model.activation}, {config.num_steps} steps "
      f"of {config.optimizer.name}; adversarial training at eps={exp.train_epsilon:g}, "
      f"alpha={exp.alpha:g}. eps is a fraction of the pixel range "
      f"[{out['pixel_range'][0]:.3f}, {out['pixel_range'][1]:.3f}] (eps=0: clean accuracy); "
      f"every network is attacked with its own gradient (white box). Mean ± std over "
      f"{exp.repeats} seeds.",
      "",
      f"dE/dx by the manual backward pass vs jax.grad, over every run and test example: max "
      f"|manual - autodiff| / max |autodiff| = {g['grad_rel_err']:.2e}; signs agree on "
      f"{100 * g['sign_agreement']:.3f}% of the pixels (at worst), and where they do not, "
      f"|dE/dx| is at most {g['sign_flip_rel']:.1e} of its maximum (rounding decides the "
      f"sign); the accuracies under the two attacks differ by at most "
      f"{100 * g['max_accuracy_difference']:.2f} points."]
  report.write_results(workdir, "Adversarial examples (FGSM) and adversarial training",
                       list(rows[0]), rows, notes, out)


def _plot(path, results: dict, epsilons, name: str) -> None:
  """Test accuracy under FGSM against eps, one line per method (mean ± std over seeds)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(6, 4.2), layout="constrained")
  ax = fig.subplots()
  for (method, r), color in zip(results.items(), ("#3182bd", "#e6550d", "#31a354")):
    mean = [100 * r[f"eps={e:g}"]["mean"] for e in epsilons]
    std = [100 * r[f"eps={e:g}"]["std"] for e in epsilons]
    ax.errorbar(epsilons, mean, yerr=std, marker="o", capsize=3, color=color,
                label=f"{method} training")
  ax.set_xlabel("eps (fraction of the pixel range)")
  ax.set_ylabel("test accuracy under FGSM (%)")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.suptitle(f"Fast gradient sign attacks on {name}")
  report.save_figure(fig, path)
