"""Tangent propagation with hand-specified tangents, and the manifold tangent classifier.

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

The harness (research/experiments/harness.py) runs the protocol. Its sizes are labels per
class (experiment.labels_per_class: stratified subsets, redrawn per seed); the methods are
  none          the data term alone: the baseline
  augment       the same transformations applied instead: each step, every image is shifted
                by a uniform (dx, dy) in [-m max_shift, m max_shift] pixels and rotated by a
                uniform angle in [-m max_degrees, m max_degrees] (bilinear resampling)
  tangent_prop  E + E_tangent with the hand-specified tangents above (Simard et al.'s)
  mtc           the manifold tangent classifier (Rifai et al., 2011): the same E + E_tangent,
                with tangents learned without labels instead of specified by hand. A
                contractive autoencoder (research/models/autoencoder.py) is trained on every
                training image (no label), once per seed; the k leading right singular vectors
                of its encoder's Jacobian at x span the estimated tangent plane of the data
                manifold at x (manifold_tangents). Each unit tangent is scaled to the mean length
                of the hand-specified tangents of the same images, so gamma weighs both alike.
Tuning, equal in kind: every method chooses its learning rate from experiment.learning_rates,
jointly with (but for none) its strength: augment its magnitude m from
experiment.augment_magnitudes, tangent_prop and mtc their gamma from experiment.tangent_weights
(as many candidates), each by mean validation accuracy over the seeds; a choice at a grid's
edge grows that grid by up to experiment.max_extensions steps. Measured on the
test split: accuracy, data loss and sum_t ||J t||^2 (how flat the output is along the
tangents, before gamma), and accuracy on the seed's own training subset.
"""
import functools
import math
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
from research.experiments import harness
from research.experiments import report

METHODS = ("none", "augment", "tangent_prop", "mtc")
RANGES = {"seeds": config_lib.Range(True, 2), "max_extensions": config_lib.Range(True, 0),
          "mtc_hidden": config_lib.Range(True, 1), "mtc_tangents": config_lib.Range(True, 1),
          "mtc_contraction": config_lib.Range(False, 0.0),
          "mtc_steps": config_lib.Range(True, 1), "mtc_batch_size": config_lib.Range(True, 1),
          "mtc_learning_rate": config_lib.Range(False, 0.0, low_open=True),
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
                         output: str = "softmax", channels: int | None = None):
  """E(params, x, labels, rng) = softmax cross-entropy + gamma (1/B) sum_b sum_t ||J t||^2,
  J the Jacobian of the softmax output (or of the logits); aux adds "tangent" (the penalty's
  mean sum_t ||J t||^2, before gamma). The tangents are image_tangents(x), or, with
  `channels` = C, given with each image: x_NxHxWx(C(1+T)) is the image and its T tangents
  stacked along the channels (with_tangents), so the data pipeline gathers them together."""

  def loss_fn(params, x, labels, rng):
    if channels is None:
      tangents = jax.lax.stop_gradient(image_tangents(x, blur_sigma))
    else:
      x, tangents = split_tangents(x, channels)
    logits, d_out = output_tangents(
        lambda p, x: model.apply(p, x, train=True, rng=rng), params, x, tangents, output)
    data_term = losses.softmax_cross_entropy(logits, losses.one_hot_targets(labels, k)).mean()
    tangent = jnp.square(d_out).sum(axis=(0, 2)).mean()
    accuracy = (losses.predictions(logits) == labels).mean()
    return data_term + gamma * tangent, {"data_loss": data_term, "accuracy": accuracy,
                                         "tangent": tangent}

  return loss_fn


def with_tangents(x_NHWC: np.ndarray, t_TxNHWC: np.ndarray) -> np.ndarray:
  """The images and their T tangents stacked along the channels: N x H x W x C(1+T)."""
  return np.concatenate([x_NHWC, *t_TxNHWC], axis=-1)


