"""research/models/layers.py against NumPy references and hand-computed values."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from research.models import layers

KEY = jax.random.key(0)


# ----------------------------------------------------------------------------- references


def conv2d_reference(x_NHWC, w_HWIO, b_O, stride, pad_tblr, groups=1):
  """Direct loop: y[n, i, j, o] = sum_{p, q, c} xpad[n, i*sh + p, j*sw + q, c] w[p, q, c, o] + b[o],
  where output channel o of group g only reads input channels of group g."""
  (t, b), (l, r) = pad_tblr
  sh, sw = stride
  x = np.pad(x_NHWC, ((0, 0), (t, b), (l, r), (0, 0)))
  kh, kw, cin_g, cout = w_HWIO.shape
  n, hp, wp, _ = x.shape
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  cout_g = cout // groups
  y = np.zeros((n, ho, wo, cout))
  for i in range(ho):
    for j in range(wo):
      patch = x[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
      for o in range(cout):
        g = o // cout_g
        y[:, i, j, o] = np.einsum(
            "npqc,pqc->n", patch[..., g * cin_g:(g + 1) * cin_g], w_HWIO[..., o])
  return y + b_O


def same_padding(n, k, s):
  """TensorFlow's SAME rule, which XLA follows: out = ceil(n / s), extra pad at the end."""
  total = max((math.ceil(n / s) - 1) * s + k - n, 0)
  return total // 2, total - total // 2


