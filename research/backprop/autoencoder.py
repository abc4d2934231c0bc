"""The autoencoder's backward pass, written out by hand in the slides' symbols.

The model (research/models/autoencoder.py), on a batch of B inputs x_BxI in [0, 1]:

  x~ = x m (the denoising mask),  h = sigma(x~ w + b)  (B x H),  r = sigma(h w' + b')  (B x I)

with w' = w^T (tied) or a matrix of its own, and E = (1/B) sum_b cost(r, x) + (lambda/2m) sum w^2.
delta = dE/dsum, the error at a unit's sum (as in backprop/mlp.py), layer by layer:

  output   cross_entropy:  dE/dr_i = (1/B) [-x_i/r_i + (1-x_i)/(1-r_i)]
                           delta^r_i = dE/dr_i r_i (1-r_i) = (r_i - x_i)/B
           squared_error:  dE/dr_i = (r_i - x_i)/B,   delta^r_i = (r_i - x_i) r_i (1-r_i)/B
  hidden   dE/dh_j = sum_i delta^r_i w'_ji           (the lecture's recursion, one layer down)
           delta^h_j = dE/dh_j h_j (1 - h_j)
  weights  dE/dw'_ji = sum_b h_j delta^r_i + (lambda/m) w'_ji,    dE/db'_i = sum_b delta^r_i
           dE/dw_ij  = sum_b x~_i delta^h_j + (lambda/m) w_ij,    dE/db_j  = sum_b delta^h_j

Tied weights: w is used twice, as the encoder's w_ij and as the decoder's w'_ji = w_ij, so its
gradient is the sum of both uses (the multivariate chain rule, as for any shared parameter):

  dE/dw_ij = sum_b x~_i delta^h_j + sum_b h_j delta^r_i + (lambda/m) w_ij
           = (x~^T delta^h + (delta^r)^T h)_ij + (lambda/m) w_ij

and the penalty counts w once, because it is one matrix. In matrix form every line is one
matmul over the batch, as in backprop/mlp.py.

The contractive penalty C = (beta/B) sum_b sum_j a_j^2 s_j, with a_j = h_j (1 - h_j) and
s_j = sum_i w_ij^2 (||J||_F^2, research/models/autoencoder.py), reaches the weights two ways:

  through h    dC/dsum^h_j = (2 beta/B) s_j a_j da_j/dsum^h_j = (2 beta/B) s_j a_j^2 (1 - 2 h_j)
               (da/dh = 1 - 2h, dh/dsum = h (1 - h) = a): it adds to delta^h_j, so it flows
               into dE/dw_ij and dE/db_j like the reconstruction's error
  through s    dC/dw_ij = (2 beta/B) sum_b a_j^2 w_ij      (directly, as s_j = sum_i w_ij^2)
"""
import jax
import jax.numpy as jnp

from research import losses
from research.backprop import core
from research.models import autoencoder

OUTPUT_DELTAS = {
    # delta^r = dE/dr r (1 - r), per example (the 1/B comes after): the slide's product with
    # the divisions cancelled by hand, r - x for the cross-entropy.
    "cross_entropy": lambda r, x: r - x,
    "squared_error": lambda r, x: (r - x) * r * (1 - r),
}


def forward(params: dict, x_BxI: jax.Array, rng, noise: float) -> tuple[dict, jax.Array]:
  """The forward pass, keeping x~ and h for the backward pass: (cache, sum^r_BxI)."""
  x_tilde = autoencoder.corrupt(rng, x_BxI, noise)
  h_BxH = autoencoder.encode(params, x_tilde)
  sum_r = h_BxH @ autoencoder.decoder_weights(params) + params["b_dec"]
  return {"x_tilde": x_tilde, "h": h_BxH}, sum_r


def backward(params: dict, cache: dict, delta_r_BxI: jax.Array, lam: float, m: int,
             beta: float = 0.0) -> dict:
  """dE/dparams from delta^r (already carrying the 1/B): the same pytree as params; beta > 0
  adds the contractive penalty's two paths (module doc)."""
  h_BxH, x_tilde = cache["h"], cache["x_tilde"]
  w_dec = autoencoder.decoder_weights(params)
  a_BxH = h_BxH * (1 - h_BxH)
  # dE/dh_j = sum_i delta^r_i w'_ji, then delta^h_j = dE/dh_j h_j (1 - h_j).
  delta_h_BxH = (delta_r_BxI @ w_dec.T) * a_BxH
  grad_w_contract = 0.0
  if beta:
    batch = h_BxH.shape[0]
    s_H = jnp.square(params["w"]).sum(axis=0)
    delta_h_BxH = delta_h_BxH + (2 * beta / batch) * s_H * jnp.square(a_BxH) * (1 - 2 * h_BxH)
    grad_w_contract = (2 * beta / batch) * jnp.square(a_BxH).sum(axis=0) * params["w"]
  grad_w_enc = x_tilde.T @ delta_h_BxH + grad_w_contract  # sum_b x~_i delta^h_j (I x H)
  grad_w_dec = h_BxH.T @ delta_r_BxI              # sum_b h_j delta^r_i    (H x I)
  grads = {"b": delta_h_BxH.sum(axis=0), "b_dec": delta_r_BxI.sum(axis=0)}
  if "w_dec" in params:
    grads["w"] = grad_w_enc + (lam / m) * params["w"]
    grads["w_dec"] = grad_w_dec + (lam / m) * params["w_dec"]
  else:  # Tied: both uses of w add up; the penalty sees one matrix.
    grads["w"] = grad_w_enc + grad_w_dec.T + (lam / m) * params["w"]
  return grads