def split_tangents(x_aug: jax.Array, channels: int) -> tuple[jax.Array, jax.Array]:
  """with_tangents' inverse: (x_NxHxWxC, t_TxNxHxWxC)."""
  t = x_aug.shape[-1] // channels - 1
  return x_aug[..., :channels], jnp.stack(
      [x_aug[..., (i + 1) * channels:(i + 2) * channels] for i in range(t)])


def train_contractive_encoder(x_NxI: np.ndarray, seed: int, *, hidden: int, beta: float,
                              steps: int, batch_size: int, learning_rate: float,
                              manual: bool = False) -> dict:
  """A tied, contractive sigmoid autoencoder trained with Adam on x_NxI in [0, 1] (no labels):
  its params {"w": w_IxH, "b", "b_dec"}. manual=True uses the hand-written backward pass."""
  from research.models import autoencoder  # pylint: disable=g-import-not-at-top
  n, d_in = x_NxI.shape
  errors.check_batch_size(batch_size, n, "unlabelled training images",
                          field="experiment.mtc_batch_size")
  if manual:
    from research.backprop import autoencoder as backprop_ae  # pylint: disable=g-import-not-at-top
    vg = backprop_ae.make_value_and_grad("cross_entropy", 0.0, 0.0, n, beta)
  else:
    vg = jax.value_and_grad(autoencoder.make_loss_fn("cross_entropy", 0.0, 0.0, n, beta),
                            has_aux=True)
  optimizer = optim.make_optimizer(config_lib.optimizer(name="adam",
                                                        learning_rate=learning_rate), steps)
  key = jax.random.fold_in(jax.random.key(seed), 2011)
  state = kernel.train_state(autoencoder.init(key, d_in, hidden), optimizer, key)
  chunk = kernel.make_train_chunk(None, optimizer, value_and_grad=lambda p, x, y, rng: vg(
      p, x, None))
  x = jnp.asarray(x_NxI)
  state, sums = chunk(state, x, jnp.zeros((n,), jnp.int32),
                      data_lib.batch_indices(seed + 2011, n, batch_size, 0, steps))
  if int(sums["first_bad_step"]) >= 0:
    raise errors.NonFiniteLossError(
        f"the manifold tangent classifier's contractive autoencoder (seed {seed}): the loss "
        f"became NaN/inf at step {int(sums['first_bad_step'])}; lower "
        "config.experiment.mtc_learning_rate")
  return state["params"]


