"""The lecture's network: a fully connected stack of sigma(sum) layers, as pure functions.

params is a list with one {"w": w_IxO, "b": b_O} dict per layer l = 1..L, so that
sum^l_j = sum_i sigma^{l-1}_i w^l_ij + b^l_j and sigma^l_j = activation(sum^l_j).
`apply` returns the output layer's sum^L (logits); the output non-linearity (sigmoid or
softmax) lives in the loss so that it can be computed stably from logits.
"""
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers

ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


def init(key: jax.Array, sizes: Sequence[int], dtype=jnp.float32) -> list[dict]:
  """Returns params for layer widths `sizes` = (d_in, h_1, ..., h_{L-1}, K).

  Weights are N(0, 1/fan_in) (LeCun normal), which keeps sigmoid units out of
  saturation at the start; biases are zero.
  """
  params = []
  keys = jax.random.split(key, len(sizes) - 1)
  for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:]):
    w_IxO = jax.random.normal(k, (fan_in, fan_out), dtype) / jnp.sqrt(fan_in).astype(dtype)
    params.append({"w": w_IxO, "b": jnp.zeros((fan_out,), dtype)})
  return params


def apply(params: list[dict], x_BxD: jax.Array, activation: str = "sigmoid", *,
          dropout: float = 0.0, train: bool = False, rng: jax.Array | None = None) -> jax.Array:
  """Forward pass: x_BxD -> logits_BxK (the output layer's sum^L, before its sigma).

  dropout > 0 (training only) zeroes each hidden sigma^l_j with that probability, a fresh
  mask per layer from `rng` (inverted dropout: evaluation needs no rescaling).
  """
  act = ACTIVATIONS[activation]
  h = x_BxD.reshape(x_BxD.shape[0], -1)
  keys = jax.random.split(rng, len(params)) if (train and dropout > 0) else [None] * len(params)
  for layer, key in zip(params[:-1], keys):
    h = layers.dropout(key, act(h @ layer["w"] + layer["b"]), dropout, train)
  return h @ params[-1]["w"] + params[-1]["b"]


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.mlp
RANGES = model_configs.RANGES["mlp"]


@core.register("mlp")
def _build_mlp(cfg, input_shape, num_outputs) -> core.Model:
  errors.check_choice("model.activation", cfg.activation, sorted(ACTIVATIONS))
  hidden = tuple(cfg.hidden_sizes)
  if any(not isinstance(h, int) or h <= 0 for h in hidden):
    raise errors.ConfigError(
        f"config.model.hidden_sizes={hidden!r} must be positive integers, e.g. (64,) or (128, 64)")
  rate = cfg.get("dropout", 0.0)  # checked against RANGES by core.build
  sizes = (math.prod(input_shape), *hidden, num_outputs)

  def apply_fn(params, x, *, train=False, rng=None):
    return apply(params, x, cfg.activation, dropout=rate, train=train, rng=rng)

  return core.Model(functools.partial(init, sizes=sizes), apply_fn)
