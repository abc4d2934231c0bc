"""Hand-written backprop through sequence models agrees with autodiff (backprop/lstm.py,
backprop/attention.py, and the layer norm and embedding of backprop/layers.py).

The references are independent of the code under test: jax.vjp of each block's forward pass in
research/models (lstm.lstm, lstm.bilstm, attention.multi_head_attention, layers.layer_norm,
layers.embed, attention.transformer_block) and jax.value_and_grad of losses.make_loss_fn for the
whole models. Float64 (x64 scoped to each test) within 1e-10, float32 within 1e-4.
"""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from research import backprop
from research import errors
from research import kernel
from research import losses
from research import models
from research.backprop import attention as backprop_attention
from research.backprop import layers as backprop_layers
from research.backprop import lstm as backprop_lstm
from research.models import attention
from research.models import layers
from research.models import lstm

TOL = {"float64": 1e-10, "float32": 1e-4}
B, T, I, H, D = 3, 5, 4, 6, 8
ZERO = 1e-8  # a leaf whose reference norm is below ZERO * ||whole gradient|| is exactly 0


# Every array comes from one jitted draw of normals, so jax.random compiles once per module.
@jax.jit
def _pool(key):
  return jax.random.normal(key, (20_000,), jnp.float64)


def _normals(seed, shapes, dtype="float64"):
  """numpy N(0, 1) arrays of the given shapes (a pytree of tuples), cast to dtype."""
  with jax.enable_x64(True):
    z = np.asarray(_pool(jax.random.key(seed)))
  is_shape = lambda s: isinstance(s, tuple) and all(isinstance(d, int) for d in s)
  leaves, treedef = jax.tree.flatten(shapes, is_leaf=is_shape)
  offsets = np.cumsum([0] + [math.prod(s) for s in leaves])
  assert offsets[-1] <= z.size
  return jax.tree.unflatten(treedef, [z[a:b].reshape(s).astype(dtype)
                                      for a, b, s in zip(offsets, offsets[1:], leaves)])


def _random_params(seed, init_fn, dtype="float64"):
  """Params shaped like init_fn(key)'s: w ~ N(0, 1/fan_in), everything else 0.1 N(0, 1) (layer
  norm gains 1 + 0.1 N(0, 1)), so that no bias, gain or table entry sits at 0 or 1."""
  shapes = jax.tree.map(lambda s: tuple(s.shape), jax.eval_shape(init_fn, jax.random.key(0)))
  z = _normals(seed, shapes, dtype)

  def scale(path, a):
    name = path[-1].key if isinstance(path[-1], jax.tree_util.DictKey) else ""
    if a.ndim == 2 and name != "pos":
      return a / np.sqrt(a.shape[0]).astype(dtype)
    return (1 + 0.1 * a) if name == "scale" else 0.1 * a

  return jax.tree_util.tree_map_with_path(scale, z)


def _assert_close(got, want, dtype):
  """Per leaf ||got - want|| / ||want|| <= TOL; a leaf whose true gradient is 0 (attention's
  key bias) holds only rounding noise, which is measured against the whole gradient."""
  got = [np.asarray(g, np.float64) for g in jax.tree.leaves(got)]
  want_leaves, want_tree = jax.tree.flatten(want)
  assert len(got) == len(want_leaves)
  want = [np.asarray(w, np.float64) for w in want_leaves]
  norm_all = np.sqrt(sum(np.sum(w ** 2) for w in want))
  for path, g, w in zip(jax.tree_util.tree_flatten_with_path(want_tree.unflatten(want))[0],
                        got, want):
    assert g.shape == w.shape, path
    norm_w = np.linalg.norm(w)
    denom = norm_w if norm_w > ZERO * norm_all else norm_all
    err = np.linalg.norm(g - w) / denom
    assert err <= TOL[dtype], (jax.tree_util.keystr(path[0]), err)


# ------------------------------------------------------------------------------------ blocks