def mtc_tangents(encoder: dict, x_NHWC: np.ndarray, lo: float, hi: float, k: int,
                 blur_sigma: float, batch: int = 256) -> np.ndarray:
  """t_KxNxHxWxC: the k leading manifold tangents of each image under the contractive encoder
  (which reads (x - lo) / (hi - lo), in [0, 1]; a global affine map, so the directions are
  the same in x's units), each scaled to the mean length of the images' hand-specified
  tangents."""
  from research.models import autoencoder  # pylint: disable=g-import-not-at-top
  n, shape = len(x_NHWC), x_NHWC.shape[1:]
  flat = (np.asarray(x_NHWC).reshape(n, -1) - lo) / (hi - lo)
  tangents = jax.jit(lambda x: autoencoder.manifold_tangents(encoder, x, k)[0])
  t_NxKxI = np.concatenate([np.asarray(tangents(flat[i:i + batch]))
                            for i in range(0, n, batch)])
  scale = float(jnp.sqrt(jnp.square(image_tangents(jnp.asarray(x_NHWC), blur_sigma))
                         .sum(axis=(2, 3, 4))).mean())
  return scale * np.moveaxis(t_NxKxI, 1, 0).reshape(k, n, *shape).astype(x_NHWC.dtype)


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
  exp = report.check_experiment(config, "configs/exp_tangent_prop.py", RANGES, METHODS)
  errors.check_choice("experiment.tangent_output", exp.tangent_output, OUTPUTS)
  sizes = errors.check_ints("experiment.labels_per_class", exp.labels_per_class,
                            " (labelled training examples per class)")
  errors.check_batch_size(config.batch_size, 10 * min(sizes),
                          "training examples of the smallest size")
  if "mtc" in exp.methods and exp.mtc_tangents > exp.mtc_hidden:
    raise errors.ConfigError(
        f"config.experiment.mtc_tangents={exp.mtc_tangents} is more than the contractive "
        f"encoder's {exp.mtc_hidden} hidden units (config.experiment.mtc_hidden): its Jacobian "
        f"has at most {exp.mtc_hidden} singular directions; choose at most that many")
  for field in ("learning_rates", "augment_magnitudes", "tangent_weights"):
    if not tuple(exp[field]):
      raise errors.ConfigError(f"config.experiment.{field} is empty; give its arm at least one "
                               "setting to choose from")
    for value in exp[field]:
      errors.check_positive(f"experiment.{field}[]", value)
  if config.loss.output != "softmax":
    raise errors.ConfigError(f"config.loss.output={config.loss.output!r}: tangent propagation "
                             "penalises the softmax output here; set config.loss.output='softmax'")
  if tuple(config.augment.ops) or config.loss.l2 or config.loss.l1:
    raise errors.ConfigError("config.augment.ops, config.loss.l2 and config.loss.l1 must be off: "
                             "each method of the tangent experiment adds its own regularizer")


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc): sizes are labels per class."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  if dataset.train.x.ndim != 4:
    raise errors.ConfigError(
        f"tangent propagation needs images x_NxHxWxC but {dataset.name} gives shape "
        f"{dataset.input_shape}; set config.data.image_size (28 for mnist_subset, 8 for digits)")
  k = dataset.num_classes
  # Refuse a size no class can hold now, before any training.
  harness.stratified_indices(dataset.train.y, max(exp.labels_per_class), config.seed, k)
  model = models.build(config.model, dataset.input_shape, k)
  draw = harness.labelled_draw(dataset.train, k)
  eval_fn = kernel.make_eval_fn(model, "softmax", k)
  bs = config.eval_batch_size
  tangent_norm = jax.jit(lambda p, x: jnp.square(output_tangents(
      model.apply, p, x, image_tangents(x, exp.blur_sigma), exp.tangent_output)[1]
  ).sum(axis=(0, 2)).mean())
  x_test = jax.device_put(dataset.test.x)
  splits = {"valid": dataset.valid, "test": dataset.test}
  channels = dataset.train.x.shape[-1]
  lo, hi = float(dataset.train.x.min()), float(dataset.train.x.max())
  encoders = {}  # seed -> the contractive encoder, trained on first use

  def encoder(seed):
    if seed not in encoders:
      encoders[seed] = train_contractive_encoder(
          (dataset.train.x.reshape(len(dataset.train), -1) - lo) / (hi - lo), seed,
          hidden=exp.mtc_hidden, beta=exp.mtc_contraction, steps=exp.mtc_steps,
          batch_size=exp.mtc_batch_size, learning_rate=exp.mtc_learning_rate,
          manual=config.grad == "manual")
    return encoders[seed]

  def fit(method, setting, per_class, seeds, subsets):
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": setting["learning_rate"]}),
        config.num_steps)
    augment_fn = None
    if method == "tangent_prop":
      loss_fn = make_tangent_loss_fn(model, k, setting["gamma"], exp.blur_sigma,
                                     exp.tangent_output)
    elif method == "mtc":
      loss_fn = make_tangent_loss_fn(model, k, setting["gamma"], exp.blur_sigma,
                                     exp.tangent_output, channels=channels)
      subsets = [data_lib.Split(with_tangents(sub.x, mtc_tangents(
          encoder(seed), sub.x, lo, hi, exp.mtc_tangents, exp.blur_sigma)), sub.y)
                 for seed, sub in zip(seeds, subsets)]
    else:
      loss_fn = losses.make_loss_fn(model, "softmax", 0.0, k * per_class, k)
    if method == "augment":
      m = setting["magnitude"]
      augment_fn = functools.partial(random_affine, max_shift=m * exp.max_shift,
                                     max_degrees=m * exp.max_degrees)
    return harness.train_seeds(
        model, loss_fn, optimizer, config.num_steps, config.batch_size, subsets, seeds,
        mode=exp.seed_mode, augment_fn=augment_fn, chunk_steps=config.eval_every,
        what=f"tangent_prop {method} at {per_class} labels per class", writer=writer,
        tag={"labels_per_class": per_class, "arm": method, **setting})

  def measure(method, setting, per_class, seed, params, split):
    out = kernel.evaluate(eval_fn, params, splits[split], bs, per_example=split == "test")
    record = harness.evaluation(out)
    if split == "test":
      record["train_accuracy"] = kernel.evaluate(eval_fn, params, draw(per_class, seed),
                                                 bs)["accuracy"]
      record["tangent_norm"] = float(tangent_norm(params, x_test))
    return record

  lrs = {"learning_rate": tuple(exp.learning_rates)}
  grids = {"none": lrs,
           "augment": {**lrs, "magnitude": tuple(exp.augment_magnitudes)},
           "tangent_prop": {**lrs, "gamma": tuple(exp.tangent_weights)},
           "mtc": {**lrs, "gamma": tuple(exp.tangent_weights)}}
  arms = [harness.Arm(m, grids[m]) for m in exp.methods]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "tangent_prop", arms, exp.baseline, tuple(exp.labels_per_class), "labels per class",
      seeds, fit, measure, select="accuracy", draw=draw,
      family=harness.fields_of(FIELDS, DETAIL_FIELDS))


