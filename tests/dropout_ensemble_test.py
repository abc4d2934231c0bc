"""Dropout as an ensemble (research/experiments/dropout_ensemble.py): the masks, the Monte
Carlo mixture against weight scaling, the runner under the experiment harness and its
one-line config errors."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import exp_dropout_ensemble
from research import errors
from research import experiments
from research import losses
from research import models
from research.experiments import dropout_ensemble


@pytest.fixture(scope="module")
def dropout_net():
  cfg = ml_collections.ConfigDict(dict(name="mlp", hidden_sizes=(64,), activation="relu",
                                       dropout=0.5))
  model = models.build(cfg, (12,), 4)
  params = model.init(jax.random.key(0))
  x_NxD = np.asarray(jax.random.normal(jax.random.key(1), (50, 12)))
  labels_N = np.asarray(jnp.argmax(model.apply(params, x_NxD), axis=-1))  # Learnable labels.
  keys_M = jax.random.split(jax.random.key(2), 256)
  logits_MxNxK = dropout_ensemble.split_logits(
      dropout_ensemble.make_mask_logits_fn(model, 32), params, x_NxD, 16, keys_M)
  return model, params, x_NxD, labels_N, logits_MxNxK


def test_masks_differ_and_average_to_weight_scaling(dropout_net):
  model, params, x_NxD, _, logits_MxNxK = dropout_net
  assert logits_MxNxK.shape == (256, 50, 4)
  assert not np.allclose(logits_MxNxK[0], logits_MxNxK[1])
  # One hidden layer feeding a linear output: E_d[logits] is exactly weight scaling's logits.
  ws_NxK = np.asarray(model.apply(params, x_NxD, train=False))
  err = lambda m: np.abs(logits_MxNxK[:m].mean(axis=0) - ws_NxK).mean()
  assert err(256) < 0.5 * err(4)
  assert err(256) < 0.1 * np.abs(ws_NxK).mean()


def test_more_masks_agree_with_weight_scaling_and_never_lose_log_likelihood(dropout_net):
  model, params, x_NxD, labels_N, logits_MxNxK = dropout_net
  ws_pred = np.asarray(jnp.argmax(model.apply(params, x_NxD, train=False), axis=-1))
  metrics = lambda logits: dropout_ensemble.ensemble_metrics(logits, labels_N, "softmax",
                                                             ws_pred)
  one, every = metrics(logits_MxNxK[:1]), metrics(logits_MxNxK)
  singles = [metrics(logits_MxNxK[i:i + 1]) for i in range(32)]
  assert every["agreement"] >= 0.9 > np.mean([m["agreement"] for m in singles])
  assert every["log_likelihood"] > np.mean([m["log_likelihood"] for m in singles]) + 0.05
  # Jensen (log is concave): a mixture is never below the mean of its two halves.
  halves = [metrics(logits_MxNxK[:128])["log_likelihood"],
            metrics(logits_MxNxK[128:])["log_likelihood"]]
  assert every["log_likelihood"] >= np.mean(halves) - 1e-6
  # One member is the library's loss.
  nll = losses.softmax_cross_entropy(jnp.asarray(logits_MxNxK[0]),
                                     losses.one_hot_targets(labels_N, 4))
  assert one["log_likelihood"] == pytest.approx(-float(nll.mean()), rel=1e-5)


def _tiny_config():
  config = exp_dropout_ensemble.get_config()
  config.model.hidden_sizes = (32,)
  config.num_steps, config.eval_every, config.log_every = 60, 30, 30
  config.experiment.update(seeds=2, dropout_rates=(0.5,), mask_counts=(1, 16))
  return config


@pytest.mark.slow
def test_runner_pairs_the_rules_over_independently_trained_networks(tmp_path):
  workdir = str(tmp_path / "drop")
  result = experiments.run(_tiny_config(), workdir)
  (entry,) = result["sizes"]
  assert entry["size"] == 0.5 and tuple(entry["arms"]) == ("weight_scaling", "mc_1", "mc_16")
  ws = entry["arms"]["weight_scaling"]["test"]
  assert all(r["agreement"] == 1.0 for r in ws)
  assert ws[0]["accuracy"] != ws[1]["accuracy"] or ws[0]["log_likelihood"] != ws[1][
      "log_likelihood"]  # Two networks, not one.
  st = entry["arms"]["mc_16"]["stats"]
  assert st["log_likelihood"]["vs_baseline"]["n"] == 2
  assert st["log_likelihood"]["mean"] > entry["arms"]["mc_1"]["stats"]["log_likelihood"]["mean"]
  for name in ("results.md", "results.json", "metrics.jsonl", "dropout_ensemble.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert {json.loads(line)["split"] for line in f} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "| 0.5 | mc_16 | - |" in text and "independently trained networks" in text
  assert experiments.run(_tiny_config(), workdir)["finished"]


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(dropout_rates=(0.0,)), "dropout_rates=(0.0,)"),
    (lambda c: c.model.update(dropout=0.5), "config.model.dropout=0.5"),
    (lambda c: c.experiment.update(mask_counts=(4, 0)),
     "mask_counts=(4, 0) must be a non-empty tuple of positive integers"),
    (lambda c: c.experiment.update(seeds=1), "config.experiment.seeds=1"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_dropout_ensemble.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
