"""Long short-term memory (Hochreiter & Schmidhuber, 1997) as pure functions, and two models.

One layer's params are {"w_ih": w_Ix4H, "w_hh": w_Hx4H, "b": b_4H}, the four gates fused into
one matrix product and stacked in the order (i, f, g, o):

  z_t = x_t w_ih + h_{t-1} w_hh + b          (B, 4H), split into i, f, g, o
      = [x_t, h_{t-1}] [w_ih; w_hh] + b      (computed so: one product per step)
  c_t = sigma(f) * c_{t-1} + sigma(i) * tanh(g)
  h_t = sigma(o) * tanh(c_t)

`lstm` runs the cell over time with `jax.lax.scan`; backpropagation through time is then just
`jax.grad` of a loss of its outputs. The product stays inside the scan body: hoisting x_t w_ih
out of it as one (T*B, I) x (I, 4H) product (the cuDNN trick) was measured 2x slower on
XLA:CPU, whose per-step cost is dominated by the loop's thunks, not the matmul sizes, and
one product of the stacked weights per step instead of two made the train step 1.07x faster
(docs/performance.md). `lstm_last` returns only the final h, so a classifier that reads h_T
neither stores nor backpropagates through the T outputs it does not use.

Models (see research/models/__init__.py for the registry):
  "lstm_classifier": (T, F) sequences, or NHWC images read row by row (T = H, F = W*C).
  "char_lstm":       a character language model, ids_BxT -> logits_BxTxV.
"""
import functools

import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers

READOUTS = ("last", "mean", "all")


