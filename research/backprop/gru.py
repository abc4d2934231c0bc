"""Backpropagation through time for the GRU classifier (research/models/gru.py), by hand.

The forward pass keeps every step's gates; with delta = dE/dsum at a unit's sum and
dE/dh_t the error reaching h_t (from the layer's output at t and from step t+1), step t is

  h_t = (1 - z_t) h_{t-1} + z_t n_t, so
  delta^n_t = dE/dh_t z_t (1 - n_t)(1 + n_t)            n = tanh(sum_n)
  delta^z_t = dE/dh_t (n_t - h_{t-1}) z_t (1 - z_t)     z = sigma(sum_z)
  dE/d(r h)_t = delta^n_t w_hh^n^T                      (r_t h_{t-1} feeds sum_n)
  delta^r_t = dE/d(r h)_t h_{t-1} r_t (1 - r_t)         r = sigma(sum_r)
  dE/dh_{t-1} = dE/dh_t (1 - z_t) + dE/d(r h)_t r_t + [delta^r_t, delta^z_t] w_hh^{rz}^T

carried backwards by a reverse scan. The weights then sum over every step and example:

  delta_t = [delta^r_t, delta^z_t, delta^n_t]                          (B, 3H)
  dE/dw_ih = sum_t x_t^T delta_t,   dE/db = sum_t sum_b delta_t
  dE/dw_hh^{rz} = sum_t h_{t-1}^T [delta^r_t, delta^z_t]
  dE/dw_hh^n = sum_t (r_t h_{t-1})^T delta^n_t
  dE/dx_t = delta_t w_ih^T   (the layer below's dE/dh_t)

Dropout, the dense head and E are backprop/layers.py's primitives.
"""
import jax
import jax.numpy as jnp
from jax import lax

from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import gru
from research.models import layers
from research.models import lstm


def gru_forward(params: dict, x_BxTxI: jax.Array) -> tuple[jax.Array, dict]:
  """gru.gru(params, x): h_BxTxH, and the cache {x, h_prev, r, z, n} (time-major, T x B x .)."""
  def step(h_BxH, x_BxI):
    h_new, (r, z, n) = gru.gru_cell(params, h_BxH, x_BxI)
    return h_new, (h_BxH, r, z, n)

  h0 = jnp.zeros((x_BxTxI.shape[0], params["w_hh"].shape[0]), x_BxTxI.dtype)
  x_TxBxI = jnp.swapaxes(x_BxTxI, 0, 1)
  _, (h_prev, r, z, n) = lax.scan(step, h0, x_TxBxI)
  h_TxBxH = (1 - z) * h_prev + z * n
  return jnp.swapaxes(h_TxBxH, 0, 1), {"x": x_TxBxI, "h_prev": h_prev, "r": r, "z": z, "n": n}


def gru_backward(params: dict, cache: dict, dh_BxTxH: jax.Array) -> tuple[jax.Array, dict]:
  """Backpropagation through time: dE/dh_t for every output -> (dE/dx_BxTxI, {w_ih, w_hh, b})."""
  hidden = params["w_hh"].shape[0]
  w_rz_T, w_n_T = params["w_hh"][:, :2 * hidden].T, params["w_hh"][:, 2 * hidden:].T

  def step(dh_next_BxH, inputs):
    dh_out_BxH, h_prev, r, z, n = inputs
    dh = dh_out_BxH + dh_next_BxH                      # dE/dh_t
    delta_n = dh * z * (1 - n) * (1 + n)
    delta_z = dh * (n - h_prev) * z * (1 - z)
    d_rh = delta_n @ w_n_T                             # dE/d(r_t h_{t-1})
    delta_r = d_rh * h_prev * r * (1 - r)
    delta_rz = jnp.concatenate([delta_r, delta_z], axis=-1)
    dh_prev = dh * (1 - z) + d_rh * r + delta_rz @ w_rz_T
    return dh_prev, jnp.concatenate([delta_rz, delta_n], axis=-1)

  _, delta_TxBx3H = lax.scan(
      step, jnp.zeros_like(dh_BxTxH[:, 0]),
      (jnp.swapaxes(dh_BxTxH, 0, 1), cache["h_prev"], cache["r"], cache["z"], cache["n"]),
      reverse=True)
  grads = {"w_ih": jnp.einsum("tbi,tbg->ig", cache["x"], delta_TxBx3H),
           "w_hh": jnp.concatenate(
               [jnp.einsum("tbh,tbg->hg", cache["h_prev"], delta_TxBx3H[..., :2 * hidden]),
                jnp.einsum("tbh,tbg->hg", cache["r"] * cache["h_prev"],
                           delta_TxBx3H[..., 2 * hidden:])], axis=1),
           "b": delta_TxBx3H.sum(axis=(0, 1))}
  return jnp.einsum("tbg,ig->bti", delta_TxBx3H, params["w_ih"]), grads


