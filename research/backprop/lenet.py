"""Backpropagation through LeNet-5 (research/models/lenet.py), layer by layer, by hand.

The forward pass keeps every layer's output sigma^l; the backward pass runs the layers of
research/backprop/layers.py in reverse, carrying dE/dsigma^l down and turning it into
delta^l = dE/dsum^l = dE/dsigma^l f'(sum^l) at each squashing unit:

  out  delta^out = (softmax(sum^out) - y) / B                  (sigmoid outputs: sigma - y)
  F6   dE/dsigma^F6 = delta^out w^out.T;  C5 likewise through F6 (flattened N x 1 x 1 x 120)
  C5   dE/dsigma^S4 = full convolution of delta^C5 with the flipped kernel
  S4   faithful: S = f(coef * sum_pool(sigma^C3) + b), so dE/dcoef = sum delta^S P, dE/db =
       sum delta^S, and dE/dsigma^C3 = the windowed sum's transpose of coef delta^S;
       classic: average pooling's transpose; modern: max pooling routes to the argmax
  C3   as C5; faithful: the gradient of the 60 stored kernels is the full 5x5x6x16 kernel's
       gradient read at the (input map, output map) pairs of the paper's Table I
  S2, C1 as S4, C3.

The cost is losses.make_loss_fn's: the data term averaged over the B examples, plus
(lambda/2m) sum w^2 [+ (lambda_1/m) sum |w|] over the "w" leaves (the faithful variant's
subsampling coefficients are not weights and are not penalised). Every variant is covered:
faithful, classic, modern.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import errors
from research import losses
from research import models
from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import layers
from research.models import lenet

VARIANTS = lenet.VARIANTS
_ACTIVATION = {"faithful": "scaled_tanh", "classic": "tanh", "modern": "relu"}


def _check(variant: str, output: str, lam, m, lam1) -> None:
  errors.check_choice("model.variant", variant, VARIANTS)
  backprop_layers.check_loss(output, lam, m, lam1)


def forward(params: dict, x_NHWC: jax.Array, variant: str,
            conv_impl: str = "xla") -> tuple[dict, jax.Array]:
  """lenet.apply, keeping what the backward pass needs.

  Returns (saved, logits_NxK): saved["x"] is the input, saved[name] each layer's output sigma
  (N x 28 x 28 x 6 for "c1" ... N x 84 for "f6"), and for the faithful variant
  saved["<s>_pool"] each trainable subsampling layer's 2x2 window sums.
  """
  f = lenet._ACTIVATIONS[variant]
  saved = {"x": x_NHWC}

  def subsample(h, name):
    if variant == "faithful":
      saved[name + "_pool"] = pooled = layers.sum_pool(h, 2)
      return f(pooled * params[name]["coef"] + params[name]["b"])
    return layers.avg_pool(h, 2) if variant == "classic" else layers.max_pool(h, 2)

  conv = functools.partial(layers.conv2d, padding="VALID", impl=conv_impl)
  saved["c1"] = h = f(conv(params["c1"], x_NHWC))
  saved["s2"] = h = subsample(h, "s2")
  saved["c3"] = h = f(conv(_c3(params, variant), h))
  saved["s4"] = h = subsample(h, "s4")
  saved["c5"] = h = f(conv(params["c5"], h))
  saved["f6"] = h = f(layers.dense(params["f6"], layers.flatten(h)))
  return saved, layers.dense(params["out"], h)


def _c3(params, variant):
  if variant == "faithful":  # The partial table as a full kernel with zeros elsewhere.
    return {"w": lenet._c3_kernel(params["c3"]), "b": params["c3"]["b"]}
  return params["c3"]


def backward(params: dict, saved: dict, delta_out: jax.Array, variant: str,
             conv_impl: str = "xla") -> dict:
  """dE/dparams (data term only) from delta^out = dE/dsum^out_NxK, the same pytree as params."""
  act = _ACTIVATION[variant]
  grads = {}
  conv_backward = functools.partial(backprop_layers.conv2d_backward, padding="VALID",
                                    impl=conv_impl)

  def subsample_backward(h, dE_ds, name):
    """dE/dh for the subsampling layer `name` that read h; fills grads[name] if trainable."""
    if variant == "faithful":
      delta = backprop_layers.activation_backward(act, saved[name], dE_ds)
      grads[name] = {"coef": (delta * saved[name + "_pool"]).sum(axis=(0, 1, 2)),
                     "b": delta.sum(axis=(0, 1, 2))}
      return backprop_layers.sum_pool_backward(h, delta * params[name]["coef"], 2)
    if variant == "classic":
      return backprop_layers.avg_pool_backward(h, dE_ds, 2)
    return backprop_layers.max_pool_backward(h, dE_ds, 2)

  dE_dsigma, grads["out"] = backprop_layers.dense_backward(params["out"], saved["f6"], delta_out)
  delta = backprop_layers.activation_backward(act, saved["f6"], dE_dsigma)
  c5 = saved["c5"]
  dE_dsigma, grads["f6"] = backprop_layers.dense_backward(params["f6"], layers.flatten(c5), delta)
  delta = backprop_layers.activation_backward(act, c5, dE_dsigma.reshape(c5.shape))
  dE_dsigma, grads["c5"] = conv_backward(params["c5"], saved["s4"], delta)
  dE_dsigma = subsample_backward(saved["c3"], dE_dsigma, "s4")
  delta = backprop_layers.activation_backward(act, saved["c3"], dE_dsigma)
  dE_dsigma, grads["c3"] = conv_backward(_c3(params, variant), saved["s2"], delta)
  if variant == "faithful":  # Only the Table I connections are parameters.
    grads["c3"]["w"] = grads["c3"]["w"][:, :, lenet._C3_IN, lenet._C3_OUT]
  dE_dsigma = subsample_backward(saved["c1"], dE_dsigma, "s2")
  delta = backprop_layers.activation_backward(act, saved["c1"], dE_dsigma)
  _, grads["c1"] = conv_backward(params["c1"], saved["x"], delta)  # jit drops the unused dE/dx
  return {name: grads[name] for name in params}


def _grads(params, saved, logits_NxK, y_NxK, variant, output, lam, m, lam1,
           conv_impl="xla") -> dict:
  """The backward pass from delta^out, plus the penalty's (lambda/m) w [+ (lambda_1/m) sign w]
  on the "w" leaves (those losses.l2_penalty / l1_penalty read)."""
  delta_out = backprop_layers.OUTPUT_BACKWARDS[output](logits_NxK, y_NxK)
  grads = backward(params, saved, delta_out, variant, conv_impl)
  return backprop_layers.with_penalty(grads, params, lam, m, lam1)


def lenet_manual_grads(params: dict, x_NHWC: jax.Array, labels_N: jax.Array, *,
                       variant: str, lam: float, m: int, num_outputs: int,
                       output: str = "softmax", lam1: float = 0.0,
                       conv_impl: str = "xla") -> dict:
  """dE/dparams of losses.make_loss_fn(lenet5, output, lam, m, K, lam1), by hand: the same
  pytree as jax.grad of that loss.

  Args:
    params: lenet.init's dict (c1, [s2,] c3, [s4,] c5, f6, out).
    x_NHWC: N x 32 x 32 x C images.
    labels_N: int class indices (0/1 for a single sigmoid output).
    variant: faithful | classic | modern.
    lam, m: lambda and the number of training examples in (lambda/2m) sum w^2.
    num_outputs: K, the number of output units.
    output: softmax | sigmoid, the output units and their cross-entropy.
    lam1: lambda_1 of the optional (lambda_1/m) sum |w| penalty.
    conv_impl: the convolutions' primitives (layers.CONV_IMPLS); the gradient is the same.
  """
  _check(variant, output, lam, m, lam1)
  saved, logits_NxK = forward(params, x_NHWC, variant, conv_impl)
  y_NxK = losses.one_hot_targets(labels_N, num_outputs, logits_NxK.dtype)
  return _grads(params, saved, logits_NxK, y_NxK, variant, output, lam, m, lam1, conv_impl)


def make_value_and_grad(variant: str, output: str, lam: float, m: int, num_outputs: int,
                        lam1: float = 0.0, conv_impl: str = "xla"):
  """A drop-in for jax.value_and_grad(losses.make_loss_fn(...), has_aux=True) on LeNet-5.

  Returns value_and_grad(params, x_NHWC, labels_N, rng) -> ((E, {"data_loss", "accuracy"}),
  grads) from one forward and one hand-written backward pass.
  """
  _check(variant, output, lam, m, lam1)

  def fwd(params, x_NHWC, rng):
    del rng  # LeNet-5 has no dropout.
    saved, logits_NxK = forward(params, x_NHWC, variant, conv_impl)
    return logits_NxK, saved

  return backprop_layers.value_and_grad_from(
      fwd, functools.partial(backward, variant=variant, conv_impl=conv_impl), num_outputs,
      output, lam, m, lam1)


@core.register_manual("lenet5")
def _manual(model_cfg, input_shape, *, num_outputs: int, output: str, lam: float, m: int,
            lam1: float = 0.0):
  """config.grad=manual: make_value_and_grad for config.model's variant and conv_impl."""
  del input_shape  # LeNet-5's geometry is fixed by the variant.
  model_cfg = models.resolve(model_cfg)  # a partial group gets the family's defaults
  return make_value_and_grad(model_cfg.variant, output, lam, m, num_outputs, lam1=lam1,
                             conv_impl=models.conv_impl(model_cfg))


