"""Backpropagation through sequence models, written out by hand: the LSTM through time,
multi-head attention, layer norm and embeddings, composed into the models of
research/models/lstm.py and research/models/attention.py.

Every block is a pair of pure functions, vectorised over the batch and jittable:

  y, cache = <block>_forward(params, x, ...)       the model's forward pass, keeping what the
                                                   backward pass needs (as mlp.forward keeps
                                                   sigma^l)
  grads, dx = <block>_backward(params, cache, dy)  dE/dparams (the params' pytree) and dE/dx
                                                   from dE/dy

As in backprop/mlp.py, delta = dE/dsum is the error at a unit's sum, before its non-linearity.

LSTM (one layer, gates fused in the order i, f, g, o; i = sigma(sum_i), g = tanh(sum_g)):

  sum_t = x_t w_ih + h_{t-1} w_hh + b,   c_t = f_t c_{t-1} + i_t g_t,   h_t = o_t tanh(c_t)

Backpropagation through time runs a reverse scan carrying dE/dh and dE/dc from step t+1 to t:

  dE/dh_t  = dE/dh_t (from the layer's output) + delta_{t+1} w_hh^T
  dE/dc_t  = dE/dh_t o_t (1 - tanh^2 c_t) + dE/dc_{t+1} f_{t+1}
  delta_t  = [dE/dc_t g_t i_t(1-i_t), dE/dc_t c_{t-1} f_t(1-f_t), dE/dc_t i_t (1-g_t)(1+g_t),
              dE/dh_t tanh(c_t) o_t(1-o_t)]                           (B, 4H)

and the weights collect the deltas of all steps at once, after the scan:

  dE/dw_ih = sum_t x_t^T delta_t,  dE/dw_hh = sum_t h_{t-1}^T delta_t,  dE/db = sum_t sum_b delta_t,
  dE/dx_t  = delta_t w_ih^T.

Attention, per head with d_k = D / heads and the softmax P = softmax(S), S = Q K^T / sqrt(d_k):

  dE/dV = P^T dE/dY,  dE/dP = dE/dY V^T,  dE/dS = P * (dE/dP - sum_s dE/dP * P)  (the softmax's
  Jacobian P_t (1[s=s'] - P_s') applied row by row), zero where the mask removed a key;
  dE/dQ = dE/dS K / sqrt(d_k),  dE/dK = dE/dS^T Q / sqrt(d_k).

Layer norm, x_hat = (x - mean) / sqrt(var + eps) over the last axis, y = x_hat scale + bias:

  dE/dx = (dE/dx_hat - mean(dE/dx_hat) - x_hat mean(dE/dx_hat x_hat)) / sqrt(var + eps).

Embeddings: a row lookup, so dE/dtable adds each position's dE/dvector into its id's row
(a scatter-add: a row used n times receives n contributions).

Models (losses.make_loss_fn's E: the data term averaged over the batch, plus (lambda/2m) sum w^2
over the weight leaves that losses.l2_penalty decays, optionally (lambda_1/m) sum |w|). Every
configuration of them is covered: layers, bidirectional, readout, dropout (the forward pass's
masks, redrawn from the same keys), learned or sinusoidal positions, gelu/relu, patches,
sigmoid or softmax outputs:

  make_lstm_classifier_value_and_grad         "lstm_classifier"
  make_char_lstm_value_and_grad               "char_lstm"
  make_transformer_classifier_value_and_grad  "transformer_classifier"
  make_char_transformer_value_and_grad        "char_transformer"

Each returns value_and_grad(params, x, labels, rng) -> ((E, {"data_loss", "accuracy"}), grads),
a drop-in for jax.value_and_grad(losses.make_loss_fn(...), has_aux=True).
"""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from research import errors
from research import losses
from research import models
from research.backprop import core
from research.backprop import layers as backprop_layers
from research.backprop import mlp as backprop_mlp
from research.models import attention
from research.models import layers
from research.models import lstm

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu_prime(s):
  """d/ds of jax.nn.gelu's tanh form s/2 (1 + tanh(u)), u = sqrt(2/pi) (s + 0.044715 s^3)."""
  tanh_u = jnp.tanh(_SQRT_2_OVER_PI * (s + 0.044715 * s ** 3))
  return (0.5 * (1 + tanh_u)
          + 0.5 * s * (1 - tanh_u) * (1 + tanh_u) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * s ** 2))


# f'(sum) of the transformer MLP's hidden units, written through sum (not sigma = f(sum)).
ACTIVATION_PRIMES = {
    "gelu": _gelu_prime,
    "relu": lambda s: (s > 0).astype(s.dtype),  # f'(0) = 0, as jax.nn.relu.
}
OUTPUTS = backprop_mlp.OUTPUTS


# ---------------------------------------------------------------------------- dense, dropout


def dense_backward(params: dict, x_xI: jax.Array, dy_xO: jax.Array) -> tuple[dict, jax.Array]:
  """layers.dense backward over any leading axes: ({"w": sum x^T dy, "b": sum dy}, dy w^T)."""
  x_NxI = x_xI.reshape(-1, x_xI.shape[-1])
  dy_NxO = dy_xO.reshape(-1, dy_xO.shape[-1])
  return {"w": x_NxI.T @ dy_NxO, "b": dy_NxO.sum(axis=0)}, dy_xO @ params["w"].T


