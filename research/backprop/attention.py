"""Backpropagation through the transformer models (research/models/attention.py), by hand.

Attention, per head with d_k = D / heads and the softmax P = softmax(S), S = Q K^T / sqrt(d_k):

  dE/dV = P^T dE/dY,  dE/dP = dE/dY V^T,  dE/dS = P * (dE/dP - sum_s dE/dP * P)  (the softmax's
  Jacobian P_t (1[s=s'] - P_s') applied row by row), zero where the mask removed a key;
  dE/dQ = dE/dS K / sqrt(d_k),  dE/dK = dE/dS^T Q / sqrt(d_k).

A pre-LN block is x + MHA(LN(x)), then x + MLP(LN(x)): the residual paths pass dE/dy straight
through. Layer norm, embeddings, dense and dropout are backprop/layers.py's primitives; the
cost is its value_and_grad_from.
"""
import math

import jax
import jax.numpy as jnp

from research import errors
from research import losses
from research.backprop import core
from research.backprop import layers as backprop_layers
from research.models import attention
from research.models import layers
from research.models import lstm


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


def attention_backward(params: dict, cache: dict, dy_BxTxD: jax.Array) -> tuple[jax.Array, dict]:
  """(dE/dx_BxTxD, {wq, bq, wk, bk, wv, bv, wo, bo}) from dE/dy through the softmax."""
  x_BxTxD, p_BxNxTxS = cache["x"], cache["p"]
  batch, num_steps, num_heads, d_k = cache["q"].shape
  grads = {}
  dheads_BxTxD, g_o = backprop_layers.dense_backward({"w": params["wo"]}, cache["heads"], dy_BxTxD)
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
    dx, g = backprop_layers.dense_backward({"w": params[f"w{name}"]}, x_BxTxD,
                                           d[name].reshape(batch, num_steps, num_heads * d_k))
    grads[f"w{name}"], grads[f"b{name}"] = g["w"], g["b"]
    dx_BxTxD = dx_BxTxD + dx
  return dx_BxTxD, grads


# ------------------------------------------------------------------------- transformer block


def transformer_block_forward(params: dict, x_BxTxD: jax.Array, *, num_heads: int,
                              causal: bool = False, activation: str = "gelu",
                              dropout: float = 0.0, rng: jax.Array | None = None) -> tuple:
  """attention.transformer_block with train=True (dropout when rng is given and dropout > 0)."""
  errors.check_choice("model.activation", activation, sorted(backprop_layers.PRIMES_OF_SUM))
  rng_attn, rng_mlp = lstm.dropout_keys(rng, 2, dropout, rng is not None)
  cache = {}
  a, cache["ln1"] = backprop_layers.layer_norm_forward(params["ln1"], x_BxTxD)
  y, cache["attn"] = attention_forward(params["attn"], a, num_heads, causal=causal)
  y, cache["keep_attn"] = backprop_layers.dropout_forward(rng_attn, y, dropout)
  x_BxTxD = x_BxTxD + y
  mlp = params["mlp"]
  u, cache["ln2"] = backprop_layers.layer_norm_forward(params["ln2"], x_BxTxD)
  sum1_BxTxM = layers.dense(mlp["fc1"], u)
  sigma1_BxTxM = attention.ACTIVATIONS[activation](sum1_BxTxM)
  y = layers.dense(mlp["fc2"], sigma1_BxTxM)
  y, cache["keep_mlp"] = backprop_layers.dropout_forward(rng_mlp, y, dropout)
  cache.update(u=u, sum1=sum1_BxTxM, sigma1=sigma1_BxTxM)
  return x_BxTxD + y, cache


