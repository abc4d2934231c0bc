"""A small inception network (GoogLeNet's module, Szegedy et al. 2015) for small images.

  x_NxHxWxC -> stem conv 3x3 (SAME) -> ReLU -> max pool 3x3/2 (SAME)
            -> inception block 1 -> max pool 3x3/2 (SAME) -> inception block 2 -> ...
            -> global average pool -> dropout -> dense K logits

As in GoogLeNet, the stem halves H and W before the first block (32x32 -> 16x16 -> 8x8),
which makes the blocks four times cheaper on small images.

Each block is `layers.inception_block`: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 pool -> 1x1,
concatenated on channels. The 1x1 "reduce" convs keep the 3x3 and 5x5 branches cheap; the
global average pool (GoogLeNet Sec. 5) replaces the large fully connected layers, so the
network accepts any input size and has few parameters.
"""
import functools

import jax
import jax.numpy as jnp

from research import errors
from research import model_configs
from research.models import core
from research.models import layers

BLOCK_FIELDS = ("c1", "c3r", "c3", "c5r", "c5", "pool_proj")


def init(key: jax.Array, in_ch: int, num_outputs: int, *, stem_channels: int,
         blocks: tuple[tuple[int, ...], ...], dtype=jnp.float32) -> dict:
  """{"stem": conv, "blocks": [inception block params], "out": dense}.

  blocks: one (c1, c3r, c3, c5r, c5, pool_proj) tuple per inception block.
  """
  k_stem, k_out, *k_blocks = jax.random.split(key, 2 + len(blocks))
  params = {"stem": layers.init_conv2d(k_stem, in_ch, stem_channels, 3, dtype=dtype),
            "blocks": []}
  ch = stem_channels
  for k, spec in zip(k_blocks, blocks):
    params["blocks"].append(layers.init_inception_block(k, ch, *spec, dtype=dtype))
    ch = layers.inception_out_channels(params["blocks"][-1])
  params["out"] = layers.init_dense(k_out, ch, num_outputs, dtype=dtype)
  return params


def apply(params: dict, x_NHWC: jax.Array, *, dropout: float = 0.0, train: bool = False,
          rng: jax.Array | None = None, conv_impl: str = "xla") -> jax.Array:
  """x_NxHxWxC -> logits_NxK; a 3x3/2 max pool after the stem and between blocks halves H, W.
  conv_impl as in layers.conv2d."""
  h = jax.nn.relu(layers.conv2d(params["stem"], x_NHWC, impl=conv_impl))
  for block in params["blocks"]:
    h = layers.inception_block(block, layers.max_pool(h, 3, 2, "SAME"), conv_impl)
  h = layers.dropout(rng, layers.global_avg_pool(h), dropout, train)
  return layers.dense(params["out"], h)


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.inception
RANGES = model_configs.RANGES["inception"]


@core.register("inception")
def _build(cfg, input_shape, num_outputs) -> core.Model:
  if len(input_shape) != 3:
    raise errors.ConfigError(
        f"model inception needs NHWC images, got input shape {input_shape}; set "
        "config.data.image_size (e.g. 32 for digits)")
  blocks = tuple(tuple(b) for b in cfg.blocks)
  if not blocks or any(len(b) != len(BLOCK_FIELDS) or any(
      not isinstance(c, int) or c <= 0 for c in b) for b in blocks):
    raise errors.ConfigError(
        f"config.model.blocks={blocks!r} must be one or more tuples of {len(BLOCK_FIELDS)} "
        f"positive integers {BLOCK_FIELDS}, e.g. ((16, 16, 24, 4, 8, 8),)")
  return core.Model(
      functools.partial(init, in_ch=input_shape[2], num_outputs=num_outputs,
                        stem_channels=cfg.stem_channels, blocks=blocks),
      functools.partial(apply, dropout=cfg.dropout, conv_impl=core.conv_impl(cfg)))