FIELDS = [("accuracy", "test acc %", 100.0)]
DETAIL_FIELDS = [("loss", "test loss", 1.0), ("tangent_norm", "test sum_t ‖J t‖²", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every method at every number of labels per class, under the harness's protocol; writes
  results.{md,json} and tangent_prop.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config) -> list[str]:
  exp = config.experiment
  return [
      f"{config.data.name}: labels per class drawn from the training split; "
      f"{config.model.name} {tuple(config.model.get('hidden_sizes', ()))} "
      f"{config.model.get('activation', '')}, {config.num_steps} steps of "
      f"{config.optimizer.name}, batch {config.batch_size}. Tangents: shift x, shift y, "
      f"rotation, blur sigma {exp.blur_sigma:g} px; J of the {exp.tangent_output}. Chosen by "
      f"validation accuracy, equal in kind: every method's learning rate from "
      f"{tuple(exp.learning_rates)}, jointly with augment's magnitude m from "
      f"{tuple(exp.augment_magnitudes)} (shifts up to m x {exp.max_shift:g} px, rotations up "
      f"to m x {exp.max_degrees:g} degrees) and tangent_prop's and mtc's gamma from "
      f"{tuple(exp.tangent_weights)}. mtc: the manifold tangent "
      f"classifier, {exp.mtc_tangents} tangents per image from a contractive autoencoder "
      f"({exp.mtc_hidden} sigmoid units, beta {exp.mtc_contraction:g}, {exp.mtc_steps} Adam "
      f"steps at {exp.mtc_learning_rate:g}, batch {exp.mtc_batch_size}) trained once per seed on "
      "every training image without labels; test sum_t ‖J t‖² is along the hand-specified "
      "tangents for every method."]


def write(workdir, config, result) -> None:
  """results.{md,json} and tangent_prop.png from the harness's results."""
  detail = harness.table(result, DETAIL_FIELDS, digits=3)
  harness.write(workdir, result, "Tangent propagation vs augmentation", FIELDS, notes(config),
                extra=["Test loss and sum_t ‖J t‖² on the test images (before gamma: how "
                       "flat the output is along the tangents):", detail])
  harness.plot(workdir / "tangent_prop.png", result, "accuracy", "test accuracy (%)",
               "Tangent propagation vs augmentation by the same transformations")