def lrn_reference(x, k, n, alpha, beta):
  """b_c = a_c / (k + alpha * sum_{c' = max(0, c - n//2)}^{min(C-1, c + (n-1)//2)} a_c'^2)^beta."""
  c_total = x.shape[-1]
  out = np.empty_like(x)
  for c in range(c_total):
    lo, hi = max(0, c - n // 2), min(c_total - 1, c + (n - 1) // 2)
    s = np.sum(x[..., lo:hi + 1] ** 2, axis=-1)
    out[..., c] = x[..., c] / (k + alpha * s) ** beta
  return out


# ------------------------------------------------------------------------------ dense, init


def test_dense_matches_numpy_on_leading_axes():
  p = layers.init_dense(KEY, 3, 4)
  x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
  y = layers.dense(p, x)
  assert y.shape == (2, 5, 4)
  np.testing.assert_allclose(y, x @ np.asarray(p["w"]) + np.asarray(p["b"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,gain", [("lecun", 1.0), ("he", 2.0)])
def test_initialiser_variance(name, gain):
  w = layers.init_conv2d(KEY, 16, 64, 3, init=name)["w"]  # fan_in = 3 * 3 * 16 = 144
  assert w.shape == (3, 3, 16, 64)
  np.testing.assert_allclose(float(jnp.var(w)), gain / 144, rtol=0.1)
  assert not jnp.any(layers.init_conv2d(KEY, 16, 64, 3)["b"])


def test_init_rejects_unknown_initialiser_and_bad_groups():
  with pytest.raises(ValueError, match="init='xavier'"):
    layers.init_dense(KEY, 2, 2, init="xavier")
  with pytest.raises(ValueError, match="groups=2"):
    layers.init_conv2d(KEY, 3, 4, 3, groups=2)


def test_flatten_and_param_count():
  assert layers.flatten(jnp.zeros((2, 3, 4, 5))).shape == (2, 60)
  params = {"a": {"w": np.zeros((5, 5, 3, 4)), "b": np.zeros(4)}, "b": [{"w": np.zeros((7, 2))}]}
  assert layers.param_count(params) == (5 * 5 * 3 * 4 + 4) + 7 * 2
  # Shapes alone suffice, so huge models can be counted without allocating them.
  shapes = jax.eval_shape(lambda: layers.init_conv2d(KEY, 300, 400, 5))
  assert layers.param_count(shapes) == 5 * 5 * 300 * 400 + 400


# ---------------------------------------------------------------------------------------- conv


@pytest.mark.parametrize("impl", layers.CONV_IMPLS)
@pytest.mark.parametrize("stride,padding", [
    (1, "VALID"), (2, "VALID"), ((1, 2), "SAME"), (2, "SAME"), (1, ((1, 0), (2, 1)))])
def test_conv2d_matches_reference_loop(stride, padding, impl):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  p = layers.init_conv2d(KEY, 3, 4, (3, 2))
  p["b"] = jnp.arange(4.0)
  s = layers._pair(stride)
  if padding == "VALID":
    pads = ((0, 0), (0, 0))
  elif padding == "SAME":
    pads = (same_padding(5, 3, s[0]), same_padding(6, 2, s[1]))
  else:
    pads = padding
  want = conv2d_reference(x, np.asarray(p["w"]), np.asarray(p["b"]), s, pads)
  got = layers.conv2d(p, x, stride, padding, impl)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", layers.CONV_IMPLS)
def test_grouped_conv_matches_reference_loop(impl):
  x = np.random.default_rng(2).normal(size=(1, 4, 4, 4)).astype(np.float32)
  p = layers.init_conv2d(KEY, 4, 6, 3, groups=2)
  assert p["w"].shape == (3, 3, 2, 6)
  want = conv2d_reference(x, np.asarray(p["w"]), np.zeros(6), (1, 1), ((1, 1), (1, 1)), groups=2)
  np.testing.assert_allclose(layers.conv2d(p, x, impl=impl), want, rtol=1e-4, atol=1e-5)


def test_conv_patches_rows_are_receptive_fields():
  # Row (h, w) of the im2col matrix is the padded input's window at (s h, s w), in HWIO order.
  x = np.arange(2 * 5 * 4 * 3, dtype=np.float32).reshape(2, 5, 4, 3)
  p = np.asarray(layers.conv_patches(x, (3, 2), 2, ((1, 1), (0, 1))))
  x_pad = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))
  assert p.shape == (2, 3, 2, 3 * 2 * 3)
  for h in range(3):
    for w in range(2):
      window = x_pad[:, 2 * h:2 * h + 3, 2 * w:2 * w + 2]
      np.testing.assert_array_equal(p[:, h, w], window.reshape(2, -1))


def test_conv2d_rejects_unknown_impl():
  p = layers.init_conv2d(KEY, 1, 2, 3)
  with pytest.raises(ValueError, match="patches"):
    layers.conv2d(p, jnp.zeros((1, 4, 4, 1)), impl="im2col")


@settings(max_examples=15, deadline=None)
@given(h=st.integers(3, 9), k=st.integers(1, 3), s=st.integers(1, 3),
       pad=st.sampled_from(["SAME", "VALID"]))
def test_conv2d_output_size(h, k, s, pad):
  p = {"w": jax.ShapeDtypeStruct((k, k, 1, 2), jnp.float32),
       "b": jax.ShapeDtypeStruct((2,), jnp.float32)}
  x = jax.ShapeDtypeStruct((1, h, h + 1, 1), jnp.float32)
  y = jax.eval_shape(lambda p, x: layers.conv2d(p, x, s, pad), p, x)
  size = (lambda n: -(-n // s)) if pad == "SAME" else (lambda n: (n - k) // s + 1)
  assert y.shape == (1, size(h), size(h + 1), 2)


# ------------------------------------------------------------------------------------- pooling

X4 = jnp.arange(16.0).reshape(1, 4, 4, 1)


def test_max_and_avg_pool_on_hand_made_input():
  np.testing.assert_array_equal(layers.max_pool(X4, 2)[0, ..., 0], [[5, 7], [13, 15]])
  np.testing.assert_array_equal(layers.avg_pool(X4, 2)[0, ..., 0], [[2.5, 4.5], [10.5, 12.5]])
  np.testing.assert_array_equal(layers.sum_pool(X4, 2)[0, ..., 0], [[10, 18], [42, 50]])


def test_overlapping_max_pool_3x3_stride_2():
  x = jnp.arange(25.0).reshape(1, 5, 5, 1)
  # Windows start at rows/cols 0 and 2 and share row/col 2: AlexNet's overlapping pooling.
  np.testing.assert_array_equal(layers.max_pool(x, 3, 2)[0, ..., 0], [[12, 14], [22, 24]])
  assert layers.max_pool(jnp.zeros((2, 55, 55, 3)), 3, 2).shape == (2, 27, 27, 3)


def test_pools_with_same_padding():
  # -x: padding (-inf for max) must never win; avg divides by the real inputs only.
  np.testing.assert_array_equal(
      layers.max_pool(-X4, 3, 1, "SAME")[0, ..., 0],
      -np.array([[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]]))
  np.testing.assert_allclose(layers.avg_pool(jnp.ones((1, 4, 5, 2)), 3, 1, "SAME"), 1.0)
  np.testing.assert_allclose(layers.avg_pool(X4, 3, 1, "SAME")[0, 0, 0, 0], (0 + 1 + 4 + 5) / 4)


def test_pool_gradients_under_jit():
  # Max routes the gradient to each window's argmax; the average spreads 1/4 to every input.
  g_max = jax.jit(jax.grad(lambda x: layers.max_pool(x, 2).sum()))(X4)
  want = np.zeros((4, 4))
  want[1::2, 1::2] = 1
  np.testing.assert_array_equal(g_max[0, ..., 0], want)
  g_avg = jax.jit(jax.grad(lambda x: layers.avg_pool(x, 2).sum()))(X4)
  np.testing.assert_allclose(g_avg, 0.25)


def test_global_avg_pool():
  np.testing.assert_allclose(layers.global_avg_pool(X4), [[7.5]])


# --------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("n", [5, 4, 1])
def test_local_response_norm_matches_formula(n):
  x = np.random.default_rng(3).normal(size=(2, 3, 3, 7)).astype(np.float32) * 10
  k, alpha, beta = 2.0, 1e-2, 0.75  # alpha larger than AlexNet's so the sum matters
  got = layers.local_response_norm(x, k=k, n=n, alpha=alpha, beta=beta)
  np.testing.assert_allclose(got, lrn_reference(x, k, n, alpha, beta), rtol=1e-5)


def test_local_response_norm_defaults_are_alexnets():
  # One channel of value a (others 0): b = a / (2 + 1e-4 a^2)^0.75.
  x = jnp.zeros((1, 1, 1, 8)).at[..., 3].set(10.0)
  got = layers.local_response_norm(x)
  np.testing.assert_allclose(got[..., 3], 10.0 / (2 + 1e-4 * 100) ** 0.75, rtol=1e-6)
  np.testing.assert_array_equal(got[..., :3], 0)


def test_layer_norm_statistics_per_row():
  x = np.random.default_rng(4).normal(3.0, 5.0, size=(4, 3, 16)).astype(np.float32)
  p = layers.init_layer_norm(KEY, 16)
  y = layers.layer_norm(p, x)
  np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
  np.testing.assert_allclose(y.var(-1), 1, rtol=1e-3)
  # No batch statistics: one row alone normalises the same as inside the batch.
  np.testing.assert_allclose(layers.layer_norm(p, x[1, 2]), y[1, 2], rtol=1e-5, atol=1e-6)
  p = {"scale": jnp.full(16, 2.0), "bias": jnp.full(16, -1.0)}
  np.testing.assert_allclose(layers.layer_norm(p, x), 2 * y - 1, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- dropout


def test_dropout_keeps_expectation_and_scales_survivors():
  x = jnp.ones((200, 500))
  y = layers.dropout(KEY, x, 0.3, train=True)
  np.testing.assert_allclose(float(y.mean()), 1.0, atol=0.02)
  np.testing.assert_allclose(float((y == 0).mean()), 0.3, atol=0.01)
  np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)


def test_dropout_is_deterministic_per_key_and_identity_at_eval():
  x = jnp.arange(1.0, 101.0)
  a = layers.dropout(jax.random.key(1), x, 0.5, train=True)
  np.testing.assert_array_equal(a, layers.dropout(jax.random.key(1), x, 0.5, train=True))
  assert np.any(a != layers.dropout(jax.random.key(2), x, 0.5, train=True))
  assert layers.dropout(None, x, 0.5, train=False) is x
  assert layers.dropout(None, x, 0.0, train=True) is x


def test_dropout_rejects_bad_rate_and_missing_key():
  with pytest.raises(ValueError, match="rate=1.0"):
    layers.dropout(KEY, jnp.ones(3), 1.0, train=True)
  with pytest.raises(ValueError, match="rng"):
    layers.dropout(None, jnp.ones(3), 0.5, train=True)


# ----------------------------------------------------------------------------------- embedding


def test_embed_looks_up_rows():
  p = layers.init_embedding(KEY, 11, 4)
  ids = jnp.array([[0, 10, 3], [3, 3, 1]])
  y = layers.embed(p, ids)
  assert y.shape == (2, 3, 4)
  np.testing.assert_array_equal(y[1, 0], p["table"][3])
  np.testing.assert_array_equal(y[0, 1], p["table"][10])


# ----------------------------------------------------------------------------------- inception


def test_inception_block_channels_and_branch_order():
  init = functools.partial(layers.init_inception_block, in_ch=3, c1=4, c3r=2, c3=5, c5r=2,
                           c5=3, pool_proj=6)
  p = jax.jit(init)(KEY)
  x = jax.random.normal(jax.random.key(1), (2, 7, 6, 3))

  @jax.jit
  def block_and_branches(p, x):
    # Channels 0..3 should be the 1x1 branch and the last 6 the pool branch, all ReLUs.
    pooled = layers.max_pool(x, 3, 1, "SAME")
    relu_conv = lambda name, h: jax.nn.relu(layers.conv2d(p[name], h, 1, "SAME"))
    return (layers.inception_block(p, x), relu_conv("b1", x), relu_conv("pool_proj", pooled),
            relu_conv("b3", relu_conv("b3_reduce", x)), relu_conv("b5", relu_conv("b5_reduce", x)))

  y, y1, yp, y3, y5 = block_and_branches(p, x)
  assert y.shape == (2, 7, 6, 4 + 5 + 3 + 6) and layers.inception_out_channels(p) == 18
  assert p["b3"]["w"].shape == (3, 3, 2, 5) and p["b5"]["w"].shape == (5, 5, 2, 3)
  np.testing.assert_allclose(y[..., :4], y1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y[..., -6:], yp, rtol=1e-5, atol=1e-6)
  # The middle channels: the 3x3 branch, then the 5x5, each behind its 1x1 reduction.
  np.testing.assert_allclose(y[..., 4:9], y3, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y[..., 9:12], y5, rtol=1e-5, atol=1e-6)
  assert 0 < float((y == 0).mean()) < 1  # The ReLUs cut some outputs, not all.
