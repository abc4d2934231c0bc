"""Scaled dot-product multi-head attention and a pre-LN transformer, as pure functions.

Attention (Vaswani et al., 2017), with d_k = D / num_heads per head:

  Q = x w_q + b_q,  K = x w_k + b_k,  V = x w_v + b_v           each (B, T, D), split into heads
  head = softmax(Q K^T / sqrt(d_k)) V                           (B, T, d_k) per head
  out  = concat(heads) w_o + b_o                                (B, T, D)

params = {"wq", "wk", "wv", "wo": w_DxD, "bq", "bk", "bv", "bo": b_D}. The 1/sqrt(d_k) keeps
the logits' variance ~1 whatever d_k is, so the softmax does not saturate at init.

A pre-LN block (Xiong et al., 2020) puts layer norm inside each residual branch,

  x = x + dropout(MHA(LN(x)))
  x = x + dropout(w_2 act(w_1 LN(x) + b_1) + b_2)

which leaves an identity path from input to output and trains without learning-rate warmup
tricks; a final LN follows the last block.

Models (see research/models/__init__.py for the registry):
  "transformer_classifier": (T, F) sequences or (H, W, C) images read row by row -> logits_BxK.
  "char_transformer":       causal language model over character ids, ids_BxT -> logits_BxTxV.
"""
import math

import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers
from research.models import lstm

ACTIVATIONS = {"gelu": jax.nn.gelu, "relu": jax.nn.relu}
POSITIONAL = ("learned", "sinusoidal")


def init_multi_head_attention(key: jax.Array, d_model: int, dtype=jnp.float32) -> dict:
  """w_q, w_k, w_v, w_o ~ N(0, 1/D) (LeCun normal), biases 0."""
  keys = jax.random.split(key, 4)
  params = {}
  for k, name in zip(keys, "qkvo"):
    params[f"w{name}"] = layers.lecun_normal(k, (d_model, d_model), d_model, dtype)
    params[f"b{name}"] = jnp.zeros((d_model,), dtype)
  return params


def causal_mask(num_steps: int) -> jax.Array:
  """mask_TxT[t, s] = (s <= t): position t may attend to itself and the past only."""
  return jnp.tril(jnp.ones((num_steps, num_steps), bool))


def multi_head_attention(params: dict, x_BxTxD: jax.Array, num_heads: int, causal: bool = False,
                         mask: jax.Array | None = None) -> jax.Array:
  """Self-attention of x_BxTxD over itself with num_heads heads; returns y_BxTxD.

  mask: optional booleans broadcastable to (B, num_heads, T, T), True where query t may attend
  to key s (e.g. a padding mask of shape (B, 1, 1, T)). causal=True also masks s > t. Every
  query must be allowed at least one key.
  """
  batch, num_steps, d_model = x_BxTxD.shape
  if d_model % num_heads:
    raise errors.ConfigError(
        f"config.model.num_heads={num_heads} must divide d_model={d_model}; pick a divisor")
  d_k = d_model // num_heads

  def project(name):  # (B, T, D) -> (B, T, heads, d_k)
    y = x_BxTxD @ params[f"w{name}"] + params[f"b{name}"]
    return y.reshape(batch, num_steps, num_heads, d_k)

  q_BxTxNxK, k_BxSxNxK, v_BxSxNxK = project("q"), project("k"), project("v")
  logits_BxNxTxS = jnp.einsum("btnk,bsnk->bnts", q_BxTxNxK, k_BxSxNxK) / math.sqrt(d_k)
  allowed = jnp.ones((), bool)
  if causal:
    allowed = causal_mask(num_steps)
  if mask is not None:
    allowed = allowed & mask
  # A large finite negative rather than -inf: exp underflows to exactly 0 without inf - inf.
  logits_BxNxTxS = jnp.where(allowed, logits_BxNxTxS, jnp.finfo(logits_BxNxTxS.dtype).min)
  attn_BxNxTxS = jax.nn.softmax(logits_BxNxTxS, axis=-1)
  heads_BxTxNxK = jnp.einsum("bnts,bsnk->btnk", attn_BxNxTxS, v_BxSxNxK)
  return heads_BxTxNxK.reshape(batch, num_steps, d_model) @ params["wo"] + params["bo"]