def dropout_forward(rng: jax.Array | None, x: jax.Array,
                    rate: float) -> tuple[jax.Array, jax.Array | None]:
  """layers.dropout(rng, x, rate, train=True), also returning its keep mask (None: no dropout).

  The mask is drawn exactly as layers.dropout draws it, so the same key gives the same mask.
  """
  if rng is None or rate == 0:
    return x, None
  keep = layers.dropout_keep_mask(rng, rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x)), keep


def dropout_backward(keep: jax.Array | None, dy: jax.Array, rate: float) -> jax.Array:
  """dE/dx = dE/dy / (1 - rate) where the unit was kept, 0 where it was dropped."""
  if keep is None:
    return dy
  return jnp.where(keep, dy / (1.0 - rate), jnp.zeros_like(dy))


# -------------------------------------------------------------------------------------- LSTM


def lstm_forward(params: dict, x_BxTxI: jax.Array, reverse: bool = False) -> tuple:
  """lstm.lstm(params, x, reverse): h_BxTxH, and the cache {x, h, c, gates, tanh_c} (time-major).

  gates_TxBx4H holds the activated gates [i, f, g, o] = [sigma, sigma, tanh, sigma](sum_t).
  One product of [x_t, h_{t-1}] and the stacked [w_ih; w_hh] per step, as in lstm.lstm.
  """
  w_IHx4H, b_4H = lstm.stacked_weights(params), params["b"]

  def step(carry, x_BxI):
    h_BxH, c_BxH = carry
    sum_Bx4H = lstm.gate_sums(w_IHx4H, b_4H, x_BxI, h_BxH)
    sum_i, sum_f, sum_g, sum_o = jnp.split(sum_Bx4H, 4, axis=-1)
    i, f, g, o = (jax.nn.sigmoid(sum_i), jax.nn.sigmoid(sum_f), jnp.tanh(sum_g),
                  jax.nn.sigmoid(sum_o))
    c_BxH = f * c_BxH + i * g
    tanh_c = jnp.tanh(c_BxH)
    h_BxH = o * tanh_c
    return (h_BxH, c_BxH), (h_BxH, c_BxH, jnp.concatenate([i, f, g, o], axis=-1), tanh_c)

  carry = lstm.zero_carry(params, x_BxTxI.shape[0], x_BxTxI.dtype)
  _, (h_TxBxH, c_TxBxH, gates_TxBx4H, tanh_c_TxBxH) = lax.scan(
      step, carry, jnp.swapaxes(x_BxTxI, 0, 1), reverse=reverse)
  cache = {"x": x_BxTxI, "h": h_TxBxH, "c": c_TxBxH, "gates": gates_TxBx4H,
           "tanh_c": tanh_c_TxBxH}
  return jnp.swapaxes(h_TxBxH, 0, 1), cache


def _previous(a_TxBxH: jax.Array, reverse: bool) -> jax.Array:
  """a at the step before each t in reading order (t-1, or t+1 when reversed); 0 at the first."""
  zero = jnp.zeros_like(a_TxBxH[:1])
  if reverse:
    return jnp.concatenate([a_TxBxH[1:], zero])
  return jnp.concatenate([zero, a_TxBxH[:-1]])


def lstm_backward(params: dict, cache: dict, dh_BxTxH: jax.Array,
                  reverse: bool = False) -> tuple[dict, jax.Array]:
  """Backpropagation through time: dE/dh_t for every output -> ({w_ih, w_hh, b}, dE/dx_BxTxI).

  `reverse` must be the forward pass's. The scan runs against the reading order, carrying
  (delta_{t+1} w_hh^T, dE/dc_{t+1} f_{t+1}) into step t and adding h_{t-1}^T delta_t into
  dE/dw_hh as it goes (one large einsum after the scan measured slower on XLA:CPU).
  """
  w_hh_T_4HxH = params["w_hh"].T
  c_prev_TxBxH = _previous(cache["c"], reverse)

  def step(carry, inputs):
    dh_next_BxH, dc_next_BxH, dw_hh_Hx4H = carry
    dh_out_BxH, gates_Bx4H, tanh_c, c_prev, h_prev = inputs
    i, f, g, o = jnp.split(gates_Bx4H, 4, axis=-1)
    dh = dh_out_BxH + dh_next_BxH
    dc = dc_next_BxH + dh * o * (1 - tanh_c) * (1 + tanh_c)
    delta_Bx4H = jnp.concatenate([dc * g * i * (1 - i),
                                  dc * c_prev * f * (1 - f),
                                  dc * i * (1 - g) * (1 + g),
                                  dh * tanh_c * o * (1 - o)], axis=-1)
    return (delta_Bx4H @ w_hh_T_4HxH, dc * f, dw_hh_Hx4H + h_prev.T @ delta_Bx4H), delta_Bx4H

  dh_TxBxH = jnp.swapaxes(dh_BxTxH, 0, 1)
  zero = jnp.zeros_like(dh_TxBxH[0])
  (_, _, dw_hh), delta_TxBx4H = lax.scan(
      step, (zero, zero, jnp.zeros_like(params["w_hh"])),
      (dh_TxBxH, cache["gates"], cache["tanh_c"], c_prev_TxBxH, _previous(cache["h"], reverse)),
      reverse=not reverse)
  grads = {"w_ih": jnp.einsum("bti,tbg->ig", cache["x"], delta_TxBx4H),
           "w_hh": dw_hh,
           "b": delta_TxBx4H.sum(axis=(0, 1))}
  return grads, jnp.einsum("tbg,ig->bti", delta_TxBx4H, params["w_ih"])