def transformer_block_backward(params: dict, cache: dict, dy_BxTxD: jax.Array, *,
                               activation: str = "gelu",
                               dropout: float = 0.0) -> tuple[jax.Array, dict]:
  """(dE/dx, dE/dparams) of one pre-LN block; the residual paths pass dE/dy straight through."""
  mlp = params["mlp"]
  dx_BxTxD = dy_BxTxD  # the residual x + MLP(LN(x))
  dy = backprop_layers.dropout_backward(cache["keep_mlp"], dy_BxTxD, dropout)
  dsigma1, g_fc2 = backprop_layers.dense_backward(mlp["fc2"], cache["sigma1"], dy)
  delta1_BxTxM = dsigma1 * backprop_layers.PRIMES_OF_SUM[activation](cache["sum1"])
  du, g_fc1 = backprop_layers.dense_backward(mlp["fc1"], cache["u"], delta1_BxTxM)
  dx, g_ln2 = backprop_layers.layer_norm_backward(params["ln2"], cache["ln2"], du)
  dx_BxTxD = dx_BxTxD + dx
  # the residual x + MHA(LN(x))
  dy = backprop_layers.dropout_backward(cache["keep_attn"], dx_BxTxD, dropout)
  da, g_attn = attention_backward(params["attn"], cache["attn"], dy)
  dx, g_ln1 = backprop_layers.layer_norm_backward(params["ln1"], cache["ln1"], da)
  grads = {"ln1": g_ln1, "attn": g_attn, "ln2": g_ln2, "mlp": {"fc1": g_fc1, "fc2": g_fc2}}
  return dx_BxTxD + dx, grads


def _encoder_forward(params: dict, x_BxTxD: jax.Array, cfg, causal: bool,
                     rng: jax.Array | None) -> tuple:
  """attention._apply_encoder with train=True: positions, dropout, blocks, final layer norm."""
  num_steps = x_BxTxD.shape[1]
  if cfg.pos_embedding == "learned":
    x_BxTxD = x_BxTxD + params["pos"]
  else:
    x_BxTxD = x_BxTxD + attention.sinusoidal_positions(num_steps, cfg.d_model, x_BxTxD.dtype)
  rngs = lstm.dropout_keys(rng, cfg.num_layers + 1, cfg.dropout, True)
  x_BxTxD, keep = backprop_layers.dropout_forward(rngs[0], x_BxTxD, cfg.dropout)
  blocks = []
  for block, block_rng in zip(params["blocks"], rngs[1:]):
    x_BxTxD, cache = transformer_block_forward(
        block, x_BxTxD, num_heads=cfg.num_heads, causal=causal, activation=cfg.activation,
        dropout=cfg.dropout, rng=block_rng)
    blocks.append(cache)
  h_BxTxD, ln_cache = backprop_layers.layer_norm_forward(params["ln_final"], x_BxTxD)
  return h_BxTxD, {"keep": keep, "blocks": blocks, "ln_final": ln_cache}


def _encoder_backward(params: dict, cache: dict, dh_BxTxD: jax.Array,
                      cfg) -> tuple[jax.Array, dict]:
  grads = {}
  dx_BxTxD, grads["ln_final"] = backprop_layers.layer_norm_backward(
      params["ln_final"], cache["ln_final"], dh_BxTxD)
  grads["blocks"] = [None] * len(params["blocks"])
  for l in range(len(params["blocks"]) - 1, -1, -1):
    dx_BxTxD, grads["blocks"][l] = transformer_block_backward(
        params["blocks"][l], cache["blocks"][l], dx_BxTxD, activation=cfg.activation,
        dropout=cfg.dropout)
  dx_BxTxD = backprop_layers.dropout_backward(cache["keep"], dx_BxTxD, cfg.dropout)
  if cfg.pos_embedding == "learned":
    grads["pos"] = dx_BxTxD.sum(axis=0)  # one table shared by every example
  return dx_BxTxD, grads


# ------------------------------------------------------------------------------------ models


def make_transformer_classifier_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                               output: str = "softmax", lam: float = 0.0,
                                               m: int = 1, lam1: float = 0.0):
  """Hand-written value_and_grad for "transformer_classifier" (every patch size, positions,
  activation, depth and dropout)."""
  core.check_model(model_cfg, "transformer_classifier", input_shape, num_outputs)
  backprop_layers.check_loss(output, lam, m, lam1)
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
    dh_BxD, g_head = backprop_layers.dense_backward(params["head"], cache["h"], delta_BxK)
    dh_BxTxD = jnp.broadcast_to(dh_BxD[:, None] / num_steps,
                                (dh_BxD.shape[0], num_steps, dh_BxD.shape[-1]))
    dx_BxTxD, g_encoder = _encoder_backward(params["encoder"], cache["encoder"], dh_BxTxD,
                                            model_cfg)
    grads = {"encoder": g_encoder, "head": g_head}
    if projection:
      _, grads["input"] = backprop_layers.dense_backward(params["input"], cache["x"], dx_BxTxD)
    return grads

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