def init_lstm(key: jax.Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> dict:
  """Params of one LSTM layer with I = input_size, H = hidden_size.

  w_ih is N(0, 1/I) (LeCun normal); each of w_hh's four HxH gate blocks is orthogonal, so
  repeated multiplication by it neither grows nor shrinks h at the start; the forget gate's
  bias is 1 so that sigma(f) ~ 0.73 and the cell starts out remembering (Gers et al., 2000).
  """
  k_ih, k_hh = jax.random.split(key)
  w_ih_Ix4H = layers.lecun_normal(k_ih, (input_size, 4 * hidden_size), input_size, dtype)
  orthogonal = jax.nn.initializers.orthogonal()
  w_hh_Hx4H = jnp.concatenate(
      [orthogonal(k, (hidden_size, hidden_size), dtype)
       for k in jax.random.split(k_hh, 4)], axis=1)
  b_4H = jnp.zeros((4 * hidden_size,), dtype).at[hidden_size:2 * hidden_size].set(1.0)
  return {"w_ih": w_ih_Ix4H, "w_hh": w_hh_Hx4H, "b": b_4H}


def stacked_weights(params: dict) -> jax.Array:
  """[w_ih; w_hh], w_IHx4H ((I + H) x 4H): what each step multiplies [x_t, h_{t-1}] by."""
  return jnp.concatenate([params["w_ih"], params["w_hh"]], axis=0)


def gate_sums(w_IHx4H: jax.Array, b_4H: jax.Array, x_BxI: jax.Array,
              h_BxH: jax.Array) -> jax.Array:
  """sum_t = [x_t, h_{t-1}] [w_ih; w_hh] + b, (B, 4H): one product per step."""
  return jnp.concatenate([x_BxI, h_BxH], axis=-1) @ w_IHx4H + b_4H


def lstm_cell(params: dict, carry: tuple, x_BxI: jax.Array, w=None) -> tuple:
  """One step: (carry=(h_BxH, c_BxH), x_BxI) -> (new carry, h_BxH). A scan passes
  w = stacked_weights(params), stacked once outside the loop."""
  h_BxH, c_BxH = carry
  w_IHx4H = stacked_weights(params) if w is None else w
  z_Bx4H = gate_sums(w_IHx4H, params["b"], x_BxI, h_BxH)
  i, f, g, o = jnp.split(z_Bx4H, 4, axis=-1)
  c_BxH = jax.nn.sigmoid(f) * c_BxH + jax.nn.sigmoid(i) * jnp.tanh(g)
  h_BxH = jax.nn.sigmoid(o) * jnp.tanh(c_BxH)
  return (h_BxH, c_BxH), h_BxH


def zero_carry(params: dict, batch_size: int, dtype=jnp.float32) -> tuple:
  """(h_0, c_0) = (0, 0), each (B, H)."""
  hidden_size = params["w_hh"].shape[0]
  return (jnp.zeros((batch_size, hidden_size), dtype),) * 2


def lstm(params: dict, x_BxTxI: jax.Array, reverse: bool = False) -> jax.Array:
  """Runs one layer over a sequence from (h, c) = 0; returns h_BxTxH.

  With reverse=True the sequence is read from t = T-1 down to 0, and h[:, t] has seen
  x[:, t:] (outputs stay in the input's time order).
  """
  carry = zero_carry(params, x_BxTxI.shape[0], x_BxTxI.dtype)
  cell = functools.partial(lstm_cell, params, w=stacked_weights(params))
  _, h_TxBxH = jax.lax.scan(cell, carry, jnp.swapaxes(x_BxTxI, 0, 1), reverse=reverse)
  return jnp.swapaxes(h_TxBxH, 0, 1)


def lstm_last(params: dict, x_BxTxI: jax.Array, reverse: bool = False) -> jax.Array:
  """The last h of `lstm` (h_T, or h_1 with reverse=True), h_BxH, from the scan's carry."""
  w = stacked_weights(params)

  def step(carry, x_BxI):
    return lstm_cell(params, carry, x_BxI, w)[0], None
  carry = zero_carry(params, x_BxTxI.shape[0], x_BxTxI.dtype)
  (h_BxH, _), _ = jax.lax.scan(step, carry, jnp.swapaxes(x_BxTxI, 0, 1), reverse=reverse)
  return h_BxH


def init_bilstm(key: jax.Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> dict:
  """{"fwd": layer params, "bwd": layer params}, each I -> H."""
  k_fwd, k_bwd = jax.random.split(key)
  return {"fwd": init_lstm(k_fwd, input_size, hidden_size, dtype),
          "bwd": init_lstm(k_bwd, input_size, hidden_size, dtype)}


def bilstm(params: dict, x_BxTxI: jax.Array) -> jax.Array:
  """Bidirectional layer: [forward h_t ; reverse h_t] at every t, h_BxTx2H."""
  return jnp.concatenate([lstm(params["fwd"], x_BxTxI),
                          lstm(params["bwd"], x_BxTxI, reverse=True)], axis=-1)


# ----------------------------------------------------------------------------------- models


def sequence_shape(model_name: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
  """(T, F) for a (T, F) sequence, or (H, W*C) for an (H, W, C) image read row by row."""
  if len(input_shape) == 2:
    return tuple(input_shape)
  if len(input_shape) == 3:
    height, width, channels = input_shape
    return height, width * channels
  raise errors.ConfigError(
      f"config.model.name={model_name!r} reads (T, F) sequences or (H, W, C) images, but the "
      f"data has examples of shape {tuple(input_shape)}; use a sequence or image layout of the "
      "data (e.g. config.data.shape='sequence' for mnist1d, config.data.image_size=8 for digits)")


def dropout_keys(rng: jax.Array | None, n: int, rate: float, train: bool) -> list:
  """n independent keys for n dropout sites, or n Nones when dropout is off."""
  if not train or rate == 0:
    return [None] * n
  if rng is None:
    raise ValueError("apply(..., train=True) with dropout > 0 needs rng=a PRNG key")
  return list(jax.random.split(rng, n))


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.lstm
RANGES = model_configs.RANGES["lstm"]


def _init_stack(key: jax.Array, input_size: int, hidden_size: int, num_layers: int,
                bidirectional: bool) -> list[dict]:
  """num_layers LSTM layers; layer l > 1 reads layer l-1's (B, T, H or 2H) outputs."""
  init_layer = init_bilstm if bidirectional else init_lstm
  out_size = hidden_size * (2 if bidirectional else 1)
  return [init_layer(k, input_size if l == 0 else out_size, hidden_size)
          for l, k in enumerate(jax.random.split(key, num_layers))]


def _apply_stack(stack: list[dict], h_BxTxF: jax.Array, bidirectional: bool, rate: float,
                 train: bool, rngs: list, last_only: bool = False) -> jax.Array:
  """Runs the layers in turn with dropout on each layer's input but the first (only between
  layers, never on the recurrent h_{t-1} -> h_t path: Zaremba et al., 2014).

  Returns h_BxTxD, or with last_only the top layer's final state h_BxD (bidirectional:
  [forward h_T ; reverse h_1], both of which have seen the whole sequence)."""
  run = bilstm if bidirectional else lstm
  for l, layer in enumerate(stack):
    if l > 0:
      h_BxTxF = layers.dropout(rngs[l - 1], h_BxTxF, rate, train)
    if last_only and l == len(stack) - 1:
      if bidirectional:
        return jnp.concatenate([lstm_last(layer["fwd"], h_BxTxF),
                                lstm_last(layer["bwd"], h_BxTxF, reverse=True)], axis=-1)
      return lstm_last(layer, h_BxTxF)
    h_BxTxF = run(layer, h_BxTxF)
  return h_BxTxF


@core.register("lstm_classifier")
def _build_classifier(cfg, input_shape, num_outputs) -> core.Model:
  """(T, F) sequence or (H, W, C) image -> LSTM stack -> readout -> dense -> logits_BxK.

  readout: "last" = h_T (with bidirectional, [forward h_T ; reverse h_1], both of which have
  seen the whole sequence), "mean" = the mean of h_t over t, "all" = every h_t concatenated
  (T * H features, as the MNIST-1D paper's GRU baseline).
  """
  num_steps, num_features = sequence_shape(cfg.name, input_shape)
  errors.check_choice("model.readout", cfg.readout, READOUTS)
  hidden, bidirectional = cfg.hidden_size, bool(cfg.bidirectional)
  out_size = hidden * (2 if bidirectional else 1)
  head_in = out_size * (num_steps if cfg.readout == "all" else 1)

  def init(key):
    k_stack, k_head = jax.random.split(key)
    return {"lstm": _init_stack(k_stack, num_features, hidden, cfg.num_layers, bidirectional),
            "head": layers.init_dense(k_head, head_in, num_outputs)}

  def apply(params, x, *, train=False, rng=None):
    rngs = dropout_keys(rng, cfg.num_layers, cfg.dropout, train)
    h = _apply_stack(params["lstm"], x.reshape(x.shape[0], num_steps, num_features),
                     bidirectional, cfg.dropout, train, rngs, last_only=cfg.readout == "last")
    if cfg.readout == "mean":
      h_BxD = h.mean(axis=1)
    elif cfg.readout == "all":
      h_BxD = layers.flatten(h)
    else:
      h_BxD = h
    return layers.dense(params["head"], layers.dropout(rngs[-1], h_BxD, cfg.dropout, train))

  return core.Model(init, apply)


@core.register("char_lstm")
def _build_char_lstm(cfg, input_shape, num_outputs) -> core.Model:
  """Character language model: ids_BxT -> embedding -> LSTM stack -> dense -> logits_BxTxV.

  V = num_outputs (the data set's vocabulary); the model sees ids[:, :t+1] when predicting
  the character after position t, so only a unidirectional stack makes sense here.
  """
  if len(input_shape) != 1:
    raise errors.ConfigError(
        f"config.model.name='char_lstm' reads (T,) sequences of character ids, but the data has "
        f"examples of shape {tuple(input_shape)}; use a text data set (config.data.name='text')")

  def init(key):
    k_embed, k_stack, k_head = jax.random.split(key, 3)
    return {"embed": layers.init_embedding(k_embed, num_outputs, cfg.embed_dim),
            "lstm": _init_stack(k_stack, cfg.embed_dim, cfg.hidden_size, cfg.num_layers, False),
            "head": layers.init_dense(k_head, cfg.hidden_size, num_outputs)}

  def apply(params, ids_BxT, *, train=False, rng=None):
    rngs = dropout_keys(rng, cfg.num_layers + 1, cfg.dropout, train)
    x_BxTxE = layers.dropout(rngs[0], layers.embed(params["embed"], ids_BxT), cfg.dropout, train)
    h_BxTxH = _apply_stack(params["lstm"], x_BxTxE, False, cfg.dropout, train, rngs[1:])
    h_BxTxH = layers.dropout(rngs[-1], h_BxTxH, cfg.dropout, train)
    return layers.dense(params["head"], h_BxTxH)

  return core.Model(init, apply)