def bilstm_forward(params: dict, x_BxTxI: jax.Array) -> tuple:
  """lstm.bilstm: [forward h_t ; reverse h_t], h_BxTx2H, and both directions' caches."""
  h_fwd, cache_fwd = lstm_forward(params["fwd"], x_BxTxI)
  h_bwd, cache_bwd = lstm_forward(params["bwd"], x_BxTxI, reverse=True)
  return jnp.concatenate([h_fwd, h_bwd], axis=-1), {"fwd": cache_fwd, "bwd": cache_bwd}


def bilstm_backward(params: dict, cache: dict, dh_BxTx2H: jax.Array) -> tuple[dict, jax.Array]:
  """Two passes through time, one per direction; x feeds both, so their dE/dx add up."""
  dh_fwd, dh_bwd = jnp.split(dh_BxTx2H, 2, axis=-1)
  g_fwd, dx_fwd = lstm_backward(params["fwd"], cache["fwd"], dh_fwd)
  g_bwd, dx_bwd = lstm_backward(params["bwd"], cache["bwd"], dh_bwd, reverse=True)
  return {"fwd": g_fwd, "bwd": g_bwd}, dx_fwd + dx_bwd


def _stack_forward(stack: list[dict], h_BxTxF: jax.Array, bidirectional: bool, rate: float,
                   rngs: list) -> tuple:
  """lstm._apply_stack with train=True: dropout (rngs[l-1]) on the input of layers l > 0."""
  run = bilstm_forward if bidirectional else lstm_forward
  caches, keeps = [], []
  for l, layer in enumerate(stack):
    keep = None
    if l > 0:
      h_BxTxF, keep = dropout_forward(rngs[l - 1], h_BxTxF, rate)
    h_BxTxF, cache = run(layer, h_BxTxF)
    caches.append(cache)
    keeps.append(keep)
  return h_BxTxF, {"layers": caches, "keeps": keeps}


def _stack_backward(stack: list[dict], cache: dict, dh_BxTxH: jax.Array, bidirectional: bool,
                    rate: float) -> tuple[list[dict], jax.Array]:
  back = bilstm_backward if bidirectional else lstm_backward
  grads = [None] * len(stack)
  for l in range(len(stack) - 1, -1, -1):
    grads[l], dh_BxTxH = back(stack[l], cache["layers"][l], dh_BxTxH)
    dh_BxTxH = dropout_backward(cache["keeps"][l], dh_BxTxH, rate)
  return grads, dh_BxTxH


# ---------------------------------------------------------------- layer norm, embedding


def layer_norm_forward(params: dict, x_xD: jax.Array, eps: float = 1e-5) -> tuple:
  """layers.layer_norm: y, and the cache {x_hat, rstd} with rstd = 1/sqrt(var + eps)."""
  mean = x_xD.mean(axis=-1, keepdims=True)
  var = jnp.square(x_xD - mean).mean(axis=-1, keepdims=True)
  rstd = lax.rsqrt(var + eps)
  x_hat = (x_xD - mean) * rstd
  return x_hat * params["scale"] + params["bias"], {"x_hat": x_hat, "rstd": rstd}


def layer_norm_backward(params: dict, cache: dict, dy_xD: jax.Array) -> tuple[dict, jax.Array]:
  """({"scale": sum dy x_hat, "bias": sum dy}, dE/dx) summed over every leading axis.

  x_hat's mean and variance depend on every x_j, which is where the two subtracted means come
  from: dx = rstd (dx_hat - mean(dx_hat) - x_hat mean(dx_hat x_hat)).
  """
  x_hat, rstd = cache["x_hat"], cache["rstd"]
  lead = tuple(range(dy_xD.ndim - 1))
  dx_hat = dy_xD * params["scale"]
  dx = rstd * (dx_hat - dx_hat.mean(axis=-1, keepdims=True)
               - x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True))
  return {"scale": (dy_xD * x_hat).sum(axis=lead), "bias": dy_xD.sum(axis=lead)}, dx


def embed_backward(params: dict, ids: jax.Array, dvectors_xD: jax.Array) -> dict:
  """layers.embed backward: {"table": dE/dtable_VxD}, each position's dE/dvector added into
  its id's row (ids_... index dvectors_...xD)."""
  table = params["table"]
  return {"table": jnp.zeros_like(table).at[ids].add(dvectors_xD.astype(table.dtype))}


