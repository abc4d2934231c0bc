"""Hand-written layer backward passes (research/backprop/layers.py) agree with jax.vjp.

The reference is jax.vjp of the forward layers in research/models/layers.py, in float64
(x64 enabled only inside each check): relative error per array <= 1e-10.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import losses
from research.backprop import layers as backprop_layers
from research.models import layers

TOL = 1e-10
X_SHAPE = (2, 7, 6, 4)  # odd sizes: strided windows leave rows/columns that no window reaches


def _rel_err(got, want) -> float:
  """max over leaves of ||got - want|| / ||want|| (||got - want|| where want is 0)."""
  errs = []
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape and g.dtype == w.dtype
    norm_w, norm_d = np.linalg.norm(w), np.linalg.norm(g - w)
    errs.append(norm_d / norm_w if norm_w > 0 else norm_d)
  return max(errs)


@functools.lru_cache(maxsize=None)
def _normals(seed: int, shape: tuple) -> np.ndarray:
  """float64 standard normals (numpy: no per-shape jax.random compilation)."""
  return np.random.default_rng(seed).standard_normal(shape)


def _check(forward, backward, *primals):
  """jax.vjp of forward(*primals) vs backward(primals, upstream), upstream ~ N(0, 1), float64."""
  with jax.enable_x64(True):
    primals = jax.tree.map(jnp.asarray, primals)

    @jax.jit
    def both(primals, upstream):
      return backward(primals, upstream), jax.vjp(forward, *primals)[1](upstream)

    out_shape = jax.eval_shape(forward, *primals).shape
    got, want = both(primals, _normals(9, out_shape))
  assert _rel_err(got, want) <= TOL
  return got, want


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "scaled_tanh", "identity"])
def test_dense_with_activation(activation):
  f = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
       "scaled_tanh": lambda a: 1.7159 * jnp.tanh(a * (2.0 / 3.0)), "identity": lambda a: a}
  params = {"w": _normals(1, (5, 3)), "b": _normals(2, (3,))}
  x = _normals(3, (2, 4, 5))  # leading axes (B, T) are summed over for the weights

  def backward(primals, dE_dsigma):
    params, x = primals
    sigma = f[activation](layers.dense(params, x))
    dE_dx, grads = backprop_layers.dense_backward(
        params, x, backprop_layers.activation_backward(activation, sigma, dE_dsigma))
    return grads, dE_dx

  _check(lambda p, x: f[activation](layers.dense(p, x)), backward, params, x)


@pytest.mark.parametrize("stride, padding, kernel, groups", [
    (1, "SAME", 3, 1),
    (2, "SAME", 3, 1),
    (2, "VALID", 3, 1),
    (3, "VALID", (2, 3), 1),
    ((2, 1), "SAME", (3, 2), 2),
    (1, ((2, 1), (0, 3)), 3, 1),
    (2, ((1, 0), (2, 2)), (3, 2), 2),  # explicit, uneven, on a strided conv
    (2, "SAME", 1, 4),                  # 1x1, depthwise
])
@pytest.mark.parametrize("impl", layers.CONV_IMPLS)
def test_conv2d(stride, padding, kernel, groups, impl):
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  c, o = X_SHAPE[-1], 8
  params = {"w": _normals(1, (kh, kw, c // groups, o)), "b": _normals(2, (o,))}
  x = _normals(3, X_SHAPE)

  def backward(primals, delta):
    dE_dx, grads = backprop_layers.conv2d_backward(*primals, delta, stride, padding, impl)
    return grads, dE_dx

  # The reference differentiates the other impl's forward: either backward matches either.
  other = {"xla": "patches", "patches": "xla"}[impl]
  got, _ = _check(lambda p, x: layers.conv2d(p, x, stride, padding, other), backward, params, x)
  assert got[0]["w"].shape == params["w"].shape and got[1].shape == X_SHAPE


@pytest.mark.parametrize("stride, padding, kernel", [
    (1, "SAME", 3), (2, "VALID", (3, 2)), (2, ((1, 0), (2, 2)), (3, 2)), (3, "VALID", 2)])
def test_col2im_is_the_transpose_of_im2col(stride, padding, kernel):
  backward = lambda primals, dE_dp: backprop_layers.conv_patches_backward(
      dE_dp, X_SHAPE, kernel, stride, padding)
  _check(lambda x: layers.conv_patches(x, kernel, stride, padding), backward, _normals(3, X_SHAPE))


POOLS = [  # window, stride, padding
    (2, None, "VALID"),           # LeNet's 2x2 subsampling (7 -> 3: one row unreached)
    (3, 2, "SAME"),               # AlexNet's overlapping pooling
    (3, 2, "VALID"),
    (2, 1, "SAME"),
    ((2, 3), (1, 2), ((1, 0), (0, 2))),
]


@pytest.mark.parametrize("window, stride, padding", POOLS)
@pytest.mark.parametrize("pool", ["max", "avg", "sum"])
def test_pooling(pool, window, stride, padding):
  forward = getattr(layers, f"{pool}_pool")
  backward = getattr(backprop_layers, f"{pool}_pool_backward")
  x = _normals(3, X_SHAPE)
  if pool == "max":  # ties in most windows: the gradient must go where jax.grad sends it
    x = np.round(x)
  got, _ = _check(lambda x: forward(x, window, stride, padding),
                  lambda primals, g: (backward(*primals, g, window, stride, padding),), x)
  assert got[0].shape == X_SHAPE


def test_max_pool_sends_ties_to_the_first_maximum_in_each_window():
  x = jnp.zeros((1, 4, 4, 1))
  dE_dx = jax.jit(backprop_layers.max_pool_backward, static_argnums=(2, 3, 4))(
      x, jnp.ones((1, 2, 2, 1)), 2, None, "VALID")
  np.testing.assert_array_equal(dE_dx[0, :, :, 0], [[1, 0, 1, 0], [0, 0, 0, 0],
                                                    [1, 0, 1, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("k, n, alpha, beta", [
    (2.0, 5, 1e-4, 0.75),  # AlexNet's constants
    (1.0, 3, 0.5, 0.75),   # alpha large enough that the cross-channel term matters
    (0.5, 4, 0.3, 0.5),    # even window: n//2 before, n//2 - 1 after
    (1.0, 1, 1.0, 1.0),
])
def test_local_response_norm(k, n, alpha, beta):
  got, want = _check(
      lambda x: layers.local_response_norm(x, k, n, alpha, beta),
      lambda primals, g: (backprop_layers.local_response_norm_backward(*primals, g, k, n, alpha,
                                                                       beta),),
      2 * _normals(3, X_SHAPE))
  assert np.abs(want[0]).max() > 0


@pytest.mark.parametrize("rate, train", [(0.3, True), (0.0, True), (0.5, False)])
def test_dropout_uses_the_forwards_mask(rate, train):
  rng = jax.random.key(4)
  keep = lambda x: backprop_layers.dropout_forward(rng if train else None, x, rate)[1]
  got, _ = _check(lambda x: layers.dropout(rng, x, rate, train),
                  lambda primals, g: (backprop_layers.dropout_backward(keep(primals[0]), g,
                                                                       rate),),
                  _normals(3, X_SHAPE))
  dropped = np.asarray(got[0]) == 0
  assert dropped.any() == (train and rate > 0)


def test_dropout_forward_draws_the_models_mask():
  x = _normals(3, X_SHAPE)
  y, keep = backprop_layers.dropout_forward(jax.random.key(0), x, 0.5)
  np.testing.assert_array_equal(y, layers.dropout(jax.random.key(0), x, 0.5, True))
  assert not np.asarray(keep).all() and np.asarray(keep).any()
  assert backprop_layers.dropout_forward(None, x, 0.5) == (x, None)  # no key: no dropout


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_cross_entropy_output_delta(output):
  logits = 3 * _normals(1, (6, 4))
  y = np.eye(4)[np.arange(6) % 4] if output == "softmax" else (_normals(2, (6, 4)) > 0) * 1.0
  data_loss = losses.DATA_LOSSES[output]
  with jax.enable_x64(True):
    got = backprop_layers.OUTPUT_BACKWARDS[output](jnp.asarray(logits), jnp.asarray(y))
    want = jax.grad(lambda s: data_loss(s, jnp.asarray(y)).mean())(jnp.asarray(logits))
  assert _rel_err(got, want) <= TOL


@pytest.mark.parametrize("dtype, tol", [("float64", TOL), ("float32", 1e-5)])
def test_conv_layers_problem_stacks_every_backward_pass(dtype, tol):
  problem = _conv_layers_problem(dtype)
  with jax.enable_x64(dtype == "float64"):
    manual = jax.jit(problem.grad_fn)(problem.params, *problem.args)
    autodiff = jax.jit(jax.grad(problem.loss_fn))(problem.params, *problem.args)
  assert jax.tree.structure(manual) == jax.tree.structure(problem.params)
  assert _rel_err(manual, autodiff) <= tol


def _conv_layers_problem(dtype):
  from research import gradcheck
  if "fd_eps" not in gradcheck.Problem._fields:
    pytest.skip("gradcheck.Problem has no fd_eps field yet (problem_conv_layers passes one)")
  with jax.enable_x64(dtype == "float64"):
    return backprop_layers.problem_conv_layers(jax.random.key(0), 3, jnp.dtype(dtype))


def test_bad_arguments_name_the_choices():
  with pytest.raises(ValueError, match="scaled_tanh"):
    backprop_layers.activation_backward("gelu", jnp.ones(2), jnp.ones(2))
  with pytest.raises(ValueError, match="SAME"):
    backprop_layers.conv2d_backward({"w": jnp.ones((1, 1, 1, 1))}, jnp.ones((1, 2, 2, 1)),
                                    jnp.ones((1, 2, 2, 1)), padding="same")