def _vjp_order(dx_and_grads):
  """A backward primitive's (dE/dx, grads) in jax.vjp's order, (grads, dE/dx)."""
  return dx_and_grads[1], dx_and_grads[0]


@functools.partial(jax.jit, static_argnums=3)
def _lstm_grads(params, x, dh, reverse):
  h, cache = backprop_lstm.lstm_forward(params, x, reverse)
  manual = _vjp_order(backprop_lstm.lstm_backward(params, cache, dh, reverse))
  h_ref, vjp = jax.vjp(lambda p, x: lstm.lstm(p, x, reverse), params, x)
  return h, h_ref, manual, vjp(dh)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_backprop_through_time_matches_vjp(reverse):
  with jax.enable_x64(True):
    params = _random_params(0, lambda k: lstm.init_lstm(k, I, H))
    x, dh = _normals(1, ((B, T, I), (B, T, H)))
    h, h_ref, manual, reference = _lstm_grads(params, x, dh, reverse)
  np.testing.assert_allclose(h, h_ref, rtol=1e-13)
  assert sorted(manual[0]) == ["b", "w_hh", "w_ih"]
  _assert_close(manual, reference, "float64")


def test_lstm_backward_carries_the_gradient_back_through_time():
  """dE/dh at the last step alone reaches x_1 only through the recurrent dh, dc carry."""
  with jax.enable_x64(True):
    params = _random_params(2, lambda k: lstm.init_lstm(k, I, H))
    x, = _normals(3, ((B, T, I),))
    dh = np.zeros((B, T, H))
    dh[:, -1] = 1.0
    _, _, (_, dx), (_, dx_ref) = _lstm_grads(params, x, dh, False)
  assert np.abs(dx[:, 0]).min() > 0
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-15)


def test_bilstm_two_passes_match_vjp():
  @jax.jit
  def grads(params, x, dh):
    _, cache = backprop_lstm.bilstm_forward(params, x)
    return (_vjp_order(backprop_lstm.bilstm_backward(params, cache, dh)),
            jax.vjp(lstm.bilstm, params, x)[1](dh))

  with jax.enable_x64(True):
    params = _random_params(4, lambda k: lstm.init_bilstm(k, I, H))
    x, dh = _normals(5, ((B, T, I), (B, T, 2 * H)))
    manual, reference = grads(params, x, dh)
  _assert_close(manual, reference, "float64")


@functools.partial(jax.jit, static_argnums=(3, 4))
def _attention_grads(params, x, dy, num_heads, causal, mask=None):
  y, cache = backprop_attention.attention_forward(params, x, num_heads, causal, mask)
  manual = _vjp_order(backprop_attention.attention_backward(params, cache, dy))
  y_ref, vjp = jax.vjp(lambda p, x: attention.multi_head_attention(p, x, num_heads, causal, mask),
                       params, x)
  return y, y_ref, manual, vjp(dy)


@pytest.mark.parametrize("causal, padded", [(False, False), (True, False), (False, True)])
def test_attention_softmax_backward_matches_vjp(causal, padded):
  mask = None
  if padded:  # example b ignores its last b keys
    mask = (np.arange(T)[None, :] < T - np.arange(B)[:, None])[:, None, None, :]
  with jax.enable_x64(True):
    params = _random_params(6, lambda k: attention.init_multi_head_attention(k, D))
    x, dy = _normals(7, ((B, T, D), (B, T, D)))
    y, y_ref, manual, reference = _attention_grads(params, x, dy, 2, causal, mask)
  np.testing.assert_allclose(y, y_ref, rtol=1e-12)
  _assert_close(manual, reference, "float64")


def test_key_bias_gradient_is_zero():
  """b_k adds q_t . b_k to every logit of row t: the softmax, hence E, does not change."""
  with jax.enable_x64(True):
    params = _random_params(8, lambda k: attention.init_multi_head_attention(k, D))
    x, dy = _normals(9, ((B, T, D), (B, T, D)))
    _, _, (grads, _), _ = _attention_grads(params, x, dy, 4, True)
  assert np.abs(grads["bk"]).max() < 1e-14 * np.abs(grads["bq"]).max()


