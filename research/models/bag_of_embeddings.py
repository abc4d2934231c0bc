"""A sentence classifier on a bag of word embeddings: the Lego blocks "embeddings" + dense.

  e_b = (1/n_b) sum_{t: id_bt >= 0} table[id_bt]      the mean of the sentence's word vectors
  logits_b = e_b w + b                                 one dense layer, K classes

Sentences are ids_BxT padded with -1 (n_b real words, at least one). params:
{"embed": {"table": V x D}, "head": {"w": D x K, "b": K}}; the table is not penalised by the
lambda/2m term (losses.is_weight). With model.freeze_embeddings the table gets no gradient
(lax.stop_gradient): the classifier is then logistic regression on fixed sentence vectors.
research/experiments/embeddings.py initialises the table from a skip-gram.
"""
import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers


def mean_embedding(table_VxD: jax.Array, ids_BxT: jax.Array) -> jax.Array:
  """e_BxD: the mean of each row's word vectors over its ids >= 0 (0 for an all-pad row)."""
  real_BxT = (ids_BxT >= 0).astype(table_VxD.dtype)
  vectors_BxTxD = jnp.take(table_VxD, jnp.maximum(ids_BxT, 0), axis=0)
  total_BxD = (vectors_BxTxD * real_BxT[..., None]).sum(axis=1)
  return total_BxD / jnp.maximum(real_BxT.sum(axis=1, keepdims=True), 1)


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.bag_of_embeddings
RANGES = model_configs.RANGES["bag_of_embeddings"]


@core.register("bag_of_embeddings")
def _build(cfg, input_shape, num_outputs) -> core.Model:
  if cfg.vocab_size == 0:  # The runner sets it; a model of no words cannot be built.
    raise errors.ConfigError("config.model.vocab_size=0: set it to the corpus's vocabulary "
                             "size (research/experiments/embeddings.py does)")
  if len(input_shape) != 1:
    raise errors.ConfigError(f"bag_of_embeddings reads ids_BxT, one sentence per row; got "
                             f"examples of shape {input_shape}")
  freeze = bool(cfg.freeze_embeddings)

  def init(key):
    key_e, key_h = jax.random.split(key)
    return {"embed": layers.init_embedding(key_e, cfg.vocab_size, cfg.embed_dim),
            "head": layers.init_dense(key_h, cfg.embed_dim, num_outputs)}

  def apply(params, ids_BxT, *, train=False, rng=None):
    del train, rng
    table = params["embed"]["table"]
    if freeze:
      table = jax.lax.stop_gradient(table)
    return layers.dense(params["head"], mean_embedding(table, ids_BxT))

  return core.Model(init, apply)
