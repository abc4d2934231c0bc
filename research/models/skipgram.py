"""Skip-gram with negative sampling (word2vec, Mikolov et al. 2013) as pure functions.

Every word w has two vectors: v_w (a row of the input table "v_in", the embedding kept after
training) and v'_w (a row of the output table "v_out"). For a (center c, context o) pair and
K noise words n_1..n_K drawn from P_n(w) ~ count(w)^(3/4), the cost is

  E_pair = -log sigma(v'_o . v_c) - sum_k log sigma(-v'_{n_k} . v_c)

which is the lecture's sigmoid cross-entropy on K + 1 output units with sums s = v'_. v_c and
targets y = (1, 0, ..., 0): the true context is "on", the noise words "off". A batch averages
E over its B pairs. Tables: v_in ~ U(-0.5/D, 0.5/D) and v_out = 0, as word2vec starts.

Shapes: center_B, context_BxC with C = 1 + K (column 0 the true context, the rest noise).
"""
import jax
import jax.numpy as jnp

from research import losses


def init(key: jax.Array, vocab_size: int, dim: int, dtype=jnp.float32) -> dict:
  """{"v_in": V x D, "v_out": V x D} as word2vec initialises them."""
  v_in = jax.random.uniform(key, (vocab_size, dim), dtype, -0.5 / dim, 0.5 / dim)
  return {"v_in": v_in, "v_out": jnp.zeros((vocab_size, dim), dtype)}


def scores(params: dict, center_B: jax.Array, context_BxC: jax.Array) -> jax.Array:
  """s_BxC = v'_{context} . v_{center}: the sums of the K + 1 output units of each pair."""
  v_c = jnp.take(params["v_in"], center_B, axis=0)            # B x D
  v_o = jnp.take(params["v_out"], context_BxC, axis=0)        # B x C x D
  return jnp.einsum("bd,bcd->bc", v_c, v_o)


def targets(shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
  """y_BxC: 1 for the true context (column 0), 0 for the noise words."""
  return jnp.zeros(shape, dtype).at[:, 0].set(1)


def loss(params: dict, center_B: jax.Array, context_BxC: jax.Array) -> jax.Array:
  """E = (1/B) sum_b [-log sigma(s_b0) - sum_{k>=1} log sigma(-s_bk)], stably from s."""
  s_BxC = scores(params, center_B, context_BxC)
  return losses.sigmoid_cross_entropy(s_BxC, targets(s_BxC.shape, s_BxC.dtype)).mean()


def sample_noise(key: jax.Array, cdf_V: jax.Array, shape) -> jax.Array:
  """Noise words ~ P_n by inverting its cumulative distribution cdf_V (the last entry 1)."""
  u = jax.random.uniform(key, shape, cdf_V.dtype)
  return jnp.minimum(jnp.searchsorted(cdf_V, u, side="right"), cdf_V.shape[0] - 1).astype(
      jnp.int32)


def normalize(table_VxD: jax.Array) -> jax.Array:
  """Rows scaled to unit length (a zero row stays 0), so dot products are cosines."""
  norm = jnp.linalg.norm(table_VxD, axis=1, keepdims=True)
  return table_VxD / jnp.where(norm > 0, norm, 1)


def nearest(table_VxD: jax.Array, query_Q: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The k words of highest cosine similarity to each query word, itself excluded:
  (ids_Qxk, cosines_Qxk), most similar first."""
  unit = normalize(table_VxD)
  cos_QxV = unit[query_Q] @ unit.T
  cos_QxV = cos_QxV.at[jnp.arange(query_Q.shape[0]), query_Q].set(-jnp.inf)
  cos, ids = jax.lax.top_k(cos_QxV, k)
  return ids, cos
