"""Layers as pure functions over plain dicts of arrays, shared by every model family.

Each layer with weights has `init_<layer>(key, ...) -> params` and a forward function
`<layer>(params, x, ...)`. Images are NHWC (batch, height, width, channels) and conv
kernels HWIO, so a conv is sum^l_{hwo} = sum_{ijc} x_{h+i, w+j, c} w^l_{ijco} + b^l_o.
Weights are always stored under the key "w" (research.losses.l2_penalty decays exactly those
leaves); biases, layer-norm gains and embedding tables are not penalised.

Initialisers draw from explicit keys: LeCun normal N(0, 1/fan_in) keeps tanh/sigmoid units
out of saturation, He normal N(0, 2/fan_in) keeps the variance of ReLU activations constant
through depth (He et al. 2015). fan_in of a conv is kh * kw * in_channels.
"""
import math
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Pair = Union[int, tuple[int, int]]
Padding = Union[str, Sequence[tuple[int, int]]]

_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _pair(v: Pair) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


# ------------------------------------------------------------------------------ initialisers


def lecun_normal(key: jax.Array, shape: Sequence[int], fan_in: int, dtype=jnp.float32):
  """N(0, 1/fan_in): unit output variance for unit-variance inputs (tanh, sigmoid, linear)."""
  return jax.random.normal(key, tuple(shape), dtype) * jnp.asarray(1.0 / math.sqrt(fan_in), dtype)


def he_normal(key: jax.Array, shape: Sequence[int], fan_in: int, dtype=jnp.float32):
  """N(0, 2/fan_in): the factor 2 makes up for ReLU zeroing half of its inputs."""
  return jax.random.normal(key, tuple(shape), dtype) * jnp.asarray(math.sqrt(2.0 / fan_in), dtype)


INITS = {"lecun": lecun_normal, "he": he_normal}


def _initializer(name: str):
  if name not in INITS:
    raise ValueError(f"init={name!r} is not an initialiser; choose one of {sorted(INITS)}")
  return INITS[name]


# -------------------------------------------------------------------------------------- dense


def init_dense(key: jax.Array, in_dim: int, out_dim: int, *, init: str = "lecun",
               dtype=jnp.float32) -> dict:
  """{"w": w_IxO, "b": b_O}; w from `init` ("lecun" | "he"), b = 0."""
  return {"w": _initializer(init)(key, (in_dim, out_dim), in_dim, dtype),
          "b": jnp.zeros((out_dim,), dtype)}


def dense(params: dict, x_xI: jax.Array) -> jax.Array:
  """x_...xI -> x_...xO: sum_j = sum_i x_i w_ij + b_j over the last axis."""
  return x_xI @ params["w"] + params["b"]


def flatten(x_NxHxWxC: jax.Array) -> jax.Array:
  """Any x_Nx... -> x_NxD with D the product of the trailing axes (row-major, H then W then C)."""
  return x_NxHxWxC.reshape(x_NxHxWxC.shape[0], -1)


# --------------------------------------------------------------------------------------- conv


