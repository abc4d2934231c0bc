"""Layer-wise pre-training: the autoencoder's hand-written gradient, its cost falling, the
fine-tuning from given inits (vmap and loop agree), the runner under the experiment harness
(resuming without redoing cells or pre-training), and one-line config errors."""
import json
import os
import subprocess
import sys

import processes
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import exp_pretraining
from research import data as data_lib
from research import errors
from research import gradcheck
from research import losses
from research import models
from research import optim
from research.backprop import autoencoder as backprop_ae
from research.experiments import harness
from research.experiments import pretraining
from research.models import autoencoder

BATCH = 8


@pytest.mark.parametrize("name", ["autoencoder", "autoencoder_untied",
                                  "autoencoder_contractive"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_manual_autoencoder_gradient_agrees_with_autodiff_and_finite_differences(name, dtype):
  rows = gradcheck.check_model(name, dtype, batch=BATCH)
  paths = {r.path for r in rows}
  assert paths == ({"['b']", "['b_dec']", "['w']"} | (
      {"['w_dec']"} if name == "autoencoder_untied" else set()))
  assert all(r.ok for r in rows), rows


def test_tied_gradient_needs_both_uses_of_w():
  """Counting only the encoder's use of a tied w (a classic bug) fails the check on w."""
  problem = gradcheck.build("autoencoder", batch=BATCH, dtype="float32")
  mask_key = jax.random.key(1)
  encoder_only = backprop_ae.make_value_and_grad("cross_entropy", 0.25, 1.0, 4 * BATCH)

  def wrong(params, x):
    # As if the decoder had its own matrix: its gradient is dropped instead of added to w.
    untied = dict(params, w_dec=params["w"].T)
    grads = encoder_only(untied, x, mask_key)[1]
    grads.pop("w_dec")
    return grads

  rows = {r.path: r for r in gradcheck.compare(problem, model="autoencoder", dtype="float32",
                                               key=jax.random.key(1), grad_fn=wrong)}
  assert not rows["['w']"].ok and rows["['w']"].rel_err > 0.1
  del problem


def test_contractive_gradient_needs_both_paths_of_the_penalty():
  """Dropping the penalty's direct path through s_j = sum_i w_ij^2 (keeping only the one
  through h) fails the check on w; the biases, which see only the path through h, pass."""
  problem = gradcheck.build("autoencoder_contractive", batch=BATCH, dtype="float32")
  mask_key = jax.random.key(1)
  full = backprop_ae.make_value_and_grad("cross_entropy", 0.0, 1.0, 4 * BATCH, beta=0.5)

  def wrong(params, x):
    grads = full(params, x, mask_key)[1]
    h = autoencoder.encode(params, x)
    direct = (2 * 0.5 / x.shape[0]) * jnp.square(h * (1 - h)).sum(axis=0) * params["w"]
    return dict(grads, w=grads["w"] - direct)

  rows = {r.path: r for r in gradcheck.compare(problem, model="autoencoder_contractive",
                                               dtype="float32", key=jax.random.key(1),
                                               grad_fn=wrong)}
  assert not rows["['w']"].ok and rows["['w']"].rel_err > 1e-3
  assert rows["['b']"].ok and rows["['b_dec']"].ok


def test_contractive_jacobian_and_manifold_tangents_match_autodiff():
  """The closed-form J = h (1 - h) w^T is jax.jacfwd's, ||J||_F^2 its sum of squares, and the
  tangents are orthonormal right singular vectors: J t_k = s_k u_k, so ||J t_k|| = s_k, in
  decreasing order, and no unit direction orthogonal to them moves h more than s_K."""
  params = autoencoder.init(jax.random.key(0), 12, 7)
  params["b"] = 0.3 * jax.random.normal(jax.random.key(2), (7,))
  x = jax.nn.sigmoid(jax.random.normal(jax.random.key(1), (5, 12)))
  J = autoencoder.encoder_jacobian(params, x)
  J_ad = jax.vmap(jax.jacfwd(lambda xi: autoencoder.encode(params, xi[None])[0]))(x)
  np.testing.assert_allclose(J, J_ad, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(autoencoder.contraction(params, x), jnp.square(J_ad).sum((1, 2)),
                             rtol=1e-5)
  t, s = autoencoder.manifold_tangents(params, x, 3)
  assert t.shape == (5, 3, 12) and s.shape == (5, 3)
  np.testing.assert_allclose(jnp.einsum("bki,bli->bkl", t, t),
                             jnp.broadcast_to(jnp.eye(3), (5, 3, 3)), atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(jnp.einsum("bhi,bki->bkh", J_ad, t), axis=-1), s,
                             rtol=1e-4)
  assert bool((jnp.diff(s, axis=-1) <= 0).all())
  other = jax.random.normal(jax.random.key(3), (5, 12))
  other -= jnp.einsum("bk,bki->bi", jnp.einsum("bi,bki->bk", other, t), t)
  other /= jnp.linalg.norm(other, axis=-1, keepdims=True)
  assert bool((jnp.linalg.norm(jnp.einsum("bhi,bi->bh", J_ad, other), axis=-1)
               <= s[:, -1] * (1 + 1e-4)).all())
  with pytest.raises(errors.ConfigError, match="manifold tangents"):
    autoencoder.manifold_tangents(params, x, 8)


def test_modern_inits_have_their_stated_statistics():
  """He: std sqrt(2/fan_in); orthogonal: every singular value 1 (fan_in > and < fan_out)."""
  sizes = (400, 300, 500)
  he = pretraining.init_mlp(jax.random.key(0), sizes, "he")
  for layer, fan_in in zip(he, sizes[:-1]):
    np.testing.assert_allclose(float(layer["w"].std()), np.sqrt(2 / fan_in), rtol=0.02)
  for layer in pretraining.init_mlp(jax.random.key(0), sizes, "orthogonal"):
    np.testing.assert_allclose(np.linalg.svd(np.asarray(layer["w"]), compute_uv=False), 1.0,
                               rtol=1e-4)
    assert not np.asarray(layer["b"]).any()


def test_denoising_mask_zeroes_about_the_noise_fraction_and_is_the_same_in_x64():
  x = jnp.ones((200, 50))
  y = autoencoder.corrupt(jax.random.key(0), x, 0.3)
  assert 0.25 < float((y == 0).mean()) < 0.35
  with jax.enable_x64(True):
    y64 = autoencoder.corrupt(jax.random.key(0), jnp.ones((200, 50), jnp.float64), 0.3)
  np.testing.assert_array_equal(np.asarray(y) == 0, np.asarray(y64) == 0)
  assert autoencoder.corrupt(None, x, 0.3) is x


def _tiny(**fields):
  config = exp_pretraining.get_config()
  config.model.hidden_sizes = (32, 32)
  config.num_steps, config.eval_every = 1000, 500
  config.experiment.update(dict(labels_per_class=(1,), pretrain_layers=2, pretrain_steps=1000,
                                num_filters=4, inits=("pretrained", "glorot", "random"),
                                learning_rates=(0.5,), seeds=2))
  config.update(fields)
  return config


@pytest.fixture(scope="module")
def digits01():
  return pretraining.unit_interval(data_lib.load(_tiny().data))


def test_unit_interval_scales_by_the_training_inputs(digits01):
  assert digits01.train.x.min() == 0 and digits01.train.x.max() == 1
  assert digits01.train.x.shape[1] == 64
  raw = data_lib.load(_tiny().data)
  lo, hi = float(raw.train.x.min()), float(raw.train.x.max())
  for split, raw_split in ((digits01.valid, raw.valid), (digits01.test, raw.test)):
    # The training split's min and max, one for every feature; past them, clipped.
    want = np.clip((raw_split.x.reshape(len(raw_split.x), -1) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(split.x, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(split.y, raw_split.y)


def _pretrain_tiny(digits01, grad):
  config = _tiny(grad=grad, eval_every=100)
  config.model.hidden_sizes = (16,)
  config.experiment.update(dict(pretrain_layers=1, pretrain_steps=100))
  return pretraining.pretrain(config, digits01.train.x[:256], [0])


def test_reconstruction_cost_falls(digits01):
  rec = _pretrain_tiny(digits01, "manual")["reconstruction"][0]
  assert rec["after"] < 0.7 * rec["before"], rec  # measured: 44.5 -> 27.3


@pytest.mark.slow
def test_manual_pretraining_matches_autodiff(digits01):
  manual, auto = (_pretrain_tiny(digits01, grad) for grad in ("manual", "autodiff"))
  np.testing.assert_allclose(manual["layers"][0]["w"], auto["layers"][0]["w"], atol=2e-4)
  assert auto["reconstruction"][0]["after"] == pytest.approx(
      manual["reconstruction"][0]["after"], rel=1e-3)


def _finetune_tiny(digits01, mode, learning_rate=0.5):
  """Two seeds of a 64 -> 16 -> 10 net fine-tuned from Glorot's init for 20 full-batch steps
  on 2 labels per class; returns (initial params, final params) per seed."""
  config = _tiny()
  config.model.hidden_sizes, config.optimizer.learning_rate = (16,), learning_rate
  model = models.build(config.model, digits01.input_shape, 10)
  loss_fn = losses.make_loss_fn(model, "sigmoid", 0.0, 20, 10)
  optimizer = optim.make_optimizer(config.optimizer, 20)
  seeds = [3, 4]
  subsets = [harness.stratified_subset(digits01.train, 2, s, 10) for s in seeds]
  init = lambda: [pretraining.initial_params(config, "glorot", s, (64, 16, 10), None, i)
                  for i, s in enumerate(seeds)]
  params = init()
  return init(), harness.train_seeds(model, loss_fn, optimizer, 20, 20, subsets, seeds,
                                     mode=mode, chunk_steps=10,
                                     init_params=lambda s: params[seeds.index(s)])


def test_finetune_vmap_and_loop_agree_and_start_from_the_given_init(digits01):
  (init, vmapped), (_, looped) = (_finetune_tiny(digits01, mode) for mode in ("vmap", "loop"))
  for a, b, p0 in zip(vmapped, looped, init):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-5), a, b)
    assert float(jnp.abs(a[0]["w"] - p0[0]["w"]).max()) > 0.01  # it trained
  _, still = _finetune_tiny(digits01, "vmap", learning_rate=1e-7)
  for a, p0 in zip(still, init):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-4), a, p0)


@pytest.mark.slow
def test_runner_resumes_without_redoing_cells_or_pretraining(tmp_path, monkeypatch):
  config = _tiny()
  config.num_steps, config.experiment.pretrain_steps = 200, 200
  config.experiment.labels_per_class = (1, 3)
  config.experiment.learning_rates = (0.1, 0.5)
  config.experiment.max_extensions = 0  # A fixed grid: the count of cells is the test's
  out = pretraining.run(config, str(tmp_path))
  (one, three) = out["sizes"]
  assert (one["size"], three["size"]) == (1, 3) and out["baseline"] == "glorot"
  for name in ("pretrained", "glorot", "random"):
    arm = one["arms"][name]
    assert [c["setting"]["learning_rate"] for c in arm["grid"]] == [0.1, 0.5]
    assert len(arm["test"]) == 2 and "train_accuracy" in arm["test"][0]
  for name in ("pretrained", "glorot"):  # both fit their labelled sets
    assert one["arms"][name]["stats"]["train_accuracy"]["mean"] == 1.0
  assert "vs_baseline" in one["arms"]["pretrained"]["stats"]["accuracy"]
  assert out["reconstruction"][0]["after"] < out["reconstruction"][0]["before"]
  for name in ("results.md", "results.json", "metrics.jsonl", "filters.png",
               "accuracy_vs_labels.png", "pretrained.npz"):
    assert os.path.getsize(tmp_path / name) > 0, name
  text = (tmp_path / "results.md").read_text()
  assert "| 1 | pretrained | learning_rate=" in text and "valid acc % at eta=0.5" in text
  assert "train acc % (labelled set)" in text and "| layer |" in text
  assert pretraining.run(config, str(tmp_path))["finished"]  # a rerun does nothing
  with open(tmp_path / "results.json") as f:
    before = json.load(f)

  # Interrupted after its last cell: the rerun trains nothing but the filter figure's first
  # seeds (one per init), pre-trains nothing, and ends with the same results.
  os.remove(tmp_path / "finished.json")
  calls = []
  real = harness.train_seeds
  monkeypatch.setattr(harness, "train_seeds",
                      lambda *a, **k: calls.append(len(a[6])) or real(*a, **k))
  monkeypatch.setattr(pretraining, "pretrain", lambda *a, **k: pytest.fail("pre-trained again"))
  again = pretraining.run(config, str(tmp_path))
  assert calls == [1, 1, 1]
  for old, new in zip(before["sizes"], again["sizes"]):
    assert json.dumps(old["arms"], sort_keys=True) == json.dumps(new["arms"], sort_keys=True)


@pytest.mark.parametrize("field, value, fragment", [
    ("experiment.pretrain_layers", 3, "pretrain_layers=3 is more than the 2 hidden layers"),
    ("experiment.noise", 1.0, "config.experiment.noise=1.0 must be"),
    ("experiment.inits", ("pretrained", "xavier"), "experiment.inits[1]='xavier'"),
    ("experiment.labels_per_class", (5, 1), "must be increasing"),
    ("experiment.cost", "l1", "experiment.cost='l1' is not supported"),
    ("experiment.baseline", "lecun", "experiment.baseline='lecun' is not supported"),
    ("experiment.learning_rates", (), "learning_rates is empty"),
    ("experiment.learning_rates", (0.1, -1.0), "learning_rates[]=-1.0 must be a positive"),
    ("experiment.seeds", 1, "config.experiment.seeds=1 must be"),
    ("experiment.seed_mode", "pmap", "experiment.seed_mode='pmap' is not supported"),
    ("data.standardize", "global", "set config.data.standardize='none'"),
    ("model.activation", "relu", "set config.model.name='mlp' and config.model.activation="),
])
def test_bad_config_is_one_config_error(field, value, fragment):
  config = _tiny()
  group, name = field.split(".")
  config[group][name] = value
  with pytest.raises(errors.ConfigError) as info:
    pretraining.validate(config)
  assert fragment in str(info.value) and "\n" not in str(info.value)


def test_config_variants():
  assert exp_pretraining.get_config("mnist_subset_adam").optimizer.name == "adam"
  assert exp_pretraining.get_config("mnist_subset").data.name == "mnist_subset"
  pretraining.validate(exp_pretraining.get_config())
  with pytest.raises(ValueError, match="choose digits"):
    exp_pretraining.get_config("cifar")


@pytest.mark.slow
def test_cli_bad_pretrain_layers_is_one_line_and_exit_2(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "-m", "research.main", "--config=configs/exp_pretraining.py",
       "--config.experiment.pretrain_layers=3", f"--workdir={tmp_path / 'run'}"],
      cwd=repo, env=dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=processes.GUARD_S)
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "pretrain_layers=3 is more than the 2 hidden layers" in lines[0]
  assert "Traceback" not in result.stderr