# --------------------------------------------------------------------------------- attention


def attention_forward(params: dict, x_BxTxD: jax.Array, num_heads: int, causal: bool = False,
                      mask: jax.Array | None = None) -> tuple:
  """attention.multi_head_attention: y_BxTxD, and the cache {x, q, k, v, p, heads, allowed}.

  p_BxNxTxS is the softmax (attention weights), heads_BxTxD the concatenated heads.
  """
  batch, num_steps, d_model = x_BxTxD.shape
  if d_model % num_heads:
    raise errors.ConfigError(
        f"config.model.num_heads={num_heads} must divide d_model={d_model}; pick a divisor")
  d_k = d_model // num_heads
  qkv = {name: (x_BxTxD @ params[f"w{name}"] + params[f"b{name}"]).reshape(
      batch, num_steps, num_heads, d_k) for name in "qkv"}
  s_BxNxTxS = jnp.einsum("btnk,bsnk->bnts", qkv["q"], qkv["k"]) / math.sqrt(d_k)
  allowed = jnp.ones((), bool)
  if causal:
    allowed = attention.causal_mask(num_steps)
  if mask is not None:
    allowed = allowed & mask
  s_BxNxTxS = jnp.where(allowed, s_BxNxTxS, jnp.finfo(s_BxNxTxS.dtype).min)
  p_BxNxTxS = jax.nn.softmax(s_BxNxTxS, axis=-1)
  heads_BxTxD = jnp.einsum("bnts,bsnk->btnk", p_BxNxTxS, qkv["v"]).reshape(
      batch, num_steps, d_model)
  cache = dict(qkv, x=x_BxTxD, p=p_BxNxTxS, heads=heads_BxTxD, allowed=allowed)
  return heads_BxTxD @ params["wo"] + params["bo"], cache


def attention_backward(params: dict, cache: dict, dy_BxTxD: jax.Array) -> tuple[dict, jax.Array]:
  """({wq, bq, wk, bk, wv, bv, wo, bo}, dE/dx_BxTxD) from dE/dy through the softmax."""
  x_BxTxD, p_BxNxTxS = cache["x"], cache["p"]
  batch, num_steps, num_heads, d_k = cache["q"].shape
  grads = {}
  g_o, dheads_BxTxD = dense_backward({"w": params["wo"]}, cache["heads"], dy_BxTxD)
  grads["wo"], grads["bo"] = g_o["w"], g_o["b"]
  dheads_BxTxNxK = dheads_BxTxD.reshape(batch, num_steps, num_heads, d_k)
  dp_BxNxTxS = jnp.einsum("btnk,bsnk->bnts", dheads_BxTxNxK, cache["v"])
  d = {"v": jnp.einsum("bnts,btnk->bsnk", p_BxNxTxS, dheads_BxTxNxK)}
  # The softmax's Jacobian row by row; masked keys had their logit replaced by a constant.
  ds = p_BxNxTxS * (dp_BxNxTxS - (dp_BxNxTxS * p_BxNxTxS).sum(axis=-1, keepdims=True))
  ds = jnp.where(cache["allowed"], ds, jnp.zeros_like(ds)) / math.sqrt(d_k)
  d["q"] = jnp.einsum("bnts,bsnk->btnk", ds, cache["k"])
  d["k"] = jnp.einsum("bnts,btnk->bsnk", ds, cache["q"])
  dx_BxTxD = jnp.zeros_like(x_BxTxD)
  for name in "qkv":
    g, dx = dense_backward({"w": params[f"w{name}"]}, x_BxTxD,
                           d[name].reshape(batch, num_steps, num_heads * d_k))
    grads[f"w{name}"], grads[f"b{name}"] = g["w"], g["b"]
    dx_BxTxD = dx_BxTxD + dx
  return grads, dx_BxTxD


# ------------------------------------------------------------------------- transformer block


def transformer_block_forward(params: dict, x_BxTxD: jax.Array, *, num_heads: int,
                              causal: bool = False, activation: str = "gelu",
                              dropout: float = 0.0, rng: jax.Array | None = None) -> tuple:
  """attention.transformer_block with train=True (dropout when rng is given and dropout > 0)."""
  errors.check_choice("model.activation", activation, sorted(ACTIVATION_PRIMES))
  rng_attn, rng_mlp = lstm.dropout_keys(rng, 2, dropout, rng is not None)
  cache = {}
  a, cache["ln1"] = layer_norm_forward(params["ln1"], x_BxTxD)
  y, cache["attn"] = attention_forward(params["attn"], a, num_heads, causal=causal)
  y, cache["keep_attn"] = dropout_forward(rng_attn, y, dropout)
  x_BxTxD = x_BxTxD + y
  mlp = params["mlp"]
  u, cache["ln2"] = layer_norm_forward(params["ln2"], x_BxTxD)
  sum1_BxTxM = layers.dense(mlp["fc1"], u)
  sigma1_BxTxM = attention.ACTIVATIONS[activation](sum1_BxTxM)
  y = layers.dense(mlp["fc2"], sigma1_BxTxM)
  y, cache["keep_mlp"] = dropout_forward(rng_mlp, y, dropout)
  cache.update(u=u, sum1=sum1_BxTxM, sigma1=sigma1_BxTxM)
  return x_BxTxD + y, cache


