"""The backward primitives every family's hand-written pass is built from: one per layer of
research/models/layers.py, plus the output delta, the penalties and E from the logits.

One contract: `<layer>_backward(params, x, delta) -> (dE/dx, grads)` for a layer with weights
(grads has the keys of the layer's params dict), `-> dE/dx` for one without; x is what the
forward saved (its input, sometimes its output), delta = dE/dsum (or dE/dy) at its output.
Nothing here calls jax.grad or jax.vjp: the convolutions and windowed sums are the transposes
of the forward's, written out with lax primitives.

  dense   sum_j = sum_i x_i w_ij + b_j
          dE/dx_i = sum_j delta_j w_ij     dE/dw_ij = sum_b x_i delta_j     dE/db_j = sum_b delta_j
  conv    dE/dw: a correlation of x with delta dilated by the stride; dE/dx: a "full"
          convolution of the dilated delta with the flipped, I<->O swapped kernel
  pools   the windowed sum's transpose adds each output's gradient back onto its window; max
          routes it to the window's argmax only
  output  delta^L = dE/dsum^L = (sigma^L - y) / B for the sigmoid or softmax cross-entropy
  E       the data term averaged over the examples (and steps) + (lambda/2m) sum w^2
          [+ (lambda_1/m) sum |w|]; its gradient adds (lambda/m) w [+ (lambda_1/m) sign w]
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from research import errors
from research import losses
from research.backprop import core
from research.models import layers

_CONV_DIMS = ("NHWC", "HWIO", "NHWC")
# dE/dw as a convolution: x's channels play the batch, x's batch the contracted feature axis,
# and delta is the kernel; the output comes out directly as HWIO.
_CONV_DW_DIMS = ("CHWN", "IHWO", "HWNC")

# f'(sum) written through sigma = f(sum), as the slides do for the sigmoid. For tanh,
# (1-sigma)(1+sigma) rather than 1-sigma^2: 1-sigma is exact near saturation, sigma^2 is not.
# The LeNet squashing f = A tanh(S a) has f' = A S (1 - tanh^2) = (S/A)(A - sigma)(A + sigma).
_A, _S = 1.7159, 2.0 / 3.0
DERIVATIVES = {
    "sigmoid": lambda sigma: sigma * (1 - sigma),
    "tanh": lambda sigma: (1 - sigma) * (1 + sigma),
    "relu": lambda sigma: (sigma > 0).astype(sigma.dtype),  # f'(0) = 0, as jax.nn.relu.
    "scaled_tanh": lambda sigma: (_S / _A) * (_A - sigma) * (_A + sigma),
    "identity": jnp.ones_like,
}
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu_prime(s):
  """d/ds of jax.nn.gelu's tanh form s/2 (1 + tanh(u)), u = sqrt(2/pi) (s + 0.044715 s^3)."""
  tanh_u = jnp.tanh(_SQRT_2_OVER_PI * (s + 0.044715 * s ** 3))
  return (0.5 * (1 + tanh_u)
          + 0.5 * s * (1 - tanh_u) * (1 + tanh_u) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * s ** 2))


# f'(sum) written through sum itself, for units whose sigma does not give it (gelu).
PRIMES_OF_SUM = {
    "gelu": _gelu_prime,
    "relu": lambda s: (s > 0).astype(s.dtype),  # f'(0) = 0, as jax.nn.relu.
}
OUTPUTS = ("sigmoid", "softmax")
OUTPUT_DELTAS = ("simplified", "literal")


# ------------------------------------------------------------------------- dense, activations


def activation_backward(activation: str, sigma: jax.Array, dE_dsigma: jax.Array) -> jax.Array:
  """delta = dE/dsum = dE/dsigma * f'(sum), with f' written through sigma = f(sum).

  activation: sigmoid | tanh | relu (f'(0) = 0, as jax.nn.relu) | scaled_tanh | identity.
  """
  if activation not in DERIVATIVES:
    raise ValueError(f"activation={activation!r} has no hand-written derivative; choose one "
                     f"of {sorted(DERIVATIVES)}")
  return dE_dsigma * DERIVATIVES[activation](sigma)


