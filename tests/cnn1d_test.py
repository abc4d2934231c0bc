"""Tests for research/models/cnn1d.py: shapes, parameter counts, conv values vs NumPy, training."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from research import errors
from research import models
from research.models import cnn1d


def _cfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(
      name="cnn1d", channels=(25, 25, 25), kernel_sizes=(5, 3, 3), strides=(1, 2, 2),
      padding="SAME"))
  cfg.update(overrides)
  return cfg


@pytest.mark.parametrize("input_shape", [(40,), (40, 1)])
@pytest.mark.parametrize("strides, count", [
    ((2, 2, 2), 150 + 1900 + 1900 + 25 * 5 * 10 + 10),    # the paper's CNN: 5,210
    ((1, 2, 2), 150 + 1900 + 1900 + 25 * 10 * 10 + 10),   # full-resolution first conv: 6,460
])
def test_output_shape_and_param_count(input_shape, strides, count):
  model = models.build(_cfg(strides=strides), input_shape, 10)
  params = model.init(jax.random.PRNGKey(0))
  assert cnn1d.param_count(params) == count
  logits = jax.eval_shape(model.apply, params, jnp.zeros((3, *input_shape)))
  assert logits.shape == (3, 10)


def _numpy_conv1d(x_NxTxC, w_KxCxO, b_O, stride, pad_left, pad_right):
  """Direct cross-correlation: y_{n,t,o} = sum_{i,c} x_{n, t*s+i, c} w_{i,c,o} + b_o."""
  xp = np.pad(x_NxTxC, ((0, 0), (pad_left, pad_right), (0, 0)))
  k = w_KxCxO.shape[0]
  t_out = (xp.shape[1] - k) // stride + 1
  y = np.zeros((x_NxTxC.shape[0], t_out, w_KxCxO.shape[2]))
  for n in range(x_NxTxC.shape[0]):
    for t in range(t_out):
      for o in range(w_KxCxO.shape[2]):
        y[n, t, o] = np.sum(xp[n, t * stride:t * stride + k, :] * w_KxCxO[:, :, o]) + b_O[o]
  return y


# T = 7, k = 3, stride 2: SAME gives ceil(7/2) = 4 steps from 2 zeros split 1 / 1; VALID 3 steps.
@pytest.mark.parametrize("padding, pads, t_out", [("SAME", (1, 1), 4), ("VALID", (0, 0), 3)])
def test_conv_matches_numpy(padding, pads, t_out):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 2)).astype(np.float32)
  w = rng.normal(size=(3, 2, 3)).astype(np.float32)
  b = rng.normal(size=(3,)).astype(np.float32)
  # One conv layer, then an identity dense layer, so the logits are relu(conv(x)) flattened.
  d = t_out * 3
  params = {"conv": [{"w": jnp.asarray(w[:, None]), "b": jnp.asarray(b)}],
            "out": {"w": jnp.eye(d), "b": jnp.zeros(d)}}
  got = cnn1d.apply(params, jnp.asarray(x), strides=(2,), padding=padding)
  want = np.maximum(_numpy_conv1d(x, w, b, 2, *pads), 0.0).reshape(2, -1)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_flat_and_sequence_inputs_agree():
  model = models.build(_cfg(), (40,), 10)
  params = model.init(jax.random.PRNGKey(1))
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 40))
  np.testing.assert_allclose(model.apply(params, x), model.apply(params, x[..., None]),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("overrides, input_shape, match", [
    (dict(strides=(2, 2)), (40, 1), "one entry per conv layer"),
    (dict(channels=(25, 0, 25)), (40, 1), "positive integers"),
    (dict(padding="FULL"), (40, 1), "model.padding"),
    (dict(padding="VALID", kernel_sizes=(9, 9, 9)), (20,), "padding='SAME'"),
    ({}, (8, 8, 1), "sequence"),
])
def test_bad_config_raises(overrides, input_shape, match):
  with pytest.raises(errors.ConfigError, match=match):
    models.build(_cfg(**overrides), input_shape, 10)


@pytest.mark.slow
def test_few_adam_steps_lower_the_loss():
  model = models.build(_cfg(channels=(4, 4), kernel_sizes=(3, 3), strides=(1, 2)), (12, 1), 3)
  key_x, key_p = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(key_x, (16, 12, 1))
  y = jnp.arange(16) % 3
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()
  opt = optax.adam(1e-2)

  @jax.jit
  def step(p, s):
    value, g = jax.value_and_grad(loss)(p)
    updates, s = opt.update(g, s)
    return optax.apply_updates(p, updates), s, value

  params = model.init(key_p)
  state = opt.init(params)
  first = None
  for _ in range(30):
    params, state, value = step(params, state)
    first = value if first is None else first
  assert float(loss(params)) < 0.7 * float(first)