def transformer_block_backward(params: dict, cache: dict, dy_BxTxD: jax.Array, *,
                               activation: str = "gelu",
                               dropout: float = 0.0) -> tuple[dict, jax.Array]:
  """(dE/dparams, dE/dx) of one pre-LN block; the residual paths pass dE/dy straight through."""
  mlp = params["mlp"]
  dx_BxTxD = dy_BxTxD  # the residual x + MLP(LN(x))
  dy = dropout_backward(cache["keep_mlp"], dy_BxTxD, dropout)
  g_fc2, dsigma1 = dense_backward(mlp["fc2"], cache["sigma1"], dy)
  delta1_BxTxM = dsigma1 * ACTIVATION_PRIMES[activation](cache["sum1"])
  g_fc1, du = dense_backward(mlp["fc1"], cache["u"], delta1_BxTxM)
  g_ln2, dx = layer_norm_backward(params["ln2"], cache["ln2"], du)
  dx_BxTxD = dx_BxTxD + dx
  dy = dropout_backward(cache["keep_attn"], dx_BxTxD, dropout)  # the residual x + MHA(LN(x))
  g_attn, da = attention_backward(params["attn"], cache["attn"], dy)
  g_ln1, dx = layer_norm_backward(params["ln1"], cache["ln1"], da)
  grads = {"ln1": g_ln1, "attn": g_attn, "ln2": g_ln2, "mlp": {"fc1": g_fc1, "fc2": g_fc2}}
  return grads, dx_BxTxD + dx


def _encoder_forward(params: dict, x_BxTxD: jax.Array, cfg, causal: bool,
                     rng: jax.Array | None) -> tuple:
  """attention._apply_encoder with train=True: positions, dropout, blocks, final layer norm."""
  num_steps = x_BxTxD.shape[1]
  if cfg.pos_embedding == "learned":
    x_BxTxD = x_BxTxD + params["pos"]
  else:
    x_BxTxD = x_BxTxD + attention.sinusoidal_positions(num_steps, cfg.d_model, x_BxTxD.dtype)
  rngs = lstm.dropout_keys(rng, cfg.num_layers + 1, cfg.dropout, True)
  x_BxTxD, keep = dropout_forward(rngs[0], x_BxTxD, cfg.dropout)
  blocks = []
  for block, block_rng in zip(params["blocks"], rngs[1:]):
    x_BxTxD, cache = transformer_block_forward(
        block, x_BxTxD, num_heads=cfg.num_heads, causal=causal, activation=cfg.activation,
        dropout=cfg.dropout, rng=block_rng)
    blocks.append(cache)
  h_BxTxD, ln_cache = layer_norm_forward(params["ln_final"], x_BxTxD)
  return h_BxTxD, {"keep": keep, "blocks": blocks, "ln_final": ln_cache}


def _encoder_backward(params: dict, cache: dict, dh_BxTxD: jax.Array,
                      cfg) -> tuple[dict, jax.Array]:
  grads = {}
  grads["ln_final"], dx_BxTxD = layer_norm_backward(params["ln_final"], cache["ln_final"],
                                                    dh_BxTxD)
  grads["blocks"] = [None] * len(params["blocks"])
  for l in range(len(params["blocks"]) - 1, -1, -1):
    grads["blocks"][l], dx_BxTxD = transformer_block_backward(
        params["blocks"][l], cache["blocks"][l], dx_BxTxD, activation=cfg.activation,
        dropout=cfg.dropout)
  dx_BxTxD = dropout_backward(cache["keep"], dx_BxTxD, cfg.dropout)
  if cfg.pos_embedding == "learned":
    grads["pos"] = dx_BxTxD.sum(axis=0)  # one table shared by every example
  return grads, dx_BxTxD


# ------------------------------------------------------------------------------------ models


def _check_model(model_cfg, name: str, input_shape, num_outputs: int, output: str, lam, m,
                 lam1) -> None:
  """Raises ConfigError for a config the model builder or this backward pass cannot use."""
  if model_cfg.name != name:
    raise errors.ConfigError(
        f"config.model.name={model_cfg.name!r}: this is the hand-written backward pass of "
        f"{name!r}; use the make_*_value_and_grad of your model")
  models.build(model_cfg, input_shape, num_outputs)  # the builder's own config checks
  backprop_layers.check_loss(output, lam, m, lam1)


