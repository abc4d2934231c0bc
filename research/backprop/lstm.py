"""Backpropagation through time for the LSTM models (research/models/lstm.py), by hand.

One layer, gates fused in the order i, f, g, o (i = sigma(sum_i), g = tanh(sum_g)):

  sum_t = x_t w_ih + h_{t-1} w_hh + b,   c_t = f_t c_{t-1} + i_t g_t,   h_t = o_t tanh(c_t)

A reverse scan carries dE/dh and dE/dc from step t+1 to t:

  dE/dh_t  = dE/dh_t (from the layer's output) + delta_{t+1} w_hh^T
  dE/dc_t  = dE/dh_t o_t (1 - tanh^2 c_t) + dE/dc_{t+1} f_{t+1}
  delta_t  = [dE/dc_t g_t i_t(1-i_t), dE/dc_t c_{t-1} f_t(1-f_t), dE/dc_t i_t (1-g_t)(1+g_t),
              dE/dh_t tanh(c_t) o_t(1-o_t)]                           (B, 4H)
  dE/dw_ih = sum_t x_t^T delta_t,  dE/dw_hh = sum_t h_{t-1}^T delta_t,  dE/db = sum_t sum_b delta_t,
  dE/dx_t  = delta_t w_ih^T.

Every configuration is covered (layers, bidirectional, readout, dropout with the forward's
masks); the cost is backprop/layers.py's value_and_grad_from.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import layers
from research.models import lstm


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
                  reverse: bool = False) -> tuple[jax.Array, dict]:
  """Backpropagation through time: dE/dh_t for every output -> (dE/dx_BxTxI, {w_ih, w_hh, b}).

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
  return jnp.einsum("tbg,ig->bti", delta_TxBx4H, params["w_ih"]), grads


def bilstm_forward(params: dict, x_BxTxI: jax.Array) -> tuple:
  """lstm.bilstm: [forward h_t ; reverse h_t], h_BxTx2H, and both directions' caches."""
  h_fwd, cache_fwd = lstm_forward(params["fwd"], x_BxTxI)
  h_bwd, cache_bwd = lstm_forward(params["bwd"], x_BxTxI, reverse=True)
  return jnp.concatenate([h_fwd, h_bwd], axis=-1), {"fwd": cache_fwd, "bwd": cache_bwd}


def bilstm_backward(params: dict, cache: dict, dh_BxTx2H: jax.Array) -> tuple[jax.Array, dict]:
  """Two passes through time, one per direction; x feeds both, so their dE/dx add up."""
  dh_fwd, dh_bwd = jnp.split(dh_BxTx2H, 2, axis=-1)
  dx_fwd, g_fwd = lstm_backward(params["fwd"], cache["fwd"], dh_fwd)
  dx_bwd, g_bwd = lstm_backward(params["bwd"], cache["bwd"], dh_bwd, reverse=True)
  return dx_fwd + dx_bwd, {"fwd": g_fwd, "bwd": g_bwd}


def _stack_forward(stack: list[dict], h_BxTxF: jax.Array, bidirectional: bool, rate: float,
                   rngs: list) -> tuple:
  """lstm._apply_stack with train=True: dropout (rngs[l-1]) on the input of layers l > 0."""
  run = bilstm_forward if bidirectional else lstm_forward
  caches, keeps = [], []
  for l, layer in enumerate(stack):
    keep = None
    if l > 0:
      h_BxTxF, keep = backprop_layers.dropout_forward(rngs[l - 1], h_BxTxF, rate)
    h_BxTxF, cache = run(layer, h_BxTxF)
    caches.append(cache)
    keeps.append(keep)
  return h_BxTxF, {"layers": caches, "keeps": keeps}


def _stack_backward(stack: list[dict], cache: dict, dh_BxTxH: jax.Array, bidirectional: bool,
                    rate: float) -> tuple[jax.Array, list[dict]]:
  back = bilstm_backward if bidirectional else lstm_backward
  grads = [None] * len(stack)
  for l in range(len(stack) - 1, -1, -1):
    dh_BxTxH, grads[l] = back(stack[l], cache["layers"][l], dh_BxTxH)
    dh_BxTxH = backprop_layers.dropout_backward(cache["keeps"][l], dh_BxTxH, rate)
  return dh_BxTxH, grads


# ------------------------------------------------------------------------------------ models