@core.register_manual("gru_classifier")
def make_value_and_grad(model_cfg, input_shape, *, num_outputs: int, output: str = "softmax",
                        lam: float = 0.0, m: int = 1, lam1: float = 0.0):
  """Hand-written value_and_grad for "gru_classifier" (every num_layers, readout and dropout);
  the same function as jax.value_and_grad(losses.make_loss_fn(model, output, lam, m,
  num_outputs, lam1), has_aux=True)."""
  core.check_model(model_cfg, "gru_classifier", input_shape, num_outputs)
  backprop_layers.check_loss(output, lam, m, lam1)
  num_steps, num_features = lstm.sequence_shape(model_cfg.name, input_shape)
  rate, num_layers, kind = model_cfg.dropout, model_cfg.num_layers, model_cfg.readout

  def forward(params, x, rng):
    rngs = lstm.dropout_keys(rng, num_layers, rate, True)
    h = x.reshape(x.shape[0], num_steps, num_features)
    caches, keeps = [], []
    for l, layer in enumerate(params["gru"]):
      keep = None
      if l > 0:
        h, keep = backprop_layers.dropout_forward(rngs[l - 1], h, rate)
      h, cache = gru_forward(layer, h)
      caches.append(cache)
      keeps.append(keep)
    h_BxD, keep_head = backprop_layers.dropout_forward(rngs[-1], gru.readout(h, kind), rate)
    return layers.dense(params["head"], h_BxD), {"layers": caches, "keeps": keeps,
                                                 "h": h_BxD, "keep": keep_head}

  def backward(params, cache, delta_BxK):
    dh_BxD, g_head = backprop_layers.dense_backward(params["head"], cache["h"], delta_BxK)
    dh_BxD = backprop_layers.dropout_backward(cache["keep"], dh_BxD, rate)
    hidden = model_cfg.hidden_size
    shape = (dh_BxD.shape[0], num_steps, hidden)
    if kind == "last":
      dh_BxTxH = jnp.zeros(shape, dh_BxD.dtype).at[:, -1].set(dh_BxD)
    elif kind == "mean":
      dh_BxTxH = jnp.broadcast_to(dh_BxD[:, None] / num_steps, shape)
    else:
      dh_BxTxH = dh_BxD.reshape(shape)
    grads = [None] * num_layers
    for l in range(num_layers - 1, -1, -1):
      dh_BxTxH, grads[l] = gru_backward(params["gru"][l], cache["layers"][l], dh_BxTxH)
      dh_BxTxH = backprop_layers.dropout_backward(cache["keeps"][l], dh_BxTxH, rate)
    return {"gru": grads, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m,
                                             lam1)


@core.register_problem("gru_classifier")
def problem_gru(key: jax.Array, batch: int, dtype):
  """gru_classifier on (T, F) = (6, 4) sequences, H = 8, K = 5, 2 layers read at h_T: BPTT
  through the carry and through the stack."""
  cfg = {"name": "gru_classifier", "hidden_size": 8, "num_layers": 2, "readout": "last",
         "dropout": 0.0}
  return core.sequence_problem(key, batch, dtype, cfg, (6, 4), 5, (), lambda x: x,
                               "gru_classifier (T, F) = (6, 4), H=8, K=5, 2 layers, readout=last")
