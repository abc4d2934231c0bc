"""Tangent propagation, the manifold tangent classifier's idea.

A small transformation of an image (a shift, a rotation) should not change its class. For a
transformation T_a with T_0 = identity, the image moves along the tangent vector
t(x) = dT_a(x)/da at a = 0, and the network's output sigma^L moves by the directional
derivative J(x) t(x), J = dsigma^L/dx. Tangent propagation (Simard et al., 1992) adds

  E_tangent = gamma (1/B) sum_b sum_t ||J(x_b) t(x_b)||^2

to the cost: the output should be flat along the transformations, to first order. The
tangents are computed from each image (image_tangents), with the slide's smoothing:

  shift along x  t = -dI/dx        shift along y  t = -dI/dy
  rotation       t = (v dI/du - u dI/dv) / r about the centre, (u, v) = (column, row) from the
                 centre, scaled by 1/r (r = half the image side) so the image's edge moves
                 about one pixel per unit, as the shifts move every pixel one pixel

with dI/du, dI/dv central differences of the image blurred by a Gaussian of
experiment.blur_sigma pixels. J t is a directional derivative: forward-mode differentiation
(`jax.jvp`) computes it in one pass alongside the forward pass, for each tangent, whereas
reverse mode (`jax.vjp`, what jax.grad uses) would need one backward pass per output unit to
build J first. Training needs dE_tangent/dw, so jax.grad differentiates through the jvp:
reverse-over-forward.

The comparison, on a seeded slice of experiment.train_examples examples, per seed:
  none          the data term alone
  augment       the same transformations applied instead: each step, every image is shifted
                by a uniform (dx, dy) in [-max_shift, max_shift] pixels and rotated by a
                uniform angle in [-max_degrees, max_degrees] (bilinear resampling)
  tangent_prop  E + E_tangent with gamma = experiment.tangent_weight
"""
import functools
import math
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
from research.experiments import harness
from research.experiments import report
from research.experiments import variants as variants_lib

METHODS = ("none", "augment", "tangent_prop")
FIELDS = ("train_accuracy", "valid_accuracy", "test_accuracy", "test_loss", "tangent_norm")
RANGES = {"train_examples": config_lib.Range(True, 0), "subset_seed": config_lib.Range(True, 0),
          "repeats": config_lib.Range(True, 1),
          "tangent_weight": config_lib.Range(False, 0.0, low_open=True),
          "blur_sigma": config_lib.Range(False, 0.0, low_open=True),
          "max_shift": config_lib.Range(False, 0.0), "max_degrees": config_lib.Range(False, 0.0)}


# ------------------------------------------------------------------------------------ tangents


def blur(x_NHWC: jax.Array, sigma: float) -> jax.Array:
  """A separable Gaussian blur of std `sigma` pixels (radius ceil(2 sigma)), edges repeated."""
  radius = max(1, math.ceil(2 * sigma))
  g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  g = (g / g.sum()).astype(x_NHWC.dtype)  # float64 weights when x is float64 (x64 on)
  h, w = x_NHWC.shape[1:3]
  pad = jnp.pad(x_NHWC, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="edge")
  x_NHWC = sum(gi * pad[:, i:i + h] for i, gi in enumerate(g))
  pad = jnp.pad(x_NHWC, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="edge")
  return sum(gi * pad[:, :, i:i + w] for i, gi in enumerate(g))


def image_tangents(x_NHWC: jax.Array, blur_sigma: float) -> jax.Array:
  """t_3xNxHxWxC: the tangent vectors of a shift along x (columns), along y (rows) and of a
  rotation about the image centre (per 1/r radian, r = half the side), from the blurred image's
  central differences (see the module doc)."""
  smooth = blur(x_NHWC, blur_sigma)
  pad = jnp.pad(smooth, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = x_NHWC.shape[1:3]
  dI_dv = (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]) / 2  # along rows (y)
  dI_du = (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]) / 2  # along columns (x)
  v = (jnp.arange(h, dtype=x_NHWC.dtype) - (h - 1) / 2)[:, None, None]
  u = (jnp.arange(w, dtype=x_NHWC.dtype) - (w - 1) / 2)[None, :, None]
  rotation = (v * dI_du - u * dI_dv) / (min(h, w) / 2)
  return jnp.stack([-dI_du, -dI_dv, rotation])


OUTPUTS = ("softmax", "logits")