# ------------------------------------------------------------------------------ gradient check


def problem_lenet5(key: jax.Array, batch: int, dtype, variant: str = "faithful"):
  """gradcheck.Problem: LeNet-5 (`variant`), softmax cross-entropy, lambda > 0, B < m.

  32 x 32 x 1 standard normal images, uniform random labels, K = 10.
  """

  k, lam, m = 10, 1.0, 4 * batch
  model = models.build(ml_collections.ConfigDict(
      {"name": "lenet5", "variant": variant, "conv_impl": "xla"}), (32, 32, 1), k)

  def draw(path, z):
    """w ~ N(0, 1/fan_in) as lenet.init; non-zero biases, so that a bias read wrongly shows."""
    name = path[-1].key
    if name == "w":  # fan_in: every axis but the last (c3 faithful: 25 per connection)
      return z / np.sqrt(np.prod(z.shape[:-1])).astype(dtype)
    return 0.25 + 0.05 * z if name == "coef" else 0.1 * z

  @jax.jit
  def make_arrays(key):
    # One normal draw for everything (each jax.random call compiles on its own); model.init
    # only gives the shapes.
    shapes = {"params": jax.eval_shape(model.init, key),
              "x": jax.ShapeDtypeStruct((batch, 32, 32, 1), dtype),
              "z": jax.ShapeDtypeStruct((batch, k), dtype)}
    z = core.random_like(key, shapes, dtype)
    params = jax.tree_util.tree_map_with_path(draw, z["params"])
    return params, z["x"], jnp.argmax(z["z"], axis=-1)  # argmax: uniform random labels

  params, x, labels = make_arrays(key)
  loss_fn = losses.make_loss_fn(model, "softmax", lam, m, k)
  value_and_grad = make_value_and_grad(variant, "softmax", lam, m, k)
  # ReLU and max pooling are kinked: with eps = 1e-3 the difference stencil straddles kinks of
  # some of the B x 28 x 28 x 6 units of C1 and is off by ~1e-2. Smaller steps straddle none
  # (1e-6 for C1's weights), larger ones keep rounding down where <g, v> is small (F6's weights).
  fd = {"fd_eps": (1e-4, 1e-5, 1e-6)} if variant == "modern" else {}
  return core.Problem(
      params=params, args=(x, labels), **fd,
      loss_fn=lambda p, x, labels: loss_fn(p, x, labels, None)[0],
      grad_fn=lambda p, x, labels: value_and_grad(p, x, labels, None)[1],
      description=(f"lenet5 ({variant}, {_ACTIVATION[variant]}), 32x32x1 -> {k}, softmax, "
                   f"B={batch}, lambda={lam}, m={m}"))


problem_lenet5_faithful = core.register_problem("lenet5_faithful")(
    functools.partial(problem_lenet5, variant="faithful"))
problem_lenet5_classic = core.register_problem("lenet5_classic")(
    functools.partial(problem_lenet5, variant="classic"))
problem_lenet5_modern = core.register_problem("lenet5_modern")(
    functools.partial(problem_lenet5, variant="modern"))