def dense_backward(params: dict, x_xI: jax.Array, delta_xO: jax.Array) -> tuple[jax.Array, dict]:
  """Backward of layers.dense: (dE/dx_xI, {"w": dE/dw_IxO, "b": dE/db_O}).

  delta_xO = dE/dsum for every example (any leading axes, summed over for the weights).
  """
  w_IxO = params["w"]
  x_BxI = x_xI.reshape(-1, w_IxO.shape[0])
  delta_BxO = delta_xO.reshape(-1, w_IxO.shape[1])
  return delta_xO @ w_IxO.T, {"w": x_BxI.T @ delta_BxO, "b": delta_BxO.sum(axis=0)}


# ------------------------------------------------------------------------------- output delta


def output_layer_delta(sum_BxK: jax.Array, y_BxK: jax.Array, output: str = "sigmoid",
                       output_delta: str = "simplified") -> jax.Array:
  """delta^L = dE_b/dsum^L for each example's own cost E_b (no 1/B), shape (..., K).

  "literal" is the slide: dE/dsigma^L times the output non-linearity's derivative.
  "simplified" is the same quantity after cancelling the divisions by hand: sigma^L - y.
  """
  errors.check_choice("loss.output", output, OUTPUTS)
  errors.check_choice("output_delta", output_delta, OUTPUT_DELTAS)
  y = y_BxK.astype(sum_BxK.dtype)
  if output == "sigmoid":
    if output_delta == "simplified":
      # sigma^L - y = (1-y) sigma(sum^L) - y sigma(-sum^L): the same number, but the target
      # units keep their small gradient -sigma(-sum^L) instead of rounding 1 - 1 to 0.
      return (1 - y) * jax.nn.sigmoid(sum_BxK) - y * jax.nn.sigmoid(-sum_BxK)
    sigma = jax.nn.sigmoid(sum_BxK)
    dE_dsigma = -y / sigma + (1 - y) / (1 - sigma)
    return dE_dsigma * sigma * (1 - sigma)
  sigma = jax.nn.softmax(sum_BxK, axis=-1)
  if output_delta == "simplified":
    # = sigma - y for one-hot y; the factor sum_k y_k keeps it exact for any targets.
    return sigma * y.sum(axis=-1, keepdims=True) - y
  dE_dsigma = -y / sigma
  # The softmax Jacobian dsigma_j/dsum_k = sigma_j (1[j=k] - sigma_k), applied without
  # building the KxK matrix.
  return sigma * (dE_dsigma - (dE_dsigma * sigma).sum(axis=-1, keepdims=True))


def softmax_cross_entropy_backward(logits_BxK: jax.Array, y_BxK: jax.Array) -> jax.Array:
  """dE/dsum^L for E = mean_b losses.softmax_cross_entropy: (softmax(sum^L) - y) / B."""
  return output_layer_delta(logits_BxK, y_BxK, "softmax") / logits_BxK.shape[0]


def sigmoid_cross_entropy_backward(logits_BxK: jax.Array, y_BxK: jax.Array) -> jax.Array:
  """dE/dsum^L for E = mean_b losses.sigmoid_cross_entropy: (sigmoid(sum^L) - y) / B."""
  return output_layer_delta(logits_BxK, y_BxK, "sigmoid") / logits_BxK.shape[0]


OUTPUT_BACKWARDS = {"softmax": softmax_cross_entropy_backward,
                    "sigmoid": sigmoid_cross_entropy_backward}


# ----------------------------------------------------------------------------------- geometry


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def _geometry(x_NHWC: jax.Array, window: tuple[int, int], stride: tuple[int, int],
              padding) -> list[tuple[int, int, int, int, int]]:
  """Per spatial axis (k, s, lo, hi, r): window, stride, zero padding, and the r trailing
  positions of the padded input that no window reaches (they get no gradient)."""
  size = x_NHWC.shape[1:3]
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(size, window, stride, padding)
  else:
    pads = [_pair(p) for p in padding]
  dims = []
  for n, k, s, (lo, hi) in zip(size, window, stride, pads):
    n_out = (n + lo + hi - k) // s + 1
    dims.append((k, s, lo, hi, n + lo + hi - ((n_out - 1) * s + k)))
  return dims