def test_layer_norm_backward_matches_vjp():
  @jax.jit
  def grads(params, x, dy):
    _, cache = backprop_layers.layer_norm_forward(params, x)
    return (_vjp_order(backprop_layers.layer_norm_backward(params, cache, dy)),
            jax.vjp(layers.layer_norm, params, x)[1](dy))

  with jax.enable_x64(True):
    params = _random_params(10, lambda k: layers.init_layer_norm(k, D))
    x, dy = _normals(11, ((B, T, D), (B, T, D)))
    manual, reference = grads(params, 3.0 * x + 1.0, dy)
  _assert_close(manual, reference, "float64")


def test_embedding_backward_is_a_scatter_add():
  ids = np.array([[0, 2, 2, 5], [5, 2, 0, 0]])  # row 2 used 3 times, rows 1, 3, 4 never
  with jax.enable_x64(True):
    params = _random_params(12, lambda k: layers.init_embedding(k, 6, D))
    dvec, = _normals(13, (ids.shape + (D,),))
    manual = jax.jit(backprop_layers.embed_backward)(params, ids, dvec)
    reference = jax.vjp(lambda p: layers.embed(p, ids), params)[1](dvec)[0]
  _assert_close(manual, reference, "float64")
  table = np.asarray(manual["table"])
  np.testing.assert_array_equal(table[[1, 3, 4]], 0.0)
  np.testing.assert_allclose(table[2], dvec[0, 1] + dvec[0, 2] + dvec[1, 1], rtol=1e-15)


@pytest.mark.parametrize("activation, causal, dropout", [("gelu", True, 0.25),
                                                         ("relu", False, 0.0)])
def test_transformer_block_backward_matches_vjp(activation, causal, dropout):
  rng = jax.random.key(14) if dropout else None

  @jax.jit
  def grads(params, x, dy):
    y, cache = backprop_attention.transformer_block_forward(
        params, x, num_heads=2, causal=causal, activation=activation, dropout=dropout, rng=rng)
    manual = _vjp_order(backprop_attention.transformer_block_backward(
        params, cache, dy, activation=activation, dropout=dropout))
    block = functools.partial(attention.transformer_block, num_heads=2, causal=causal,
                              activation=activation, dropout=dropout, train=True, rng=rng)
    y_ref, vjp = jax.vjp(block, params, x)
    return y, y_ref, manual, vjp(dy)

  with jax.enable_x64(True):
    params = _random_params(15, lambda k: attention.init_transformer_block(k, D, 16, activation))
    x, dy = _normals(16, ((B, T, D), (B, T, D)))
    y, y_ref, manual, reference = grads(params, x, dy)
  np.testing.assert_allclose(y, y_ref, rtol=1e-12)  # the same dropout masks
  _assert_close(manual, reference, "float64")


# ------------------------------------------------------------------------------------ models

LSTM = dict(name="lstm_classifier", hidden_size=H, num_layers=1, bidirectional=False,
            readout="last", dropout=0.0)
TRANSFORMER = dict(name="transformer_classifier", patch_size=2, d_model=D, num_heads=2,
                   num_layers=2, mlp_dim=16, activation="gelu", pos_embedding="learned",
                   dropout=0.0)
CHAR = dict(d_model=D, num_heads=2, num_layers=1, mlp_dim=16, activation="gelu",
            pos_embedding="learned", dropout=0.0)
SEQ_SHAPE, K, V = (T + 1, 3), 4, 7  # (T, F) inputs; classes; vocabulary
LAM, M = 0.5, 40