def make_lstm_classifier_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                        output: str = "softmax", lam: float = 0.0, m: int = 1,
                                        lam1: float = 0.0):
  """Hand-written value_and_grad for "lstm_classifier" (every num_layers, bidirectional,
  readout and dropout); the same function as jax.value_and_grad(losses.make_loss_fn(model,
  output, lam, m, num_outputs, lam1), has_aux=True)."""
  _check_model(model_cfg, "lstm_classifier", input_shape, num_outputs, output, lam, m, lam1)
  num_steps, num_features = lstm.sequence_shape(model_cfg.name, input_shape)
  hidden, bidirectional = model_cfg.hidden_size, bool(model_cfg.bidirectional)
  out_size = hidden * (2 if bidirectional else 1)
  readout, rate, num_layers = model_cfg.readout, model_cfg.dropout, model_cfg.num_layers

  def forward(params, x, rng):
    rngs = lstm.dropout_keys(rng, num_layers, rate, True)
    h_BxTxH, stack = _stack_forward(params["lstm"], x.reshape(x.shape[0], num_steps,
                                                              num_features),
                                    bidirectional, rate, rngs)
    if readout == "mean":
      h_BxD = h_BxTxH.mean(axis=1)
    elif readout == "all":
      h_BxD = layers.flatten(h_BxTxH)
    elif bidirectional:
      h_BxD = jnp.concatenate([h_BxTxH[:, -1, :hidden], h_BxTxH[:, 0, hidden:]], axis=-1)
    else:
      h_BxD = h_BxTxH[:, -1]
    h_BxD, keep = dropout_forward(rngs[-1], h_BxD, rate)
    cache = {"stack": stack, "h": h_BxD, "keep": keep}
    return layers.dense(params["head"], h_BxD), cache

  def backward(params, cache, delta_BxK):
    g_head, dh_BxD = dense_backward(params["head"], cache["h"], delta_BxK)
    dh_BxD = dropout_backward(cache["keep"], dh_BxD, rate)
    shape = (dh_BxD.shape[0], num_steps, out_size)
    if readout == "mean":
      dh_BxTxH = jnp.broadcast_to(dh_BxD[:, None] / num_steps, shape)
    elif readout == "all":
      dh_BxTxH = dh_BxD.reshape(shape)
    elif bidirectional:  # forward h_T and reverse h_1
      dh_BxTxH = (jnp.zeros(shape, dh_BxD.dtype).at[:, -1, :hidden].set(dh_BxD[:, :hidden])
                  .at[:, 0, hidden:].set(dh_BxD[:, hidden:]))
    else:
      dh_BxTxH = jnp.zeros(shape, dh_BxD.dtype).at[:, -1].set(dh_BxD)
    g_stack, _ = _stack_backward(params["lstm"], cache["stack"], dh_BxTxH, bidirectional, rate)
    return {"lstm": g_stack, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


def make_char_lstm_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                  output: str = "softmax", lam: float = 0.0, m: int = 1,
                                  lam1: float = 0.0):
  """Hand-written value_and_grad for "char_lstm": ids_BxT -> logits_BxTxV, one label per step,
  the embedding table's gradient a scatter-add."""
  _check_model(model_cfg, "char_lstm", input_shape, num_outputs, output, lam, m, lam1)
  rate, num_layers = model_cfg.dropout, model_cfg.num_layers

  def forward(params, ids_BxT, rng):
    rngs = lstm.dropout_keys(rng, num_layers + 1, rate, True)
    x_BxTxE, keep_x = dropout_forward(rngs[0], layers.embed(params["embed"], ids_BxT), rate)
    h_BxTxH, stack = _stack_forward(params["lstm"], x_BxTxE, False, rate, rngs[1:])
    h_BxTxH, keep_h = dropout_forward(rngs[-1], h_BxTxH, rate)
    cache = {"ids": ids_BxT, "keep_x": keep_x, "stack": stack, "h": h_BxTxH, "keep_h": keep_h}
    return layers.dense(params["head"], h_BxTxH), cache

  def backward(params, cache, delta_BxTxV):
    g_head, dh_BxTxH = dense_backward(params["head"], cache["h"], delta_BxTxV)
    dh_BxTxH = dropout_backward(cache["keep_h"], dh_BxTxH, rate)
    g_stack, dx_BxTxE = _stack_backward(params["lstm"], cache["stack"], dh_BxTxH, False, rate)
    dx_BxTxE = dropout_backward(cache["keep_x"], dx_BxTxE, rate)
    return {"embed": embed_backward(params["embed"], cache["ids"], dx_BxTxE),
            "lstm": g_stack, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


def make_transformer_classifier_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                               output: str = "softmax", lam: float = 0.0,
                                               m: int = 1, lam1: float = 0.0):
  """Hand-written value_and_grad for "transformer_classifier" (every patch size, positions,
  activation, depth and dropout)."""
  _check_model(model_cfg, "transformer_classifier", input_shape, num_outputs, output, lam, m,
               lam1)
  steps, features = lstm.sequence_shape(model_cfg.name, input_shape)
  num_steps = steps // model_cfg.patch_size
  num_features = features * model_cfg.patch_size
  projection = attention.input_projection(model_cfg, num_features)

  def forward(params, x, rng):
    x_BxTxF = x.reshape(x.shape[0], num_steps, num_features)
    tokens = layers.dense(params["input"], x_BxTxF) if projection else x_BxTxF
    h_BxTxD, encoder = _encoder_forward(params["encoder"], tokens, model_cfg, False, rng)
    h_BxD = h_BxTxD.mean(axis=1)
    return layers.dense(params["head"], h_BxD), {"x": x_BxTxF, "encoder": encoder, "h": h_BxD}

  def backward(params, cache, delta_BxK):
    g_head, dh_BxD = dense_backward(params["head"], cache["h"], delta_BxK)
    dh_BxTxD = jnp.broadcast_to(dh_BxD[:, None] / num_steps,
                                (dh_BxD.shape[0], num_steps, dh_BxD.shape[-1]))
    g_encoder, dx_BxTxD = _encoder_backward(params["encoder"], cache["encoder"], dh_BxTxD,
                                            model_cfg)
    grads = {"encoder": g_encoder, "head": g_head}
    if projection:
      grads["input"], _ = dense_backward(params["input"], cache["x"], dx_BxTxD)
    return grads

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