def sinusoidal_positions(num_steps: int, d_model: int, dtype=jnp.float32) -> jax.Array:
  """pe_TxD[t, 2i] = sin(t / 10000^(2i/D)), pe_TxD[t, 2i+1] = cos(t / 10000^(2i/D)).

  Computed in dtype, or float32 if that is narrower (bfloat16's 8 bits would blur the
  angles): a float64 model gets a float64 table, not a float32 one widened (3e-8 off)."""
  compute = jnp.promote_types(dtype, jnp.float32)
  t_Tx1 = jnp.arange(num_steps, dtype=compute)[:, None]
  inv_freq = 10000.0 ** (-jnp.arange(0, d_model, 2, dtype=compute) / d_model)
  angles = t_Tx1 * inv_freq  # (T, ceil(D/2))
  pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(num_steps, -1)
  return pe[:, :d_model].astype(dtype)


def init_transformer_block(key: jax.Array, d_model: int, mlp_dim: int, activation: str = "gelu",
                           dtype=jnp.float32) -> dict:
  """{"ln1", "attn", "ln2", "mlp": {"fc1": D -> M, "fc2": M -> D}}."""
  k_attn, k_fc1, k_fc2 = jax.random.split(key, 3)
  init = "he" if activation == "relu" else "lecun"
  return {"ln1": layers.init_layer_norm(None, d_model, dtype),
          "attn": init_multi_head_attention(k_attn, d_model, dtype),
          "ln2": layers.init_layer_norm(None, d_model, dtype),
          "mlp": {"fc1": layers.init_dense(k_fc1, d_model, mlp_dim, init=init, dtype=dtype),
                  "fc2": layers.init_dense(k_fc2, mlp_dim, d_model, dtype=dtype)}}


def transformer_block(params: dict, x_BxTxD: jax.Array, *, num_heads: int, causal: bool = False,
                      activation: str = "gelu", dropout: float = 0.0, train: bool = False,
                      rng: jax.Array | None = None) -> jax.Array:
  """Pre-LN block: x + MHA(LN(x)), then x + MLP(LN(x)); dropout on each branch's output."""
  rng_attn, rng_mlp = lstm.dropout_keys(rng, 2, dropout, train)
  y = multi_head_attention(params["attn"], layers.layer_norm(params["ln1"], x_BxTxD), num_heads,
                           causal=causal)
  x_BxTxD = x_BxTxD + layers.dropout(rng_attn, y, dropout, train)
  mlp = params["mlp"]
  y = layers.layer_norm(params["ln2"], x_BxTxD)
  y = layers.dense(mlp["fc2"], ACTIVATIONS[activation](layers.dense(mlp["fc1"], y)))
  return x_BxTxD + layers.dropout(rng_mlp, y, dropout, train)


# ----------------------------------------------------------------------------------- models


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.attention
RANGES = model_configs.RANGES["attention"]


def _check_encoder_config(cfg) -> None:
  if cfg.d_model % cfg.num_heads:
    raise errors.ConfigError(
        f"config.model.num_heads={cfg.num_heads} must divide config.model.d_model="
        f"{cfg.d_model}; pick a divisor")
  errors.check_choice("model.activation", cfg.activation, sorted(ACTIVATIONS))
  errors.check_choice("model.pos_embedding", cfg.pos_embedding, POSITIONAL)


def _init_encoder(key: jax.Array, cfg, num_steps: int) -> dict:
  """The blocks, the final layer norm and (if learned) the position table pos_TxD."""
  k_pos, k_blocks = jax.random.split(key)
  params = {"blocks": [init_transformer_block(k, cfg.d_model, cfg.mlp_dim, cfg.activation)
                       for k in jax.random.split(k_blocks, cfg.num_layers)],
            "ln_final": layers.init_layer_norm(None, cfg.d_model)}
  if cfg.pos_embedding == "learned":
    # Unit variance, the scale of the content vectors it is added to (BERT and GPT-2 also
    # draw token and position tables alike).
    params["pos"] = jax.random.normal(k_pos, (num_steps, cfg.d_model))
  return params


def _apply_encoder(params: dict, x_BxTxD: jax.Array, cfg, causal: bool, train: bool,
                   rng: jax.Array | None) -> jax.Array:
  """Adds positions, runs the blocks and the final layer norm; h_BxTxD."""
  num_steps = x_BxTxD.shape[1]
  if cfg.pos_embedding == "learned":
    x_BxTxD = x_BxTxD + params["pos"]
  else:
    x_BxTxD = x_BxTxD + sinusoidal_positions(num_steps, cfg.d_model, x_BxTxD.dtype)
  rngs = lstm.dropout_keys(rng, cfg.num_layers + 1, cfg.dropout, train)
  x_BxTxD = layers.dropout(rngs[0], x_BxTxD, cfg.dropout, train)
  for block, block_rng in zip(params["blocks"], rngs[1:]):
    x_BxTxD = transformer_block(block, x_BxTxD, num_heads=cfg.num_heads, causal=causal,
                                activation=cfg.activation, dropout=cfg.dropout, train=train,
                                rng=block_rng)
  return layers.layer_norm(params["ln_final"], x_BxTxD)


