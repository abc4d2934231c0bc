"""Backpropagation for the lecture's network, written out by hand in the slides' symbols.

The network (research/models/mlp.py), layers l = 1..L, sigma^0 = x:

  sum^l_j   = sum_i sigma^{l-1}_i w^l_ij + b^l_j
  sigma^l_j = f(sum^l_j)            hidden layers, f = sigmoid | tanh | relu
  sigma^L   = sigmoid(sum^L)        K independent output units (the lecture), or softmax(sum^L)

The cost (research/losses.py make_loss_fn) on a batch of B examples:

  E = (1/B) sum_b sum_k [-y_k log sigma^L_k - (1-y_k) log(1-sigma^L_k)]
      + (lambda/2m) sum_l sum_ij (w^l_ij)^2

(with a softmax output the data term is -(1/B) sum_b sum_k y_k log sigma^L_k).

m is the number of training examples. With the full training set as the batch (B = m) this
is the slide's E. With a mini-batch the data term averages over the B examples in hand (an
unbiased estimate of the slide's average) while the penalty keeps m, so its gradient is
(lambda/m) w^l whatever B is. That is why `m` is an argument of its own.

The backward pass, as on the slides (delta^l_j = dE/dsum^l_j):

  output  dE/dsigma^L_j = (1/B) [-y_j/sigma^L_j + (1-y_j)/(1-sigma^L_j)]
          delta^L_j     = dE/dsigma^L_j sigma^L_j (1-sigma^L_j)     (= (sigma^L_j - y_j)/B)
  hidden  dE/dsigma^l_j = sum_p dE/dsigma^{l+1}_p f'(sum^{l+1}_p) w^{l+1}_jp
                        = sum_p delta^{l+1}_p w^{l+1}_jp            l = L-1 down to 1
          delta^l_j     = dE/dsigma^l_j f'(sum^l_j)
  weights dE/dw^l_ij    = sum_b sigma^{l-1}_i delta^l_j + (lambda/m) w^l_ij
          dE/db^l_j     = sum_b delta^l_j                           (biases are not penalised)

With a softmax output dE/dsigma^L_j = -(1/B) y_j/sigma^L_j goes through the softmax Jacobian
dsigma_j/dsum_k = sigma_j (1[j=k] - sigma_k), and again delta^L = (sigma^L - y)/B.

In matrix form over the batch (rows are examples) the hidden recursion is
delta^l_BxO = (delta^{l+1}_BxP @ w^{l+1}_OxP.T) * f'(sigma^l_BxO) and the weight gradient is
sigma^{l-1}_BxI.T @ delta^l_BxO: one matmul per layer, no loop over examples.

Two extensions use the same recursion. An L1 penalty on the hidden units, (lambda_h/B)
sum_b sum_l sum_j |sigma^l_bj| (a sparse representation; `lam_act`), adds (lambda_h/B)
sign(sigma^l_j) to dE/dsigma^l_j before it is multiplied by f'. And continuing the recursion
one layer further down gives the gradient with respect to the input, dE/dx_i = sum_j delta^1_j
w^1_ij (`manual_grads_and_input_grad`), the direction of the fast gradient sign method.

The slide's output form divides by sigma^L and 1-sigma^L, which round to 0 or 1 once the
unit saturates (sigma(17) is 1.0 in float32); `output_delta="simplified"` (the default)
uses the algebraically equal sigma^L - y instead. `saturation_study` measures the difference.
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import errors
from research import losses
from research import models
from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import mlp

# The output delta, f' through sigma and the penalties are backprop/layers.py's primitives.
DERIVATIVES = {name: backprop_layers.DERIVATIVES[name] for name in mlp.ACTIVATIONS}
OUTPUTS, OUTPUT_DELTAS = backprop_layers.OUTPUTS, backprop_layers.OUTPUT_DELTAS
output_layer_delta = backprop_layers.output_layer_delta


def _check(activation: str, output: str, output_delta: str) -> None:
  for name, value, allowed in (("activation", activation, sorted(DERIVATIVES)),
                               ("output", output, OUTPUTS),
                               ("output_delta", output_delta, OUTPUT_DELTAS)):
    if value not in allowed:
      raise errors.ConfigError(
          f"{name}={value!r} is not supported by the manual MLP backward pass; choose one of: "
          + ", ".join(repr(a) for a in allowed))


def forward(params: list[dict], x_BxD: jax.Array,
            activation: str = "sigmoid") -> tuple[list[jax.Array], jax.Array]:
  """The forward pass, keeping every layer's output for the backward pass.

  Returns ([sigma^0_BxD, sigma^1, ..., sigma^{L-1}], sum^L_BxK): the input (flattened), each
  hidden layer's sigma^l, and the output layer's sum^L (the logits of mlp.apply).
  """
  f = mlp.ACTIVATIONS[activation]
  sigma = x_BxD.reshape(x_BxD.shape[0], -1)
  sigmas = [sigma]
  for layer in params[:-1]:
    sigma = f(sigma @ layer["w"] + layer["b"])
    sigmas.append(sigma)
  sum_BxK = sigma @ params[-1]["w"] + params[-1]["b"]
  return sigmas, sum_BxK


def hidden_forward(params: list[dict], x_BxD: jax.Array,
                   activation: str = "sigmoid") -> tuple[list[jax.Array], jax.Array]:
  """([sigma^1, ..., sigma^{L-1}], sum^L_BxK): the hidden units and the logits, the forward
  that losses.make_activation_l1_loss_fn penalises."""
  sigmas, sum_BxK = forward(params, x_BxD, activation)
  return sigmas[1:], sum_BxK


def backward(params: list[dict], sigmas: Sequence[jax.Array], delta_L: jax.Array,
             activation: str = "sigmoid", lam_act: float = 0.0) -> list[jax.Array]:
  """The slides' recursion: returns [delta^1, ..., delta^L] given delta^L, each (B, width).

  lam_act > 0 adds the gradient of an L1 penalty on the hidden units, lam_act sum_b sum_l
  sum_j |sigma^l_bj| (a sparse representation): dE/dsigma^l_j gains lam_act sign(sigma^l_j),
  the only place where that penalty enters (it does not depend on w directly). lam_act is
  the coefficient as it stands in E: lambda_h / B when E averages the penalty over the batch.
  """
  f_prime = DERIVATIVES[activation]
  deltas = [delta_L]
  for l in range(len(params) - 1, 0, -1):  # l = L-1 down to 1 (params[l] holds w^{l+1}).
    # dE/dsigma^l_j = sum_p dE/dsigma^{l+1}_p f'(sum^{l+1}_p) w^{l+1}_jp
    #               = sum_p delta^{l+1}_p w^{l+1}_jp, for every example at once.
    dE_dsigma = deltas[0] @ params[l]["w"].T
    if lam_act:  # sign(0) = 0, as jax.grad of |sigma|.
      dE_dsigma = dE_dsigma + lam_act * jnp.sign(sigmas[l])
    deltas.insert(0, dE_dsigma * f_prime(sigmas[l]))
  return deltas


def input_gradient(params: list[dict], deltas: Sequence[jax.Array],
                   x_shape: tuple[int, ...]) -> jax.Array:
  """dE/dx: the recursion continued one layer further down, to sigma^0 = x.

  dE/dx_i = sum_j delta^1_j w^1_ij, reshaped to x's shape (mlp.apply flattens x). It is what
  the fast gradient sign method needs: the direction in input space that raises E fastest.
  """
  return (deltas[0] @ params[0]["w"].T).reshape(x_shape)


def _check_targets(y_BxK: jax.Array, sum_BxK: jax.Array) -> None:
  if y_BxK.shape != sum_BxK.shape:
    raise errors.DataError(
        f"targets y have shape {tuple(y_BxK.shape)} but the network outputs "
        f"{tuple(sum_BxK.shape)}; pass y_BxK as one-hot / 0-1 targets, e.g. "
        "losses.one_hot_targets(labels, K)")


def _batch_deltas(params, sigmas, sum_BxK, y_BxK, activation, output, output_delta,
                  lam_act=0.0):
  batch = sum_BxK.shape[0]
  # E averages the data term (and the activation penalty) over the batch: the slide's
  # dE/dsigma^L carries a 1/B.
  delta_L = output_layer_delta(sum_BxK, y_BxK, output, output_delta) / batch
  return backward(params, sigmas, delta_L, activation, lam_act / batch)


def _weight_grads(params, sigmas, deltas, lam, m, lam1):
  # dE/dw^l_ij = sum_b sigma^{l-1}_i delta^l_j + (lambda/m) w^l_ij; dE/db^l_j = sum_b delta^l_j.
  return [{"w": sigma_prev.T @ delta + backprop_layers.penalty_grad(layer["w"], lam, m, lam1),
           "b": delta.sum(axis=0)}
          for layer, sigma_prev, delta in zip(params, sigmas, deltas)]


def _batch_grads(params, sigmas, sum_BxK, y_BxK, lam, m, lam1, activation, output,
                 output_delta, lam_act=0.0):
  deltas = _batch_deltas(params, sigmas, sum_BxK, y_BxK, activation, output, output_delta,
                         lam_act)
  return _weight_grads(params, sigmas, deltas, lam, m, lam1)


def manual_grads(params: list[dict], x_BxD: jax.Array, y_BxK: jax.Array, lam: float, m: int,
                 *, activation: str = "sigmoid", output: str = "sigmoid",
                 output_delta: str = "simplified", lam1: float = 0.0,
                 lam_act: float = 0.0) -> list[dict]:
  """dE/dparams by backpropagation, the same pytree as jax.grad of E.

  Args:
    params: [{"w": w_IxO, "b": b_O}] for l = 1..L (research/models/mlp.py).
    x_BxD: a batch of B inputs (trailing axes are flattened, as in mlp.apply).
    y_BxK: targets, one-hot (softmax) or 0-1 per output unit (sigmoid).
    lam, m: lambda and the number of training examples in (lambda/2m) sum w^2.
    activation: the hidden units, sigmoid | tanh | relu.
    output: the output units and their cross-entropy, sigmoid | softmax.
    output_delta: "simplified" (sigma^L - y, stable) or "literal" (the slide's divisions).
    lam1: lambda_1 of the optional (lambda_1/m) sum |w| penalty (losses.make_loss_fn's lam1).
    lam_act: lambda_h of the optional penalty on the hidden units, (lambda_h/B) sum_b sum_l
      sum_j |sigma^l_bj| (losses.activation_l1_penalty).
  """
  sigmas, deltas = _forward_backward(params, x_BxD, y_BxK, lam, m, activation, output,
                                     output_delta, lam1, lam_act)
  return _weight_grads(params, sigmas, deltas, lam, m, lam1)


def manual_grads_and_input_grad(params: list[dict], x_BxD: jax.Array, y_BxK: jax.Array,
                                lam: float, m: int, *, activation: str = "sigmoid",
                                output: str = "sigmoid", output_delta: str = "simplified",
                                lam1: float = 0.0,
                                lam_act: float = 0.0) -> tuple[list[dict], jax.Array]:
  """(dE/dparams, dE/dx) from one forward and one backward pass (see manual_grads).

  dE/dx has x's shape; E averages over the batch, so example b's row is (1/B) dE_b/dx_b.
  """
  sigmas, deltas = _forward_backward(params, x_BxD, y_BxK, lam, m, activation, output,
                                     output_delta, lam1, lam_act)
  return (_weight_grads(params, sigmas, deltas, lam, m, lam1),
          input_gradient(params, deltas, x_BxD.shape))


def _forward_backward(params, x_BxD, y_BxK, lam, m, activation, output, output_delta, lam1,
                      lam_act) -> tuple[list[jax.Array], list[jax.Array]]:
  """The checks, the forward pass and the recursion: ([sigma^0..sigma^{L-1}], [delta^1..L])."""
  _check(activation, output, output_delta)
  backprop_layers.check_loss(output, lam, m, lam1, lam_act)
  sigmas, sum_BxK = forward(params, x_BxD, activation)
  _check_targets(y_BxK, sum_BxK)
  return sigmas, _batch_deltas(params, sigmas, sum_BxK, y_BxK, activation, output,
                               output_delta, lam_act)


def manual_per_example_grads(params: list[dict], x_BxD: jax.Array, y_BxK: jax.Array,
                             lam: float, m: int, *, activation: str = "sigmoid",
                             output: str = "sigmoid", output_delta: str = "simplified",
                             lam1: float = 0.0, lam_act: float = 0.0) -> list[dict]:
  """dE_b/dparams for each example b, every leaf with a leading axis B.

  E_b = data_loss(example b) + the penalty, so mean_b E_b = E and the mean of these
  gradients over b is manual_grads(...). dE_b/dw^l is the outer product sigma^{l-1}_b delta^l_b
  (delta^L without the 1/B). With lam_act, E_b includes lambda_h sum_l sum_j |sigma^l_bj|.
  """
  _check(activation, output, output_delta)
  backprop_layers.check_loss(output, lam, m, lam1, lam_act)
  sigmas, sum_BxK = forward(params, x_BxD, activation)
  _check_targets(y_BxK, sum_BxK)
  deltas = backward(params, sigmas, output_layer_delta(sum_BxK, y_BxK, output, output_delta),
                    activation, lam_act)
  return [{"w": (jnp.einsum("bi,bo->bio", sigma_prev, delta)
                 + backprop_layers.penalty_grad(layer["w"], lam, m, lam1)),
           "b": delta}
          for layer, sigma_prev, delta in zip(params, sigmas, deltas)]


def make_value_and_grad(activation: str, output: str, lam: float, m: int, num_outputs: int,
                        output_delta: str = "simplified", lam1: float = 0.0,
                        lam_act: float = 0.0):
  """A drop-in for jax.value_and_grad(losses.make_loss_fn(...), has_aux=True) on the MLP.

  Returns value_and_grad(params, x_BxD, labels_B, rng) -> ((E, {"data_loss", "accuracy"}),
  grads), computing E, its pieces and dE/dparams from one forward pass and the hand-written
  backward pass. labels are int class indices (0/1 for a single sigmoid output); lam1 is
  make_loss_fn's optional L1 weight; lam_act > 0 adds (lambda_h/B) sum_b sum_l sum_j
  |sigma^l_bj| on the hidden units (losses.make_activation_l1_loss_fn's E).
  """
  _check(activation, output, output_delta)
  backprop_layers.check_loss(output, lam, m, lam1, lam_act)

  def value_and_grad(params, x, labels, rng):
    del rng  # The lecture's network is deterministic.
    sigmas, sum_BxK = forward(params, x, activation)
    E, aux, y_BxK = backprop_layers.cost(params, sum_BxK, labels, num_outputs, output, lam, m,
                                         lam1)
    if lam_act:
      E = E + losses.activation_l1_penalty(sigmas[1:], lam_act)
    grads = _batch_grads(params, sigmas, sum_BxK, y_BxK, lam, m, lam1, activation, output,
                         output_delta, lam_act)
    return (E, aux), grads

  return value_and_grad


@core.register_manual("mlp")
def _manual(model_cfg, input_shape, *, num_outputs: int, output: str, lam: float, m: int,
            lam1: float = 0.0):
  """config.grad=manual: make_value_and_grad for config.model's hidden activation."""
  del input_shape  # mlp.apply flattens whatever it is given.
  if model_cfg.get("dropout", 0.0) > 0:
    raise errors.ConfigError(
        "config.grad='manual' does not implement the MLP's dropout; set "
        "config.model.dropout=0 or config.grad='autodiff'")
  return make_value_and_grad(model_cfg.activation, output, lam, m, num_outputs, lam1=lam1)


# ------------------------------------------------------------------------------ gradient check


def _problem_arrays(key, model, batch: int, d_in: int, k: int, dtype) -> tuple:
  """Random (params, x_BxD, labels_B) for an MLP problem: w ~ N(0, 1/fan_in) as model.init
  draws them, and non-zero biases, so that a bias read wrongly shows up."""
  @jax.jit
  def make_arrays(key):
    shapes = {"params": jax.eval_shape(model.init, key),
              "x": jax.ShapeDtypeStruct((batch, d_in), dtype),
              "z": jax.ShapeDtypeStruct((batch, k), dtype)}
    z = core.random_like(key, shapes, dtype)
    params = [{"w": layer["w"] / jnp.sqrt(layer["w"].shape[0]).astype(dtype),
               "b": 0.1 * layer["b"]} for layer in z["params"]]
    return params, z["x"], jnp.argmax(z["z"], axis=-1)  # argmax: uniform random labels

  return make_arrays(key)


@core.register_problem("mlp")
def problem_mlp(key, batch, dtype) -> core.Problem:
  """The lecture's network and cost: sigmoid hidden and output units, lambda > 0, B < m."""
  d_in, hidden, k = 20, (32, 16), 10
  lam, m = 1.0, 4 * batch  # a mini-batch of B out of m = 4B training examples
  model_cfg = ml_collections.ConfigDict(
      {"name": "mlp", "hidden_sizes": hidden, "activation": "sigmoid"})
  model = models.build(model_cfg, (d_in,), k)
  params, x_BxD, labels_B = _problem_arrays(key, model, batch, d_in, k, dtype)
  loss_fn = losses.make_loss_fn(model, "sigmoid", lam, m, k)
  value_and_grad = make_value_and_grad("sigmoid", "sigmoid", lam, m, k)
  return core.Problem(
      params=params, args=(x_BxD, labels_B),
      loss_fn=lambda p, x, labels: loss_fn(p, x, labels, None)[0],
      grad_fn=lambda p, x, labels: value_and_grad(p, x, labels, None)[1],
      description=(f"mlp {(d_in, *hidden, k)}, sigmoid hidden and output units, B={batch}, "
                   f"lambda={lam}, m={m}"))


@core.register_problem("mlp_sparse_input")
def problem_mlp_sparse_input(key, batch, dtype) -> core.Problem:
  """tanh hidden units (sigma of both signs), softmax, lambda > 0 and an L1 penalty on the
  hidden units (lambda_h > 0); the "params" are the weights AND the input x, so the check
  covers dE/dsigma's sign(sigma^l) term and dE/dx = delta^1 w^1.T (the recursion continued
  to the input, as the fast gradient sign method uses it)."""
  d_in, hidden, k = 12, (16, 8), 5
  lam, lam_act, m = 1.0, 0.3, 4 * batch
  model_cfg = ml_collections.ConfigDict(
      {"name": "mlp", "hidden_sizes": hidden, "activation": "tanh"})
  model = models.build(model_cfg, (d_in,), k)
  params, x_BxD, labels_B = _problem_arrays(key, model, batch, d_in, k, dtype)
  point = {"params": params, "x": x_BxD}
  loss_fn = losses.make_activation_l1_loss_fn(
      functools.partial(hidden_forward, activation="tanh"), "softmax", lam, m, k, lam_act)

  def grad_fn(point, labels):
    y_BxK = losses.one_hot_targets(labels, k, point["x"].dtype)
    grads, dE_dx = manual_grads_and_input_grad(point["params"], point["x"], y_BxK, lam, m,
                                               activation="tanh", output="softmax",
                                               lam_act=lam_act)
    return {"params": grads, "x": dE_dx}

  return core.Problem(
      params=point, args=(labels_B,),
      loss_fn=lambda point, labels: loss_fn(point["params"], point["x"], labels, None)[0],
      grad_fn=grad_fn,
      description=(f"mlp {(d_in, *hidden, k)}, tanh hidden units, softmax, B={batch}, "
                   f"lambda={lam}, m={m}, lambda_h={lam_act} on |sigma|, gradient w.r.t. "
                   "params and x"))


def saturation_study(scales: Sequence[float] = (1, 5, 10, 20, 40, 80, 100),
                     dtypes: Sequence[str] = ("float64", "float32", "bfloat16"),
                     *, output: str = "sigmoid", batch: int = 256, num_outputs: int = 10,
                     seed: int = 0) -> list[dict]:
  """Error of the literal and simplified delta^L as the output units saturate.

  For each scale, sum^L = scale * u with u ~ Uniform(-1, 1) and random 0-1 (sigmoid) or
  one-hot (softmax) targets. Both forms are computed in each dtype and compared with a
  float64 reference computed on the same (rounded) sum^L without cancellation.

  Returns one dict per (scale, dtype, form): max_rel_err = max|delta - ref| / max|ref| (inf
  when any entry is inf/NaN) and nonfinite = the number of inf/NaN entries.
  """
  _check("sigmoid", output, "simplified")
  rows = []
  with jax.enable_x64(True):
    u_BxK, y_BxK = map(np.asarray, _study_inputs(jax.random.key(seed), batch, num_outputs,
                                                 output))
    for scale in scales:
      for dtype in dtypes:
        sum_BxK = (scale * u_BxK).astype(jnp.dtype(dtype))
        ref, deltas = jax.device_get(_study_deltas(sum_BxK, y_BxK.astype(sum_BxK.dtype), output))
        for form, delta in deltas.items():
          nonfinite = int((~np.isfinite(delta)).sum())
          err = (float(np.abs(delta - ref).max() / np.abs(ref).max()) if not nonfinite
                 else float("inf"))
          rows.append({"scale": scale, "dtype": dtype, "form": form, "max_rel_err": err,
                       "nonfinite": nonfinite})
  return rows


@functools.partial(jax.jit, static_argnums=2)
def _study_deltas(sum_BxK, y_BxK, output):
  """The float64 reference and each form's delta^L (computed in sum's dtype), in float64.

  The reference sees the same rounded sum^L, so only the delta formula's error counts.
  """
  ref = _reference_delta(sum_BxK.astype(jnp.float64), y_BxK.astype(jnp.float64), output)
  return ref, {form: output_layer_delta(sum_BxK, y_BxK, output, form).astype(jnp.float64)
               for form in OUTPUT_DELTAS}


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _study_inputs(key, batch, num_outputs, output):
  """u_BxK ~ U(-1, 1) and 0-1 (sigmoid) or one-hot (softmax) targets, in float64."""
  key_u, key_y = jax.random.split(key)
  u_BxK = jax.random.uniform(key_u, (batch, num_outputs), jnp.float64, -1.0, 1.0)
  if output == "sigmoid":
    return u_BxK, jax.random.bernoulli(key_y, 0.5, (batch, num_outputs)).astype(jnp.float64)
  labels_B = jax.random.randint(key_y, (batch,), 0, num_outputs)
  return u_BxK, jax.nn.one_hot(labels_B, num_outputs, dtype=jnp.float64)


def _reference_delta(sum_BxK, y_BxK, output):
  """sigma - y with no cancellation, by formulas other than output_layer_delta's."""
  if output == "sigmoid":
    # sigma(s) = 1/(1 + e^-s) and sigma(s) - 1 = -1/(1 + e^s); e^s = inf gives 0, as it should.
    return (1 - y_BxK) / (1 + jnp.exp(-sum_BxK)) - y_BxK / (1 + jnp.exp(sum_BxK))
  log_sigma = jax.nn.log_softmax(sum_BxK, axis=-1)
  # 1 - sigma_k = sum_{j != k} sigma_j, summed without subtracting from 1.
  others = jnp.exp(jax.nn.logsumexp(jnp.where(jnp.eye(sum_BxK.shape[-1], dtype=bool)[None],
                                              -jnp.inf, log_sigma[:, None, :]), axis=-1))
  return jnp.where(y_BxK > 0, -others, jnp.exp(log_sigma))
