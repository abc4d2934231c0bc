"""Hand-written LeNet-5 gradients (research/backprop/lenet.py) agree with jax.grad.

The reference is jax.grad of the training loss the runner uses: losses.make_loss_fn over the
registered lenet5 model (research/models/lenet.py), independent of the code under test.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from research import errors
from research import losses
from research import models
from research.backprop import lenet as backprop_lenet

TOL = {"float64": 1e-10, "float32": 1e-4}
BATCH, K, LAM, M = 3, 10, 0.5, 12


def _rel_errs(got, want) -> list[float]:
  """||got - want|| / ||want|| per leaf, in float64."""
  errs = []
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape
    errs.append(np.linalg.norm(g - w) / np.linalg.norm(w))
  return errs


def _model(variant, k=K):
  cfg = ml_collections.ConfigDict({"name": "lenet5", "variant": variant})
  return models.build(cfg, (32, 32, 1), k)


def _params(variant, k, rng):
  """Params shaped like the model's: w ~ N(0, 1/fan_in), non-zero biases, coef ~ 1/4.

  numpy draws, so that no test compiles an init.
  """
  def draw(path, leaf):
    z = rng.standard_normal(leaf.shape)
    name = path[-1].key
    if name == "w":
      return z / np.sqrt(np.prod(leaf.shape[:-1]))
    return 0.25 + 0.05 * z if name == "coef" else 0.1 * z
  shapes = jax.eval_shape(_model(variant, k).init, jax.random.key(0))
  return jax.tree_util.tree_map_with_path(draw, shapes)


def _arrays(variant, dtype, k=K):
  """(params, x_Nx32x32x1 ~ N(0, 1), labels) in `dtype`, as numpy arrays."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: a.astype(dtype), _params(variant, k, rng))
  x = rng.standard_normal((BATCH, 32, 32, 1)).astype(dtype)
  return params, x, np.arange(BATCH) % max(k, 2)


@functools.lru_cache(maxsize=None)
def _manual_and_autodiff(variant, conv_impl="xla"):
  """One jitted (params, x, labels) -> (manual, autodiff) per variant, shared by the dtypes.
  The reference's convs are lax.conv; the manual pass uses conv_impl's primitives."""
  loss_fn = losses.make_loss_fn(_model(variant), "softmax", LAM, M, K)

  @jax.jit
  def fn(params, x, labels):
    manual = backprop_lenet.lenet_manual_grads(params, x, labels, variant=variant, lam=LAM,
                                               m=M, num_outputs=K, conv_impl=conv_impl)
    return manual, jax.grad(lambda p: loss_fn(p, x, labels, None)[0])(params)

  return fn


@pytest.mark.parametrize("dtype, conv_impl", [
    ("float64", "xla"), ("float32", "xla"), ("float64", "patches")])
@pytest.mark.parametrize("variant", backprop_lenet.VARIANTS)
def test_manual_grads_match_autodiff_of_the_training_loss(variant, dtype, conv_impl):
  params, x, labels = _arrays(variant, dtype)
  with jax.enable_x64(dtype == "float64"):
    manual, autodiff = _manual_and_autodiff(variant, conv_impl)(params, x, labels)
  assert jax.tree.structure(manual) == jax.tree.structure(params)
  assert all(g.dtype == jnp.dtype(dtype) for g in jax.tree.leaves(manual))
  errs = _rel_errs(manual, autodiff)
  assert max(errs) <= TOL[dtype], errs


def test_faithful_c3_gradient_covers_only_the_papers_connections():
  params, x, labels = _arrays("faithful", "float32")
  manual, _ = _manual_and_autodiff("faithful")(params, x, labels)
  assert manual["c3"]["w"].shape == (5, 5, 60)
  assert sorted(manual["s2"]) == ["b", "coef"] and manual["s4"]["coef"].shape == (16,)


@pytest.mark.parametrize("variant, output, k, lam1", [
    ("classic", "sigmoid", 1, 0.2),  # one sigmoid unit, 0/1 labels, with the L1 term
    ("modern", "softmax", 4, 0.0),
])
def test_make_value_and_grad_matches_the_trainers_value_and_grad(variant, output, k, lam1):
  reference = jax.value_and_grad(losses.make_loss_fn(_model(variant, k), output, LAM, M, k, lam1),
                                 has_aux=True)
  manual = backprop_lenet.make_value_and_grad(variant, output, LAM, M, k, lam1)
  params, x, labels = _arrays(variant, "float32", k)
  (E, aux), grads = jax.jit(manual)(params, x, labels, None)
  (E_ref, aux_ref), grads_ref = jax.jit(reference)(params, x, labels, None)
  np.testing.assert_allclose(E, E_ref, rtol=1e-6)
  np.testing.assert_allclose(aux["data_loss"], aux_ref["data_loss"], rtol=1e-6)
  assert aux["accuracy"] == aux_ref["accuracy"]
  assert max(_rel_errs(grads, grads_ref)) <= TOL["float32"]


@pytest.mark.slow
def test_gradcheck_problem_passes_manual_autodiff_and_finite_differences():
  from research import gradcheck
  with jax.enable_x64(True):
    problem = backprop_lenet.problem_lenet5_faithful(jax.random.key(0), 2, jnp.float64)
    rows = gradcheck.compare(problem, model="lenet5_faithful", dtype="float64",
                             key=jax.random.key(1))
  assert len(rows) == 14 and all(r.ok for r in rows), rows


def test_bad_config_names_the_field():
  with pytest.raises(errors.ConfigError, match="model.variant"):
    backprop_lenet.make_value_and_grad("lenet1", "softmax", 0.0, 10, K)
  with pytest.raises(errors.ConfigError, match="m="):
    backprop_lenet.make_value_and_grad("classic", "softmax", 0.1, 0, K)
