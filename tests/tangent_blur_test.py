"""The tangent-prop tangents' blur is built in the image's dtype (float64 weights under x64)."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from research.experiments import tangent_prop


def _reference_blur(x_NHWC: np.ndarray, sigma: float) -> np.ndarray:
  """The same separable Gaussian in numpy float64, edges repeated."""
  radius = max(1, math.ceil(2 * sigma))
  g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  g /= g.sum()
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded = np.pad(x_NHWC, pad, mode="edge")
    n = x_NHWC.shape[axis]
    x_NHWC = sum(gi * np.take(padded, np.arange(i, i + n), axis=axis) for i, gi in enumerate(g))
  return x_NHWC


def test_blur_in_float64_matches_a_float64_reference():
  x = np.random.default_rng(0).normal(size=(2, 7, 7, 1))
  with jax.enable_x64(True):
    got = jax.jit(tangent_prop.blur, static_argnums=1)(jnp.asarray(x), 1.3)
  assert got.dtype == jnp.float64
  # float32 weights were 5e-9 to 7e-8 off; float64 ones agree to rounding.
  np.testing.assert_allclose(got, _reference_blur(x, 1.3), rtol=0, atol=1e-14)
