"""Hand-written backprop for the lecture's MLP agrees with jax.grad (research/backprop/mlp.py).

The reference is built independently of the code under test: jax.grad of the library's
forward pass (models/mlp.apply) and cost (losses.py, losses.make_loss_fn).
"""
import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from research import config_lib
from research import errors
from research import kernel
from research import losses
from research import models
from research import optim
from research.backprop import mlp as backprop_mlp
from research.models import mlp

TOL = {"float64": 1e-10, "float32": 1e-4}
SATURATION = 30.0  # x and w^L times this: sigmoid/tanh units and the outputs go flat.


def _loss(params, x_BxD, y_BxK, lam, m, activation, output):
  logits_BxK = mlp.apply(params, x_BxD, activation)
  return losses.DATA_LOSSES[output](logits_BxK, y_BxK).mean() + losses.l2_penalty(params, lam, m)


def _rel_errs(got, want) -> list[float]:
  """||got - want|| / ||want|| per leaf, in float64 (||got - want|| where want is 0)."""
  errs = []
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape
    norm_w, norm_d = np.linalg.norm(w), np.linalg.norm(g - w)
    errs.append(norm_d / norm_w if norm_w > 0 else norm_d)
  return errs


# Every case draws from one pool of normals, so that jax.random compiles once per module
# rather than once per shape (its compile time would dominate these tests).
_POOL_SIZE = 6 * 65 * 64 + 2 * 64 * 64


@jax.jit
def _pool(key):
  return jax.random.normal(key, (_POOL_SIZE,))


def _arrays(seed, sizes, batch, dtype):
  """Params for `sizes` = (D, h_1, ..., K), x_BxD and u_BxK (noise for the targets), numpy."""
  z = np.asarray(_pool(jax.random.key(seed)), np.float64)
  shapes = [s for i, o in zip(sizes[:-1], sizes[1:]) for s in ((i, o), (o,))]
  shapes += [(batch, sizes[0]), (batch, sizes[-1])]
  offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
  parts = [z[a:b].reshape(s).astype(dtype) for a, b, s in zip(offsets, offsets[1:], shapes)]
  params = [{"w": w / np.sqrt(w.shape[0], dtype=dtype), "b": 0.1 * b}
            for w, b in zip(parts[:-2:2], parts[1:-2:2])]
  return params, parts[-2], parts[-1]


def _targets(params, x_BxD, u_BxK, output, saturated):
  """(params, x, y_BxK): 0-1 (sigmoid) or one-hot (softmax) targets drawn from u."""
  k = u_BxK.shape[-1]
  if output == "sigmoid":
    y_BxK = (u_BxK > 0).astype(u_BxK.dtype)
  else:
    y_BxK = jax.nn.one_hot(jnp.argmax(u_BxK, axis=-1), k, dtype=u_BxK.dtype)
  if saturated:
    x_BxD = SATURATION * x_BxD
    params = params[:-1] + [dict(params[-1], w=SATURATION * params[-1]["w"])]
    # Example 0 labelled against its own prediction. A saturated batch that is all right
    # has a softmax gradient below float32's resolution (sigma - 1 rounds), where the
    # relative error between any two float32 implementations means nothing.
    worst = jnp.argmin(mlp.apply(params, x_BxD[:1], "sigmoid")[0])
    y_BxK = y_BxK.at[0].set(jax.nn.one_hot(worst, k, dtype=y_BxK.dtype))
  return params, x_BxD, y_BxK


@functools.lru_cache(maxsize=None)
def _manual_and_autodiff(activation, output, output_delta, lam, saturated, m=50):
  """A jitted (params, x, u) -> (manual, autodiff); it compiles once per shape and dtype."""

  @jax.jit
  def fn(params, x_BxD, u_BxK):
    params, x_BxD, y_BxK = _targets(params, x_BxD, u_BxK, output, saturated)
    manual = backprop_mlp.manual_grads(params, x_BxD, y_BxK, lam, m, activation=activation,
                                       output=output, output_delta=output_delta)
    autodiff = jax.grad(_loss)(params, x_BxD, y_BxK, lam, m, activation, output)
    return manual, autodiff

  return fn