def _check_padding(padding) -> None:
  if isinstance(padding, str) and padding not in ("SAME", "VALID"):
    raise ValueError(f"padding={padding!r}: use 'SAME', 'VALID' or ((top, bottom), (left, right))")


# --------------------------------------------------------------------------------------- conv


def conv_patches_backward(dE_dp: jax.Array, x_shape: tuple[int, ...], kernel_size,
                          stride: layers.Pair = 1,
                          padding: layers.Padding = "SAME") -> jax.Array:
  """Transpose of layers.conv_patches ("col2im"): dE/dx_NHWC from dE/dp_NxH'xW'x(kh*kw*C).

  Every entry of x appears in the rows of all the windows that cover it, so its gradient is
  the sum of those rows' entries: row (h, w)'s slot (i, j) goes back to x_pad[s h + i, s w + j].
  """
  kh, kw = _pair(kernel_size)
  n, _, _, c = x_shape
  dims = _geometry(jax.ShapeDtypeStruct(x_shape, dE_dp.dtype), (kh, kw), _pair(stride), padding)
  (_, sh, top, bottom, _), (_, sw, left, right, _) = dims
  ho, wo = dE_dp.shape[1:3]
  hp, wp = x_shape[1] + top + bottom, x_shape[2] + left + right
  dE_dp = dE_dp.reshape(n, ho, wo, kh, kw, c)
  zero = jnp.zeros((), dE_dp.dtype)
  dE_dx_pad = sum(
      lax.pad(dE_dp[:, :, :, i, j], zero, [
          (0, 0, 0), (i, hp - 1 - i - (ho - 1) * sh, sh - 1),
          (j, wp - 1 - j - (wo - 1) * sw, sw - 1), (0, 0, 0)])
      for i in range(kh) for j in range(kw))
  return dE_dx_pad[:, top:top + x_shape[1], left:left + x_shape[2]]


