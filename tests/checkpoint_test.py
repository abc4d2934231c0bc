"""research.checkpoint: exact round trips, keep-last-k, fallback past damaged checkpoints."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import logging

from research import checkpoint
from research import errors

_OPTIMIZER = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(),
                         optax.trace(decay=0.9), optax.scale(-0.1))


@jax.jit
def _make_state(key: jax.Array) -> dict:
  k_w, k_big, k_rng = jax.random.split(key, 3)
  # w_big is large enough that its values fill their own data file (see flip_one_bit).
  params = [{"w": jax.random.normal(k_w, (5, 3)), "b": jnp.arange(3, dtype=jnp.float32)},
            {"w_big": jax.random.normal(k_big, (64, 64)), "b": jnp.ones((2,), jnp.bfloat16)}]
  opt_state = _OPTIMIZER.init(params)
  # One update so the moments and the count are non-trivial.
  _, opt_state = _OPTIMIZER.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
  return {"params": params, "opt_state": opt_state, "step": jnp.array(7, jnp.int32),
          "rng": k_rng}


def _state(seed: int = 0) -> dict:
  """A train state like research.train's: params, an optax chain's state, step, typed key."""
  return _make_state(jax.random.key(seed))


def _assert_identical(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(x) == jax.random.key_impl(y)
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _step_files(workdir, step):
  root = os.path.join(checkpoint.checkpoint_dir(str(workdir)), str(step))
  return sorted(os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs)


def test_round_trip_is_bit_exact(tmp_path):
  state = _state()
  checkpoint.save(str(tmp_path), state, 7)
  assert checkpoint.latest_step(str(tmp_path)) == 7
  restored, step = checkpoint.restore(str(tmp_path), _state(seed=1))
  assert step == 7
  _assert_identical(restored, state)
  # The restored optax state keeps its namedtuple types, and the next update is the same.
  assert type(restored["opt_state"][1]) is optax.ScaleByAdamState
  next_update = jax.jit(_OPTIMIZER.update)
  _assert_identical(next_update(restored["params"], restored["opt_state"], restored["params"]),
                    next_update(state["params"], state["opt_state"], state["params"]))


def test_restore_from_abstract_target(tmp_path):
  state = _state()
  checkpoint.save(str(tmp_path), state, 3)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  restored, _ = checkpoint.restore(str(tmp_path), abstract)
  _assert_identical(restored, state)


def test_typed_key_round_trip_keeps_the_stream(tmp_path):
  key = jax.random.key(42, impl="rbg")
  checkpoint.save(str(tmp_path), {"rng": key}, 1)
  restored, _ = checkpoint.restore(str(tmp_path), {"rng": jax.random.key(0, impl="rbg")})
  np.testing.assert_array_equal(jax.random.normal(restored["rng"], (4,)),
                                jax.random.normal(key, (4,)))


def test_keeps_last_k_and_latest_step(tmp_path):
  assert checkpoint.latest_step(str(tmp_path)) is None
  for step in (10, 20, 30, 40):
    checkpoint.save(str(tmp_path), _state(seed=step), step, keep=2)
  assert sorted(os.listdir(checkpoint.checkpoint_dir(str(tmp_path)))) == ["30", "40"]
  restored, step = checkpoint.restore(str(tmp_path), _state())
  assert step == 40
  _assert_identical(restored, _state(seed=40))


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip_bit_in_largest(files):
  path = max(files, key=os.path.getsize)
  data = bytearray(open(path, "rb").read())
  data[int(len(data) * 0.9)] ^= 1
  open(path, "wb").write(bytes(data))


@pytest.mark.every_case  # Each damage is its own failure mode, and a second to check.
@pytest.mark.parametrize("damage", ["truncate_all", "flip_one_bit", "remove_arrays",
                                    "remove_manifest", "empty_dir"])
def test_damaged_latest_falls_back_to_previous(tmp_path, damage, monkeypatch):
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
  checkpoint.save(str(tmp_path), _state(seed=1), 1)
  checkpoint.save(str(tmp_path), _state(seed=2), 2)
  files = _step_files(tmp_path, 2)
  step_dir = os.path.join(checkpoint.checkpoint_dir(str(tmp_path)), "2")
  if damage == "truncate_all":
    for f in files:
      _truncate(f)
  elif damage == "flip_one_bit":  # orbax alone restores this silently with a wrong value.
    _flip_bit_in_largest(files)
  elif damage == "remove_arrays":
    shutil.rmtree(os.path.join(step_dir, "state"))
  elif damage == "remove_manifest":
    shutil.rmtree(os.path.join(step_dir, "manifest"))
  else:
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)
  restored, step = checkpoint.restore(str(tmp_path), _state())
  assert step == 1
  _assert_identical(restored, _state(seed=1))
  reason = "checksum mismatch in ['params'][1]['w_big']" if damage == "flip_one_bit" else ""
  assert any("step 2" in w and "unusable" in w and reason in w for w in warnings), warnings
  # Saving step 2 again replaces the damaged directory, and it restores.
  checkpoint.save(str(tmp_path), _state(seed=3), 2)
  _assert_identical(checkpoint.restore(str(tmp_path), _state())[0], _state(seed=3))


def test_all_damaged_raises_data_error(tmp_path):
  for step in (1, 2):
    checkpoint.save(str(tmp_path), _state(), step)
    for f in _step_files(tmp_path, step):
      _truncate(f)
  with pytest.raises(errors.DataError, match=r"no usable checkpoint in .*checkpoints.*step 2.*"
                     r"1.*damaged; pass a new --workdir") as e:
    checkpoint.restore(str(tmp_path), _state())
  assert "aside" not in str(e.value)  # Moving them aside leads to a second refusal.


def test_every_manifest_removed_is_one_line_and_no_warnings(tmp_path, monkeypatch):
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
  for step in (1, 2, 3):
    checkpoint.save(str(tmp_path), _state(), step)
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(str(tmp_path)), str(step), "manifest"))
  with pytest.raises(errors.DataError) as e:
    checkpoint.restore(str(tmp_path), _state())
  assert not warnings
  assert "step 3, 2, 1: missing or unknown manifest" in str(e.value)
  assert "\n" not in str(e.value) and len(str(e.value)) < 400 + len(str(tmp_path))


def test_different_state_is_a_data_error_naming_the_leaf(tmp_path):
  checkpoint.save(str(tmp_path), {"w": jnp.zeros((2, 3))}, 1)
  with pytest.raises(errors.DataError, match=r"\['w'\].*\[2, 3\].*\[2, 4\].*written with") as e:
    checkpoint.restore(str(tmp_path), {"w": jnp.zeros((2, 4))})
  assert "delete" not in str(e.value)  # Intact checkpoints of another state: a good run.


def test_no_checkpoint_is_a_data_error(tmp_path):
  with pytest.raises(errors.DataError, match="no checkpoint in"):
    checkpoint.restore(str(tmp_path), _state())


def test_bad_keep_is_a_config_error(tmp_path):
  with pytest.raises(errors.ConfigError, match="keep=0"):
    checkpoint.save(str(tmp_path), _state(), 1, keep=0)