def output_tangents(apply_fn, params, x: jax.Array, tangents_TxB: jax.Array,
                    output: str = "softmax") -> tuple:
  """(logits_BxK, d_TxBxK): the output's directional derivative J(x) t along each tangent t,
  by forward mode. jax.jvp of the logits gives dsum^L = (dsum^L/dx) t in one pass per tangent
  (vmapped over the tangents); output="logits" returns it, "softmax" goes on through the
  softmax's Jacobian: dsigma_k = sigma_k (dsum_k - sum_j sigma_j dsum_j)."""
  f = lambda x: apply_fn(params, x)
  logits_TxBxK, dlogits_TxBxK = jax.vmap(lambda t: jax.jvp(f, (x,), (t,)))(tangents_TxB)
  if output == "logits":
    return logits_TxBxK[0], dlogits_TxBxK
  sigma = jax.nn.softmax(logits_TxBxK[0], axis=-1)
  dsigma = sigma * (dlogits_TxBxK - (sigma * dlogits_TxBxK).sum(axis=-1, keepdims=True))
  return logits_TxBxK[0], dsigma


def make_tangent_loss_fn(model: models.Model, k: int, gamma: float, blur_sigma: float,
                         output: str = "softmax"):
  """E(params, x, labels, rng) = softmax cross-entropy + gamma (1/B) sum_b sum_t ||J t||^2,
  J the Jacobian of the softmax output (or of the logits); aux adds "tangent" (the penalty's
  mean sum_t ||J t||^2, before gamma)."""

  def loss_fn(params, x, labels, rng):
    tangents = jax.lax.stop_gradient(image_tangents(x, blur_sigma))
    logits, d_out = output_tangents(
        lambda p, x: model.apply(p, x, train=True, rng=rng), params, x, tangents, output)
    data_term = losses.softmax_cross_entropy(logits, losses.one_hot_targets(labels, k)).mean()
    tangent = jnp.square(d_out).sum(axis=(0, 2)).mean()
    accuracy = (losses.predictions(logits) == labels).mean()
    return data_term + gamma * tangent, {"data_loss": data_term, "accuracy": accuracy,
                                         "tangent": tangent}

  return loss_fn


# -------------------------------------------------------------------------------- augmentation


def affine(x_NHWC: jax.Array, shift_Nx2: jax.Array, angle_N: jax.Array) -> jax.Array:
  """Each image shifted by (dx, dy) = shift_Nx2 pixels (columns, rows) and rotated by angle_N
  radians about its centre: output pixel p reads the input at R(-angle) (p - shift) (bilinear,
  the nearest edge pixel outside the frame: the background, for digits). Its derivatives at 0
  are image_tangents' (unblurred)."""
  _, h, w, c = x_NHWC.shape
  v, u = jnp.meshgrid(jnp.arange(h, dtype=x_NHWC.dtype) - (h - 1) / 2,
                      jnp.arange(w, dtype=x_NHWC.dtype) - (w - 1) / 2, indexing="ij")

  def one(img_HWC, shift, angle):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    uu, vv = u - shift[0], v - shift[1]
    src_v = cos * vv - sin * uu + (h - 1) / 2
    src_u = sin * vv + cos * uu + (w - 1) / 2
    return jnp.stack([jax.scipy.ndimage.map_coordinates(img_HWC[..., ch], [src_v, src_u],
                                                        order=1, mode="nearest")
                      for ch in range(c)], axis=-1)

  return jax.vmap(one)(x_NHWC, shift_Nx2, angle_N)


def random_affine(key: jax.Array, x_NHWC: jax.Array, max_shift: float,
                  max_degrees: float) -> jax.Array:
  """`affine` with a uniform shift in [-max_shift, max_shift] pixels per axis and a uniform
  rotation in [-max_degrees, max_degrees] degrees, drawn per image."""
  n = x_NHWC.shape[0]
  k_shift, k_angle = jax.random.split(key)
  shift_Nx2 = jax.random.uniform(k_shift, (n, 2), x_NHWC.dtype, -max_shift, max_shift)
  angle_N = jnp.deg2rad(jax.random.uniform(k_angle, (n,), x_NHWC.dtype, -max_degrees,
                                           max_degrees))
  return affine(x_NHWC, shift_Nx2, angle_N)


# ------------------------------------------------------------------------------------- runner


