"""LeNet-5, AlexNet and the small inception net: parameter counts against the papers,
output shapes, dropout behaviour, config errors, and the configs/*.py that use them."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import alexnet_small
from configs import inception_digits
from configs import lenet_digits
from research import errors
from research import models
from research.models import alexnet
from research.models import inception
from research.models import layers
from research.models import lenet

KEY = jax.random.key(0)
X32 = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))


def model_config(**fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(fields)


def alexnet_full_config(**overrides) -> ml_collections.ConfigDict:
  cfg = model_config(
      name="alexnet", conv_channels=(96, 256, 384, 384, 256), kernel_sizes=(11, 5, 3, 3, 3),
      groups=(1, 2, 1, 2, 2), conv1_stride=4, conv1_padding="VALID", width=1.0,
      fc_sizes=(4096, 4096), lrn=True, dropout=0.5)
  cfg.update(overrides)
  return cfg


# -------------------------------------------------------------------------------------- LeNet

# Table I of LeCun et al. (1998) as printed: row = S2 map, column = C3 map, X = connected.
PAPER_TABLE_I = (
    "X   XXX  XXXX XX",
    "XX   XXX  XXXX X",
    "XXX   XXX  X XXX",
    " XXX  XXXX  X XX",
    "  XXX  XXXX XX X",
    "   XXX  XXXX XXX",
)


def test_lenet_c3_table_is_the_papers():
  mask = np.array([[ch == "X" for ch in row] for row in PAPER_TABLE_I])
  ours = np.zeros((6, 16), bool)
  for o, inputs in enumerate(lenet.C3_TABLE):
    ours[list(inputs), o] = True
  np.testing.assert_array_equal(ours, mask)
  assert mask.sum() == 60


def test_lenet_faithful_param_counts_match_the_paper_layer_by_layer():
  params = jax.eval_shape(lambda: lenet.init(KEY, 1, 10, "faithful"))
  counts = {name: lenet.param_count(p) for name, p in params.items()}
  assert counts == {**lenet.PAPER_PARAM_COUNTS, "out": 850}
  assert lenet.param_count(params) == 60850


@pytest.mark.parametrize("variant", ["classic", "modern"])
def test_lenet_full_c3_variants_have_no_subsampling_params(variant):
  params = jax.eval_shape(lambda: lenet.init(KEY, 1, 10, variant))
  assert set(params) == {"c1", "c3", "c5", "f6", "out"}
  assert lenet.param_count(params["c3"]) == 5 * 5 * 6 * 16 + 16


def test_lenet_faithful_c3_only_sees_its_table_inputs():
  # d(C3 map o) / d(S2 map i) is zero exactly where Table I has no X.
  kernel = lenet._c3_kernel({"w": jnp.ones((5, 5, 60)), "b": jnp.zeros(16)})
  connected = np.asarray(jnp.any(kernel != 0, axis=(0, 1)))
  want = np.array([[ch == "X" for ch in row] for row in PAPER_TABLE_I])
  np.testing.assert_array_equal(connected, want)


def test_scaled_tanh_fixed_points():
  np.testing.assert_allclose(lenet.scaled_tanh(jnp.array([1.0, -1.0])), [1.0, -1.0], atol=1e-4)


@pytest.mark.parametrize("variant", lenet.VARIANTS)
def test_lenet_output_shape(variant):
  # Shapes only (no compilation); test_lenet_learns_a_small_batch runs the numbers.
  m = lenet._build(model_config(name="lenet5", variant=variant), (32, 32, 1), 10)
  params = jax.eval_shape(m.init, KEY)
  assert jax.eval_shape(m.apply, params, X32).shape == (2, 10)


def test_lenet_rejects_wrong_image_size_and_variant():
  with pytest.raises(errors.ConfigError, match="image_size=32"):
    lenet._build(model_config(name="lenet5", variant="faithful"), (28, 28, 1), 10)
  with pytest.raises(errors.ConfigError, match="model.variant"):
    lenet._build(model_config(name="lenet5", variant="lenet1"), (32, 32, 1), 10)


@pytest.mark.slow
def test_lenet_learns_a_small_batch():
  # Trainable subsampling and the scattered C3 kernel must pass gradients: 30 Adam steps
  # on 16 random images with random labels drive the loss well down.
  m = lenet._build(model_config(name="lenet5", variant="faithful"), (32, 32, 1), 4)
  x = jax.random.normal(jax.random.key(2), (16, 32, 32, 1))
  y = jax.random.randint(jax.random.key(3), (16,), 0, 4)
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(m.apply(p, x), y).mean()
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  p = jax.jit(m.init)(KEY)
  s = opt.init(p)
  first = float(loss(p))
  for _ in range(30):
    p, s = step(p, s)
  assert float(loss(p)) < 0.2 * first
  assert float(jnp.abs(p["s2"]["coef"] - 0.25).max()) > 0  # the subsampling gain trained


# ------------------------------------------------------------------------------------ AlexNet


@pytest.mark.parametrize("groups,count", [((1, 2, 1, 2, 2), 60_965_224),
                                          ((1, 1, 1, 1, 1), 62_378_344)])
def test_alexnet_full_size_count_and_shape(groups, count):
  # Shapes only: no 60M-parameter arrays are allocated.
  m = alexnet._build(alexnet_full_config(groups=groups), (227, 227, 3), 1000)
  params = jax.eval_shape(m.init, KEY)
  assert layers.param_count(params) == count
  assert params["conv"][0]["w"].shape == (11, 11, 3, 96)
  assert params["fc"][0]["w"].shape == (6 * 6 * 256, 4096)
  x = jax.ShapeDtypeStruct((2, 227, 227, 3), jnp.float32)
  assert jax.eval_shape(m.apply, params, x).shape == (2, 1000)
  train = functools.partial(m.apply, train=True, rng=KEY)
  assert jax.eval_shape(train, params, x).shape == (2, 1000)


def test_alexnet_224_with_same_conv1_padding_keeps_the_papers_sizes():
  m = alexnet._build(alexnet_full_config(conv1_padding="SAME"), (224, 224, 3), 1000)
  assert jax.eval_shape(m.init, KEY)["fc"][0]["w"].shape == (9216, 4096)


def test_alexnet_small_config_shapes_and_width():
  cfg = alexnet_small.get_config().model
  m = alexnet._build(cfg, (32, 32, 3), 10)
  params = jax.eval_shape(m.init, KEY)
  assert [c["w"].shape[-1] for c in params["conv"]] == [64, 192, 384, 256, 256]
  assert [f["w"].shape for f in params["fc"]] == [(3 * 3 * 256, 1024), (1024, 1024), (1024, 10)]
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  assert jax.eval_shape(m.apply, params, x).shape == (2, 10)
  cfg.width = 0.5
  half = jax.eval_shape(alexnet._build(cfg, (32, 32, 3), 10).init, KEY)
  assert [c["w"].shape[-1] for c in half["conv"]] == [32, 96, 192, 128, 128]


@pytest.mark.slow
def test_alexnet_dropout_only_in_training_and_per_key():
  cfg = alexnet_small.get_config().model
  cfg.update(width=0.0625, kernel_sizes=(3, 3, 3, 3, 3), fc_sizes=(16, 16))
  m = alexnet._build(cfg, (16, 16, 1), 10)
  params = jax.jit(m.init)(KEY)
  x = X32[:, :16, :16]

  outputs = jax.jit(lambda params, rng: (m.apply(params, x, rng=rng),
                                          m.apply(params, x, train=True, rng=rng)))
  eval_1, train_1 = outputs(params, jax.random.key(1))
  _, train_1_again = outputs(params, jax.random.key(1))
  eval_2, train_2 = outputs(params, jax.random.key(2))
  np.testing.assert_array_equal(eval_1, eval_2)  # evaluation ignores the key
  np.testing.assert_array_equal(train_1, train_1_again)  # same key, same masks
  assert np.any(train_1 != train_2) and np.any(train_1 != eval_1)
  with pytest.raises(ValueError, match="rng"):
    m.apply(params, X32, train=True)


def test_alexnet_2x2_pools_give_the_common_small_alexnet():
  # The peer benchmark's AlexNet-small: 3x3 convs 64-192-384-256-256, 2x2/2 pools (32 -> 16
  # -> 8 -> 4), fc 4096 -> 1024 -> 1024 -> 10: 7,506,762 parameters.
  cfg = alexnet_small.get_config().model
  cfg.update(kernel_sizes=(3,) * 5, pool_window=2, pool_stride=2, lrn=False)
  m = alexnet._build(cfg, (32, 32, 3), 10)
  shapes = jax.eval_shape(m.init, KEY)
  assert layers.param_count(shapes) == 7_506_762
  assert shapes["fc"][0]["w"].shape == (4 * 4 * 256, 1024)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  assert jax.eval_shape(lambda p, x: m.apply(p, x), shapes, x).shape == (2, 10)


@pytest.mark.parametrize("override,match", [
    (dict(conv_channels=(64, 192, 384, 256)), "conv_channels"),
    (dict(pool_window=0), "pool_window"),
    (dict(pool_stride=-1), "pool_stride"),
    (dict(conv_impl="cudnn"), "conv_impl"),
    (dict(conv1_padding="same"), "conv1_padding"),
    (dict(dropout=1.0), "dropout"),
    (dict(groups=(2, 1, 1, 1, 1)), "groups"),
    (dict(conv1_stride=4, conv1_padding="VALID", kernel_sizes=(11, 5, 3, 3, 3)), "too small"),
])
def test_alexnet_config_errors(override, match):
  cfg = alexnet_small.get_config().model
  cfg.update(override)
  with pytest.raises(errors.ConfigError, match=match):
    models.build(cfg, (32, 32, 3), 10)  # The declared ranges are checked here.


# ---------------------------------------------------------------------------------- inception


def test_inception_shapes_and_count():
  cfg = inception_digits.get_config().model
  m = inception._build(cfg, (32, 32, 1), 10)
  params = jax.eval_shape(m.init, KEY)
  assert jax.eval_shape(m.apply, params, X32).shape == (2, 10)
  # Any image size works: the global average pool removes H and W.
  x = jax.ShapeDtypeStruct((3, 12, 12, 1), jnp.float32)
  assert jax.eval_shape(m.apply, params, x).shape == (3, 10)

  def block_count(cin, c1, c3r, c3, c5r, c5, pp):
    return ((cin * c1 + c1) + (cin * c3r + c3r) + (9 * c3r * c3 + c3)
            + (cin * c5r + c5r) + (25 * c5r * c5 + c5) + (cin * pp + pp))
  stem = 9 * 1 * 32 + 32
  b1, b2 = cfg.blocks
  want = (stem + block_count(32, *b1) + block_count(56, *b2) + 112 * 10 + 10)
  assert layers.param_count(params) == want


def test_inception_rejects_bad_blocks():
  cfg = inception_digits.get_config().model
  cfg.blocks = ((16, 16, 24, 4, 8),)
  with pytest.raises(errors.ConfigError, match="blocks"):
    inception._build(cfg, (32, 32, 1), 10)
  cfg = inception_digits.get_config().model
  with pytest.raises(errors.ConfigError, match="image_size"):
    inception._build(cfg, (64,), 10)


# ------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("module", [lenet_digits, alexnet_small, inception_digits])
def test_conv_impls_give_the_same_logits(module):
  # conv_impl changes the primitives, not the function: one set of params, both impls.
  cfg = module.get_config().model
  if cfg.name == "alexnet":
    cfg.width = 0.125
  build = lambda impl: models.build(ml_collections.ConfigDict(dict(cfg, conv_impl=impl)),
                                    (32, 32, 1), 10)
  xla, patches = build("xla"), build("patches")
  params = xla.init(KEY)
  np.testing.assert_allclose(patches.apply(params, X32), xla.apply(params, X32),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("module", [lenet_digits, alexnet_small, inception_digits])
def test_config_builds_its_model_for_digits_at_32(module):
  config = module.get_config()
  assert config.data.name == "digits" and config.data.image_size == 32
  assert config.loss.output == "softmax"
  m = models.core._BUILDERS[config.model.name](config.model, (32, 32, 1), 10)
  params = jax.eval_shape(m.init, KEY)
  x = jax.ShapeDtypeStruct((4, 32, 32, 1), jnp.float32)
  assert jax.eval_shape(m.apply, params, x).shape == (4, 10)
