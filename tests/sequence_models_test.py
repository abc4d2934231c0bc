"""LSTM and attention: values against NumPy references, time structure, model shapes, errors."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import test_util as jtu

from research import errors
from research import models
from research.models import attention
from research.models import layers
from research.models import lstm

B, T, I, H = 2, 5, 3, 4


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _np_lstm_step(p, h, c, x):
  """The LSTM equations written out gate by gate, in float64 NumPy."""
  w_ih, w_hh, b = (np.asarray(p[k], np.float64) for k in ("w_ih", "w_hh", "b"))
  n = h.shape[-1]

  def gate(j):  # Columns j*H .. (j+1)*H of the fused matrices: gate j in (i, f, g, o).
    cols = slice(j * n, (j + 1) * n)
    return x @ w_ih[:, cols] + h @ w_hh[:, cols] + b[cols]

  i, f, g, o = _sigmoid(gate(0)), _sigmoid(gate(1)), np.tanh(gate(2)), _sigmoid(gate(3))
  c = f * c + i * g
  return o * np.tanh(c), c


def _random_lstm_params(key, input_size=I, hidden_size=H):
  """Init, then a random bias too, so every term of the step is exercised."""
  params = lstm.init_lstm(key, input_size, hidden_size)
  params["b"] = jax.random.normal(jax.random.fold_in(key, 1), params["b"].shape)
  return params


@pytest.fixture(scope="module")
def seq():
  return jax.random.normal(jax.random.key(0), (B, T, I))


def test_init_shapes_forget_bias_and_orthogonal_recurrence():
  p = lstm.init_lstm(jax.random.key(1), I, H)
  assert p["w_ih"].shape == (I, 4 * H) and p["w_hh"].shape == (H, 4 * H) and p["b"].shape == (
      4 * H,)
  np.testing.assert_array_equal(p["b"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
  for j in range(4):
    block = np.asarray(p["w_hh"][:, j * H:(j + 1) * H])
    np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
  assert layers.param_count(p) == 4 * H * (I + H + 1)


def test_lstm_cell_matches_numpy_reference():
  key = jax.random.key(2)
  p = _random_lstm_params(key)
  k_x, k_h, k_c = jax.random.split(key, 3)
  x, h, c = (jax.random.normal(k_x, (B, I)), jax.random.normal(k_h, (B, H)),
             jax.random.normal(k_c, (B, H)))
  (h_new, c_new), out = lstm.lstm_cell(p, (h, c), x)
  h_ref, c_ref = _np_lstm_step(p, *(np.asarray(v, np.float64) for v in (h, c, x)))
  np.testing.assert_allclose(h_new, h_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_new, c_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out, h_new)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_equals_python_loop_of_cells(seq, reverse):
  p = _random_lstm_params(jax.random.key(3))
  carry = lstm.zero_carry(p, B)
  expected = [None] * T
  for t in (reversed(range(T)) if reverse else range(T)):
    carry, expected[t] = lstm.lstm_cell(p, carry, seq[:, t])
  got = lstm.lstm(p, seq, reverse=reverse)
  assert got.shape == (B, T, H)
  np.testing.assert_allclose(got, jnp.stack(expected, axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_last_is_the_last_output_in_reading_order(seq, reverse):
  p = _random_lstm_params(jax.random.key(3))
  want = lstm.lstm(p, seq, reverse=reverse)[:, 0 if reverse else -1]
  np.testing.assert_allclose(lstm.lstm_last(p, seq, reverse=reverse), want, rtol=1e-6)


def test_bilstm_halves_and_direction_of_dependence(seq):
  p = lstm.init_bilstm(jax.random.key(4), I, H)
  h = lstm.bilstm(p, seq)
  assert h.shape == (B, T, 2 * H)
  np.testing.assert_allclose(h[..., :H], lstm.lstm(p["fwd"], seq), rtol=1e-6)
  # The reverse half is a forward LSTM run on the time-flipped sequence, flipped back.
  np.testing.assert_allclose(h[..., H:], lstm.lstm(p["bwd"], seq[:, ::-1])[:, ::-1],
                             rtol=1e-5, atol=1e-6)
  # |d h_t / d x_s| summed over batches and units: a (T, T) matrix indexed [t, s].
  jac = np.abs(np.asarray(jax.jacobian(lambda x: lstm.bilstm(p, x))(seq)))  # (B,T,2H,B,T,I)
  fwd = jac[:, :, :H].sum(axis=(0, 2, 3, 5))
  bwd = jac[:, :, H:].sum(axis=(0, 2, 3, 5))
  past = np.tril(np.ones((T, T), bool))  # s <= t
  future = past.T  # s >= t
  assert np.all(fwd[~past] == 0) and np.all(fwd[past] > 0)  # forward h_t sees x_{<=t}
  assert np.all(bwd[~future] == 0) and np.all(bwd[future] > 0)  # reverse h_t sees x_{>=t}


@pytest.mark.slow
def test_backprop_through_time_matches_finite_differences():
  with jax.enable_x64(True):
    key = jax.random.key(5)
    p = jax.tree.map(lambda a: a.astype(jnp.float64), _random_lstm_params(key, 2, 3))
    x = jax.random.normal(key, (2, 4, 2), jnp.float64)
    f = lambda p, x: jnp.sum(lstm.lstm(p, x) ** 2)
    jtu.check_grads(f, (p, x), order=1, modes=["rev"])  # Raises AssertionError on a mismatch.
    # Spelled out along one random direction d of the params: <grad, d> = central difference.
    d = jax.tree.map(lambda a: jax.random.normal(jax.random.key(1), a.shape, a.dtype), p)
    shifted = lambda eps: f(jax.tree.map(lambda a, b: a + eps * b, p, d), x)
    finite = (shifted(1e-6) - shifted(-1e-6)) / 2e-6
    g = jax.grad(f)(p, x)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
    np.testing.assert_allclose(float(analytic), float(finite), rtol=1e-6)


# -------------------------------------------------------------------------------- attention

D, NH = 4, 2


def _np_attention(p, x, num_heads, allowed=None):
  """softmax(Q K^T / sqrt(d_k)) V per head, head by head in float64 NumPy."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  q, k, v = (x @ p[f"w{n}"] + p[f"b{n}"] for n in "qkv")
  d_k = x.shape[-1] // num_heads
  heads = []
  for n in range(num_heads):
    sl = slice(n * d_k, (n + 1) * d_k)
    logits = q[..., sl] @ np.swapaxes(k[..., sl], -1, -2) / math.sqrt(d_k)  # (B, T, T)
    if allowed is not None:
      logits = np.where(allowed, logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    heads.append((w / w.sum(-1, keepdims=True)) @ v[..., sl])
  return np.concatenate(heads, -1) @ p["wo"] + p["bo"]


@pytest.fixture(scope="module")
def mha_params():
  p = attention.init_multi_head_attention(jax.random.key(6), D)
  # Nonzero biases so the reference checks them too.
  return {k: v + 0.1 * (i + 1) if k.startswith("b") else v for i, (k, v) in enumerate(p.items())}


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_numpy_reference(mha_params, causal):
  x = np.asarray(jax.random.normal(jax.random.key(7), (B, 3, D)), np.float64)
  got = attention.multi_head_attention(mha_params, jnp.asarray(x, jnp.float32), NH, causal=causal)
  allowed = np.tril(np.ones((3, 3), bool)) if causal else None
  np.testing.assert_allclose(got, _np_attention(mha_params, x, NH, allowed), rtol=1e-5, atol=1e-5)


def test_padding_mask_hides_masked_keys(mha_params):
  x = jax.random.normal(jax.random.key(8), (B, 4, D))
  mask = jnp.array([True, True, True, False])[None, None, None, :]  # key 3 is padding
  f = lambda x: attention.multi_head_attention(mha_params, x, NH, mask=mask)
  y = f(x)
  x_other = x.at[:, 3].set(100.0)
  np.testing.assert_allclose(f(x_other)[:, :3], y[:, :3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      y, _np_attention(mha_params, np.asarray(x, np.float64), NH, np.asarray(mask[0, 0])),
      rtol=1e-5, atol=1e-5)


def test_causal_output_never_depends_on_the_future(mha_params):
  x = jax.random.normal(jax.random.key(9), (1, 5, D))
  jac = jax.jacobian(lambda x: attention.multi_head_attention(mha_params, x, NH, causal=True))(x)
  dep = np.abs(np.asarray(jac[0, :, :, 0])).sum(axis=(1, 3))  # [t, s]
  past = np.tril(np.ones((5, 5), bool))
  assert np.all(dep[~past] == 0) and np.all(dep[past] > 0)


def test_num_heads_must_divide_d_model(mha_params):
  with pytest.raises(errors.ConfigError, match="num_heads=3"):
    attention.multi_head_attention(mha_params, jnp.zeros((1, 2, D)), 3)


def test_sinusoidal_positions_formula():
  pe = np.asarray(attention.sinusoidal_positions(7, 6))
  t, i = 5, 2
  np.testing.assert_allclose(pe[t, 2 * i], math.sin(t / 10000 ** (2 * i / 6)), rtol=1e-5)
  np.testing.assert_allclose(pe[t, 2 * i + 1], math.cos(t / 10000 ** (2 * i / 6)), rtol=1e-5)
  assert attention.sinusoidal_positions(3, 5).shape == (3, 5)  # odd D drops the last cosine


def test_transformer_block_params_and_dropout():
  p = attention.init_transformer_block(jax.random.key(10), D, 8)
  assert layers.param_count(p) == 4 * (D * D + D) + 2 * 2 * D + (D * 8 + 8) + (8 * D + D)
  x = jax.random.normal(jax.random.key(11), (B, 3, D))
  block = lambda **kw: attention.transformer_block(p, x, num_heads=NH, dropout=0.5, **kw)
  np.testing.assert_array_equal(block(), block(train=False, rng=jax.random.key(0)))
  a, b = block(train=True, rng=jax.random.key(0)), block(train=True, rng=jax.random.key(1))
  assert a.shape == (B, 3, D) and not np.allclose(a, b)


# ----------------------------------------------------------------------------------- models


def _cfg(**fields):
  return ml_collections.ConfigDict(fields)


LSTM_CLS = dict(name="lstm_classifier", hidden_size=H, num_layers=2, bidirectional=False,
                readout="last", dropout=0.0)
TRANSFORMER = dict(d_model=8, num_heads=2, num_layers=2, mlp_dim=16, activation="gelu",
                   pos_embedding="learned", dropout=0.0)


def _abstract_init_and_apply(cfg, input_shape, k, x):
  """Params and logits as shapes only (jax.eval_shape traces, never compiles or runs)."""
  model = models.build(cfg, input_shape, k)
  params = jax.eval_shape(model.init, jax.random.key(0))
  return params, jax.eval_shape(model.apply, params, x)


@pytest.mark.parametrize("bidirectional,readout,input_shape", [
    (False, "last", (T, I)), (True, "last", (6, 2, 1)), (True, "mean", (T, I)),
    (False, "all", (T, I))])
def test_lstm_classifier_shapes_and_param_count(bidirectional, readout, input_shape):
  cfg = _cfg(**dict(LSTM_CLS, bidirectional=bidirectional, readout=readout))
  x = jnp.ones((B, *input_shape))
  params, logits = _abstract_init_and_apply(cfg, input_shape, 10, x)
  assert logits.shape == (B, 10)
  steps, feats = input_shape[0], math.prod(input_shape[1:])
  dirs = 2 if bidirectional else 1
  head_in = dirs * H * (steps if readout == "all" else 1)
  expected = dirs * (4 * H * (feats + H + 1) + 4 * H * (dirs * H + H + 1)) + head_in * 10 + 10
  assert layers.param_count(params) == expected


def test_lstm_classifier_last_readout_uses_final_state(seq):
  """Logits from "last" change with x_T but a unidirectional model's never see beyond it."""
  cfg = _cfg(**dict(LSTM_CLS, num_layers=1))
  model = models.build(cfg, (T, I), 3)
  params = model.init(jax.random.key(0))
  h_T = lstm.lstm(params["lstm"][0], seq)[:, -1]
  np.testing.assert_allclose(model.apply(params, seq),
                             h_T @ params["head"]["w"] + params["head"]["b"], rtol=1e-6)


@pytest.mark.slow
def test_char_models_logits_shape_and_causality():
  ids = jax.random.randint(jax.random.key(12), (B, 6), 0, 11)
  changed = ids.at[:, 4:].set((ids[:, 4:] + 1) % 11)
  for cfg in (_cfg(name="char_lstm", embed_dim=5, hidden_size=H, num_layers=2, dropout=0.1),
              _cfg(name="char_transformer", **dict(TRANSFORMER, dropout=0.1))):
    model = models.build(cfg, (6,), 11)
    params = model.init(jax.random.key(0))
    apply = jax.jit(model.apply, static_argnames="train")
    logits = apply(params, ids)
    assert logits.shape == (B, 6, 11)
    other = apply(params, changed)
    np.testing.assert_allclose(other[:, :4], logits[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(other[:, 4:], logits[:, 4:])
    train_logits = apply(params, ids, train=True, rng=jax.random.key(1))
    assert not np.allclose(train_logits, logits)  # dropout is on in training


@pytest.mark.parametrize("pos_embedding,patch_size", [("learned", 1), ("sinusoidal", 2)])
def test_transformer_classifier_shapes_and_param_count(pos_embedding, patch_size):
  cfg = _cfg(name="transformer_classifier", patch_size=patch_size,
             **dict(TRANSFORMER, pos_embedding=pos_embedding))
  params, logits = _abstract_init_and_apply(cfg, (6, 3, 1), 10, jnp.ones((B, 6, 3, 1)))
  assert logits.shape == (B, 10)
  d, m = 8, 16
  tokens, token_features = 6 // patch_size, 3 * patch_size
  block = 4 * (d * d + d) + 4 * d + (d * m + m) + (m * d + d)
  pos = tokens * d if pos_embedding == "learned" else 0
  assert layers.param_count(params) == (
      (token_features * d + d) + 2 * block + 2 * d + pos + (d * 10 + 10))


def test_transformer_patches_are_consecutive_steps():
  """patch_size=2 on (4, 1) equals patch_size=1 on the same signal laid out as (2, 2)."""
  cfg = lambda p: _cfg(name="transformer_classifier", patch_size=p, **TRANSFORMER)
  x = jax.random.normal(jax.random.key(13), (B, 4, 1))
  patched = models.build(cfg(2), (4, 1), 3)
  params = patched.init(jax.random.key(0))
  np.testing.assert_allclose(patched.apply(params, x),
                             models.build(cfg(1), (2, 2), 3).apply(params, x.reshape(B, 2, 2)),
                             rtol=1e-6)


@pytest.mark.parametrize("cfg,input_shape,match", [
    (dict(LSTM_CLS), (40,), "data.shape='sequence'"),
    (dict(LSTM_CLS, readout="first"), (T, I), "model.readout"),
    (dict(LSTM_CLS, hidden_size=0), (T, I), "model.hidden_size"),
    (dict(LSTM_CLS, dropout=1.0), (T, I), "model.dropout"),
    (dict(name="char_lstm", embed_dim=4, hidden_size=4, num_layers=1, dropout=0.0), (T, I),
     "data.name='text'"),
    (dict(name="transformer_classifier", patch_size=1, **dict(TRANSFORMER, num_heads=3)),
     (T, I), "num_heads=3"),
    (dict(name="transformer_classifier", patch_size=2, **TRANSFORMER), (T, I), "patch_size=2"),
    (dict(name="char_transformer", **dict(TRANSFORMER, pos_embedding="rope")), (T,),
     "pos_embedding"),
])
def test_bad_configs_raise_config_error(cfg, input_shape, match):
  with pytest.raises(errors.ConfigError, match=match):
    models.build(_cfg(**cfg), input_shape, 10)


def test_sinusoidal_positions_are_computed_in_the_models_dtype():
  t, i = np.arange(50)[:, None], np.arange(0, 16, 2)
  angles = t / 10000.0 ** (i / 16)
  want = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(50, 16)
  with jax.enable_x64(True):
    got = attention.sinusoidal_positions(50, 16, jnp.float64)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-13)
  assert attention.sinusoidal_positions(50, 16, jnp.bfloat16).dtype == jnp.bfloat16