def make_char_transformer_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                         output: str = "softmax", lam: float = 0.0,
                                         m: int = 1, lam1: float = 0.0):
  """Hand-written value_and_grad for "char_transformer" (causal): ids_BxT -> logits_BxTxV."""
  _check_model(model_cfg, "char_transformer", input_shape, num_outputs, output, lam, m, lam1)
  scale = math.sqrt(model_cfg.d_model)

  def forward(params, ids_BxT, rng):
    x_BxTxD = layers.embed(params["embed"], ids_BxT) * scale
    h_BxTxD, encoder = _encoder_forward(params["encoder"], x_BxTxD, model_cfg, True, rng)
    return layers.dense(params["head"], h_BxTxD), {"ids": ids_BxT, "encoder": encoder,
                                                   "h": h_BxTxD}

  def backward(params, cache, delta_BxTxV):
    g_head, dh_BxTxD = dense_backward(params["head"], cache["h"], delta_BxTxV)
    g_encoder, dx_BxTxD = _encoder_backward(params["encoder"], cache["encoder"], dh_BxTxD,
                                            model_cfg)
    return {"embed": embed_backward(params["embed"], cache["ids"], dx_BxTxD * scale),
            "encoder": g_encoder, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


def make_transformer_block_value_and_grad(num_heads: int, num_outputs: int, *,
                                          causal: bool = False, activation: str = "gelu",
                                          dropout: float = 0.0, output: str = "softmax",
                                          lam: float = 0.0, m: int = 1, lam1: float = 0.0):
  """One pre-LN block with a dense head on every token, params {"block", "head"}:
  x_BxTxD -> transformer_block -> dense -> logits_BxTxK, labels_BxT, losses.make_loss_fn's E."""
  errors.check_choice("model.activation", activation, sorted(ACTIVATION_PRIMES))
  backprop_layers.check_loss(output, lam, m, lam1)

  def forward(params, x_BxTxD, rng):
    h_BxTxD, block = transformer_block_forward(
        params["block"], x_BxTxD, num_heads=num_heads, causal=causal, activation=activation,
        dropout=dropout, rng=rng)
    return layers.dense(params["head"], h_BxTxD), {"block": block, "h": h_BxTxD}

  def backward(params, cache, delta_BxTxK):
    g_head, dh_BxTxD = dense_backward(params["head"], cache["h"], delta_BxTxK)
    g_block, _ = transformer_block_backward(params["block"], cache["block"], dh_BxTxD,
                                            activation=activation, dropout=dropout)
    return {"block": g_block, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


core.register_manual("lstm_classifier")(make_lstm_classifier_value_and_grad)
core.register_manual("char_lstm")(make_char_lstm_value_and_grad)
core.register_manual("transformer_classifier")(make_transformer_classifier_value_and_grad)
core.register_manual("char_transformer")(make_char_transformer_value_and_grad)


# ------------------------------------------------------------------------ gradient checks
# Problems for research/gradcheck.py: the lecture's cost with lambda > 0 and a mini-batch of
# B out of m = 4B examples (core.classifier_problem). Without dropout: its mask depends on
# whether x64 is on, and gradcheck's finite differences always run in x64.


def _problem(key, batch, dtype, model_cfg, input_shape, num_outputs, label_shape, x_fn,
             description):
  model_cfg = ml_collections.ConfigDict(model_cfg)
  return core.classifier_problem(
      key, batch, dtype, model_cfg, input_shape, core.manual_builder(model_cfg.name),
      description, (core.FD_EPS,), num_outputs=num_outputs, label_shape=label_shape,
      x_fn=x_fn, dropout_key=False)


@core.register_problem("lstm_classifier")
def problem_lstm(key: jax.Array, batch: int, dtype, *, num_layers: int = 1,
                 bidirectional: bool = False, readout: str = "last"):
  """lstm_classifier on (T, F) = (6, 4) sequences, H = 8, K = 5 (default: one unidirectional
  layer read at h_T)."""
  cfg = {"name": "lstm_classifier", "hidden_size": 8, "num_layers": num_layers,
         "bidirectional": bidirectional, "readout": readout, "dropout": 0.0}
  return _problem(key, batch, dtype, cfg, (6, 4), 5, (), lambda x: x,
                  f"lstm_classifier (T, F) = (6, 4), H=8, K=5, {num_layers} layer(s), "
                  f"bidirectional={bidirectional}, readout={readout}")


core.register_problem("lstm_classifier_bidirectional")(functools.partial(
    problem_lstm, num_layers=2, bidirectional=True, readout="mean"))


def _char_ids(vocab: int):
  """Ids from the normals: each row of the table is used by several positions (scatter-add)."""
  return lambda z: (jnp.abs(z) * 1e3).astype(jnp.int32) % vocab


@core.register_problem("char_lstm")
def problem_char_lstm(key: jax.Array, batch: int, dtype):
  """char_lstm on T = 6 ids from V = 7, E = 4, H = 8, 2 layers: BPTT through a stack, into the
  embedding table."""
  cfg = {"name": "char_lstm", "embed_dim": 4, "hidden_size": 8, "num_layers": 2,
         "dropout": 0.0}
  return _problem(key, batch, dtype, cfg, (6,), 7, (6,), _char_ids(7),
                  "char_lstm T=6, V=7, E=4, H=8, 2 layers")


@core.register_problem("transformer_classifier")
def problem_transformer_classifier(key: jax.Array, batch: int, dtype, *,
                                   pos_embedding: str = "learned", activation: str = "gelu"):
  """transformer_classifier on (T, F) = (8, 3), patches of 2, D = 8, 2 heads, 2 blocks, K = 5."""
  cfg = {"name": "transformer_classifier", "patch_size": 2, "d_model": 8, "num_heads": 2,
         "num_layers": 2, "mlp_dim": 16, "activation": activation,
         "pos_embedding": pos_embedding, "dropout": 0.0}
  return _problem(key, batch, dtype, cfg, (8, 3), 5, (), lambda x: x,
                  f"transformer_classifier (T, F) = (8, 3), patch 2, D=8, 2 heads, 2 blocks, "
                  f"MLP 16 {activation}, {pos_embedding} positions, K=5")


@core.register_problem("char_transformer")
def problem_char_transformer(key: jax.Array, batch: int, dtype):
  """char_transformer (causal) on T = 6 ids from V = 7, D = 8, 2 heads, 1 block."""
  cfg = {"name": "char_transformer", "d_model": 8, "num_heads": 2, "num_layers": 1,
         "mlp_dim": 16, "activation": "gelu", "pos_embedding": "learned", "dropout": 0.0}
  return _problem(key, batch, dtype, cfg, (6,), 7, (6,), _char_ids(7),
                  "char_transformer T=6, V=7, D=8, 2 heads, 1 causal block, MLP 16 gelu")


@core.register_problem("transformer_block")
def problem_transformer_block(key: jax.Array, batch: int, dtype, *, num_steps: int = 5,
                              d_model: int = 8, num_heads: int = 2, mlp_dim: int = 16,
                              num_outputs: int = 4, causal: bool = True,
                              activation: str = "gelu"):
  """One pre-LN block and a dense head on each token: x_BxTxD -> logits_BxTxK, labels_BxT."""
  lam, m = 1.0, 4 * batch
  value_and_grad = make_transformer_block_value_and_grad(
      num_heads, num_outputs, causal=causal, activation=activation, lam=lam, m=m)

  def loss_fn(params, x_BxTxD, labels_BxT):
    h = attention.transformer_block(params["block"], x_BxTxD, num_heads=num_heads,
                                    causal=causal, activation=activation)
    logits_BxTxK = layers.dense(params["head"], h)
    y = losses.one_hot_targets(labels_BxT, num_outputs, logits_BxTxK.dtype)
    return (losses.softmax_cross_entropy(logits_BxTxK, y).mean()
            + losses.l2_penalty(params, lam, m))

  @jax.jit
  def make_arrays(key):
    k_block, k_head, k_z = jax.random.split(key, 3)
    init = {"block": attention.init_transformer_block(k_block, d_model, mlp_dim, activation),
            "head": layers.init_dense(k_head, d_model, num_outputs)}
    init = jax.tree.map(lambda p: p.astype(dtype), init)
    shapes = {"params": init, "x": jax.ShapeDtypeStruct((batch, num_steps, d_model), dtype),
              "z": jax.ShapeDtypeStruct((batch, num_steps, num_outputs), dtype)}
    z = core.random_like(k_z, shapes, dtype)
    params = jax.tree.map(lambda p, n: p + 0.1 * n, init, z["params"])
    return params, z["x"], jnp.argmax(z["z"], axis=-1)

  params, x_BxTxD, labels_BxT = make_arrays(key)
  return core.Problem(
      params=params, args=(x_BxTxD, labels_BxT), loss_fn=loss_fn,
      grad_fn=lambda p, x, labels: value_and_grad(p, x, labels, None)[1],
      description=(f"pre-LN transformer block (T, D) = ({num_steps}, {d_model}), {num_heads} "
                   f"heads, MLP {mlp_dim} {activation}, causal={causal}, dense head K="
                   f"{num_outputs} per token, B={batch}, lambda={lam}, m={m}"))
