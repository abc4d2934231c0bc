"""Adversarial examples: FGSM and PGD-k with a random start as attacks and in training, and
the runner under the experiment harness (research/experiments/adversarial.py)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import exp_adversarial
from research import config_lib
from research import data as data_lib
from research import errors
from research import experiments
from research import losses
from research import models
from research import optim
from research.experiments import adversarial
from research.experiments import harness

EPS = 0.3  # In the digits' standardised units (their range is about 3.5 wide).


def test_fgsm_moves_every_pixel_by_eps_within_the_range():
  x = jnp.array([[0.0, 0.5, 0.95]])
  g = jnp.array([[-1.0, 2.0, 3.0]])
  np.testing.assert_allclose(adversarial.fgsm(x, g, 0.1, 0.0, 1.0), [[0.0, 0.6, 1.0]])


@pytest.fixture(scope="module")
def trained():
  """A small MLP trained briefly on digits (its attacks are not those of a linear model),
  64 test digits, the pixel range, and the shared jitted attacks."""
  dataset = data_lib.load(config_lib.sklearn_data("digits", valid_fraction=0.1,
                                                  test_fraction=0.5))
  config = config_lib.base(batch_size=32)
  config.model = dict(name="mlp", hidden_sizes=(32,), activation="relu", dropout=0.0)
  model = models.build(config.model, dataset.input_shape, 10)
  optimizer = optim.make_optimizer(config_lib.optimizer(name="adam", learning_rate=3e-3), 300)
  (params,) = harness.train_seeds(model, losses.make_loss_fn(model, "softmax", 0.0, 1, 10),
                                  optimizer, 300, 32, [dataset.train], [0], mode="loop")
  low, high = float(dataset.train.x.min()), float(dataset.train.x.max())
  grad = adversarial.input_grad_autodiff(model, 10)
  x, y = jnp.asarray(dataset.test.x[:64]), jnp.asarray(dataset.test.y[:64])

  @jax.jit
  def attacks(params, key):
    loss = lambda x_adv: losses.softmax_cross_entropy(
        model.apply(params, x_adv), losses.one_hot_targets(y, 10)).mean()
    x_fgsm = adversarial.fgsm(x, grad(params, x, y), EPS, low, high)
    x_pgd = adversarial.pgd(grad, params, x, y, EPS, 2.5 * EPS / 20, 20, low, high, key)
    return {"clean": loss(x), "fgsm": loss(x_fgsm), "pgd": loss(x_pgd), "x_pgd": x_pgd,
            "start": adversarial.pgd(grad, params, x, y, EPS, 0.1, 0, low, high, key)}

  return {"model": model, "params": params, "x": x, "y": y, "low": low, "high": high,
          "grad": grad, "attacks": attacks}


def test_pgd_ends_at_a_higher_loss_than_fgsm_on_the_same_points(trained):
  out = trained["attacks"](trained["params"], jax.random.key(0))
  assert float(out["clean"]) < float(out["fgsm"]) < float(out["pgd"])


def test_pgd_stays_in_the_eps_ball_and_the_pixel_range(trained):
  x, low, high = trained["x"], trained["low"], trained["high"]
  x_pgd = np.asarray(trained["attacks"](trained["params"], jax.random.key(1))["x_pgd"])
  assert np.abs(x_pgd - np.asarray(x)).max() <= EPS * (1 + 1e-6)
  assert x_pgd.min() >= low and x_pgd.max() <= high
  # The attack uses the ball: most pixels sit on its surface or at the range's edges.
  at_edge = ((np.abs(np.abs(x_pgd - x) - EPS) < 1e-5) | (x_pgd == low) | (x_pgd == high))
  assert at_edge.mean() > 0.5


def test_the_random_start_is_uniform_in_the_ball_and_differs_per_key(trained):
  x = np.asarray(trained["x"])
  starts = [np.asarray(trained["attacks"](trained["params"], jax.random.key(s))["start"])
            for s in (0, 1)]
  assert not np.allclose(starts[0], starts[1])
  for start in starts:
    assert np.abs(start - x).max() <= EPS * (1 + 1e-6)
    assert start.min() >= trained["low"] and start.max() <= trained["high"]
  # Without a key (and without steps) PGD leaves the input where it is.
  same = adversarial.pgd(trained["grad"], trained["params"], trained["x"], trained["y"], EPS,
                         0.1, 0, trained["low"], trained["high"], None)
  np.testing.assert_array_equal(same, x)


def test_adversarial_cost_mixes_the_clean_and_the_attacked_terms(trained):
  model, params, x, y = trained["model"], trained["params"], trained["x"], trained["y"]
  fns = {(attack, w): adversarial.make_adversarial_loss_fn(
      model, 10, attack, EPS, trained["low"], trained["high"], w, 5)
         for attack in ("fgsm", "pgd") for w in (0.0, 0.25)}
  out = jax.jit(lambda p: {k: fn(p, x, y, jax.random.key(0)) for k, fn in fns.items()})(params)
  for attack in ("fgsm", "pgd"):
    E0, aux0 = out[(attack, 0.0)]
    E, aux = out[(attack, 0.25)]
    assert float(E0) == pytest.approx(float(aux0["adversarial_loss"]))
    assert float(E) == pytest.approx(0.25 * float(aux["data_loss"])
                                     + 0.75 * float(aux["adversarial_loss"]), rel=1e-6)
    assert float(aux["adversarial_loss"]) > float(aux["data_loss"])
  with pytest.raises(ValueError, match="attack='pgd2'"):
    adversarial.make_adversarial_loss_fn(model, 10, "pgd2", EPS, 0.0, 1.0, 0.5)


def test_trades_cost_is_the_clean_term_plus_beta_kl_at_its_own_worst_point(trained):
  """E = E(x) + beta KL(p(x) || p(x_adv)); x_adv stays in the ball and the pixel range, and
  its KL exceeds that of the tiny random start it climbs from."""
  model, params, x, y = trained["model"], trained["params"], trained["x"], trained["y"]
  low, high = trained["low"], trained["high"]
  fn = adversarial.make_trades_loss_fn(model, 10, EPS, low, high, 6.0, 5, 2.5)

  @jax.jit
  def run(p, key):
    log_p = jax.nn.log_softmax(model.apply(p, x), axis=-1)
    kl = lambda xa: adversarial.kl_divergence(
        log_p, jax.nn.log_softmax(model.apply(p, xa), axis=-1)).mean()
    x_adv = adversarial.trades_example(model, p, x, EPS, 2.5 * EPS / 5, 5, low, high, key)
    x_start = adversarial.trades_example(model, p, x, EPS, 0.0, 0, low, high, key)
    return fn(p, x, y, key), x_adv, kl(x_adv), kl(x_start)

  (E, aux), x_adv, kl_adv, kl_start = run(params, jax.random.key(0))
  assert float(E) == pytest.approx(float(aux["data_loss"]) + 6.0 * float(aux["adversarial_loss"]),
                                   rel=1e-5)
  assert float(aux["adversarial_loss"]) > 0 and float(kl_adv) > 100 * float(kl_start)
  x_adv = np.asarray(x_adv)
  assert np.abs(x_adv - np.asarray(x)).max() <= EPS * (1 + 1e-6)
  assert x_adv.min() >= low and x_adv.max() <= high


def test_pgd_with_restarts_keeps_only_the_examples_that_survive_every_start(trained):
  """One restart is PGD from the key itself; with R restarts an example is robust only if
  it survives each start, i.e. the AND of R single-start attacks."""
  model, params, x, y = trained["model"], trained["params"], trained["x"], trained["y"]
  low, high, grad = trained["low"], trained["high"], trained["grad"]
  correct = lambda p, xa, labels: jnp.argmax(model.apply(p, xa), axis=-1) == labels
  key, eps = jax.random.key(3), 0.5 * EPS

  @jax.jit
  def run(p):
    single = lambda k: correct(p, adversarial.pgd(grad, p, x, y, eps, 2.5 * eps / 3, 3, low,
                                                  high, k), y)
    return (adversarial.pgd_restarts(grad, p, x, y, eps, 2.5 * eps / 3, 3, low, high, key, 1,
                                     correct),
            adversarial.pgd_restarts(grad, p, x, y, eps, 2.5 * eps / 3, 3, low, high, key, 3,
                                     correct),
            [single(key), single(jax.random.fold_in(key, 1)),
             single(jax.random.fold_in(key, 2))])

  one, three, singles = jax.device_get(run(params))
  np.testing.assert_array_equal(one, singles[0])
  np.testing.assert_array_equal(three, singles[0] & singles[1] & singles[2])
  assert three.sum() < one.sum()  # the restarts find examples one start missed


def _tiny_config(steps=300):
  config = exp_adversarial.get_config()
  config.num_steps, config.eval_every, config.log_every = steps, steps // 2, steps // 2
  config.model.hidden_sizes = (64,)
  config.experiment.update(seeds=2, threat_epsilons=(0.1,), eval_epsilons=(0.05, 0.1, 0.2),
                           learning_rates=(1e-3,), clean_weights=(0.5,), attack_steps=10,
                           train_attack_steps=3, trades_betas=(6.0,), attack_restarts=2)
  return config


@pytest.mark.slow
def test_runner_writes_its_table_and_adversarial_training_resists_pgd(tmp_path):
  config = _tiny_config()
  workdir = str(tmp_path / "adv")
  result = experiments.run(config, workdir)
  (entry,) = result["sizes"]
  assert entry["size"] == 0.1 and tuple(entry["arms"]) == adversarial.METHODS
  st = {m: arm["stats"] for m, arm in entry["arms"].items()}
  for m in adversarial.METHODS:
    # PGD is the stronger attack; a larger eps hurts more.
    assert st[m]["pgd_accuracy"]["mean"] <= st[m]["fgsm_accuracy"]["mean"]
    assert st[m]["pgd eps=0.2"]["mean"] < st[m]["pgd eps=0.05"]["mean"] < st[m]["accuracy"]["mean"]
    assert st[m]["pgd_accuracy"]["mean"] == pytest.approx(st[m]["pgd eps=0.1"]["mean"], abs=0.02)
  for m in ("fgsm_training", "pgd_training", "trades"):
    assert st[m]["pgd_accuracy"]["vs_baseline"]["mean"] > 0.05, m
    assert st[m]["pgd_accuracy"]["vs_baseline"]["n"] == 2
  tests = [r for arm in entry["arms"].values() for r in arm["test"]]
  for r in tests:  # each example's correctness behind every accuracy (packed 0/1)
    for f in ("accuracy", "pgd_accuracy", "pgd eps=0.2"):
      hits = r["per_example"][f]
      assert hits.count("1") / len(hits) == pytest.approx(r[f], abs=1e-6)
  assert max(r["grad_rel_err"] for r in tests) < 1e-5
  assert max(r["sign_flip_rel"] for r in tests) < 1e-5
  assert entry["arms"]["standard"]["chosen"] == {"learning_rate": 1e-3}
  for name in ("results.md", "results.json", "metrics.jsonl", "adversarial.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert {json.loads(line)["split"] for line in f} == {"train", "result"}
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "| 0.1 | pgd_training | learning_rate=0.001, clean_weight=0.5 |" in text
  # One setting per method here: the note says nothing is chosen (and names no selection).
  assert "no subset to draw" in text and "nothing is chosen" in text
  assert result["select_label"] == "accuracy under PGD-10 at eps"
  assert "eps=0.2 FGSM / PGD" in text and "dE/dx by the manual backward pass" in text
  assert "PGD at eps %: pgd_training - fgsm_training [95% CI, seeds], p (Holm)" in text
  # A finished run does nothing on rerun.
  assert experiments.run(config, workdir)["finished"]


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.experiment.update(eval_epsilons=(0.1, 2.0)),
     "eval_epsilons=(0.1, 2.0) must be fractions"),
    (lambda c: c.experiment.update(threat_epsilons=(0.0,)),
     "threat_epsilons=(0.0,) must be fractions"),
    (lambda c: c.experiment.update(clean_weights=(0.5, 1.0)), "clean_weights=(0.5, 1.0)"),
    (lambda c: c.experiment.update(methods=("standard", "pgd")),
     "experiment.methods[1]='pgd' is not supported"),
    (lambda c: c.experiment.update(baseline="pgd_training", methods=("standard",)),
     "experiment.baseline='pgd_training' is not supported"),
    (lambda c: c.experiment.update(attack_steps=0), "attack_steps=0 must be"),
    (lambda c: c.experiment.update(attack_restarts=0), "attack_restarts=0 must be"),
    (lambda c: c.experiment.update(trades_betas=()), "trades_betas is empty"),
    (lambda c: c.model.update(dropout=0.5), "dropout=0"),
])
def test_bad_config_is_one_clear_error_before_training(tmp_path, edit, fragment):
  config = exp_adversarial.get_config()
  edit(config)
  with pytest.raises(errors.ConfigError) as e:
    experiments.run(config, str(tmp_path / "bad"))
  assert fragment in str(e.value)
  assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")