def _conv2d_backward_patches(w, x_NHWC, delta_NHWO, stride, padding):
  """conv2d_backward for layers.conv2d(impl="patches"): the matmul's two transposes, then
  col2im. dE/dw = p^T delta and dE/dp = delta w^T, with p the im2col rows of x."""
  kh, kw, c_g, o = w.shape
  groups = x_NHWC.shape[-1] // c_g
  p = layers.conv_patches(x_NHWC, (kh, kw), stride, padding)
  rows = p.shape[0] * p.shape[1] * p.shape[2]
  if groups == 1:
    w_KxO = w.reshape(kh * kw * c_g, o)
    dE_dw = (p.reshape(rows, -1).T @ delta_NHWO.reshape(rows, o)).reshape(w.shape)
    dE_dp = delta_NHWO @ w_KxO.T
  else:  # Group g's rows (i, j, g, c) meet group g's output channels only.
    p = p.reshape(rows, kh * kw, groups, c_g)
    delta = delta_NHWO.reshape(rows, groups, o // groups)
    w_TxCxGxO = w.reshape(kh * kw, c_g, groups, o // groups)
    dE_dw = jnp.einsum("mtgc,mgo->tcgo", p, delta).reshape(w.shape)
    dE_dp = jnp.einsum("mgo,tcgo->mtgc", delta, w_TxCxGxO).reshape(
        *delta_NHWO.shape[:3], kh * kw * groups * c_g)
  dE_dx = conv_patches_backward(dE_dp, x_NHWC.shape, (kh, kw), stride, padding)
  return dE_dx, {"w": dE_dw, "b": delta_NHWO.sum(axis=(0, 1, 2))}


def conv2d_backward(params: dict, x_NHWC: jax.Array, delta_NHWO: jax.Array,
                    stride: layers.Pair = 1, padding: layers.Padding = "SAME",
                    impl: str = "xla") -> tuple[jax.Array, dict]:
  """Backward of layers.conv2d (same stride, padding, groups): (dE/dx_NHWC, {"w", "b"}).

  delta_NHWO = dE/dsum, the gradient at the conv's output before any activation. impl picks
  the same primitives as the forward's layers.conv2d: "xla" convolutions, or "patches"
  (im2col matmuls and col2im), which XLA:CPU runs much faster inside lax.scan.
  """
  _check_padding(padding)
  w = params["w"]
  if impl == "patches":
    return _conv2d_backward_patches(w, x_NHWC, delta_NHWO, stride, padding)
  if impl != "xla":
    raise ValueError(f"conv impl={impl!r}; choose one of {layers.CONV_IMPLS}")
  kh, kw, c_g, o = w.shape
  groups = x_NHWC.shape[-1] // c_g
  dims = _geometry(x_NHWC, (kh, kw), _pair(stride), padding)
  strides = tuple(s for _, s, _, _, _ in dims)

  # dE/dx: delta dilated by the stride (s - 1 zeros between entries), padded by k - 1 - lo in
  # front and k - 1 - hi + r behind (negative: cropped), correlated with the flipped kernel.
  # Per group g, the kernel maps O/G channels back to the group's C/G: w_{ij c, g O/G + o} ->
  # w^T_{ij o, g C/G + c}.
  w_t = (w[::-1, ::-1].reshape(kh, kw, c_g, groups, o // groups)
         .transpose(0, 1, 4, 3, 2).reshape(kh, kw, o // groups, groups * c_g))
  dE_dx = lax.conv_general_dilated(
      delta_NHWO, w_t, window_strides=(1, 1),
      padding=[(k - 1 - lo, k - 1 - hi + r) for k, _, lo, hi, r in dims],
      lhs_dilation=strides, dimension_numbers=_CONV_DIMS, feature_group_count=groups)

  # dE/dw_{ijco} = sum_{nhw} x_pad[n, s h + i, s w + j, c] delta[n, h, w, o]: x padded as in the
  # forward (the unreached r trailing rows cropped) correlated with the s-dilated delta.
  # batch_group_count pairs group g's input channels with group g's output channels.
  dE_dw = lax.conv_general_dilated(
      x_NHWC, delta_NHWO, window_strides=(1, 1),
      padding=[(lo, hi - r) for _, _, lo, hi, r in dims],
      rhs_dilation=strides, dimension_numbers=_CONV_DW_DIMS, batch_group_count=groups)
  return dE_dx, {"w": dE_dw, "b": delta_NHWO.sum(axis=(0, 1, 2))}


def locally_connected2d_backward(params: dict, x_NHWC: jax.Array, delta_NHWO: jax.Array,
                                 stride: layers.Pair = 1,
                                 padding: layers.Padding = "SAME") -> tuple[jax.Array, dict]:
  """Backward of layers.locally_connected2d: (dE/dx_NHWC, {"w": dE/dw_H'xW'xKxO, "b"}).

  With p the im2col rows of x (p_{nhw} the receptive field of position (h, w)) and
  sum_{nhwo} = sum_k p_{nhwk} w_{hwko} + b_{hwo}:
    dE/dw_{hwko} = sum_n p_{nhwk} delta_{nhwo}   (a conv's dE/dw before the sum over h, w:
                                                  each position keeps its own gradient)
    dE/db_{hwo}  = sum_n delta_{nhwo}
    dE/dp_{nhwk} = sum_o delta_{nhwo} w_{hwko},  then col2im (conv_patches_backward) adds
                   each row back onto the pixels of its receptive field.
  """
  _check_padding(padding)
  w = params["w"]
  k = math.isqrt(w.shape[2] // x_NHWC.shape[-1])
  p = layers.conv_patches(x_NHWC, k, stride, padding)
  dE_dw = jnp.einsum("nhwk,nhwo->hwko", p, delta_NHWO)
  dE_dp = jnp.einsum("nhwo,hwko->nhwk", delta_NHWO, w)
  dE_dx = conv_patches_backward(dE_dp, x_NHWC.shape, k, stride, padding)
  return dE_dx, {"w": dE_dw, "b": delta_NHWO.sum(axis=0)}


# ------------------------------------------------------------------------------------ pooling


def _pool_dims(x_NHWC, window, stride, padding):
  _check_padding(padding)
  window = _pair(window)
  return _geometry(x_NHWC, window, _pair(window if stride is None else stride), padding)


def sum_pool_backward(x_NHWC: jax.Array, dE_dy: jax.Array, window: layers.Pair,
                      stride: layers.Pair | None = None,
                      padding: layers.Padding = "VALID") -> jax.Array:
  """Backward of layers.sum_pool: x_p gets sum over the outputs whose window holds p.

  y_h = sum_{i<k} x_{s h + i}, so dE/dx_p = sum_{h: 0 <= p - s h < k} dE/dy_h: a stride-1
  windowed sum of dE/dy dilated by s and padded by k - 1 (then cropped to x's positions).
  Only x's shape is used.
  """
  dims = _pool_dims(x_NHWC, window, stride, padding)
  zero = jnp.zeros((), dE_dy.dtype)
  dilated = lax.pad(dE_dy, zero, [(0, 0, 0)] + [(k - 1 - lo, k - 1 - hi + r, s - 1)
                                                for k, s, lo, hi, r in dims] + [(0, 0, 0)])
  (kh, *_), (kw, *_) = dims
  return lax.reduce_window(dilated, 0.0, lax.add, (1, kh, kw, 1), (1, 1, 1, 1), "VALID")


def avg_pool_backward(x_NHWC: jax.Array, dE_dy: jax.Array, window: layers.Pair,
                      stride: layers.Pair | None = None,
                      padding: layers.Padding = "VALID") -> jax.Array:
  """Backward of layers.avg_pool: each input gets dE/dy_h / n_h from every window h holding it,
  n_h the number of real (unpadded) inputs in window h. Only x's shape is used."""
  ones = jnp.ones((1, *x_NHWC.shape[1:3], 1), dE_dy.dtype)
  count = layers.sum_pool(ones, window, stride, padding)
  return sum_pool_backward(x_NHWC, dE_dy / count, window, stride, padding)


def max_pool_backward(x_NHWC: jax.Array, dE_dy: jax.Array, window: layers.Pair,
                      stride: layers.Pair | None = None,
                      padding: layers.Padding = "VALID") -> jax.Array:
  """Backward of layers.max_pool: each window's dE/dy goes to its argmax alone.

  Ties go to the first maximum in row-major window order, as XLA's select_and_scatter (which
  jax.grad of reduce_window max uses, with select = ge) does on CPU. Overlapping windows
  (stride < window) add up at an input that is the argmax of several.
  """
  dims = _pool_dims(x_NHWC, window, stride, padding)
  (kh, sh, _, _, _), (kw, sw, _, _, _) = dims
  n, _, _, c = x_NHWC.shape
  ho, wo = dE_dy.shape[1:3]
  x_pad = lax.pad(x_NHWC, jnp.array(-jnp.inf, x_NHWC.dtype),
                  [(0, 0, 0)] + [(lo, hi, 0) for _, _, lo, hi, _ in dims] + [(0, 0, 0)])
  hp, wp = x_pad.shape[1:3]
  # x at offset (i, j) of every window: candidates[i * kw + j] is N x H' x W' x C.
  candidates = [lax.slice(x_pad, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                          (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  y = jnp.max(jnp.stack(candidates), axis=0)
  taken = jnp.zeros(dE_dy.shape, bool)
  zero = jnp.zeros((), dE_dy.dtype)
  dE_dx_pad = jnp.zeros_like(x_pad, dtype=dE_dy.dtype)
  for (i, j), candidate in zip(np.ndindex(kh, kw), candidates):
    first = (candidate == y) & ~taken
    taken = taken | first
    # Put each window's share back at its offset (i, j): stride - 1 zeros between outputs.
    dE_dx_pad += lax.pad(jnp.where(first, dE_dy, zero), zero, [
        (0, 0, 0), (i, hp - 1 - i - (ho - 1) * sh, sh - 1),
        (j, wp - 1 - j - (wo - 1) * sw, sw - 1), (0, 0, 0)])
  (_, _, top, _, _), (_, _, left, _, _) = dims
  return dE_dx_pad[:, top:top + x_NHWC.shape[1], left:left + x_NHWC.shape[2]]


# ------------------------------------------------------------------------------ normalisation


def local_response_norm_backward(x_NHWC: jax.Array, dE_dy: jax.Array, k: float = 2.0,
                                 n: int = 5, alpha: float = 1e-4,
                                 beta: float = 0.75) -> jax.Array:
  """Backward of layers.local_response_norm, y_c = x_c D_c^-beta, D_c = k + alpha sum_{c' in
  win(c)} x_c'^2:

    dE/dx_j = dE/dy_j D_j^-beta - 2 alpha beta x_j sum_{c: j in win(c)} dE/dy_c x_c D_c^-(beta+1)

  win(c) = [c - n//2, c + (n-1)//2], so j in win(c) iff c in [j - (n-1)//2, j + n//2]: the
  second sum is a window sum over channels with the forward's padding reversed.
  """
  channel_sum = lambda v, lo, hi: lax.reduce_window(
      v, 0.0, lax.add, (1, 1, 1, n), (1, 1, 1, 1), ((0, 0), (0, 0), (0, 0), (lo, hi)))
  D = k + alpha * channel_sum(jnp.square(x_NHWC), n // 2, (n - 1) // 2)
  through_D = channel_sum(dE_dy * x_NHWC / D ** (beta + 1), (n - 1) // 2, n // 2)
  return dE_dy / D ** beta - 2 * alpha * beta * x_NHWC * through_D


# ------------------------------------------------------------------------------------ dropout


def dropout_forward(rng: jax.Array | None, x: jax.Array,
                    rate: float) -> tuple[jax.Array, jax.Array | None]:
  """layers.dropout(rng, x, rate, train=True), also returning its keep mask (None: no dropout).

  The mask is drawn exactly as layers.dropout draws it, so the same key gives the same mask.
  """
  if rng is None or rate == 0:
    return x, None
  keep = layers.dropout_keep_mask(rng, rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x)), keep


def dropout_backward(keep: jax.Array | None, dE_dy: jax.Array, rate: float) -> jax.Array:
  """dE/dx = dE/dy / (1 - rate) where the unit was kept, 0 where it was dropped (keep from
  dropout_forward; None: the identity)."""
  if keep is None:
    return dE_dy
  return jnp.where(keep, dE_dy / (1.0 - rate), jnp.zeros_like(dE_dy))


# ----------------------------------------------------------------------- layer norm, embedding


def layer_norm_forward(params: dict, x_xD: jax.Array, eps: float = 1e-5) -> tuple:
  """layers.layer_norm: y, and the cache {x_hat, rstd} with rstd = 1/sqrt(var + eps)."""
  mean = x_xD.mean(axis=-1, keepdims=True)
  var = jnp.square(x_xD - mean).mean(axis=-1, keepdims=True)
  rstd = lax.rsqrt(var + eps)
  x_hat = (x_xD - mean) * rstd
  return x_hat * params["scale"] + params["bias"], {"x_hat": x_hat, "rstd": rstd}


def layer_norm_backward(params: dict, cache: dict, dy_xD: jax.Array) -> tuple[jax.Array, dict]:
  """(dE/dx, {"scale": sum dy x_hat, "bias": sum dy}) summed over every leading axis.

  x_hat's mean and variance depend on every x_j, which is where the two subtracted means come
  from: dx = rstd (dx_hat - mean(dx_hat) - x_hat mean(dx_hat x_hat)).
  """
  x_hat, rstd = cache["x_hat"], cache["rstd"]
  lead = tuple(range(dy_xD.ndim - 1))
  dx_hat = dy_xD * params["scale"]
  dx = rstd * (dx_hat - dx_hat.mean(axis=-1, keepdims=True)
               - x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True))
  return dx, {"scale": (dy_xD * x_hat).sum(axis=lead), "bias": dy_xD.sum(axis=lead)}


def embed_backward(params: dict, ids: jax.Array, dvectors_xD: jax.Array) -> dict:
  """layers.embed backward: {"table": dE/dtable_VxD}, each position's dE/dvector added into
  its id's row (a scatter-add: a row used n times receives n contributions). Ids are
  integers: there is no dE/dx."""
  table = params["table"]
  return {"table": jnp.zeros_like(table).at[ids].add(dvectors_xD.astype(table.dtype))}


# ------------------------------------------------------------------- the training cost


def check_loss(output: str, lam, m, lam1=0.0, lam_act=0.0) -> None:
  """Python numbers only: traced values are the caller's to check."""
  errors.check_choice("loss.output", output, OUTPUTS)
  if isinstance(m, (int, float)) and not m > 0:
    raise errors.ConfigError(f"m={m!r} (the number of training examples in lambda/2m) must be "
                             "positive")
  for field, value in (("lam", lam), ("lam1", lam1), ("lam_act", lam_act)):
    if isinstance(value, (int, float)) and value < 0:
      raise errors.ConfigError(f"{field}={value!r} must be >= 0")


def penalty_grad(w, lam, m, lam1):
  """d/dw of (lambda/2m) sum w^2 [+ (lambda_1/m) sum |w|]: (lambda/m) w [+ (lambda_1/m) sign w]."""
  grad = (lam / m) * w
  if lam1:  # sign(0) = 0, as jax.grad of |w|.
    grad = grad + (lam1 / m) * jnp.sign(w)
  return grad


def with_penalty(grads, params, lam, m, lam1):
  """Adds penalty_grad to the leaves that losses.l2_penalty decays (losses.is_weight: w, w_ih,
  w_hh, wq, ...)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, g, w: g + penalty_grad(w, lam, m, lam1) if losses.is_weight(path) else g,
      grads, params)


def cost(params, logits: jax.Array, labels: jax.Array, num_outputs: int, output: str, lam, m,
         lam1) -> tuple[jax.Array, dict, jax.Array]:
  """(E, {"data_loss", "accuracy"}, y) of losses.make_loss_fn from the logits (..., K): the
  data term averaged over every example (and step), plus the penalties; y the targets."""
  y = losses.one_hot_targets(labels, num_outputs, logits.dtype)
  data_term = losses.DATA_LOSSES[output](logits, y).mean()
  E = data_term + losses.l2_penalty(params, lam, m)
  if lam1:
    E = E + losses.l1_penalty(params, lam1, m)
  accuracy = (losses.predictions(logits.reshape(-1, logits.shape[-1]))
              == labels.reshape(-1)).mean()
  return E, {"data_loss": data_term, "accuracy": accuracy}, y


def value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1):
  """E, its pieces and dE/dparams from forward(params, x, rng) -> (logits, cache) and
  backward(params, cache, delta^L) -> data-term grads."""

  def value_and_grad(params, x, labels, rng):
    logits, cache = forward(params, x, rng)
    E, aux, y = cost(params, logits, labels, num_outputs, output, lam, m, lam1)
    # E averages the data term over every example (and time step): delta^L carries 1/(B T).
    delta_L = output_layer_delta(logits, y, output) / math.prod(logits.shape[:-1])
    grads = with_penalty(backward(params, cache, delta_L), params, lam, m, lam1)
    return (E, aux), grads

  return value_and_grad


# ------------------------------------------------------------------------------ gradient check


# The stack of problem_conv_layers: every backward pass above in one network.
_STACK = {"in": (9, 9, 4), "k": 5, "rate": 0.3, "lrn": (1.0, 3, 0.5, 0.75)}


def _stack_forward(params: dict, x_NHWC: jax.Array, rng: jax.Array) -> tuple[dict, jax.Array]:
  """conv 3x3/2 SAME, 2 groups -> tanh -> LRN -> max pool 3x3/2 SAME (overlapping) -> conv 2x2
  explicit padding -> relu -> avg pool 2/1 SAME -> dropout -> dense: (saved, logits_NxK)."""
  s = {"x": x_NHWC}
  s["a1"] = jnp.tanh(layers.conv2d(params["conv1"], x_NHWC, 2, "SAME"))       # N x 5 x 5 x 8
  s["n1"] = layers.local_response_norm(s["a1"], *_STACK["lrn"])
  s["p1"] = layers.max_pool(s["n1"], 3, 2, "SAME")                            # N x 3 x 3 x 8
  s["a2"] = jax.nn.relu(layers.conv2d(params["conv2"], s["p1"], 1, ((1, 0), (0, 1))))
  s["p2"] = layers.avg_pool(s["a2"], 2, 1, "SAME")                            # N x 3 x 3 x 6
  d2, s["keep"] = dropout_forward(rng, s["p2"], _STACK["rate"])
  s["d2"] = layers.flatten(d2)
  return s, layers.dense(params["dense"], s["d2"])


def _stack_backward(params: dict, s: dict, delta_NxK: jax.Array) -> dict:
  grads = {}
  dE_dd, grads["dense"] = dense_backward(params["dense"], s["d2"], delta_NxK)
  dE_dp = dropout_backward(s["keep"], dE_dd.reshape(s["p2"].shape), _STACK["rate"])
  dE_da = avg_pool_backward(s["a2"], dE_dp, 2, 1, "SAME")
  delta = activation_backward("relu", s["a2"], dE_da)
  dE_dp, grads["conv2"] = conv2d_backward(params["conv2"], s["p1"], delta, 1, ((1, 0), (0, 1)))
  dE_dn = max_pool_backward(s["n1"], dE_dp, 3, 2, "SAME")
  dE_da = local_response_norm_backward(s["a1"], dE_dn, *_STACK["lrn"])
  delta = activation_backward("tanh", s["a1"], dE_da)
  _, grads["conv1"] = conv2d_backward(params["conv1"], s["x"], delta, 2, "SAME")
  return grads


@core.register_problem("conv_layers")
def problem_conv_layers(key: jax.Array, batch: int, dtype):
  """gradcheck.Problem: the layer stack of _stack_forward, softmax cross-entropy + (lambda/2m)
  sum w^2, with a fixed dropout key (the same mask in the loss and the backward pass)."""
  lam, m, k = 0.5, 4 * batch, _STACK["k"]
  # The dropout key is an RBG key seeded from `key`: its random bits compile about 10x faster
  # than threefry's on CPU, and any fixed key gives a fixed mask.
  key_drop = jax.random.key(int(jax.random.key_data(key)[-1]), impl="rbg")
  init = lambda: {"conv1": layers.init_conv2d(key, 4, 8, 3, groups=2, dtype=dtype),
                  "conv2": layers.init_conv2d(key, 8, 6, 2, dtype=dtype),
                  "dense": layers.init_dense(key, 3 * 3 * 6, k, dtype=dtype)}

  @jax.jit
  def make_arrays(key):
    # One normal draw for everything (each jax.random call compiles on its own); init only
    # gives the shapes.
    shapes = {"params": jax.eval_shape(init),
              "x": jax.ShapeDtypeStruct((batch, *_STACK["in"]), dtype),
              "z": jax.ShapeDtypeStruct((batch, k), dtype)}
    z = core.random_like(key, shapes, dtype)
    # w ~ N(0, 1/fan_in), as LeCun init; non-zero biases, so that a bias read wrongly shows.
    params = {name: {"w": p["w"] / np.sqrt(np.prod(p["w"].shape[:-1])).astype(dtype),
                     "b": 0.1 * p["b"]} for name, p in z["params"].items()}
    # 2 x: the LRN's denominator then varies across units and matters to its gradient.
    return params, 2 * z["x"], jnp.argmax(z["z"], axis=-1)

  params, x, labels = make_arrays(key)

  def loss_fn(params, x_NHWC, labels_N):
    _, logits = _stack_forward(params, x_NHWC, key_drop)
    y = losses.one_hot_targets(labels_N, k, logits.dtype)
    return losses.softmax_cross_entropy(logits, y).mean() + losses.l2_penalty(params, lam, m)

  def grad_fn(params, x_NHWC, labels_N):
    saved, logits = _stack_forward(params, x_NHWC, key_drop)
    grads = _stack_backward(params, saved, softmax_cross_entropy_backward(
        logits, losses.one_hot_targets(labels_N, k, logits.dtype)))
    return with_penalty(grads, params, lam, m, 0.0)

  return core.Problem(
      params=params, args=(x, labels), loss_fn=loss_fn, grad_fn=grad_fn,
      # Max pooling and ReLU are kinked: small difference steps, so as to straddle no kink.
      fd_eps=(1e-4, 1e-5, 1e-6),
      description=(f"conv 3x3/2 SAME (2 groups) -> tanh -> LRN -> max pool 3x3/2 SAME -> conv "
                   f"2x2 explicit padding -> relu -> avg pool 2/1 SAME -> dropout "
                   f"{_STACK['rate']} -> dense {k}, softmax, B={batch}, lambda={lam}, m={m}"))