MODELS = {
    # name: (model config, output, lam1, dtypes, slow)
    "lstm_last": (LSTM, "softmax", 0.0, ("float64", "float32"), False),
    "lstm_bi_2_layers_mean_dropout": (
        dict(LSTM, num_layers=2, bidirectional=True, readout="mean", dropout=0.3),
        "softmax", 0.0, ("float64",), False),
    "transformer": (TRANSFORMER, "softmax", 0.0, ("float64", "float32"), False),
    "lstm_bi_last_sigmoid_l1": (dict(LSTM, bidirectional=True), "sigmoid", 0.2, ("float64",),
                                True),
    "lstm_all_dropout": (dict(LSTM, readout="all", dropout=0.2), "softmax", 0.0, ("float64",),
                         True),
    "char_lstm": (dict(name="char_lstm", embed_dim=5, hidden_size=H, num_layers=2, dropout=0.2),
                  "softmax", 0.0, ("float64",), True),
    "transformer_dropout_sinusoidal_relu": (
        dict(TRANSFORMER, dropout=0.2, pos_embedding="sinusoidal", activation="relu",
             num_layers=1, patch_size=3), "softmax", 0.1, ("float64",), True),
    "char_transformer_dropout": (dict(CHAR, name="char_transformer", dropout=0.2), "softmax",
                                 0.0, ("float64",), True),
}


def _inputs(name, cfg, dtype):
  """(params, x, labels): ids and per-step labels for the char models, (T, F) and labels_B else."""
  char = cfg["name"].startswith("char")
  input_shape, k = ((T,), V) if char else (SEQ_SHAPE, K)
  model = models.build(ml_collections.ConfigDict(cfg), input_shape, k)
  seed = sorted(MODELS).index(name)
  params = _random_params(20 + seed, model.init, dtype)
  x, = _normals(40 + seed, ((B, *input_shape),), dtype)
  if char:
    x = (np.abs(x) * 1e3).astype(np.int32) % V
  labels = np.arange(B * T).reshape(B, T) % k if char else np.arange(B) % k
  return model, input_shape, k, params, x, labels


@pytest.mark.parametrize("name, dtype", [
    pytest.param(name, dtype, marks=[pytest.mark.slow] if slow else [])
    for name, (*_, dtypes, slow) in MODELS.items() for dtype in dtypes])
def test_model_value_and_grad_matches_the_trainers(name, dtype):
  cfg, output, lam1, *_ = MODELS[name]
  with jax.enable_x64(dtype == "float64"):
    model, input_shape, k, params, x, labels = _inputs(name, cfg, dtype)
    cfg = ml_collections.ConfigDict(cfg)
    manual = backprop.manual_builder(cfg.name)(cfg, input_shape, k, output, LAM, M, lam1)
    reference = jax.value_and_grad(losses.make_loss_fn(model, output, LAM, M, k, lam1),
                                   has_aux=True)
    rng = jax.random.key(3) if cfg.dropout else None
    (E, aux), grads = jax.jit(manual)(params, x, labels, rng)
    (E_ref, aux_ref), grads_ref = jax.jit(reference)(params, x, labels, rng)
  assert all(g.dtype == jnp.dtype(dtype) for g in jax.tree.leaves(grads))
  np.testing.assert_allclose(E, E_ref, rtol=TOL[dtype] / 10)
  np.testing.assert_allclose(aux["data_loss"], aux_ref["data_loss"], rtol=TOL[dtype] / 10)
  assert aux["accuracy"] == aux_ref["accuracy"]
  assert jax.tree.structure(grads) == jax.tree.structure(grads_ref)
  _assert_close(grads, grads_ref, dtype)


def test_transformer_without_input_projection_reads_tokens_as_they_are():
  """input_projection=False (d_model-wide tokens, the peer benchmark's block): no "input"
  params, and the hand-written gradient still matches jax.grad."""
  cfg = ml_collections.ConfigDict(dict(TRANSFORMER, patch_size=1, input_projection=False))
  input_shape = (T + 1, D)
  with jax.enable_x64(True):
    model = models.build(cfg, input_shape, K)
    params = _random_params(30, model.init, "float64")
    x, = _normals(31, ((B, *input_shape),), "float64")
    labels = np.arange(B) % K
    manual = backprop.manual_builder(cfg.name)(cfg, input_shape, K, "softmax", LAM, M)
    reference = jax.value_and_grad(losses.make_loss_fn(model, "softmax", LAM, M, K),
                                   has_aux=True)
    (_, grads), (_, grads_ref) = jax.jit(lambda *a: (manual(*a), reference(*a)))(
        params, x, labels, None)
  assert "input" not in params
  _assert_close(grads, grads_ref, "float64")
  with pytest.raises(errors.ConfigError, match="input_projection"):
    models.build(cfg, SEQ_SHAPE, K)  # 3-wide tokens, d_model 8


