"""Surrogate loss vs the real evaluation function (research/experiments/surrogate.py): the
metrics on hand examples, the task data, and the checkpoint rules under the harness."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets as skdatasets
from sklearn import metrics as skmetrics

from configs import exp_surrogate
from research import config_lib
from research import data as data_lib
from research import errors
from research import experiments
from research import models
from research.experiments import surrogate


def test_f1_and_mae_on_hand_examples():
  # Positives: tp = 2 (rows 0, 1), fp = 2 (rows 2, 3), fn = 1 (row 4): P = 1/2, R = 2/3.
  pred = np.array([1, 1, 1, 1, 0, 0])
  label = np.array([1, 1, 0, 0, 1, 0])
  assert surrogate.binary_f1(pred, label) == pytest.approx(4 / 7)
  assert surrogate.binary_f1(pred, label) == pytest.approx(skmetrics.f1_score(label, pred))
  # 3 classes; class 2 is never predicted (F1 0), class 0: tp 1 fp 1 fn 0 -> 2/3,
  # class 1: tp 2 fp 1 fn 1 -> 2/3.
  pred = np.array([0, 0, 1, 1, 1])
  label = np.array([0, 1, 1, 1, 2])
  np.testing.assert_allclose(surrogate.f1_per_class(pred, label, 3), [2 / 3, 2 / 3, 0.0])
  assert surrogate.macro_f1(pred, label, 3) == pytest.approx(
      skmetrics.f1_score(label, pred, average="macro", zero_division=0))
  assert surrogate.mean_absolute_error([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]) == pytest.approx(1.0)


def test_binary_dataset_relabels_and_subsamples_positives():
  x = np.arange(40, dtype=np.float32)[:, None]
  y = np.arange(40) % 4  # 10 examples of each of 4 classes
  split = data_lib.Split(x, y.astype(np.int32))
  ds = data_lib.Dataset("toy", split, split, split, num_classes=4)
  out = surrogate.binary_dataset(ds, positive_class=3, positive_keep=0.5, seed=0)
  assert out.num_classes == 2
  assert set(np.unique(out.train.y)) <= {0, 1}
  assert (out.train.y == 0).sum() == 30  # every negative kept
  assert 0 < out.train.y.sum() < 10  # about half of the 10 positives
  np.testing.assert_array_equal(out.train.x[out.train.y == 1, 0] % 4, 3)
  with pytest.raises(errors.ConfigError, match="positive_class"):
    surrogate.binary_dataset(ds, positive_class=4, positive_keep=1.0, seed=0)


def test_diabetes_targets_round_trip_to_the_original_units():
  ds, t_mean, t_std = surrogate.diabetes(config_lib.sklearn_data("diabetes"))
  _, t_N = skdatasets.load_diabetes(return_X_y=True)
  assert len(ds.train) + len(ds.valid) + len(ds.test) == len(t_N)
  assert abs(ds.train.y.mean()) < 1e-5 and ds.train.y.std() == pytest.approx(1, abs=1e-5)
  back = np.concatenate([s.y for s in (ds.train, ds.valid, ds.test)]) * t_std + t_mean
  np.testing.assert_allclose(np.sort(back), np.sort(t_N), rtol=1e-5)


def test_each_seed_splits_the_data_afresh_except_the_fixed_text():
  config = exp_surrogate.get_config("macro_f1")
  a, b = (data_lib.load(surrogate._seed_config(config, s).data) for s in (0, 1))
  assert len(a.test) == len(b.test) and not np.array_equal(a.test.x, b.test.x)
  assert config.data.split_seed == 0  # the caller's config is not changed
  text = exp_surrogate.get_config("bleu")
  assert surrogate._seed_config(text, 3).data.to_dict() == text.data.to_dict()


def _tiny(arg, **fields):
  config = exp_surrogate.get_config(arg)
  config.num_steps, config.eval_every = 20, 10
  config.model.hidden_sizes = (16,)
  config.experiment.seeds = 2
  config.update(fields)
  return config


@pytest.mark.parametrize("arg,metric", [("macro_f1", "macro_f1"), ("binary_f1_cancer", "f1"),
                                        ("mae", "mae")])
def test_surrogate_runner_keeps_each_rules_checkpoint(tmp_path, arg, metric):
  workdir = str(tmp_path / "sur")
  out = experiments.run(_tiny(arg), workdir)
  for name in ("results.md", "results.json", "metrics.jsonl", "surrogate.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  (entry,) = out["sizes"]
  assert entry["size"] == arg.replace("_cancer", "") and tuple(entry["arms"]) == surrogate.RULES
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if r["split"] == "valid"]
  for i, seed in enumerate(out["seeds"]):
    mine = [r for r in evals if r["seed"] == seed]
    assert [r["step"] for r in mine] == [10, 20]
    best_loss = min(mine, key=lambda r: r["loss"])
    values = [r[metric] for r in mine]
    best = min(values) if metric == "mae" else max(values)
    best_metric = next(r for r in mine if r[metric] == best)  # the first on a tie
    arms = entry["arms"]
    assert arms["best_loss"]["test"][i]["chosen_step"] == best_loss["step"]
    assert arms["best_metric"]["test"][i]["chosen_step"] == best_metric["step"]
    assert arms["last"]["test"][i]["chosen_step"] == 20
    # The valid measure of each rule's checkpoint is the eval that rule read.
    assert arms["best_metric"]["grid"][0]["valid"][i][metric] == pytest.approx(best)
  if metric != "mae":
    assert all(0 <= r[metric] <= 1 for r in evals)
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "Per seed, the evals the two rules chose" in text and "redrawn per seed" in text
  assert experiments.run(_tiny(arg), workdir)["finished"]


def test_bleu_is_100_for_a_perfect_copy_and_lower_otherwise():
  pytest.importorskip("sacrebleu")
  refs = ["the cat sat on the mat", "a dog ran in the park"]
  assert surrogate.bleu(refs, refs) == pytest.approx(100.0)
  assert surrogate.bleu(["the cat sat on a hat", "a dog ran"], refs) < 60
  assert surrogate.bleu(["the cat sat on a hat", "a dog ran"], refs, "char") > surrogate.bleu(
      ["zzz", "qqq"], refs, "char")


def test_missing_sacrebleu_names_the_pip_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "sacrebleu", None)  # `import sacrebleu` now fails
  with pytest.raises(errors.ConfigError, match="pip install sacrebleu"):
    surrogate.bleu(["a"], ["a"])


def test_greedy_generation_keeps_the_prompt_and_follows_the_argmax():
  cfg = exp_surrogate.get_config("bleu").model
  cfg.embed_dim, cfg.hidden_size = 4, 8
  model = models.build(cfg, (8,), 7)
  params = jax.jit(model.init)(jax.random.key(0))
  ids = np.random.default_rng(0).integers(0, 7, (3, 8)).astype(np.int32)
  out = surrogate.make_generate(model, prompt_len=5)(params, ids, jax.random.key(2))
  np.testing.assert_array_equal(out[:, :5], ids[:, :5])
  # Causal model: rerunning it on the finished buffer predicts every generated character.
  rerun = jax.jit(lambda p, x: jnp.argmax(model.apply(p, x), -1))(params, out)
  np.testing.assert_array_equal(out[:, 5:], rerun[:, 4:-1])


@pytest.mark.slow
def test_bleu_path_runs_on_a_tiny_char_model(tmp_path):
  pytest.importorskip("sacrebleu")
  config = exp_surrogate.get_config("bleu")
  config.data.seq_len = 12
  config.model.embed_dim, config.model.hidden_size = 8, 16
  config.experiment.prompt_len, config.experiment.num_prompts = 6, 4
  config.experiment.seeds = 2
  config.num_steps, config.eval_every, config.batch_size = 10, 5, 8
  workdir = str(tmp_path / "bleu")
  out = experiments.run(config, workdir)
  assert os.path.getsize(os.path.join(workdir, "surrogate.png")) > 0
  for arm in out["sizes"][0]["arms"].values():
    for r in arm["test"]:
      assert 0 <= r["bleu_13a"] <= 100 and 0 <= r["bleu_char"] <= 100
      assert r["bleu"] == r["bleu_char"]  # the config tracks character BLEU
  with open(os.path.join(workdir, "results.md")) as f:
    assert "one fixed contiguous split" in f.read()


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(methods=("best_loss", "best_f1")),
     "experiment.methods[1]='best_f1' is not supported"),
    (lambda c: c.experiment.update(baseline="last", methods=("best_loss", "best_metric")),
     "experiment.baseline='last' is not supported"),
    (lambda c: c.experiment.update(seeds=1), "config.experiment.seeds=1 must be"),
    (lambda c: c.experiment.update(task="auc"), "experiment.task='auc' is not supported"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_surrogate.get_config("macro_f1")
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
