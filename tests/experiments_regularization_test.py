"""losses.mixture_nll (the mixture predictive of bagging and the dropout ensemble) and the
harness's unstratified seeded slice. The runners' own tests: tests/regularization_test.py and
tests/dropout_ensemble_test.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import exp_regularization
from research import data as data_lib
from research import losses
from research.experiments import harness


@pytest.fixture(scope="module")
def digits():
  return data_lib.load(exp_regularization.get_config().data)


# ------------------------------------------------------------------------------- mixture_nll

# Jitted: one compilation per case instead of one per primitive.
_mixture_nll = jax.jit(losses.mixture_nll, static_argnums=2)


@pytest.mark.parametrize("output,k", [("softmax", 5), ("sigmoid", 5), ("sigmoid", 1)])
def test_mixture_of_one_member_is_the_library_loss(output, k):
  logits_BxK = jax.random.normal(jax.random.key(0), (7, k)) * 3
  labels_B = jax.random.randint(jax.random.key(1), (7,), 0, max(k, 2))
  nll_B, pred_B = _mixture_nll(logits_BxK[None], labels_B, output)
  expected = losses.DATA_LOSSES[output](logits_BxK, losses.one_hot_targets(labels_B, k))
  np.testing.assert_allclose(nll_B, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(pred_B, losses.predictions(logits_BxK))


def test_mixture_averages_probabilities_not_logits():
  # Two members, one sure of class 0 and one sure of class 1: the mixture gives each 1/2.
  logits_MxBxK = jnp.array([[[20.0, -20.0]], [[-20.0, 20.0]]])
  nll_B, _ = _mixture_nll(logits_MxBxK, jnp.array([0]), "softmax")
  np.testing.assert_allclose(nll_B, [np.log(2.0)], rtol=1e-5)


# ---------------------------------------------------------------------------- seeded slices


def test_seeded_slice_is_seeded_and_without_replacement(digits):
  a = harness.seeded_slice(digits.train, 60, 0)
  b = harness.seeded_slice(digits.train, 60, 0)
  c = harness.seeded_slice(digits.train, 60, 1)
  np.testing.assert_array_equal(a.x, b.x)
  assert not np.array_equal(a.x, c.x)
  assert len(np.unique(a.x.reshape(60, -1), axis=0)) == 60
  assert harness.seeded_slice(digits.train, 0, 0) is digits.train