def make_lstm_classifier_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                        output: str = "softmax", lam: float = 0.0, m: int = 1,
                                        lam1: float = 0.0):
  """Hand-written value_and_grad for "lstm_classifier" (every num_layers, bidirectional,
  readout and dropout); the same function as jax.value_and_grad(losses.make_loss_fn(model,
  output, lam, m, num_outputs, lam1), has_aux=True)."""
  core.check_model(model_cfg, "lstm_classifier", input_shape, num_outputs)
  backprop_layers.check_loss(output, lam, m, lam1)
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
    h_BxD, keep = backprop_layers.dropout_forward(rngs[-1], h_BxD, rate)
    cache = {"stack": stack, "h": h_BxD, "keep": keep}
    return layers.dense(params["head"], h_BxD), cache

  def backward(params, cache, delta_BxK):
    dh_BxD, g_head = backprop_layers.dense_backward(params["head"], cache["h"], delta_BxK)
    dh_BxD = backprop_layers.dropout_backward(cache["keep"], dh_BxD, rate)
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
    _, g_stack = _stack_backward(params["lstm"], cache["stack"], dh_BxTxH, bidirectional, rate)
    return {"lstm": g_stack, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


def make_char_lstm_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                  output: str = "softmax", lam: float = 0.0, m: int = 1,
                                  lam1: float = 0.0):
  """Hand-written value_and_grad for "char_lstm": ids_BxT -> logits_BxTxV, one label per step,
  the embedding table's gradient a scatter-add."""
  core.check_model(model_cfg, "char_lstm", input_shape, num_outputs)
  backprop_layers.check_loss(output, lam, m, lam1)
  rate, num_layers = model_cfg.dropout, model_cfg.num_layers

  def forward(params, ids_BxT, rng):
    rngs = lstm.dropout_keys(rng, num_layers + 1, rate, True)
    x_BxTxE, keep_x = backprop_layers.dropout_forward(
        rngs[0], layers.embed(params["embed"], ids_BxT), rate)
    h_BxTxH, stack = _stack_forward(params["lstm"], x_BxTxE, False, rate, rngs[1:])
    h_BxTxH, keep_h = backprop_layers.dropout_forward(rngs[-1], h_BxTxH, rate)
    cache = {"ids": ids_BxT, "keep_x": keep_x, "stack": stack, "h": h_BxTxH, "keep_h": keep_h}
    return layers.dense(params["head"], h_BxTxH), cache

  def backward(params, cache, delta_BxTxV):
    dh_BxTxH, g_head = backprop_layers.dense_backward(params["head"], cache["h"], delta_BxTxV)
    dh_BxTxH = backprop_layers.dropout_backward(cache["keep_h"], dh_BxTxH, rate)
    dx_BxTxE, g_stack = _stack_backward(params["lstm"], cache["stack"], dh_BxTxH, False, rate)
    dx_BxTxE = backprop_layers.dropout_backward(cache["keep_x"], dx_BxTxE, rate)
    return {"embed": backprop_layers.embed_backward(params["embed"], cache["ids"], dx_BxTxE),
            "lstm": g_stack, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


core.register_manual("lstm_classifier")(make_lstm_classifier_value_and_grad)
core.register_manual("char_lstm")(make_char_lstm_value_and_grad)


# ------------------------------------------------------------------------ gradient checks


@core.register_problem("lstm_classifier")
def problem_lstm(key: jax.Array, batch: int, dtype, *, num_layers: int = 1,
                 bidirectional: bool = False, readout: str = "last"):
  """lstm_classifier on (T, F) = (6, 4) sequences, H = 8, K = 5 (default: one unidirectional
  layer read at h_T)."""
  cfg = {"name": "lstm_classifier", "hidden_size": 8, "num_layers": num_layers,
         "bidirectional": bidirectional, "readout": readout, "dropout": 0.0}
  return core.sequence_problem(key, batch, dtype, cfg, (6, 4), 5, (), lambda x: x,
                  f"lstm_classifier (T, F) = (6, 4), H=8, K=5, {num_layers} layer(s), "
                  f"bidirectional={bidirectional}, readout={readout}")


core.register_problem("lstm_classifier_bidirectional")(functools.partial(
    problem_lstm, num_layers=2, bidirectional=True, readout="mean"))


@core.register_problem("char_lstm")
def problem_char_lstm(key: jax.Array, batch: int, dtype):
  """char_lstm on T = 6 ids from V = 7, E = 4, H = 8, 2 layers: BPTT through a stack, into the
  embedding table."""
  cfg = {"name": "char_lstm", "embed_dim": 4, "hidden_size": 8, "num_layers": 2,
         "dropout": 0.0}
  return core.sequence_problem(key, batch, dtype, cfg, (6,), 7, (6,), core.char_ids(7),
                  "char_lstm T=6, V=7, E=4, H=8, 2 layers")
