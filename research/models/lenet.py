"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998, "Gradient-based learning applied to
document recognition", Sec. II.B) as pure functions, in three variants.

  x_32x32xC -> C1 6@5x5 (28x28) -> S2 2x2 (14x14) -> C3 16@5x5 (10x10) -> S4 2x2 (5x5)
            -> C5 120@5x5 (1x1) -> F6 84 -> output K logits

variant (config.model.variant):
  "faithful": the paper's squashing f(a) = 1.7159 tanh(2a/3) everywhere; trainable
              subsampling (each S map is f(coef * sum of its 2x2 window + bias), one coef and
              one bias per map); C3 sees only the input maps of the paper's Table I (60
              connections). The paper's output layer is 10 Euclidean RBF units with fixed
              7x12 bitmap centres; here it is a dense layer giving logits for the softmax loss.
  "classic":  the textbook simplification: tanh, parameter-free 2x2 average pooling, full C3.
  "modern":   ReLU, 2x2 max pooling, full C3, He initialisation.

Parameter counts of the faithful variant match the paper layer by layer (PAPER_PARAM_COUNTS);
the dense output layer has 84 * K + K (850 for K = 10, against the RBF layer's 840).
Weights use LeCun normal N(0, 1/fan_in) (He for "modern") rather than the paper's
U(-2.4/F, 2.4/F), which is tuned for its second-order optimiser.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from research import errors
from research import model_configs
from research.models import core
from research.models import layers

VARIANTS = ("faithful", "classic", "modern")
INPUT_SIZE = 32

# Table I: the S2 maps (0..5) each C3 map (0..15) reads. Maps 0-5 see 3 contiguous maps,
# 6-11 see 4 contiguous, 12-14 see 4 non-contiguous, 15 sees all 6: 18 + 36 + 12 + 6 = 60.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
# One (input map, output map) pair per connection, in the order of the stored C3 weights.
_C3_IN = np.array([i for row in C3_TABLE for i in row], np.int32)
_C3_OUT = np.array([o for o, row in enumerate(C3_TABLE) for _ in row], np.int32)

# Trainable parameters per layer in the paper (Sec. II.B), for the faithful variant.
PAPER_PARAM_COUNTS = {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164}

param_count = layers.param_count


def scaled_tanh(a: jax.Array) -> jax.Array:
  """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (Appendix A):
  f(1) = 1 and f(-1) = -1, with the largest second derivative near |a| = 1."""
  return 1.7159 * jnp.tanh(a * (2.0 / 3.0))


_ACTIVATIONS = {"faithful": scaled_tanh, "classic": jnp.tanh, "modern": jax.nn.relu}


def _init_subsampling(num_maps: int, dtype) -> dict:
  # coef = 1/4 starts each S map as f(2x2 average); the bias starts at 0.
  return {"coef": jnp.full((num_maps,), 0.25, dtype), "b": jnp.zeros((num_maps,), dtype)}


def _init_c3_partial(key: jax.Array, dtype) -> dict:
  """{"w": w_5x5x60 (one 5x5 kernel per Table I connection), "b": b_16}. Each C3 map's fan-in
  is 25 times the number of S2 maps it reads."""
  fan_in = 25.0 * np.array([len(C3_TABLE[o]) for o in _C3_OUT], np.float32)
  w = jax.random.normal(key, (5, 5, len(_C3_IN)), dtype) / jnp.sqrt(fan_in).astype(dtype)
  return {"w": w, "b": jnp.zeros((len(C3_TABLE),), dtype)}


def init(key: jax.Array, in_ch: int, num_outputs: int, variant: str = "faithful",
         dtype=jnp.float32) -> dict:
  """Params keyed by the paper's layer names; parameter-free pooling layers have no entry."""
  init_name = "he" if variant == "modern" else "lecun"
  k = jax.random.split(key, 5)
  conv = functools.partial(layers.init_conv2d, init=init_name, dtype=dtype)
  params = {"c1": conv(k[0], in_ch, 6, 5)}
  if variant == "faithful":
    params["s2"] = _init_subsampling(6, dtype)
    params["c3"] = _init_c3_partial(k[1], dtype)
    params["s4"] = _init_subsampling(16, dtype)
  else:
    params["c3"] = conv(k[1], 6, 16, 5)
  params["c5"] = conv(k[2], 16, 120, 5)
  params["f6"] = layers.init_dense(k[3], 120, 84, init=init_name, dtype=dtype)
  params["out"] = layers.init_dense(k[4], 84, num_outputs, dtype=dtype)
  return params


def _c3_kernel(c3: dict) -> jax.Array:
  """Scatters the 60 stored 5x5 kernels into a full w_5x5x6x16 whose other entries are 0."""
  w = c3["w"]
  return jnp.zeros((5, 5, 6, 16), w.dtype).at[:, :, _C3_IN, _C3_OUT].set(w)


def apply(params: dict, x_NHWC: jax.Array, variant: str = "faithful",
          conv_impl: str = "xla") -> jax.Array:
  """x_Nx32x32xC -> logits_NxK; conv_impl as in layers.conv2d."""
  conv = functools.partial(layers.conv2d, padding="VALID", impl=conv_impl)
  f = _ACTIVATIONS[variant]

  def subsample(h, name):
    if variant == "faithful":
      s = params[name]
      return f(layers.sum_pool(h, 2) * s["coef"] + s["b"])
    if variant == "classic":
      return layers.avg_pool(h, 2)
    return layers.max_pool(h, 2)

  h = f(conv(params["c1"], x_NHWC))                                    # N x 28 x 28 x 6
  h = subsample(h, "s2")                                                # N x 14 x 14 x 6
  c3 = params["c3"]
  if variant == "faithful":
    c3 = {"w": _c3_kernel(c3), "b": c3["b"]}
  h = f(conv(c3, h))                                                    # N x 10 x 10 x 16
  h = subsample(h, "s4")                                                # N x 5 x 5 x 16
  h = f(conv(params["c5"], h))                                          # N x 1 x 1 x 120
  h = f(layers.dense(params["f6"], layers.flatten(h)))                  # N x 84
  return layers.dense(params["out"], h)                                 # N x K


# The default config.model group and its numeric fields' ranges, JAX-free for config files.
config = model_configs.lenet
RANGES = model_configs.RANGES["lenet"]


@core.register("lenet5")
def _build(cfg, input_shape, num_outputs) -> core.Model:
  errors.check_choice("model.variant", cfg.variant, VARIANTS)
  conv_impl = core.conv_impl(cfg)
  if len(input_shape) != 3 or input_shape[:2] != (INPUT_SIZE, INPUT_SIZE):
    raise errors.ConfigError(
        f"model lenet5 needs 32x32xC images (the paper pads 28x28 MNIST to 32x32), got input "
        f"shape {input_shape}; set config.data.image_size=32")

  def apply_fn(params, x, *, train=False, rng=None):
    del train, rng  # No dropout: LeNet-5 is deterministic.
    return apply(params, x, cfg.variant, conv_impl)

  return core.Model(
      functools.partial(init, in_ch=input_shape[2], num_outputs=num_outputs,
                        variant=cfg.variant),
      apply_fn)
