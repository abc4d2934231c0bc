"""Layer-wise pre-training: the autoencoder's hand-written gradient, its cost falling, the
gain over a from-scratch init at one label per class, and one-line config errors."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import exp_pretraining
from research import data as data_lib
from research import errors
from research import gradcheck
from research.backprop import autoencoder as backprop_ae
from research.experiments import pretraining
from research.models import autoencoder

BATCH = 8


@pytest.mark.parametrize("name", ["autoencoder", "autoencoder_untied"])
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
                                num_filters=4, inits=("pretrained", "glorot", "random")))
  config.update(fields)
  return config


@pytest.fixture(scope="module")
def digits01():
  return pretraining.unit_interval(data_lib.load(_tiny().data))


def test_unit_interval_and_nested_labelled_sets(digits01):
  assert digits01.train.x.min() == 0 and digits01.train.x.max() == 1
  assert digits01.train.x.shape[1] == 64 and 0 <= digits01.test.x.min() <= digits01.test.x.max() <= 1
  one = pretraining.labelled_indices(digits01.train.y, 1, 10, seed=3)
  five = pretraining.labelled_indices(digits01.train.y, 5, 10, seed=3)
  assert sorted(digits01.train.y[one]) == list(range(10))
  assert np.bincount(digits01.train.y[five]).tolist() == [5] * 10
  assert set(one) <= set(five)
  with pytest.raises(errors.ConfigError, match="labels_per_class asks for 500 labels of class 0"):
    pretraining.labelled_indices(digits01.train.y, 500, 10, seed=0)


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


@pytest.mark.slow
def test_pretraining_beats_from_scratch_inits_with_one_label_per_class(digits01):
  """The robust direction on a small fixed setting: 64 -> 32 -> 32 sigmoid -> 10, both hidden
  layers pre-trained, 1 label of each class, the lecture's momentum fine-tuning, 3 seeds
  (measured: pre-trained 61%, Glorot 54%, small random 10%)."""
  config = _tiny()
  seeds = [0, 1, 2]
  pre = pretraining.pretrain(config, digits01.train.x, seeds)
  out = pretraining.finetune(config, digits01, 1, seeds, pre)
  acc = {name: np.mean([r["test_accuracy"] for r in out["runs"] if r["init"] == name])
         for name in config.experiment.inits}
  for name in ("pretrained", "glorot"):  # both fit their 10 labels
    assert all(r["train_accuracy"] == 1.0 for r in out["runs"] if r["init"] == name)
  assert acc["pretrained"] > acc["glorot"] + 0.03, acc
  assert acc["pretrained"] > acc["random"] + 0.3, acc


@pytest.mark.slow
def test_runner_writes_tables_and_figures(tmp_path):
  config = _tiny()
  config.num_steps, config.experiment.pretrain_steps = 200, 200
  config.experiment.labels_per_class = (1, 3)
  config.experiment.inits = ("pretrained", "glorot", "random")
  config.experiment.repeats = 2
  out = pretraining.run(config, str(tmp_path))
  for name in ("results.md", "results.json", "metrics.jsonl", "filters.png",
               "accuracy_vs_labels.png"):
    assert os.path.getsize(tmp_path / name) > 0, name
  assert [row["labels_per_class"] for row in out["table"]] == [1, 3]
  assert len(out["runs"]) == 2 * 3 * 2
  text = (tmp_path / "results.md").read_text()
  assert "| 1 | 10 |" in text and "Glorot uniform" in text
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["reconstruction"][0]["after"] < out["reconstruction"][0]["before"]
  assert pretraining.run(config, str(tmp_path))["finished"]  # a rerun does nothing


@pytest.mark.parametrize("field, value, fragment", [
    ("experiment.pretrain_layers", 3, "pretrain_layers=3 is more than the 2 hidden layers"),
    ("experiment.noise", 1.0, "config.experiment.noise=1.0 must be"),
    ("experiment.inits", ("pretrained", "xavier"), "experiment.inits[1]='xavier'"),
    ("experiment.labels_per_class", (5, 1), "must be increasing"),
    ("experiment.cost", "l1", "experiment.cost='l1' is not supported"),
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
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "pretrain_layers=3 is more than the 2 hidden layers" in lines[0]
  assert "Traceback" not in result.stderr
