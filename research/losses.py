"""The lecture's cost E(w) and its pieces, computed stably from logits.

E = -(1/m) sum_examples sum_k [y_k log sigma_k + (1-y_k) log(1-sigma_k)]
    + (lambda/2m) sum_l sum_ij (w^l_ij)^2

On the slide m is the number of training examples and the data term averages over all of
them. A mini-batch step uses the mean over the batch (an unbiased estimate of that average)
and keeps m = the training-set size in lambda/2m, so every mini-batch gradient is an unbiased
estimate of the full-batch dE/dw. Biases are not penalised.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from research import errors


def one_hot_targets(labels_B: jax.Array, num_outputs: int, dtype=jnp.float32) -> jax.Array:
  """Integer labels -> y_BxK. With a single sigmoid output (K = 1), y is the label itself."""
  if num_outputs == 1:
    return labels_B.astype(dtype)[:, None]
  return jax.nn.one_hot(labels_B, num_outputs, dtype=dtype)


def sigmoid_cross_entropy(logits_BxK: jax.Array, y_BxK: jax.Array) -> jax.Array:
  """Per-example -sum_k [y_k log sigma_k + (1-y_k) log(1-sigma_k)], shape (B,).

  Uses log sigma(s) = -softplus(-s) and log(1-sigma(s)) = -softplus(s), which never
  evaluates log(0) even when sigma rounds to 0 or 1.
  """
  per_unit = y_BxK * jax.nn.softplus(-logits_BxK) + (1 - y_BxK) * jax.nn.softplus(logits_BxK)
  return per_unit.sum(axis=-1)


def softmax_cross_entropy(logits_BxK: jax.Array, y_BxK: jax.Array) -> jax.Array:
  """Per-example -sum_k y_k log softmax(s)_k, shape (B,)."""
  return -(y_BxK * jax.nn.log_softmax(logits_BxK, axis=-1)).sum(axis=-1)


DATA_LOSSES = {"sigmoid": sigmoid_cross_entropy, "softmax": softmax_cross_entropy}


def l2_penalty(params, lam: float, m: int) -> jax.Array:
  """(lambda/2m) sum_l sum_ij (w^l_ij)^2 over every weight leaf (see is_weight), not biases."""
  sq = [jnp.sum(jnp.square(v))
        for path, v in jax.tree_util.tree_leaves_with_path(params) if is_weight(path)]
  return (lam / (2.0 * m)) * sum(sq, jnp.zeros(()))


def l1_penalty(params, lam1: float, m: int) -> jax.Array:
  """(lambda_1/m) sum_l sum_ij |w^l_ij|: drives weights to exactly 0 (weights, not biases)."""
  absolute = [jnp.sum(jnp.abs(v))
              for path, v in jax.tree_util.tree_leaves_with_path(params) if is_weight(path)]
  return (lam1 / m) * sum(absolute, jnp.zeros(()))


def activation_l1_penalty(sigmas, lam_act: float) -> jax.Array:
  """(lambda_h/B) sum_b sum_l sum_j |sigma^l_bj|: an L1 penalty on the hidden units' values
  (a sparse representation), not on the weights. sigmas: the hidden layers' outputs, each
  with the batch first (sigma^l_BxH...); averaged over the B examples like the data term."""
  total = [jnp.abs(s).reshape(s.shape[0], -1).sum(axis=1).mean() for s in sigmas]
  return lam_act * sum(total, jnp.zeros(()))


def is_weight(path) -> bool:
  """Weight matrices are the leaves whose name starts with "w" (w, w_ih, w_hh, wq, ...);
  biases (b, bias), layer-norm gains (scale) and embedding tables are not penalised."""
  last = path[-1]
  return isinstance(last, jax.tree_util.DictKey) and str(last.key).startswith("w")


def predictions(logits_BxK: jax.Array) -> jax.Array:
  """Predicted class: argmax over K outputs, or sigma > 1/2 for a single sigmoid output."""
  if logits_BxK.shape[-1] == 1:
    return (logits_BxK[:, 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits_BxK, axis=-1)


def num_outputs(config, dataset) -> int:
  """K: one sigmoid unit for a binary task, else one unit per class."""
  if config.loss.output == "sigmoid" and dataset.num_classes == 2:
    return 1
  return dataset.num_classes


def make_loss_fn(model, output: str, lam: float, m: int, k: int,
                 lam1: float = 0.0) -> Callable:
  """E(params, x, labels, rng) -> (E, aux): the data term averaged over the batch
  + (lambda/2m) sum w^2 [+ (lambda_1/m) sum |w|]."""
  data_loss = DATA_LOSSES[output]

  def loss_fn(params, x, labels, rng):
    logits_BxK = model.apply(params, x, train=True, rng=rng)
    return _cost(params, logits_BxK, labels, data_loss, k, lam, m, lam1)

  return loss_fn


def _cost(params, logits_BxK, labels, data_loss, k, lam, m, lam1, extra=None) -> tuple:
  """(E, {"data_loss", "accuracy"}): the data term averaged over the batch + (lambda/2m)
  sum w^2 [+ an extra penalty] [+ (lambda_1/m) sum |w|]."""
  y_BxK = one_hot_targets(labels, k, logits_BxK.dtype)
  data_term = data_loss(logits_BxK, y_BxK).mean()
  E = data_term + l2_penalty(params, lam, m)
  if extra is not None:
    E = E + extra
  if lam1:
    E = E + l1_penalty(params, lam1, m)
  accuracy = (predictions(logits_BxK) == labels).mean()
  return E, {"data_loss": data_term, "accuracy": accuracy}


def make_activation_l1_loss_fn(forward: Callable, output: str, lam: float, m: int, k: int,
                               lam_act: float, lam1: float = 0.0) -> Callable:
  """make_loss_fn's E plus activation_l1_penalty(hidden units, lambda_h).

  forward(params, x) -> (hidden sigmas [sigma^1_Bx..., ..., sigma^{L-1}], logits_BxK): the
  model's forward pass keeping its hidden layers. Returns E(params, x, labels, rng) -> (E,
  {"data_loss", "accuracy"}), as make_loss_fn's.
  """
  data_loss = DATA_LOSSES[output]

  def loss_fn(params, x, labels, rng):
    del rng  # Deterministic models only.
    sigmas, logits_BxK = forward(params, x)
    return _cost(params, logits_BxK, labels, data_loss, k, lam, m, lam1,
                 activation_l1_penalty(sigmas, lam_act))

  return loss_fn


def mixture_nll(logits_MxBxK: jax.Array, labels_B: jax.Array,
                output: str) -> tuple[jax.Array, jax.Array]:
  """-log Pr(y|x) under the average of M members' predictive distributions, and argmax.

  Pr(y|x) = (1/M) sum_d Pr(y|x,d), computed as logsumexp_d log Pr(y|x,d) - log M so it never
  evaluates log(0). softmax: Pr is the categorical over K classes. sigmoid: the K units are
  independent Bernoullis, each averaged on its own (sigma_k and 1 - sigma_k both averaged),
  the lecture's cross-entropy of the averaged units. With M = 1 both are exactly
  DATA_LOSSES[output]. Returns (nll_B, predicted class_B).
  """
  m, _, k = logits_MxBxK.shape
  average = lambda logp_MxBxK: jax.nn.logsumexp(logp_MxBxK, axis=0) - jnp.log(m)
  if output == "softmax":
    logp_BxK = average(jax.nn.log_softmax(logits_MxBxK, axis=-1))
    nll_B = -jnp.take_along_axis(logp_BxK, labels_B[:, None], axis=-1)[:, 0]
    return nll_B, jnp.argmax(logp_BxK, axis=-1)
  errors.check_choice("loss.output", output, sorted(DATA_LOSSES))
  logp_BxK = average(-jax.nn.softplus(-logits_MxBxK))  # log sigma_k
  log1mp_BxK = average(-jax.nn.softplus(logits_MxBxK))  # log (1 - sigma_k)
  y_BxK = one_hot_targets(labels_B, k, logp_BxK.dtype)
  nll_B = -(y_BxK * logp_BxK + (1 - y_BxK) * log1mp_BxK).sum(axis=-1)
  if k == 1:
    return nll_B, (logp_BxK[:, 0] > log1mp_BxK[:, 0]).astype(jnp.int32)
  return nll_B, jnp.argmax(logp_BxK, axis=-1)
