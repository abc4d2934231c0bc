"""An autoencoder of sigma units, as pure functions: the building block of greedy layer-wise
pre-training (research/experiments/pretraining.py).

Layer l of the lecture's network is pre-trained as the encoder of a one-hidden-layer
autoencoder that reconstructs the layer's own input sigma^{l-1} (x for l = 1), with no label:

  x~_i    = x_i m_i                          denoising: m_i = 0 with probability q, else 1
  sum^h_j = sum_i x~_i w_ij + b_j            h_j = sigma(sum^h_j)         encoder, B x H
  sum^r_i = sum_j h_j w'_ji + b'_i           r_i = sigma(sum^r_i)         decoder, B x I

With tied weights w' = w^T: one matrix used twice (parameter sharing), so the decoder adds
only the biases b'. Untied, w' is a matrix of its own. The encoder (w, b) is exactly a layer
{"w": w_IxH, "b": b_H} of research/models/mlp.py, so it drops into the network as is.

params: {"w": w_IxH, "b": b_H, "b_dec": b'_I} (+ "w_dec": w'_HxI when untied). The cost, on a
batch of B inputs, is

  cross_entropy   E = (1/B) sum_b sum_i -[x_i log r_i + (1 - x_i) log(1 - r_i)]
  squared_error   E = (1/B) sum_b (1/2) sum_i (r_i - x_i)^2

plus (lambda/2m) sum w^2 over w (and w'), as research/losses.py, and, for a contractive
autoencoder (Rifai et al., 2011), beta times the mean squared Frobenius norm of the encoder's
Jacobian, whose sigma units make it closed-form:

  J_ji = dh_j/dx_i = h_j (1 - h_j) w_ij        ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i w_ij^2

It makes h insensitive to every input direction except those the data varies along; the
leading right singular vectors of J(x) then span the tangent plane of the data manifold at x
(manifold_tangents), the tangents of the manifold tangent classifier (Rifai et al., 2011b).
The target is always the
clean x, also when the encoder read the corrupted x~. Cross-entropy is the pre-training cost
of the experiment: the inputs are intensities in [0, 1] (and so are the hidden sigma^l that
the next layer's autoencoder reads), r_i is the probability that unit i is on, and the
output delta dE/dsum^r = r - x has no factor r (1 - r), so a saturated, wrong reconstruction
unit still learns. Squared error's delta (r - x) r (1 - r) vanishes there: the lecture's
argument for the cross-entropy, for the same sigmoid outputs.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from research import errors
from research import losses
from research.models import core
from research.models import layers

COSTS = ("cross_entropy", "squared_error")


def init(key: jax.Array, d_in: int, d_hidden: int, *, tied: bool = True,
         dtype=jnp.float32) -> dict:
  """params of an I -> H -> I autoencoder: w ~ N(0, 1/I) (and w' ~ N(0, 1/H)), biases 0."""
  key_enc, key_dec = jax.random.split(key)
  params = {"w": layers.lecun_normal(key_enc, (d_in, d_hidden), d_in, dtype),
            "b": jnp.zeros((d_hidden,), dtype), "b_dec": jnp.zeros((d_in,), dtype)}
  if not tied:
    params["w_dec"] = layers.lecun_normal(key_dec, (d_hidden, d_in), d_hidden, dtype)
  return params


def decoder_weights(params: dict) -> jax.Array:
  """w'_HxI: w^T when tied (no "w_dec" leaf), else w_dec."""
  return params["w_dec"] if "w_dec" in params else params["w"].T


def corrupt(rng: jax.Array | None, x_BxI: jax.Array, noise: float) -> jax.Array:
  """Masking noise: each input set to 0 with probability `noise` (no rescaling, as in the
  denoising autoencoder). The mask comes from float32 uniforms, so it is the same with and
  without jax_enable_x64 (the hand-written pass and gradcheck's float64 check rely on it)."""
  if rng is None or noise == 0.0:
    return x_BxI
  keep = jax.random.uniform(rng, x_BxI.shape, jnp.float32) >= noise
  return jnp.where(keep, x_BxI, jnp.zeros_like(x_BxI))


def encode(params: dict, x_BxI: jax.Array) -> jax.Array:
  """h_BxH = sigma(x w + b): the hidden layer the pre-trained network keeps."""
  return jax.nn.sigmoid(x_BxI @ params["w"] + params["b"])


def apply(params: dict, x_BxI: jax.Array, *, noise: float = 0.0, train: bool = False,
          rng: jax.Array | None = None) -> jax.Array:
  """The reconstruction's sum^r_BxI (logits of r = sigma(sum^r)); corrupted only in training."""
  x_tilde = corrupt(rng, x_BxI, noise) if train else x_BxI
  return encode(params, x_tilde) @ decoder_weights(params) + params["b_dec"]


def reconstruction_cost(logits_BxI: jax.Array, x_BxI: jax.Array, cost: str) -> jax.Array:
  """Per-example cost of reconstructing x from r = sigma(logits), shape (B,)."""
  errors.check_choice("experiment.cost", cost, COSTS)
  if cost == "cross_entropy":
    return losses.sigmoid_cross_entropy(logits_BxI, x_BxI)  # from logits: never log(0)
  return 0.5 * jnp.square(jax.nn.sigmoid(logits_BxI) - x_BxI).sum(axis=-1)


def check(cost: str, noise, lam, m) -> None:
  """ConfigError for a cost, noise level or penalty the autoencoder cannot use."""
  errors.check_choice("experiment.cost", cost, COSTS)
  if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise < 1:
    raise errors.ConfigError(f"config.experiment.noise={noise!r} must be in [0, 1) (the "
                             "probability of zeroing an input; 0 = no denoising)")
  if not lam >= 0:
    raise errors.ConfigError(f"the autoencoder's lambda={lam!r} must be >= 0")
  if not m > 0:
    raise errors.ConfigError(f"the autoencoder's m={m!r} (examples in lambda/2m) must be > 0")


def contraction(params: dict, x_BxI: jax.Array) -> jax.Array:
  """||J(x)||_F^2 per example, shape (B,): sum_j (h_j (1 - h_j))^2 sum_i w_ij^2."""
  h_BxH = encode(params, x_BxI)
  return (jnp.square(h_BxH * (1 - h_BxH)) * jnp.square(params["w"]).sum(axis=0)).sum(axis=-1)


def encoder_jacobian(params: dict, x_BxI: jax.Array) -> jax.Array:
  """J_BxHxI = dh/dx = h (1 - h) w^T per example, in closed form."""
  h_BxH = encode(params, x_BxI)
  return (h_BxH * (1 - h_BxH))[:, :, None] * params["w"].T[None]


def manifold_tangents(params: dict, x_BxI: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(t_BxKxI, s_BxK): the k leading right singular vectors of J(x) (unit length, by
  decreasing singular value s) per example: the directions of input space the contractive
  encoder stays sensitive to, i.e. the estimated tangent plane of the data manifold at x.
  A singular vector's sign is arbitrary; tangent propagation's ||J_f t||^2 does not see it."""
  if not 1 <= k <= min(params["w"].shape):
    raise errors.ConfigError(f"{k} manifold tangents: choose 1 to {min(params['w'].shape)} "
                             "(at most the encoder's hidden units and inputs)")
  _, s_BxR, vt_BxRxI = jnp.linalg.svd(encoder_jacobian(params, x_BxI), full_matrices=False)
  return vt_BxRxI[:, :k], s_BxR[:, :k]


def make_loss_fn(cost: str, noise: float = 0.0, lam: float = 0.0, m: int = 1,
                 beta: float = 0.0) -> Callable:
  """E(params, x_BxI, rng) -> (E, {"reconstruction", "contraction"}): the cost above averaged
  over the batch, plus beta (1/B) sum_b ||J(x~_b)||_F^2 (beta = 0: no contraction), plus
  (lambda/2m) sum w^2; rng draws the denoising mask (None: none)."""
  check(cost, noise, lam, m)
  if not beta >= 0:
    raise errors.ConfigError(f"the contractive penalty's beta={beta!r} must be >= 0")

  def loss_fn(params, x_BxI, rng):
    x_tilde = corrupt(rng, x_BxI, noise)
    logits = apply(params, x_tilde)
    data_term = reconstruction_cost(logits, x_BxI, cost).mean()
    contract = contraction(params, x_tilde).mean()
    E = data_term + beta * contract + losses.l2_penalty(params, lam, m)
    return E, {"reconstruction": data_term, "contraction": contract}

  return loss_fn


def build(d_in: int, d_hidden: int, *, tied: bool = True, noise: float = 0.0,
          dtype=jnp.float32) -> core.Model:
  """The pair (init(key) -> params, apply(params, x, *, train=False, rng=None) -> sum^r)."""
  if not isinstance(tied, bool):
    raise errors.ConfigError(f"config.experiment.tied={tied!r} must be True or False")
  check("cross_entropy", noise, 0.0, 1)

  def init_fn(key):
    return init(key, d_in, d_hidden, tied=tied, dtype=dtype)

  def apply_fn(params, x, *, train=False, rng=None):
    return apply(params, x, noise=noise, train=train, rng=rng)

  return core.Model(init_fn, apply_fn)