def make_value_and_grad(cost: str, noise: float = 0.0, lam: float = 0.0, m: int = 1,
                        beta: float = 0.0):
  """A drop-in for jax.value_and_grad(autoencoder.make_loss_fn(cost, noise, lam, m, beta),
  has_aux=True): value_and_grad(params, x_BxI, rng) -> ((E, {"reconstruction",
  "contraction"}), grads)."""
  autoencoder.make_loss_fn(cost, noise, lam, m, beta)  # The same checks, the same messages.
  output_delta = OUTPUT_DELTAS[cost]

  def value_and_grad(params, x_BxI, rng):
    cache, sum_r = forward(params, x_BxI, rng, noise)
    data_term = autoencoder.reconstruction_cost(sum_r, x_BxI, cost).mean()
    a_BxH = cache["h"] * (1 - cache["h"])
    contract = (jnp.square(a_BxH) * jnp.square(params["w"]).sum(axis=0)).sum(axis=-1).mean()
    E = data_term + beta * contract + losses.l2_penalty(params, lam, m)
    delta_r = output_delta(jax.nn.sigmoid(sum_r), x_BxI) / x_BxI.shape[0]
    return ((E, {"reconstruction": data_term, "contraction": contract}),
            backward(params, cache, delta_r, lam, m, beta))

  return value_and_grad


# ------------------------------------------------------------------------------ gradient check


def _problem(key, batch, dtype, *, tied: bool, cost: str, noise: float,
             beta: float = 0.0) -> core.Problem:
  """I = 12 inputs in (0, 1), H = 7 hidden units (not square: w^T has another shape than w),
  lambda = 1, m = 4B, non-zero biases, a fixed denoising mask, contraction beta."""
  d_in, d_hidden, lam, m = 12, 7, 1.0, 4 * batch
  mask_key = jax.random.key(int(jax.random.key_data(key)[-1]) + 1)

  @jax.jit
  def make_arrays(key):
    shapes = {"params": jax.eval_shape(lambda k: autoencoder.init(k, d_in, d_hidden, tied=tied,
                                                                  dtype=dtype), key),
              "x": jax.ShapeDtypeStruct((batch, d_in), dtype)}
    z = core.random_like(key, shapes, dtype)
    params = {name: (v / jnp.sqrt(v.shape[0]).astype(dtype) if name.startswith("w")
                     else 0.1 * v) for name, v in z["params"].items()}
    return params, jax.nn.sigmoid(2 * z["x"])  # inputs strictly inside (0, 1)

  params, x_BxI = make_arrays(key)
  loss_fn = autoencoder.make_loss_fn(cost, noise, lam, m, beta)
  value_and_grad = make_value_and_grad(cost, noise, lam, m, beta)
  return core.Problem(
      params=params, args=(x_BxI,),
      loss_fn=lambda p, x: loss_fn(p, x, mask_key)[0],
      grad_fn=lambda p, x: value_and_grad(p, x, mask_key)[1],
      description=(f"autoencoder {d_in} -> {d_hidden} sigmoid -> {d_in} sigmoid, "
                   f"{'tied w^T' if tied else 'untied'}, {cost}, masking noise {noise}, "
                   f"B={batch}, lambda={lam}, m={m}" + (f", contraction beta={beta}" if beta else "")))


@core.register_problem("autoencoder")
def problem_autoencoder(key, batch, dtype) -> core.Problem:
  """The pre-training experiment's block: tied weights, cross-entropy, denoising."""
  return _problem(key, batch, dtype, tied=True, cost="cross_entropy", noise=0.25)


@core.register_problem("autoencoder_untied")
def problem_autoencoder_untied(key, batch, dtype) -> core.Problem:
  """Untied weights and the squared-error cost, no noise."""
  return _problem(key, batch, dtype, tied=False, cost="squared_error", noise=0.0)


@core.register_problem("autoencoder_contractive")
def problem_autoencoder_contractive(key, batch, dtype) -> core.Problem:
  """The manifold tangent classifier's encoder: tied, cross-entropy, contractive (beta = 0.5,
  large enough that its gradient paths are a sizeable part of dE/dw)."""
  return _problem(key, batch, dtype, tied=True, cost="cross_entropy", noise=0.0, beta=0.5)
