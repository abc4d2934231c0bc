"""The lecture's cost E against values computed by hand."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from research import losses


def _sigmoid(s):
  return 1 / (1 + math.exp(-s))


def test_sigmoid_cross_entropy_matches_hand_computation():
  # Two examples, K = 2 outputs.
  logits = jnp.array([[0.0, 2.0], [-1.0, 0.5]])
  y = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  expected = [
      -(math.log(_sigmoid(0.0)) + math.log(1 - _sigmoid(2.0))),
      -(math.log(1 - _sigmoid(-1.0)) + math.log(_sigmoid(0.5))),
  ]
  np.testing.assert_allclose(losses.sigmoid_cross_entropy(logits, y), expected, rtol=1e-6)


def test_sigmoid_cross_entropy_is_finite_when_saturated():
  # sigma(100) rounds to 1 in float32: the naive log(1 - sigma) would be -inf.
  logits = jnp.array([[100.0, -100.0]])
  y = jnp.array([[0.0, 1.0]])
  np.testing.assert_allclose(losses.sigmoid_cross_entropy(logits, y), [200.0], rtol=1e-6)


def test_softmax_cross_entropy_matches_hand_computation():
  logits = jnp.array([[1.0, 2.0, 3.0]])
  y = jnp.array([[0.0, 1.0, 0.0]])
  z = math.exp(1) + math.exp(2) + math.exp(3)
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, y),
                             [-(2 - math.log(z))], rtol=1e-6)


def test_l2_penalty_is_lambda_over_2m_sum_of_squared_weights_not_biases():
  params = [{"w": jnp.array([[1.0, 2.0]]), "b": jnp.array([100.0, 100.0])},
            {"w": jnp.array([[3.0], [-1.0]]), "b": jnp.array([7.0])}]
  lam, m = 0.5, 10
  # (lambda / 2m) * (1 + 4 + 9 + 1) = 0.025 * 15
  assert float(losses.l2_penalty(params, lam, m)) == pytest.approx(0.375)
  assert float(losses.l2_penalty(params, 0.0, m)) == 0.0


def test_l1_penalty_is_lambda1_over_m_sum_of_absolute_weights():
  params = [{"w": jnp.array([[1.0, -2.0]]), "b": jnp.array([5.0, 5.0])}]
  assert float(losses.l1_penalty(params, 0.3, 6)) == pytest.approx(0.3 / 6 * 3.0)


def test_full_cost_on_a_tiny_network_by_hand():
  """E for a 1-1-1 sigmoid network, one example, every number written out."""
  from research import models
  import ml_collections
  cfg = ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=(1,), activation="sigmoid"))
  model = models.build(cfg, (1,), 1)
  params = [{"w": jnp.array([[2.0]]), "b": jnp.array([0.5])},
            {"w": jnp.array([[-3.0]]), "b": jnp.array([1.0])}]
  x, label = jnp.array([[1.5]]), jnp.array([1])
  sigma1 = _sigmoid(2.0 * 1.5 + 0.5)
  sigma2 = _sigmoid(-3.0 * sigma1 + 1.0)
  lam, m = 0.2, 4
  expected = -math.log(sigma2) + lam / (2 * m) * (2.0**2 + 3.0**2)
  loss_fn = losses.make_loss_fn(model, "sigmoid", lam, m, 1)
  E, aux = loss_fn(params, x, label, None)
  assert float(E) == pytest.approx(expected, rel=1e-6)
  assert float(aux["accuracy"]) == float(sigma2 > 0.5)


def test_one_hot_targets_and_predictions():
  labels = jnp.array([2, 0])
  np.testing.assert_array_equal(losses.one_hot_targets(labels, 3), [[0, 0, 1], [1, 0, 0]])
  np.testing.assert_array_equal(losses.one_hot_targets(labels, 1), [[2], [0]])
  np.testing.assert_array_equal(losses.predictions(jnp.array([[0.1, 0.9], [2.0, -1.0]])), [1, 0])
  np.testing.assert_array_equal(losses.predictions(jnp.array([[0.3], [-0.2]])), [1, 0])
