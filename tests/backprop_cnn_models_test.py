"""Hand-written AlexNet and inception gradients (research/backprop/alexnet.py, inception.py)
agree with jax.grad.

The reference is jax.value_and_grad of the training loss the runner uses: losses.make_loss_fn
over the registered model, independent of the code under test. Both models run at their
gradcheck configs (tiny widths and inputs, with LRN, grouped convs and dropout on).
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
from research.backprop import alexnet as backprop_alexnet
from research.backprop import inception as backprop_inception

TOL = {"float64": 1e-10, "float32": 1e-4}
BATCH, K, LAM, LAM1, M = 3, 5, 0.5, 0.1, 12
MODULES = {"alexnet": backprop_alexnet, "inception": backprop_inception}


def _cfg(name, **overrides):
  return ml_collections.ConfigDict(dict(MODULES[name].SMALL, **overrides))


def _rel_errs(got, want) -> list[float]:
  """||got - want|| / ||want|| per leaf, in float64."""
  errs = []
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape
    errs.append(np.linalg.norm(g - w) / np.linalg.norm(w))
  return errs


def _arrays(name, dtype):
  """(params, x ~ N(0, 1), labels) in `dtype` as numpy arrays: w ~ N(0, 1/fan_in), biases
  0.1 N(0, 1). numpy draws, so that no test compiles an init."""
  rng = np.random.default_rng(0)
  module = MODULES[name]

  def draw(path, leaf):
    z = rng.standard_normal(leaf.shape)
    scale = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if path[-1].key == "w" else 0.1
    return (scale * z).astype(dtype)

  model = models.build(_cfg(name), module.SMALL_INPUT, K)
  params = jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, jax.random.key(0)))
  x = rng.standard_normal((BATCH, *module.SMALL_INPUT)).astype(dtype)
  return params, x, np.arange(BATCH) % K


@functools.lru_cache(maxsize=None)
def _manual_and_autodiff(name, conv_impl="xla"):
  """One jitted (params, x, labels, rng) -> (manual, reference) value_and_grad per model,
  shared by the dtypes; the loss has lambda and lambda_1 > 0 and dropout on."""
  module, cfg = MODULES[name], _cfg(name, conv_impl=conv_impl)
  model = models.build(cfg, module.SMALL_INPUT, K)
  reference = jax.value_and_grad(losses.make_loss_fn(model, "softmax", LAM, M, K, LAM1),
                                 has_aux=True)
  manual = module.make_value_and_grad(cfg, module.SMALL_INPUT, "softmax", LAM, M, K, LAM1)
  return jax.jit(lambda *args: (manual(*args), reference(*args)))


@pytest.mark.parametrize("dtype, conv_impl", [
    ("float64", "xla"), ("float32", "xla"), ("float64", "patches")])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_manual_value_and_grad_match_autodiff_of_the_training_loss(name, dtype, conv_impl):
  params, x, labels = _arrays(name, dtype)
  with jax.enable_x64(dtype == "float64"):
    ((E, aux), grads), ((E_ref, aux_ref), grads_ref) = _manual_and_autodiff(name, conv_impl)(
        params, x, labels, jax.random.key(3))
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(g.dtype == jnp.dtype(dtype) for g in jax.tree.leaves(grads))
  errs = _rel_errs(grads, grads_ref)
  assert max(errs) <= TOL[dtype], errs
  np.testing.assert_allclose(E, E_ref, rtol=TOL[dtype])
  np.testing.assert_allclose(aux["data_loss"], aux_ref["data_loss"], rtol=TOL[dtype])
  assert aux["accuracy"] == aux_ref["accuracy"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_manual_grads_entry_point_returns_the_params_pytree(name):
  """The plain-gradient entry point, traced only (jax.eval_shape compiles nothing)."""
  grads_fn = {"alexnet": backprop_alexnet.alexnet_manual_grads,
              "inception": backprop_inception.inception_manual_grads}[name]
  params, x, labels = _arrays(name, "float32")
  grads = jax.eval_shape(functools.partial(
      grads_fn, model_cfg=_cfg(name), output="sigmoid", lam=LAM, m=M, num_outputs=K,
      lam1=LAM1), params, x, labels, jax.random.key(3))
  assert jax.tree.map(lambda g: (g.shape, g.dtype), grads) == jax.tree.map(
      lambda p: (p.shape, p.dtype), params)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_bad_config_names_the_field(name):
  module, shape = MODULES[name], MODULES[name].SMALL_INPUT
  with pytest.raises(errors.ConfigError, match="loss.output"):
    module.make_value_and_grad(_cfg(name), shape, "hinge", LAM, M, K)
  with pytest.raises(errors.ConfigError, match="m="):
    module.make_value_and_grad(_cfg(name), shape, "softmax", LAM, 0, K)
  with pytest.raises(errors.ConfigError, match="dropout"):
    module.make_value_and_grad(_cfg(name, dropout=1.5), shape, "softmax", LAM, M, K)
  value_and_grad = module.make_value_and_grad(_cfg(name), shape, "softmax", LAM, M, K)
  params, x, labels = _arrays(name, "float32")
  with pytest.raises(errors.ConfigError, match="rng"):
    jax.eval_shape(value_and_grad, params, x, labels, None)


@pytest.mark.slow
@pytest.mark.parametrize("problem", [backprop_alexnet.problem_alexnet_small,
                                     backprop_inception.problem_inception])
def test_gradcheck_problem_passes_manual_autodiff_and_finite_differences(problem):
  from research import gradcheck
  with jax.enable_x64(True):
    p = problem(jax.random.key(0), 2, jnp.float64)
    rows = gradcheck.compare(p, model=problem.__name__, dtype="float64", key=jax.random.key(1))
  assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