def validate(config: ml_collections.ConfigDict) -> None:
  report.check_experiment(config, "configs/exp_tangent_prop.py", RANGES, METHODS)
  errors.check_choice("experiment.tangent_output", config.experiment.tangent_output, OUTPUTS)
  if config.loss.output != "softmax":
    raise errors.ConfigError(f"config.loss.output={config.loss.output!r}: tangent propagation "
                             "penalises the softmax output here; set config.loss.output='softmax'")
  if tuple(config.augment.ops) or config.loss.l2 or config.loss.l1:
    raise errors.ConfigError("config.augment.ops, config.loss.l2 and config.loss.l1 must be off: "
                             "each method of the tangent experiment adds its own regularizer")


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains every method of config.experiment.methods; writes results.{md,json} and
  tangent_prop.png. Returns {"methods": {name: {field: {"mean", "std"}, "runs"}}, "wall_time"}."""
  t_start = time.time()
  validate(config)
  exp = config.experiment
  dataset = data_lib.load(config.data)
  if dataset.train.x.ndim != 4:
    raise errors.ConfigError(
        f"tangent propagation needs images x_NxHxWxC but {dataset.name} gives shape "
        f"{dataset.input_shape}; set config.data.image_size (28 for mnist_subset, 8 for digits)")
  train_split = harness.seeded_slice(dataset.train, exp.train_examples, exp.subset_seed)
  k = dataset.num_classes
  model = models.build(config.model, dataset.input_shape, k)
  data_loss = losses.make_loss_fn(model, "softmax", 0.0, len(train_split), k)
  make = {
      "none": lambda: variants_lib.Variant("none", model, data_loss),
      "augment": lambda: variants_lib.Variant("augment", model, data_loss, functools.partial(
          random_affine, max_shift=exp.max_shift, max_degrees=exp.max_degrees)),
      "tangent_prop": lambda: variants_lib.Variant("tangent_prop", model, make_tangent_loss_fn(
          model, k, exp.tangent_weight, exp.blur_sigma, exp.tangent_output)),
  }
  variants = [make[m]() for m in exp.methods]
  evaluate = variants_lib.accuracy_fn(model, "softmax", k, config.eval_batch_size)
  tangent_norm = jax.jit(lambda p, x: jnp.square(output_tangents(
      model.apply, p, x, image_tangents(x, exp.blur_sigma), exp.tangent_output)[1]
  ).sum(axis=(0, 2)).mean())
  x_test = jax.device_put(dataset.test.x)

  def measure(variant, params):
    tr = evaluate(params, train_split)
    va, te = evaluate(params, dataset.valid), evaluate(params, dataset.test)
    return {"train_accuracy": tr["accuracy"], "valid_accuracy": va.get("accuracy", np.nan),
            "test_accuracy": te["accuracy"], "test_loss": te["loss"],
            "tangent_norm": float(tangent_norm(params, x_test))}

  seeds = [config.seed + r for r in range(exp.repeats)]
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  logging.info("%s: %d training examples, %d valid, %d test; methods %s", dataset.name,
               len(train_split), len(dataset.valid), len(dataset.test), ", ".join(exp.methods))
  results = variants_lib.run_variants(variants, config, train_split.x, train_split.y, seeds,
                                      measure, writer, FIELDS)
  out = {"methods": results, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    _write(workdir, config, dataset, len(train_split), out)
  return out


def _write(workdir, config, dataset, n: int, out: dict) -> None:
  exp, cell = config.experiment, variants_lib.cell
  setting = {"none": "-",
             "augment": f"shift ±{exp.max_shift:g} px, rotate ±{exp.max_degrees:g}°",
             "tangent_prop": f"gamma={exp.tangent_weight:g}"}
  rows = [{"method": name, "setting": setting[name],
           "train acc %": cell(r["train_accuracy"]), "valid acc %": cell(r["valid_accuracy"]),
           "test acc %": cell(r["test_accuracy"]), "test loss": cell(r["test_loss"], 1.0, 3),
           "test sum_t ‖J t‖²": cell(r["tangent_norm"], 1.0, 4)}
          for name, r in out["methods"].items()]
  notes = [f"{dataset.name} {dataset.input_shape}: a slice of {n} training examples, "
           f"{len(dataset.valid)} valid, {len(dataset.test)} test; "
           f"{config.model.name} {tuple(config.model.get('hidden_sizes', ()))}, "
           f"{config.num_steps} steps of {config.optimizer.name}; tangents: shift x, shift y, "
           f"rotation, blur sigma {exp.blur_sigma:g} px; mean ± std over {exp.repeats} seeds. "
           "The last column is the penalty's sum over the three tangents on the test set "
           "(before gamma): how flat each network's output is along them."]
  report.write_results(workdir, "Tangent propagation vs augmentation", list(rows[0]), rows,
                       notes, out)
  variants_lib.bar_plot(workdir / "tangent_prop.png", out["methods"],
                        [("test_accuracy", "test accuracy (%)", 100.0),
                         ("tangent_norm", "test sum_t ‖J t‖²", 1.0)],
                        f"Tangent propagation on {n} {dataset.name} training examples")