def init_conv2d(key: jax.Array, in_ch: int, out_ch: int, kernel_size: Pair, *,
                init: str = "he", groups: int = 1, dtype=jnp.float32) -> dict:
  """{"w": w_HxWx(I/groups)xO, "b": b_O} for a kh x kw kernel; fan_in = kh * kw * I / groups.

  groups > 1 splits channels into that many independent convs (AlexNet's two-GPU layers).
  """
  kh, kw = _pair(kernel_size)
  if in_ch % groups or out_ch % groups:
    raise ValueError(f"groups={groups} must divide in_ch={in_ch} and out_ch={out_ch}")
  fan_in = kh * kw * (in_ch // groups)
  return {"w": _initializer(init)(key, (kh, kw, in_ch // groups, out_ch), fan_in, dtype),
          "b": jnp.zeros((out_ch,), dtype)}


CONV_IMPLS = ("xla", "patches")


def _conv_pads(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
               padding: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit ((top, bottom), (left, right)) zero padding for a "SAME"/"VALID"/explicit spec."""
  if isinstance(padding, str):
    return tuple(tuple(p) for p in lax.padtype_to_pads(hw, kernel, stride, padding))
  return tuple(_pair(p) for p in padding)


def conv_patches(x_NHWC: jax.Array, kernel_size: Pair, stride: Pair = 1,
                 padding: Padding = "SAME") -> jax.Array:
  """im2col: p_NxH'xW'x(kh*kw*C), each output position's receptive field as one row, in the
  (i, j, c) order of a HWIO kernel reshaped to (kh*kw*C, O), so conv = p @ w.reshape(-1, O)."""
  (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
  (t, b), (l, r) = _conv_pads(x_NHWC.shape[1:3], (kh, kw), (sh, sw), padding)
  x = jnp.pad(x_NHWC, ((0, 0), (t, b), (l, r), (0, 0)))
  n, hp, wp, c = x.shape
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  return jnp.stack(taps, axis=3).reshape(n, ho, wo, kh * kw * c)


def conv2d(params: dict, x_NHWC: jax.Array, stride: Pair = 1,
           padding: Padding = "SAME", impl: str = "xla") -> jax.Array:
  """Cross-correlation x_NHWC * w_HxWxIxO + b_O -> y_NxH'xW'xO (no kernel flip, as in every
  deep learning library).

  padding: "SAME" (H' = ceil(H / stride)), "VALID" (H' = floor((H - kh) / stride) + 1), or
  explicit ((top, bottom), (left, right)) zero padding. Grouped kernels (I = C / groups, see
  `init_conv2d`) are recognised from the shapes.

  impl: "xla" is lax.conv_general_dilated (cuDNN on GPUs, the MXU on TPUs). "patches" is
  im2col (`conv_patches`) and one matmul per group: the same sums, but on XLA:CPU about 4x
  faster inside the train step's lax.scan, where XLA's CPU convolutions lose their threads
  and fast kernels (jax-ml/jax#12868), at the cost of a kh*kw times larger input tensor.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv impl={impl!r}; choose one of {CONV_IMPLS}")
  w = params["w"]
  kh, kw, in_per_group, out_ch = w.shape
  groups = x_NHWC.shape[-1] // in_per_group
  if impl == "patches":
    p = conv_patches(x_NHWC, (kh, kw), stride, padding)
    if groups == 1:
      return p @ w.reshape(kh * kw * in_per_group, out_ch) + params["b"]
    # Rows (i, j, g, c): split channels into groups, one (kh*kw*I/g) x (O/g) matmul each.
    p = p.reshape(*p.shape[:3], kh * kw, groups, in_per_group)
    w_TxIxGxO = w.reshape(kh * kw, in_per_group, groups, out_ch // groups)
    y = jnp.einsum("nhwtgc,tcgo->nhwgo", p, w_TxIxGxO)
    return y.reshape(*y.shape[:3], out_ch) + params["b"]
  if not isinstance(padding, str):
    padding = tuple(_pair(p) for p in padding)
  y = lax.conv_general_dilated(
      x_NHWC, w, window_strides=_pair(stride), padding=padding,
      dimension_numbers=_CONV_DIMS, feature_group_count=groups)
  return y + params["b"]


# -------------------------------------------------------------------------- locally connected


def conv_output_hw(hw: tuple[int, int], kernel_size: Pair, stride: Pair = 1,
                   padding: Padding = "SAME") -> tuple[int, int]:
  """(H', W') of a conv2d / locally_connected2d with this geometry on an H x W input."""
  (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
  (t, b), (l, r) = _conv_pads(tuple(hw), (kh, kw), (sh, sw), padding)
  return (hw[0] + t + b - kh) // sh + 1, (hw[1] + l + r - kw) // sw + 1


def init_locally_connected2d(key: jax.Array, in_hw: tuple[int, int], in_ch: int, out_ch: int,
                             kernel_size: int, stride: Pair = 1, padding: Padding = "SAME",
                             *, init: str = "he", dtype=jnp.float32) -> dict:
  """{"w": w_H'xW'x(k*k*I)xO, "b": b_H'xW'xO}: one k x k kernel and one bias per output position.

  The receptive fields of a convolution of the same geometry (conv_output_hw), without the
  weight sharing: H' W' times the conv's parameters. fan_in = k * k * I, as for the conv.
  """
  ho, wo = conv_output_hw(in_hw, kernel_size, stride, padding)
  fan_in = kernel_size * kernel_size * in_ch
  return {"w": _initializer(init)(key, (ho, wo, fan_in, out_ch), fan_in, dtype),
          "b": jnp.zeros((ho, wo, out_ch), dtype)}


def locally_connected2d(params: dict, x_NHWC: jax.Array, stride: Pair = 1,
                        padding: Padding = "SAME") -> jax.Array:
  """x_NHWC -> y_NxH'xW'xO with sum_{hwo} = sum_{ijc} x_{s h + i, s w + j, c} w_{hw,(ijc),o}
  + b_{hwo}: conv2d's sum, but every output position (h, w) has its own kernel (unshared
  weights), applied to its im2col row (conv_patches). The k x k kernel is square, its size
  read from w's shape (k*k*C rows)."""
  w = params["w"]
  ho, wo, k_in, _ = w.shape
  c = x_NHWC.shape[-1]
  k = math.isqrt(k_in // c)
  p = conv_patches(x_NHWC, k, stride, padding)                 # N x H' x W' x (k*k*C)
  if p.shape[1:] != (ho, wo, k_in):
    raise ValueError(f"locally connected weights {w.shape} do not fit input {x_NHWC.shape} "
                     f"with stride {stride!r} and padding {padding!r} (patches {p.shape})")
  return jnp.einsum("nhwk,hwko->nhwo", p, w) + params["b"]


# ------------------------------------------------------------------------------------ pooling


def _window_args(window: Pair, stride, padding: Padding):
  wh, ww = _pair(window)
  sh, sw = _pair(window if stride is None else stride)
  if not isinstance(padding, str):
    (t, b), (l, r) = (_pair(p) for p in padding)
    padding = ((0, 0), (t, b), (l, r), (0, 0))
  return (1, wh, ww, 1), (1, sh, sw, 1), padding


def max_pool(x_NHWC: jax.Array, window: Pair, stride: Pair | None = None,
             padding: Padding = "VALID") -> jax.Array:
  """Max over each window x window patch of each channel; stride defaults to window.

  window=3, stride=2 is AlexNet's overlapping pooling. Padded positions hold -inf, so they
  never win the max. (The init values are Python scalars: JAX only recognises, and can
  differentiate, a max/sum pool whose init value is a known constant.)
  """
  dims, strides, pad = _window_args(window, stride, padding)
  return lax.reduce_window(x_NHWC, -jnp.inf, lax.max, dims, strides, pad)


def sum_pool(x_NHWC: jax.Array, window: Pair, stride: Pair | None = None,
             padding: Padding = "VALID") -> jax.Array:
  """Sum over each window x window patch of each channel (LeNet's subsampling before its gain)."""
  dims, strides, pad = _window_args(window, stride, padding)
  return lax.reduce_window(x_NHWC, 0.0, lax.add, dims, strides, pad)


def avg_pool(x_NHWC: jax.Array, window: Pair, stride: Pair | None = None,
             padding: Padding = "VALID") -> jax.Array:
  """Mean over each window x window patch; with padding, divides by the number of real
  (unpadded) inputs in the window, so border outputs are not pulled towards 0."""
  total = sum_pool(x_NHWC, window, stride, padding)
  ones = jnp.ones((1, *x_NHWC.shape[1:3], 1), x_NHWC.dtype)
  return total / sum_pool(ones, window, stride, padding)


def global_avg_pool(x_NHWC: jax.Array) -> jax.Array:
  """x_NHWC -> x_NxC: mean over all spatial positions."""
  return x_NHWC.mean(axis=(1, 2))


# ------------------------------------------------------------------------------ normalisation


def local_response_norm(x_NHWC: jax.Array, k: float = 2.0, n: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75) -> jax.Array:
  """AlexNet's local response normalisation across channels (Krizhevsky et al. 2012, Sec. 3.3):

    b_c = a_c / (k + alpha * sum_{c'=max(0, c-n/2)}^{min(C-1, c+n/2)} a_{c'}^2)^beta

  with the paper's k=2, n=5, alpha=1e-4, beta=0.75. The window holds n channels centred on c
  (for even n: n//2 before, n//2 - 1 after), truncated at the first and last channel.
  Note: PyTorch's nn.LocalResponseNorm divides alpha by n (it averages the squares); the paper
  and this function do not, so PyTorch needs alpha=5e-4 to match alpha=1e-4 here.
  """
  sq = jnp.square(x_NHWC)
  window_sum = lax.reduce_window(
      sq, 0.0, lax.add, (1, 1, 1, n), (1, 1, 1, 1),
      ((0, 0), (0, 0), (0, 0), (n // 2, (n - 1) // 2)))
  return x_NHWC / (k + alpha * window_sum) ** beta


def init_layer_norm(key: jax.Array, dim: int, dtype=jnp.float32) -> dict:
  """{"scale": ones_D, "bias": zeros_D}. `key` is unused (kept so every init_* looks alike)."""
  del key
  return {"scale": jnp.ones((dim,), dtype), "bias": jnp.zeros((dim,), dtype)}


def layer_norm(params: dict, x_xD: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(x - mean) / sqrt(var + eps) * scale + bias, statistics over the last axis only, so each
  example (and each time step) is normalised on its own: no batch statistics, no state."""
  mean = x_xD.mean(axis=-1, keepdims=True)
  var = jnp.square(x_xD - mean).mean(axis=-1, keepdims=True)
  return (x_xD - mean) * lax.rsqrt(var + eps) * params["scale"] + params["bias"]


# ------------------------------------------------------------------------------------ dropout


def dropout_keep_mask(rng: jax.Array, rate: float, shape: Sequence[int]) -> jax.Array:
  """The boolean mask of kept units, each kept with probability 1 - rate.

  The probability is float32 on purpose: a Python float becomes float64 under x64 (as in
  gradient checks) and would draw a different mask from the same key.
  """
  return jax.random.bernoulli(rng, np.float32(1.0 - rate), tuple(shape))


def dropout(rng: jax.Array | None, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """Inverted dropout: zero each unit with probability `rate`, scale survivors by 1/(1-rate).

  The scaling keeps E[output] = x during training, so evaluation uses x unchanged (identity
  when not `train` or rate == 0). The mask depends only on `rng`: same key, same mask.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate={rate!r} must be in [0, 1)")
  if not train or rate == 0.0:
    return x
  if rng is None:
    raise ValueError("dropout with train=True and rate > 0 needs an explicit rng key")
  keep = dropout_keep_mask(rng, rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


# ---------------------------------------------------------------------------------- embedding


def init_embedding(key: jax.Array, vocab_size: int, dim: int, dtype=jnp.float32) -> dict:
  """{"table": table_VxD} ~ N(0, 1/D), so an embedded vector has about unit norm."""
  return {"table": lecun_normal(key, (vocab_size, dim), dim, dtype)}


def embed(params: dict, ids: jax.Array) -> jax.Array:
  """Integer ids_... -> vectors_...xD (row lookup in the table)."""
  return jnp.take(params["table"], ids, axis=0)


# ---------------------------------------------------------------------------------- inception


def init_inception_block(key: jax.Array, in_ch: int, c1: int, c3r: int, c3: int, c5r: int,
                         c5: int, pool_proj: int, dtype=jnp.float32) -> dict:
  """Params of a GoogLeNet inception module (Szegedy et al. 2015, Fig. 2b).

  Branches: 1x1 conv (c1); 1x1 reduce (c3r) -> 3x3 (c3); 1x1 reduce (c5r) -> 5x5 (c5);
  3x3 max pool -> 1x1 projection (pool_proj). Output channels: c1 + c3 + c5 + pool_proj.
  """
  k = jax.random.split(key, 6)
  conv = lambda kk, i, o, s: init_conv2d(kk, i, o, s, init="he", dtype=dtype)
  return {
      "b1": conv(k[0], in_ch, c1, 1),
      "b3_reduce": conv(k[1], in_ch, c3r, 1),
      "b3": conv(k[2], c3r, c3, 3),
      "b5_reduce": conv(k[3], in_ch, c5r, 1),
      "b5": conv(k[4], c5r, c5, 5),
      "pool_proj": conv(k[5], in_ch, pool_proj, 1),
  }


def inception_out_channels(params: dict) -> int:
  """c1 + c3 + c5 + pool_proj: the channel count `inception_block` returns."""
  return sum(params[b]["w"].shape[-1] for b in ("b1", "b3", "b5", "pool_proj"))


def inception_block(params: dict, x_NHWC: jax.Array, conv_impl: str = "xla") -> jax.Array:
  """x_NxHxWxC -> y_NxHxWx(c1+c3+c5+pool_proj): four ReLU branches, SAME padding, stride 1,
  concatenated on channels in the order 1x1, 3x3, 5x5, pool."""
  relu_conv = lambda name, h: jax.nn.relu(conv2d(params[name], h, 1, "SAME", conv_impl))
  y1 = relu_conv("b1", x_NHWC)
  y3 = relu_conv("b3", relu_conv("b3_reduce", x_NHWC))
  y5 = relu_conv("b5", relu_conv("b5_reduce", x_NHWC))
  yp = relu_conv("pool_proj", max_pool(x_NHWC, 3, 1, "SAME"))
  return jnp.concatenate([y1, y3, y5, yp], axis=-1)


# -------------------------------------------------------------------------------------- utils


def param_count(params) -> int:
  """Number of scalars in a params pytree (works on jax.eval_shape's ShapeDtypeStructs too)."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(params)))