@pytest.mark.slow
@hypothesis.settings(max_examples=25, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(data=st.data())
def test_manual_grads_match_autodiff_on_random_architectures(data):
  depth = data.draw(st.integers(1, 5), "L")
  sizes = tuple(data.draw(st.lists(st.integers(1, 64), min_size=depth + 1,
                                   max_size=depth + 1), "sizes"))
  batch = data.draw(st.integers(1, 64), "B")
  activation = data.draw(st.sampled_from(sorted(backprop_mlp.DERIVATIVES)), "activation")
  output = data.draw(st.sampled_from(backprop_mlp.OUTPUTS), "output")
  lam = data.draw(st.sampled_from([0.0, 0.7]), "lambda")
  saturated = data.draw(st.booleans(), "saturated")
  dtype = data.draw(st.sampled_from(sorted(TOL)), "dtype")
  # The literal delta divides by 1 - sigma^L, which is 0 once saturated (tested below).
  output_delta = "simplified" if saturated else data.draw(
      st.sampled_from(backprop_mlp.OUTPUT_DELTAS), "output_delta")
  seed = data.draw(st.integers(0, 2**16), "seed")
  fn = _manual_and_autodiff(activation, output, output_delta, lam, saturated)
  with jax.enable_x64(dtype == "float64"):
    manual, autodiff = fn(*_arrays(seed, sizes, batch, dtype))
  assert jax.tree.structure(manual) == jax.tree.structure(autodiff)
  assert all(g.dtype == jnp.dtype(dtype) for g in jax.tree.leaves(manual))
  errs = _rel_errs(manual, autodiff)
  assert max(errs) <= TOL[dtype], errs


def test_literal_output_delta_breaks_when_saturated_in_float32():
  arrays = _arrays(0, (6, 8, 3), 16, "float32")
  simplified, autodiff = _manual_and_autodiff("sigmoid", "sigmoid", "simplified", 0.0,
                                              True)(*arrays)
  literal, _ = _manual_and_autodiff("sigmoid", "sigmoid", "literal", 0.0, True)(*arrays)
  assert max(_rel_errs(simplified, autodiff)) <= TOL["float32"]
  assert not all(np.isfinite(g).all() for g in jax.tree.leaves(literal))


def test_literal_output_delta_is_exact_when_unsaturated():
  with jax.enable_x64(True):
    manual, autodiff = _manual_and_autodiff("tanh", "softmax", "literal", 0.5, False)(
        *_arrays(1, (4, 5, 3), 7, "float64"))
  assert max(_rel_errs(manual, autodiff)) <= TOL["float64"]


@pytest.mark.parametrize("activation, output",
                         [("sigmoid", "sigmoid"), ("tanh", "softmax"), ("relu", "softmax")])
def test_per_example_grads_match_vmap_grad_and_average_to_batch_grad(activation, output):
  sizes, batch, lam, m = (5, 6, 4, 3), 6, 0.3, 20

  @jax.jit
  def grads(params, x_BxD, u_BxK):
    params, x_BxD, y_BxK = _targets(params, x_BxD, u_BxK, output, saturated=False)
    per_example = backprop_mlp.manual_per_example_grads(
        params, x_BxD, y_BxK, lam, m, activation=activation, output=output)
    single = lambda p, x_D, y_K: _loss(p, x_D[None], y_K[None], lam, m, activation, output)
    reference = jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(params, x_BxD, y_BxK)
    batch_grads = backprop_mlp.manual_grads(params, x_BxD, y_BxK, lam, m,
                                            activation=activation, output=output)
    return per_example, reference, batch_grads

  with jax.enable_x64(True):
    per_example, reference, batch_grads = grads(*_arrays(2, sizes, batch, "float64"))
  for leaf, layer in zip(jax.tree.leaves(per_example), jax.tree.leaves(batch_grads)):
    assert leaf.shape == (batch, *layer.shape)
  assert max(_rel_errs(per_example, reference)) <= TOL["float64"]
  mean = [np.asarray(g).mean(axis=0) for g in jax.tree.leaves(per_example)]
  assert max(_rel_errs(mean, jax.tree.leaves(batch_grads))) <= TOL["float64"]


@pytest.mark.parametrize("activation, output, num_classes, k, lam1", [
    ("sigmoid", "sigmoid", 2, 1, 0.0),   # one sigmoid unit, 0/1 labels
    ("sigmoid", "sigmoid", 4, 4, 0.0),   # the lecture: K sigmoid units
    ("relu", "softmax", 3, 3, 0.2),      # with make_loss_fn's L1 term
])
def test_make_value_and_grad_matches_the_trainers_value_and_grad(activation, output,
                                                                 num_classes, k, lam1):
  lam, m, batch, input_shape = 0.5, 40, 8, (2, 3)  # trailing axes are flattened, as in apply
  cfg = ml_collections.ConfigDict(
      {"name": "mlp", "hidden_sizes": (5, 4), "activation": activation})
  model = models.build(cfg, input_shape, k)  # Only its apply: params come from the pool.
  reference = jax.value_and_grad(losses.make_loss_fn(model, output, lam, m, k, lam1),
                                 has_aux=True)
  manual = backprop_mlp.make_value_and_grad(activation, output, lam, m, k, lam1=lam1)

  params, _, _ = _arrays(3, (6, 5, 4, k), batch, "float32")
  x = np.asarray(_pool(jax.random.key(4)))[:batch * 6].reshape(batch, *input_shape)
  labels = np.arange(batch) % num_classes
  (E, aux), grads = jax.jit(manual)(params, x, labels, None)
  (E_ref, aux_ref), grads_ref = jax.jit(reference)(params, x, labels, None)
  np.testing.assert_allclose(E, E_ref, rtol=1e-6)
  assert sorted(aux) == sorted(aux_ref) == ["accuracy", "data_loss"]
  np.testing.assert_allclose(aux["data_loss"], aux_ref["data_loss"], rtol=1e-6)
  assert aux["accuracy"] == aux_ref["accuracy"]
  assert jax.tree.structure(grads) == jax.tree.structure(grads_ref)
  assert max(_rel_errs(grads, grads_ref)) <= TOL["float32"]


def test_trainer_steps_with_the_manual_gradient_follow_the_autodiff_ones():
  """kernel.make_train_chunk(value_and_grad=...) runs it under jit + lax.scan, as grad=manual."""
  lam, m, batch, steps, k = 1e-2, 64, 8, 5, 3
  cfg = ml_collections.ConfigDict({"name": "mlp", "hidden_sizes": (6,), "activation": "tanh"})
  model = models.build(cfg, (4,), k)
  loss_fn = losses.make_loss_fn(model, "sigmoid", lam, m, k)
  optimizer = optim.make_optimizer(config_lib.optimizer(name="momentum", learning_rate=0.5),
                                   steps)
  manual = backprop_mlp.make_value_and_grad("tanh", "sigmoid", lam, m, k)
  params, x_all, _ = _arrays(5, (4, 6, k), m, "float32")
  y_all = np.arange(m) % k
  idx_SxB = np.arange(steps * batch).reshape(steps, batch) % m
  final = {}
  for name, value_and_grad in (("manual", manual), ("autodiff", None)):
    chunk = kernel.make_train_chunk(loss_fn, optimizer, value_and_grad=value_and_grad)
    state = {"params": params, "opt_state": optimizer.init(params),
             "step": jnp.zeros((), jnp.int32), "rng": jax.random.key(0)}
    final[name] = chunk(state, x_all, y_all, idx_SxB)
  (state_m, sums_m), (state_a, sums_a) = final["manual"], final["autodiff"]
  assert int(state_m["step"]) == steps and int(sums_m["first_bad_step"]) == -1
  np.testing.assert_allclose(sums_m["loss_sum"], sums_a["loss_sum"], rtol=1e-6)
  assert max(_rel_errs(state_m["params"], state_a["params"])) <= 1e-5
  assert max(_rel_errs(state_m["params"], params)) > 1e-3  # it did train


def test_saturation_study_shows_the_literal_delta_breaking_first_in_low_precision():
  rows = backprop_mlp.saturation_study(scales=(1, 10, 20, 100), batch=64)
  cell = {(r["scale"], r["dtype"], r["form"]): r for r in rows}
  assert len(rows) == 4 * 3 * 2
  # The simplified delta stays at the dtype's rounding at every scale.
  for scale in (1, 10, 20, 100):
    assert cell[scale, "float64", "simplified"]["max_rel_err"] < 1e-14
    assert cell[scale, "float32", "simplified"]["max_rel_err"] < 1e-6
    assert cell[scale, "bfloat16", "simplified"]["max_rel_err"] < 2e-2
  # Unsaturated, the literal form is as good; it breaks at |sum^L| ~ 6 in bfloat16, ~17 in
  # float32 and ~37 in float64, where sigma^L rounds to 1.
  assert cell[1, "float32", "literal"]["max_rel_err"] < 1e-6
  assert cell[10, "bfloat16", "literal"]["nonfinite"] > 0
  assert cell[10, "float32", "literal"]["nonfinite"] == 0
  assert cell[20, "float32", "literal"]["nonfinite"] > 0
  assert cell[20, "float64", "literal"]["nonfinite"] == 0
  assert cell[100, "float64", "literal"]["nonfinite"] > 0


def test_bad_arguments_raise_clear_errors():
  params = mlp.init(jax.random.key(0), (3, 2))
  x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
  with pytest.raises(errors.ConfigError, match="activation='gelu'.*'relu'"):
    backprop_mlp.manual_grads(params, x, y, 0.0, 1, activation="gelu")
  with pytest.raises(errors.ConfigError, match="output_delta='exact'"):
    backprop_mlp.make_value_and_grad("sigmoid", "sigmoid", 0.0, 1, 2, output_delta="exact")
  with pytest.raises(errors.DataError, match=r"shape \(4,\).*one_hot_targets"):
    backprop_mlp.manual_grads(params, x, jnp.ones((4,)), 0.0, 1)
  with pytest.raises(errors.ConfigError, match="m=0 .*must be positive"):
    backprop_mlp.manual_grads(params, x, y, 0.1, 0)
