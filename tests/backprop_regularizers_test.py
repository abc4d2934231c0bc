"""Issue 14's layers and hand-written gradients: the locally connected layer (forward and
backward), the MLP's L1 penalty on its hidden units and its dE/dx."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from research import backprop
from research import errors
from research import gradcheck
from research import losses
from research import models
from research.backprop import layers as backprop_layers
from research.backprop import mlp as backprop_mlp
from research.models import layers

BATCH = 4


def _normal(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


# --------------------------------------------------------------------- locally connected layer


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "VALID")])
def test_locally_connected_is_a_loop_over_positions_with_their_own_kernels(stride, padding):
  x = _normal(0, (2, 5, 5, 2))
  params = layers.init_locally_connected2d(jax.random.key(1), (5, 5), 2, 3, 3, stride, padding)
  params["b"] = _normal(2, params["b"].shape)
  y = np.asarray(layers.locally_connected2d(params, x, stride, padding))
  (top, _), (left, _) = layers._conv_pads((5, 5), (3, 3), (stride, stride), padding)
  x_pad = np.pad(np.asarray(x), ((0, 0), (top, 3), (left, 3), (0, 0)))
  w, b = np.asarray(params["w"]), np.asarray(params["b"])
  ho, wo = layers.conv_output_hw((5, 5), 3, stride, padding)
  assert y.shape == (2, ho, wo, 3) and w.shape == (ho, wo, 18, 3)
  for h in range(ho):
    for v in range(wo):
      field = x_pad[:, stride * h:stride * h + 3, stride * v:stride * v + 3, :].reshape(2, -1)
      np.testing.assert_allclose(y[:, h, v], field @ w[h, v] + b[h, v], rtol=1e-5, atol=1e-5)


def test_tying_every_position_to_one_kernel_gives_the_convolution():
  x = _normal(0, (2, 6, 6, 2))
  conv = layers.init_conv2d(jax.random.key(1), 2, 4, 3)
  conv["b"] = _normal(2, (4,))
  ho, wo = layers.conv_output_hw((6, 6), 3, 2, "SAME")
  tied = {"w": jnp.broadcast_to(conv["w"].reshape(18, 4), (ho, wo, 18, 4)),
          "b": jnp.broadcast_to(conv["b"], (ho, wo, 4))}
  np.testing.assert_allclose(layers.locally_connected2d(tied, x, 2, "SAME"),
                             layers.conv2d(conv, x, 2, "SAME"), rtol=1e-5, atol=1e-5)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _vjp_and_manual(params, x, delta, stride, padding):
  _, vjp = jax.vjp(lambda p, x: layers.locally_connected2d(p, x, stride, padding), params, x)
  g_params, g_x = vjp(delta)
  return (g_x, g_params), backprop_layers.locally_connected2d_backward(params, x, delta, stride,
                                                                       padding)


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, ((1, 0), (0, 2)))])
def test_locally_connected_backward_is_the_vjp(stride, padding):
  x = _normal(0, (3, 5, 5, 2))
  params = layers.init_locally_connected2d(jax.random.key(1), (5, 5), 2, 3, 3, stride, padding)
  ho, wo = layers.conv_output_hw((5, 5), 3, stride, padding)
  delta = _normal(2, (3, ho, wo, 3))
  (g_x, g_params), (dE_dx, grads) = _vjp_and_manual(params, x, delta, stride, padding)
  np.testing.assert_allclose(dE_dx, g_x, rtol=1e-5, atol=1e-5)
  for name in ("w", "b"):
    np.testing.assert_allclose(grads[name], g_params[name], rtol=1e-5, atol=1e-5)


def _local_cnn_cfg(shared):
  return ml_collections.ConfigDict(dict(name="local_cnn", shared=shared, channels=(4, 8),
                                        kernel_sizes=(3, 3), strides=(1, 2), padding="SAME",
                                        conv_impl="patches"))


def test_unshared_layers_have_positions_times_the_parameters():
  count = {s: layers.param_count(jax.eval_shape(
      models.build(_local_cnn_cfg(s), (8, 8, 1), 10).init, jax.random.key(0)))
      for s in (True, False)}
  dense = 4 * 4 * 8 * 10 + 10
  # Layer 1: 8x8 positions, 3x3x1 -> 4; layer 2: 4x4 positions, 3x3x4 -> 8.
  assert count[True] == (9 * 4 + 4) + (36 * 8 + 8) + dense
  assert count[False] == 64 * (9 * 4 + 4) + 16 * (36 * 8 + 8) + dense


@pytest.mark.parametrize("shared", [pytest.param(True, marks=pytest.mark.slow), False])
def test_local_cnn_manual_value_and_grad_is_autodiffs(shared):
  # The training path of config.grad=manual (gradcheck's slow test adds finite differences).
  cfg = _local_cnn_cfg(shared)
  model = models.build(cfg, (8, 8, 1), 10)
  params = model.init(jax.random.key(0))
  x, labels = _normal(1, (3, 8, 8, 1)), jnp.array([0, 3, 9])
  loss_fn = losses.make_loss_fn(model, "softmax", 0.5, 12, 10)
  manual = backprop.make_manual_value_and_grad(cfg, (8, 8, 1), 10, output="softmax", lam=0.5,
                                               m=12)
  both = jax.jit(lambda p, x, y: (jax.value_and_grad(loss_fn, has_aux=True)(p, x, y, None),
                                  manual(p, x, y, None)))
  ((E_a, _), g_a), ((E_m, _), g_m) = both(params, x, labels)
  np.testing.assert_allclose(E_m, E_a, rtol=1e-6)
  for a, m in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_m)):
    np.testing.assert_allclose(m, a, rtol=1e-4, atol=1e-6)


def test_local_cnn_needs_images_and_one_entry_per_layer():
  with pytest.raises(errors.ConfigError, match="image_size=8"):
    models.build(_local_cnn_cfg(True), (64,), 10)
  cfg = _local_cnn_cfg(False)
  cfg.strides = (1,)
  with pytest.raises(errors.ConfigError, match="one entry per layer"):
    models.build(cfg, (8, 8, 1), 10)


# ------------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("name", [pytest.param("local_cnn", marks=pytest.mark.slow),
                                  pytest.param("local_cnn_shared", marks=pytest.mark.slow),
                                  "mlp_sparse_input"])
def test_manual_gradients_agree_with_autodiff_and_finite_differences(name):
  rows = gradcheck.check_model(name, "float32", batch=BATCH)
  assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
  if name == "mlp_sparse_input":
    assert rows[-1].path == "['x']"  # dE/dx is checked like any parameter array.


# --------------------------------------------------------------- the MLP's extended backward


@pytest.fixture(scope="module")
def relu_mlp():
  cfg = ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=(16, 8), activation="relu"))
  params = models.build(cfg, (12,), 5).init(jax.random.key(0))
  x = _normal(1, (6, 12))
  labels = jnp.arange(6) % 5
  return params, x, labels


@functools.lru_cache(maxsize=None)
def _autodiff_and_manual(lam_act):
  loss_fn = losses.make_activation_l1_loss_fn(
      functools.partial(backprop_mlp.hidden_forward, activation="relu"), "softmax", 0.5, 24, 5,
      lam_act)
  manual = backprop_mlp.make_value_and_grad("relu", "softmax", 0.5, 24, 5, lam_act=lam_act)
  return (jax.jit(jax.value_and_grad(loss_fn, has_aux=True)), jax.jit(manual))


@pytest.mark.parametrize("lam_act", [0.0, 0.1])
def test_activation_l1_gradient_joins_the_manual_mlp_backward(relu_mlp, lam_act):
  params, x, labels = relu_mlp
  autodiff, manual = _autodiff_and_manual(lam_act)
  (E_a, aux_a), g_a = autodiff(params, x, labels, None)
  (E_m, aux_m), g_m = manual(params, x, labels, None)
  np.testing.assert_allclose(E_m, E_a, rtol=1e-6)
  assert aux_m.keys() == aux_a.keys()
  for a, m in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_m)):
    np.testing.assert_allclose(m, a, rtol=1e-5, atol=1e-6)


def test_activation_penalty_is_the_mean_over_examples_of_the_summed_units():
  sigmas = [jnp.array([[1.0, -2.0], [0.0, 3.0]]), jnp.array([[0.5], [-0.5]])]
  # Example 0: 1 + 2 + 0.5; example 1: 0 + 3 + 0.5; mean 3.5; times lambda_h = 2.
  assert float(losses.activation_l1_penalty(sigmas, 2.0)) == pytest.approx(7.0)


def test_manual_input_gradient_is_jax_grad_with_respect_to_x(relu_mlp):
  params, x, labels = relu_mlp
  y = losses.one_hot_targets(labels, 5)
  grads, dE_dx = backprop_mlp.manual_grads_and_input_grad(
      params, x, y, 0.5, 24, activation="relu", output="softmax")
  data_E = lambda x: losses.softmax_cross_entropy(models.mlp.apply(params, x, "relu"), y).mean()
  np.testing.assert_allclose(dE_dx, jax.grad(data_E)(x), rtol=1e-5, atol=1e-7)
  plain = backprop_mlp.manual_grads(params, x, y, 0.5, 24, activation="relu", output="softmax")
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(a, b)


def test_negative_activation_penalty_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="lam_act=-1"):
    backprop_mlp.make_value_and_grad("relu", "softmax", 0.0, 10, 5, lam_act=-1)
