"""The skip-gram's backward pass by hand, touching only the rows of the batch's words.

The model (research/models/skipgram.py), per pair b: K + 1 output units with sums
s_bc = v'_{o_bc} . v_{c_b} (c = 0 the true context o_b, c >= 1 the noise words) and the
lecture's sigmoid cross-entropy with targets y_b = (1, 0, ..., 0), averaged over the B pairs.
As for the lecture's output layer, delta = dE/ds is

  delta_bc = (sigma(s_bc) - y_bc) / B

and each s_bc = sum_d v'_{o_bc, d} v_{c_b, d} is a product of two rows, so

  dE/dv_{c_b}      += sum_c delta_bc v'_{o_bc}       (one D-vector per pair)
  dE/dv'_{o_bc}    += delta_bc v_{c_b}               (one D-vector per output unit)

Every other row of the V x D tables has gradient 0. `backward` returns the gradient in that
sparse form, (row ids, D-vectors), and `sgd_rows` applies an SGD step with a scatter-add into
those rows only: O(B (K + 1) D) work per step whatever V is, as word2vec does. A row used
several times in the batch (a frequent word, or one drawn as noise twice) receives the sum of
its contributions. `densify` builds the dense V x D gradient that jax.grad returns, for
research.gradcheck.
"""
import jax
import jax.numpy as jnp

from research import losses
from research.backprop import core
from research.models import skipgram


def forward(params: dict, center_B: jax.Array, context_BxC: jax.Array) -> tuple[dict, jax.Array]:
  """s_BxC, and the cache of the rows it read: v_c (B x D) and v'_o (B x C x D)."""
  v_c = jnp.take(params["v_in"], center_B, axis=0)
  v_o = jnp.take(params["v_out"], context_BxC, axis=0)
  return {"v_c": v_c, "v_o": v_o}, jnp.einsum("bd,bcd->bc", v_c, v_o)


def backward(cache: dict, s_BxC: jax.Array, center_B: jax.Array,
             context_BxC: jax.Array) -> dict:
  """The sparse gradient: {"v_in": (center_B, g_BxD), "v_out": (context_BxC, g_BxCxD)}."""
  y_BxC = skipgram.targets(s_BxC.shape, s_BxC.dtype)
  delta_BxC = (jax.nn.sigmoid(s_BxC) - y_BxC) / s_BxC.shape[0]
  g_in_BxD = jnp.einsum("bc,bcd->bd", delta_BxC, cache["v_o"])
  g_out_BxCxD = delta_BxC[:, :, None] * cache["v_c"][:, None, :]
  return {"v_in": (center_B, g_in_BxD), "v_out": (context_BxC, g_out_BxCxD)}


def value_and_sparse_grad(params: dict, center_B: jax.Array,
                          context_BxC: jax.Array) -> tuple[jax.Array, dict]:
  """(E, the sparse gradient of `backward`) from one forward pass."""
  cache, s_BxC = forward(params, center_B, context_BxC)
  E = losses.sigmoid_cross_entropy(s_BxC, skipgram.targets(s_BxC.shape, s_BxC.dtype)).mean()
  return E, backward(cache, s_BxC, center_B, context_BxC)


def densify(params: dict, sparse: dict) -> dict:
  """The dense V x D gradients (jax.grad's form): each row's contributions added up."""
  return {name: jnp.zeros_like(params[name]).at[ids].add(g.astype(params[name].dtype))
          for name, (ids, g) in sparse.items()}


def sgd_rows(params: dict, sparse: dict, eta) -> dict:
  """params - eta dE/dparams, computed as a scatter-add into the touched rows only."""
  return {name: params[name].at[ids].add((-eta * g).astype(params[name].dtype))
          for name, (ids, g) in sparse.items()}


# ------------------------------------------------------------------------------ gradient check


@core.register_problem("skipgram")
def problem_skipgram(key, batch, dtype) -> core.Problem:
  """V = 11 words, D = 6, B pairs with K = 4 noise words each: ids repeat within the batch, so
  the scatter-add of repeated rows is checked; both tables ~ N(0, 0.5^2) (word2vec's v' = 0
  would make dE/dv_in = 0)."""
  vocab, dim, k = 11, 6, 4

  @jax.jit
  def make_arrays(key):
    key_p, key_c, key_o = jax.random.split(key, 3)
    shapes = {"v_in": jax.ShapeDtypeStruct((vocab, dim), dtype),
              "v_out": jax.ShapeDtypeStruct((vocab, dim), dtype)}
    params = jax.tree.map(lambda z: 0.5 * z, core.random_like(key_p, shapes, dtype))
    center_B = jax.random.randint(key_c, (batch,), 0, vocab)
    context_BxC = jax.random.randint(key_o, (batch, 1 + k), 0, vocab)
    return params, center_B, context_BxC

  params, center_B, context_BxC = make_arrays(key)
  return core.Problem(
      params=params, args=(center_B, context_BxC), loss_fn=skipgram.loss,
      grad_fn=lambda p, c, o: densify(p, value_and_sparse_grad(p, c, o)[1]),
      description=(f"skip-gram, negative sampling: V={vocab}, D={dim}, B={batch} pairs, K={k} "
                   "noise words each; the sparse row gradient scattered into V x D"))
