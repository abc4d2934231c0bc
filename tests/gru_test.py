"""The GRU family: its hand-written BPTT agrees with autodiff, and adding it took no list."""
import functools

import jax
import ml_collections
import numpy as np
import pytest

from research import backprop
from research import gradcheck
from research import gradients
from research import losses
from research import models
from research.backprop import gru as backprop_gru
from research.models import gru

B, T, I, H = 3, 5, 4, 6


def _normals(seed, *shapes):
  keys = jax.random.split(jax.random.key(seed), len(shapes))
  return [jax.random.normal(k, s, jax.numpy.float64) for k, s in zip(keys, shapes)]


@jax.jit
def _layer_grads(params, x, dh):
  h, cache = backprop_gru.gru_forward(params, x)
  dx, grads = backprop_gru.gru_backward(params, cache, dh)
  h_ref, vjp = jax.vjp(gru.gru, params, x)
  return h, h_ref, (grads, dx), vjp(dh)


def test_one_layer_bptt_matches_vjp_in_float64():
  with jax.enable_x64(True):
    params = jax.tree.map(lambda p: p.astype(np.float64), gru.init_gru(jax.random.key(0), I, H))
    params["b"] = params["b"] + 0.1  # a zero bias would hide a bias read wrongly
    x, dh = _normals(1, (B, T, I), (B, T, H))
    h, h_ref, manual, reference = _layer_grads(params, x, dh)
  np.testing.assert_allclose(h, h_ref, rtol=1e-13)
  for got, want in zip(jax.tree.leaves(manual), jax.tree.leaves(reference)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_gradient_check_passes_in_both_dtypes():
  for dtype in ("float64", "float32"):
    rows = gradcheck.check_model("gru_classifier", dtype, batch=4)
    assert len(rows) == 8 and all(r.ok for r in rows), [r for r in rows if not r.ok]


@pytest.mark.parametrize("readout, num_layers, dropout", [("mean", 1, 0.3), ("all", 2, 0.0)])
def test_manual_value_and_grad_matches_autodiff_with_dropout_and_readouts(readout, num_layers,
                                                                          dropout):
  cfg = gru.config(hidden_size=H, num_layers=num_layers, readout=readout, dropout=dropout)
  model = models.build(cfg, (T, I), 5)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda p: p.astype(np.float64), model.init(jax.random.key(2)))
    x, = _normals(3, (B, T, I))
    labels = np.array([0, 4, 2])
    rng = jax.random.key(4)
    loss_fn = losses.make_loss_fn(model, "softmax", 1.0, 4 * B, 5)
    (e_ref, _), g_ref = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, x, labels,
                                                                           rng)
    manual = backprop.make_manual_value_and_grad(cfg, (T, I), 5, output="softmax", lam=1.0,
                                                 m=4 * B)
    (e, _), g = jax.jit(manual)(params, x, labels, rng)
  np.testing.assert_allclose(e, e_ref, rtol=1e-12)
  for got, want in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_the_family_is_registered_everywhere_by_its_two_files():
  assert "gru_classifier" in models.names()
  assert "gru_classifier" in gradients.manual_models()
  assert "gru_classifier" in gradcheck.names()
  # A family switch by override (--config.model.name=gru_classifier on an MLP config) gets the
  # GRU's defaults.
  group = ml_collections.ConfigDict(models.default_config("mlp").to_dict())
  group.name = "gru_classifier"
  assert dict(models.resolve(group)) == dict(gru.config())
  models.build(group, (T, I), 5)


@functools.cache
def _config():
  from configs import gru_mnist1d  # pylint: disable=g-import-not-at-top
  return gru_mnist1d.get_config()


def test_config_builds_the_model_it_names():
  config = _config()
  assert config.model.name == "gru_classifier"
  model = models.build(config.model, (40, 1), 10)
  params = model.init(jax.random.key(0))
  assert model.apply(params, np.zeros((2, 40, 1), np.float32)).shape == (2, 10)