def make_char_transformer_value_and_grad(model_cfg, input_shape, num_outputs: int,
                                         output: str = "softmax", lam: float = 0.0,
                                         m: int = 1, lam1: float = 0.0):
  """Hand-written value_and_grad for "char_transformer" (causal): ids_BxT -> logits_BxTxV."""
  core.check_model(model_cfg, "char_transformer", input_shape, num_outputs)
  backprop_layers.check_loss(output, lam, m, lam1)
  scale = math.sqrt(model_cfg.d_model)

  def forward(params, ids_BxT, rng):
    x_BxTxD = layers.embed(params["embed"], ids_BxT) * scale
    h_BxTxD, encoder = _encoder_forward(params["encoder"], x_BxTxD, model_cfg, True, rng)
    return layers.dense(params["head"], h_BxTxD), {"ids": ids_BxT, "encoder": encoder,
                                                   "h": h_BxTxD}

  def backward(params, cache, delta_BxTxV):
    dh_BxTxD, g_head = backprop_layers.dense_backward(params["head"], cache["h"], delta_BxTxV)
    dx_BxTxD, g_encoder = _encoder_backward(params["encoder"], cache["encoder"], dh_BxTxD,
                                            model_cfg)
    g_embed = backprop_layers.embed_backward(params["embed"], cache["ids"], dx_BxTxD * scale)
    return {"embed": g_embed, "encoder": g_encoder, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


def make_transformer_block_value_and_grad(num_heads: int, num_outputs: int, *,
                                          causal: bool = False, activation: str = "gelu",
                                          dropout: float = 0.0, output: str = "softmax",
                                          lam: float = 0.0, m: int = 1, lam1: float = 0.0):
  """One pre-LN block with a dense head on every token, params {"block", "head"}:
  x_BxTxD -> transformer_block -> dense -> logits_BxTxK, labels_BxT, losses.make_loss_fn's E."""
  errors.check_choice("model.activation", activation, sorted(backprop_layers.PRIMES_OF_SUM))
  backprop_layers.check_loss(output, lam, m, lam1)

  def forward(params, x_BxTxD, rng):
    h_BxTxD, block = transformer_block_forward(
        params["block"], x_BxTxD, num_heads=num_heads, causal=causal, activation=activation,
        dropout=dropout, rng=rng)
    return layers.dense(params["head"], h_BxTxD), {"block": block, "h": h_BxTxD}

  def backward(params, cache, delta_BxTxK):
    dh_BxTxD, g_head = backprop_layers.dense_backward(params["head"], cache["h"], delta_BxTxK)
    _, g_block = transformer_block_backward(params["block"], cache["block"], dh_BxTxD,
                                            activation=activation, dropout=dropout)
    return {"block": g_block, "head": g_head}

  return backprop_layers.value_and_grad_from(forward, backward, num_outputs, output, lam, m, lam1)


core.register_manual("transformer_classifier")(make_transformer_classifier_value_and_grad)
core.register_manual("char_transformer")(make_char_transformer_value_and_grad)


# ------------------------------------------------------------------------ gradient checks


@core.register_problem("transformer_classifier")
def problem_transformer_classifier(key: jax.Array, batch: int, dtype, *,
                                   pos_embedding: str = "learned", activation: str = "gelu"):
  """transformer_classifier on (T, F) = (8, 3), patches of 2, D = 8, 2 heads, 2 blocks, K = 5."""
  cfg = {"name": "transformer_classifier", "patch_size": 2, "d_model": 8, "num_heads": 2,
         "num_layers": 2, "mlp_dim": 16, "activation": activation,
         "pos_embedding": pos_embedding, "dropout": 0.0}
  return core.sequence_problem(key, batch, dtype, cfg, (8, 3), 5, (), lambda x: x,
                  f"transformer_classifier (T, F) = (8, 3), patch 2, D=8, 2 heads, 2 blocks, "
                  f"MLP 16 {activation}, {pos_embedding} positions, K=5")


@core.register_problem("char_transformer")
def problem_char_transformer(key: jax.Array, batch: int, dtype):
  """char_transformer (causal) on T = 6 ids from V = 7, D = 8, 2 heads, 1 block."""
  cfg = {"name": "char_transformer", "d_model": 8, "num_heads": 2, "num_layers": 1,
         "mlp_dim": 16, "activation": "gelu", "pos_embedding": "learned", "dropout": 0.0}
  return core.sequence_problem(key, batch, dtype, cfg, (6,), 7, (6,), core.char_ids(7),
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
