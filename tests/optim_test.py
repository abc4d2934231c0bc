"""Each optimizer option changes the update the way optax documents it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import config_lib
from research import errors
from research import optim

W = {"w": jnp.array([1.0, -2.0, 3.0])}
G = {"w": jnp.array([0.5, -4.0, 0.1])}


def _updates(steps=1, total_steps=100, grads=G, **overrides):
  """Applies the optimizer `steps` times to the same gradient; returns each step's update."""
  tx = optim.make_optimizer(config_lib.optimizer(**overrides), total_steps)
  state = tx.init(W)
  out = []
  for _ in range(steps):
    u, state = tx.update(grads, state, W)
    out.append(np.asarray(u["w"]))
  return out


def test_sgd_is_minus_eta_g():
  (u,) = _updates(name="sgd", learning_rate=0.1)
  np.testing.assert_allclose(u, -0.1 * G["w"], rtol=1e-6)


def test_momentum_accumulates_velocity():
  u1, u2 = _updates(steps=2, name="momentum", learning_rate=0.1, momentum=0.9)
  np.testing.assert_allclose(u1, -0.1 * G["w"], rtol=1e-6)
  np.testing.assert_allclose(u2, -0.1 * (0.9 + 1) * G["w"], rtol=1e-6)


def test_nesterov_looks_ahead():
  # optax's Nesterov: v = g + mu v; update = -eta (g + mu v).
  (u1,) = _updates(name="nesterov", learning_rate=0.1, momentum=0.9)
  np.testing.assert_allclose(u1, -0.1 * (1 + 0.9) * G["w"], rtol=1e-6)


def test_adagrad_divides_by_root_sum_of_squares():
  u1, u2 = _updates(steps=2, name="adagrad", learning_rate=0.1, adagrad_init=0.0, eps=0.0)
  g = np.asarray(G["w"])
  np.testing.assert_allclose(u1, -0.1 * g / np.sqrt(g**2), rtol=1e-5)
  np.testing.assert_allclose(u2, -0.1 * g / np.sqrt(2 * g**2), rtol=1e-5)


def test_adam_first_step_is_eta_times_sign():
  (u,) = _updates(name="adam", learning_rate=0.01, eps=0.0)
  np.testing.assert_allclose(u, -0.01 * np.sign(G["w"]), rtol=1e-5)


def test_rmsprop_divides_by_running_rms():
  (u,) = _updates(name="rmsprop", learning_rate=0.01, rms_decay=0.9, eps=0.0)
  g = np.asarray(G["w"])
  np.testing.assert_allclose(u, -0.01 * g / np.sqrt(0.1 * g**2), rtol=1e-5)


def test_clip_value_bounds_each_element():
  (u,) = _updates(name="sgd", learning_rate=1.0, clip_value=1.0)
  np.testing.assert_allclose(u, -np.clip(G["w"], -1.0, 1.0), rtol=1e-6)


def test_clip_by_global_norm_bounds_the_global_norm():
  (u,) = _updates(name="sgd", learning_rate=1.0, clip_global_norm=1.0)
  assert np.linalg.norm(u) == pytest.approx(1.0, rel=1e-5)
  # Direction unchanged.
  np.testing.assert_allclose(u / np.linalg.norm(u), -G["w"] / np.linalg.norm(G["w"]), rtol=1e-5)
  # A gradient already inside the ball is untouched.
  (u,) = _updates(name="sgd", learning_rate=1.0, clip_global_norm=100.0)
  np.testing.assert_allclose(u, -G["w"], rtol=1e-6)


def test_weight_decay_is_decoupled_from_adam():
  """Decay is added after Adam's normalisation, so it is eta * wd * w exactly."""
  (plain,) = _updates(name="adam", learning_rate=0.01)
  (decayed,) = _updates(name="adam", learning_rate=0.01, weight_decay=0.5)
  np.testing.assert_allclose(decayed - plain, -0.01 * 0.5 * W["w"], rtol=1e-5)


def test_weight_decay_with_sgd_equals_the_l2_gradient():
  """For SGD, decoupled decay wd equals the loss's lambda/2m term with lambda/m = wd."""
  (decayed,) = _updates(name="sgd", learning_rate=0.1, weight_decay=0.5)
  l2_grads = {"w": G["w"] + 0.5 * W["w"]}
  (l2,) = _updates(name="sgd", learning_rate=0.1, grads=l2_grads)
  np.testing.assert_allclose(decayed, l2, rtol=1e-6)


def test_schedules():
  cfg = config_lib.optimizer(learning_rate=1.0, warmup_steps=10, schedule="cosine")
  eta = optim.make_schedule(cfg, total_steps=110)
  assert float(eta(0)) == 0.0
  assert float(eta(5)) == pytest.approx(0.5)
  assert float(eta(10)) == pytest.approx(1.0)
  assert float(eta(60)) == pytest.approx(0.5, abs=1e-6)
  assert float(eta(110)) == pytest.approx(0.0, abs=1e-6)
  step = optim.make_schedule(
      config_lib.optimizer(learning_rate=1.0, schedule="step", decay_every=10, decay_rate=0.1), 100)
  assert [float(step(s)) for s in (0, 9, 10, 25)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
  const = optim.make_schedule(config_lib.optimizer(learning_rate=0.3), 100)
  assert float(const(1000)) == pytest.approx(0.3)


def test_every_optimizer_and_option_combines_and_jits():
  """Any combination is a valid chain: all options on, for every method."""
  for name in optim.OPTIMIZERS:
    cfg = config_lib.optimizer(name=name, clip_value=1.0, clip_global_norm=1.0,
                               weight_decay=1e-4, schedule="cosine", warmup_steps=2)
    tx = optim.make_optimizer(cfg, 10)
    state = tx.init(W)
    update = jax.jit(tx.update)
    _, state = update(G, state, W)  # eta(0) = 0 during warmup.
    u, _ = update(G, state, W)
    assert np.all(np.isfinite(u["w"])) and np.linalg.norm(u["w"]) > 0, name


@pytest.mark.parametrize("overrides, fragment", [
    (dict(name="adamw"), "optimizer.name='adamw'"),
    (dict(learning_rate=0.0), "optimizer.learning_rate=0.0 must be a positive"),
    (dict(learning_rate=-1.0), "optimizer.learning_rate=-1.0 must be a positive"),
    (dict(schedule="linear"), "optimizer.schedule='linear'"),
    (dict(clip_global_norm=-1.0), "optimizer.clip_global_norm=-1.0 must be a finite number >= 0"),
    (dict(momentum=1.5), "optimizer.momentum=1.5 must be a finite number in [0, 1)"),
])
def test_bad_optimizer_config_names_the_field(overrides, fragment):
  with pytest.raises(errors.ConfigError) as e:
    optim.make_optimizer(config_lib.optimizer(**overrides), 10)
  assert fragment in str(e.value)
