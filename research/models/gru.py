"""The gated recurrent unit (Cho et al., 2014) as pure functions, and a classifier.

One layer's params are {"w_ih": w_Ix3H, "w_hh": w_Hx3H, "b": b_3H}, the reset gate r, the
update gate z and the candidate n side by side in that order:

  r_t = sigma(sum_r),  sum_r = x_t w_ih^r + h_{t-1} w_hh^r + b^r
  z_t = sigma(sum_z),  sum_z = x_t w_ih^z + h_{t-1} w_hh^z + b^z
  n_t = tanh(sum_n),   sum_n = x_t w_ih^n + (r_t * h_{t-1}) w_hh^n + b^n
  h_t = (1 - z_t) * h_{t-1} + z_t * n_t

The reset gate acts before the recurrent product, as in Cho et al. (cuDNN applies it after:
r_t * (h_{t-1} w_hh^n + b)); z weighs the candidate, as in Chung et al. (2014) (Cho et al.
write z for 1 - z: the same family of functions). h_0 = 0.

"gru_classifier": (T, F) sequences, or NHWC images read row by row (T = H, F = W*C).
"""
import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers
from research.models import lstm

READOUTS = ("last", "mean", "all")


def init_gru(key: jax.Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> dict:
  """Params of one GRU layer with I = input_size, H = hidden_size: w_ih ~ N(0, 1/I), each of
  w_hh's three HxH blocks orthogonal, b = 0."""
  k_ih, k_hh = jax.random.split(key)
  w_ih_Ix3H = layers.lecun_normal(k_ih, (input_size, 3 * hidden_size), input_size, dtype)
  orthogonal = jax.nn.initializers.orthogonal()
  w_hh_Hx3H = jnp.concatenate(
      [orthogonal(k, (hidden_size, hidden_size), dtype) for k in jax.random.split(k_hh, 3)],
      axis=1)
  return {"w_ih": w_ih_Ix3H, "w_hh": w_hh_Hx3H, "b": jnp.zeros((3 * hidden_size,), dtype)}


def gru_cell(params: dict, h_BxH: jax.Array, x_BxI: jax.Array) -> tuple[jax.Array, tuple]:
  """One step: h_{t-1}, x_t -> h_t, and (r, z, n) each B x H."""
  hidden = h_BxH.shape[-1]
  w_hh = params["w_hh"]
  sum_x = x_BxI @ params["w_ih"] + params["b"]                       # B x 3H
  sum_rz = sum_x[:, :2 * hidden] + h_BxH @ w_hh[:, :2 * hidden]
  r, z = jax.nn.sigmoid(sum_rz[:, :hidden]), jax.nn.sigmoid(sum_rz[:, hidden:])
  n = jnp.tanh(sum_x[:, 2 * hidden:] + (r * h_BxH) @ w_hh[:, 2 * hidden:])
  return (1 - z) * h_BxH + z * n, (r, z, n)


def gru(params: dict, x_BxTxI: jax.Array) -> jax.Array:
  """Runs one layer over a sequence from h_0 = 0; returns h_BxTxH."""
  def step(h_BxH, x_BxI):
    h_BxH, _ = gru_cell(params, h_BxH, x_BxI)
    return h_BxH, h_BxH
  h0 = jnp.zeros((x_BxTxI.shape[0], params["w_hh"].shape[0]), x_BxTxI.dtype)
  _, h_TxBxH = jax.lax.scan(step, h0, jnp.swapaxes(x_BxTxI, 0, 1))
  return jnp.swapaxes(h_TxBxH, 0, 1)


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.gru
RANGES = model_configs.RANGES["gru"]


def readout(h_BxTxH: jax.Array, kind: str) -> jax.Array:
  """h_BxD of the top layer: h_T, the mean over t, or every h_t concatenated."""
  if kind == "last":
    return h_BxTxH[:, -1]
  return h_BxTxH.mean(axis=1) if kind == "mean" else layers.flatten(h_BxTxH)


@core.register("gru_classifier")
def _build_classifier(cfg, input_shape, num_outputs) -> core.Model:
  """(T, F) sequence or (H, W, C) image -> GRU stack -> readout -> dense -> logits_BxK, with
  dropout on each layer's input but the first and on the head's input."""
  num_steps, num_features = lstm.sequence_shape(cfg.name, input_shape)
  errors.check_choice("model.readout", cfg.readout, READOUTS)
  head_in = cfg.hidden_size * (num_steps if cfg.readout == "all" else 1)

  def init(key):
    k_stack, k_head = jax.random.split(key)
    return {"gru": [init_gru(k, num_features if l == 0 else cfg.hidden_size, cfg.hidden_size)
                    for l, k in enumerate(jax.random.split(k_stack, cfg.num_layers))],
            "head": layers.init_dense(k_head, head_in, num_outputs)}

  def apply(params, x, *, train=False, rng=None):
    rngs = lstm.dropout_keys(rng, cfg.num_layers, cfg.dropout, train)
    h = x.reshape(x.shape[0], num_steps, num_features)
    for l, layer in enumerate(params["gru"]):
      if l > 0:
        h = layers.dropout(rngs[l - 1], h, cfg.dropout, train)
      h = gru(layer, h)
    h_BxD = layers.dropout(rngs[-1], readout(h, cfg.readout), cfg.dropout, train)
    return layers.dense(params["head"], h_BxD)

  return core.Model(init, apply)