def input_projection(cfg, num_features: int) -> bool:
  """config.model.input_projection (True when absent), checked against the token width."""
  projection = cfg.get("input_projection", True)
  if not isinstance(projection, bool):
    raise errors.ConfigError(
        f"config.model.input_projection={projection!r} must be True or False")
  if not projection and num_features != cfg.d_model:
    raise errors.ConfigError(
        f"config.model.input_projection=False feeds the {num_features}-wide tokens (features x "
        f"patch_size) straight to the encoder, which needs d_model={cfg.d_model}; set "
        "input_projection=True or make the widths equal")
  return projection


@core.register("transformer_classifier")
def _build_classifier(cfg, input_shape, num_outputs) -> core.Model:
  """(T, F) sequence or (H, W, C) image rows -> tokens of patch_size consecutive steps ->
  dense (patch_size * F) -> d_model -> encoder -> mean over tokens -> dense -> logits_BxK.

  patch_size > 1 is the ViT idea in 1-D: a token holding one scalar (MNIST-1D) gives
  attention little to compare, and T / patch_size tokens cost (patch_size)^2 less attention.
  With input_projection=False the tokens enter the encoder as they are (no "input" params):
  for inputs that already are d_model-wide embeddings, as in the peer benchmark's block.
  """
  steps, features = lstm.sequence_shape(cfg.name, input_shape)
  _check_encoder_config(cfg)
  if steps % cfg.patch_size:
    raise errors.ConfigError(
        f"config.model.patch_size={cfg.patch_size} must divide the sequence length {steps}; "
        "pick a divisor")
  num_steps, num_features = steps // cfg.patch_size, features * cfg.patch_size
  projection = input_projection(cfg, num_features)

  def init(key):
    k_in, k_enc, k_head = jax.random.split(key, 3)
    params = {"encoder": _init_encoder(k_enc, cfg, num_steps),
              "head": layers.init_dense(k_head, cfg.d_model, num_outputs)}
    if projection:
      params["input"] = layers.init_dense(k_in, num_features, cfg.d_model)
    return params

  def apply(params, x, *, train=False, rng=None):
    x_BxTxF = x.reshape(x.shape[0], num_steps, num_features)
    if projection:
      x_BxTxF = layers.dense(params["input"], x_BxTxF)
    h_BxTxD = _apply_encoder(params["encoder"], x_BxTxF, cfg,
                             causal=False, train=train, rng=rng)
    return layers.dense(params["head"], h_BxTxD.mean(axis=1))

  return core.Model(init, apply)


@core.register("char_transformer")
def _build_char_transformer(cfg, input_shape, num_outputs) -> core.Model:
  """Causal language model: ids_BxT -> embedding + positions -> causal blocks -> dense ->
  logits_BxTxV, V = num_outputs. logits[:, t] depends on ids[:, :t+1] only."""
  if len(input_shape) != 1:
    raise errors.ConfigError(
        f"config.model.name='char_transformer' reads (T,) sequences of character ids, but the "
        f"data has examples of shape {tuple(input_shape)}; use a text data set "
        "(config.data.name='text')")
  _check_encoder_config(cfg)
  (num_steps,) = input_shape

  def init(key):
    k_embed, k_enc, k_head = jax.random.split(key, 3)
    return {"embed": layers.init_embedding(k_embed, num_outputs, cfg.d_model),
            "encoder": _init_encoder(k_enc, cfg, num_steps),
            "head": layers.init_dense(k_head, cfg.d_model, num_outputs)}

  def apply(params, ids_BxT, *, train=False, rng=None):
    # sqrt(D) turns the table's unit-norm rows into unit-variance components, the scale of
    # the positions (Vaswani et al., 2017, Sec. 3.4).
    x_BxTxD = layers.embed(params["embed"], ids_BxT) * math.sqrt(cfg.d_model)
    h_BxTxD = _apply_encoder(params["encoder"], x_BxTxD, cfg, causal=True, train=train, rng=rng)
    return layers.dense(params["head"], h_BxTxD)

  return core.Model(init, apply)