def test_trainer_chunk_runs_the_manual_gradient_like_autodiff():
  """kernel.make_train_chunk(value_and_grad=...) jits it inside lax.scan, as config.grad=manual."""
  import optax
  cfg, output, *_ = MODELS["lstm_last"]
  model, input_shape, k, params, x, labels = _inputs("lstm_last", cfg, "float32")
  loss_fn = losses.make_loss_fn(model, output, LAM, M, k)
  manual = backprop_lstm.make_lstm_classifier_value_and_grad(ml_collections.ConfigDict(cfg),
                                                        input_shape, k, output, LAM, M)
  optimizer = optax.sgd(0.5)
  idx = np.tile(np.arange(B), (4, 1))
  final = []
  for value_and_grad in (manual, None):
    state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), int),
             "rng": jax.random.key(0)}
    chunk = kernel.make_train_chunk(loss_fn, optimizer, value_and_grad=value_and_grad)
    state, sums = chunk(state, x, labels, idx)
    assert sums["first_bad_step"] == -1
    final.append(state["params"])
  _assert_close(final[0], final[1], "float32")
  assert not np.allclose(final[0]["head"]["w"], params["head"]["w"])


@pytest.mark.parametrize("problem_fn", [
    backprop_attention.problem_transformer_block,
    pytest.param(backprop_lstm.problem_lstm, marks=pytest.mark.slow),
    pytest.param(backprop_attention.problem_transformer_classifier, marks=pytest.mark.slow),
    pytest.param(backprop_attention.problem_char_transformer, marks=pytest.mark.slow)])
def test_gradcheck_problems_agree_with_autodiff(problem_fn):
  from research import gradcheck
  with jax.enable_x64(True):
    problem = problem_fn(jax.random.key(0), 2, jnp.float64)
    manual = jax.jit(problem.grad_fn)(problem.params, *problem.args)
    reference = jax.jit(jax.grad(problem.loss_fn))(problem.params, *problem.args)
  assert isinstance(problem, gradcheck.Problem) and "B=2" in problem.description
  assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(manual))
  _assert_close(manual, reference, "float64")


def test_bad_configs_raise_config_errors():
  cfg = ml_collections.ConfigDict(LSTM)
  with pytest.raises(errors.ConfigError, match="lstm_classifier"):
    backprop_attention.make_transformer_classifier_value_and_grad(cfg, SEQ_SHAPE, K)
  with pytest.raises(errors.ConfigError, match="loss.output"):
    backprop_lstm.make_lstm_classifier_value_and_grad(cfg, SEQ_SHAPE, K, output="hinge")
  with pytest.raises(errors.ConfigError, match="readout"):
    backprop_lstm.make_lstm_classifier_value_and_grad(
        ml_collections.ConfigDict(dict(LSTM, readout="max")), SEQ_SHAPE, K)
  with pytest.raises(errors.ConfigError, match="m=0"):
    backprop_lstm.make_lstm_classifier_value_and_grad(cfg, SEQ_SHAPE, K, m=0)
  with pytest.raises(errors.ConfigError, match="num_heads"):
    backprop_attention.attention_forward(_random_params(
        0, lambda k: attention.init_multi_head_attention(k, D), "float32"),
        np.zeros((B, T, D), np.float32), 3)
  with pytest.raises(errors.ConfigError, match="activation"):
    backprop_attention.make_transformer_block_value_and_grad(2, K, activation="swish")
