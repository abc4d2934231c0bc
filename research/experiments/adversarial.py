"""Adversarial examples and adversarial training: FGSM and PGD, as attacks and in training.

Two white-box attacks inside the L-infinity ball of radius eps, clipped to the data's pixel
range [low, high] (eps is a fraction of that range; digits: 16 grey levels, so 0.1 is 1.6):

  FGSM (Goodfellow et al., 2015)  one step to the ball's corner that raises the cost fastest
                                  to first order: x_adv = clip(x + eps sign(dE/dx))
  PGD-k (Madry et al., 2018)      from a uniform random point of the ball, k steps
                                  x <- clip(proj_ball(x + a sign(dE/dx))), a = step_factor eps / k

E is the data term for the true label y. dE/dx comes from jax.grad with respect to the input,
and, for the MLP, from the hand-written backward pass continued one layer further down:
dE/dx_i = sum_j delta^1_j w^1_ij (research/backprop/mlp.py manual_grads_and_input_grad); the
test measurement checks that the two agree and attacks with both (FGSM).

The harness (research/experiments/harness.py) runs the protocol. Its sizes are the threat
model's eps (experiment.threat_epsilons): at each, the methods (experiment.methods) are
  standard       the data term alone: the baseline
  fgsm_training  E = w E(x) + (1 - w) E(x_adv), x_adv the FGSM example at eps
  pgd_training   the same with x_adv the PGD-k example (k = train_attack_steps)
  trades         TRADES (Zhang et al., 2019): E = E(x) + beta KL(p(x) || p(x_adv)), x_adv the
                 PGD-k example that maximises the KL term itself, from x + 0.001 N(0, 1); the
                 trade-off between accuracy and robustness as one strength beta
x_adv is built from the current weights at every step and treated as data (no gradient flows
through its construction). Every network trains on the whole training split (there is no
subset to draw; the seeds differ in the init, the batch order and the random starts).
Tuning, equal in kind: every method chooses its learning rate from experiment.learning_rates,
jointly with (but for standard) its strength: the FGSM and PGD trainings their clean weight w
from experiment.clean_weights (in [0, 1)), TRADES its beta from experiment.trades_betas (as
many candidates); a choice at a grid's edge grows that grid by up to
experiment.max_extensions steps. Each is chosen by validation
accuracy under PGD-k at the size's eps (k = attack_steps, the worst of
experiment.attack_restarts random starts: an example counts as robust only if every start
fails): robustness at that eps is what the section compares, and PGD, the stronger
attack, does not reward a network that only defeats one gradient step. Measured on the test
split: clean accuracy, and accuracy under FGSM and under PGD-k at the size's eps
("fgsm_accuracy", "pgd_accuracy") and at every experiment.eval_epsilons ("fgsm eps=0.1",
"pgd eps=0.1", ...); and the FGSM and PGD trainings are paired against each other too.
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import config_lib
from research import data as data_lib
from research import errors
from research import losses
from research import models
from research import optim
from research import workdir as workdir_lib
from research.backprop import mlp as backprop_mlp
from research.experiments import harness
from research.experiments import report

METHODS = ("standard", "fgsm_training", "pgd_training", "trades")
ATTACKS = {"fgsm_training": "fgsm", "pgd_training": "pgd"}
RANGES = {"seeds": config_lib.Range(True, 2), "attack_steps": config_lib.Range(True, 1),
          "max_extensions": config_lib.Range(True, 0),
          "attack_restarts": config_lib.Range(True, 1),
          "train_attack_steps": config_lib.Range(True, 1),
          "step_factor": config_lib.Range(False, 0.0, low_open=True)}
SIZE_LABEL = "eps (fraction of pixel range)"  # The threat model: trained for, selected at.
GRADIENT_CHECKS = ("grad_rel_err", "sign_agreement", "sign_flip_rel", "manual_fgsm_gap")


# ----------------------------------------------------------------------------------- attacks


def fgsm(x: jax.Array, dE_dx: jax.Array, eps, low, high) -> jax.Array:
  """x + eps sign(dE/dx), clipped to [low, high] (the data's pixel range)."""
  return jnp.clip(x + eps * jnp.sign(dE_dx), low, high)


def pgd(input_grad, params, x: jax.Array, labels: jax.Array, eps, step_size, num_steps: int,
        low, high, key: jax.Array | None) -> jax.Array:
  """PGD-k (Madry et al., 2018): from x + U(-eps, eps) (key=None: from x itself), num_steps
  steps x <- x + step_size sign(dE/dx), each projected onto the eps-ball around x and clipped
  to [low, high]. input_grad(params, x, labels) -> dE/dx, x's shape. Returns x_adv, x's shape."""
  x_adv = x
  if key is not None:
    x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), low, high)

  def step(_, x_adv):
    x_adv = x_adv + step_size * jnp.sign(input_grad(params, x_adv, labels))
    return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), low, high)

  return jax.lax.fori_loop(0, num_steps, step, x_adv)


def pgd_restarts(input_grad, params, x: jax.Array, labels: jax.Array, eps, step_size,
                 num_steps: int, low, high, key: jax.Array, restarts: int, correct):
  """Which examples survive PGD-k from every one of `restarts` random starts: bool, (B,).
  correct(params, x_adv, labels) -> bool (B,). The first start uses `key` itself, so one
  restart is exactly `pgd` from key."""
  def one(r, ok):
    start = jax.lax.select(r == 0, key, jax.random.fold_in(key, r)) if restarts > 1 else key
    x_adv = pgd(input_grad, params, x, labels, eps, step_size, num_steps, low, high, start)
    return ok & correct(params, x_adv, labels)

  return jax.lax.fori_loop(0, restarts, one, jnp.ones(labels.shape, bool))


def trades_example(model: models.Model, params, x: jax.Array, eps, step_size, num_steps: int,
                   low, high, key: jax.Array) -> jax.Array:
  """TRADES' inner maximisation: from x + 0.001 N(0, 1), num_steps steps of sign ascent on
  KL(p(x) || p(x_adv)), each projected onto the eps-ball around x and clipped to [low, high]
  (at x_adv = x the KL and its gradient are 0, hence the small random start)."""
  log_p = jax.lax.stop_gradient(jax.nn.log_softmax(model.apply(params, x), axis=-1))

  def kl_grad(x_adv):
    return jax.grad(lambda xa: kl_divergence(log_p, jax.nn.log_softmax(
        model.apply(params, xa), axis=-1)).sum())(x_adv)

  def step(_, x_adv):
    x_adv = x_adv + step_size * jnp.sign(kl_grad(x_adv))
    return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), low, high)

  x0 = jnp.clip(x + 0.001 * jax.random.normal(key, x.shape, x.dtype), low, high)
  return jax.lax.fori_loop(0, num_steps, step, x0)


def kl_divergence(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p || q) = sum_k p_k (log p_k - log q_k) per example, from log-probabilities (B, K)."""
  return (jnp.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def make_trades_loss_fn(model: models.Model, k: int, eps, low, high, beta: float,
                        num_steps: int, step_factor: float):
  """TRADES: E = E(x) + beta (1/B) sum_b KL(p(x_b) || p(x_adv_b)), x_adv = trades_example
  (stopped); the gradient flows through both p(x) and p(x_adv), as in the paper. aux:
  "data_loss" (clean), "adversarial_loss" (the mean KL), "accuracy" (clean)."""

  def loss_fn(params, x, labels, rng):
    rng, start = jax.random.split(rng)
    x_adv = jax.lax.stop_gradient(trades_example(
        model, params, x, eps, step_factor * eps / num_steps, num_steps, low, high, start))
    logits = model.apply(params, x, train=True, rng=rng)
    clean = losses.softmax_cross_entropy(logits, losses.one_hot_targets(labels, k,
                                                                         x.dtype)).mean()
    kl = kl_divergence(jax.nn.log_softmax(logits, axis=-1), jax.nn.log_softmax(
        model.apply(params, x_adv, train=True, rng=rng), axis=-1)).mean()
    accuracy = (losses.predictions(logits) == labels).mean()
    return clean + beta * kl, {"data_loss": clean, "adversarial_loss": kl,
                               "accuracy": accuracy}

  return loss_fn


def input_grad_autodiff(model: models.Model, k: int):
  """(params, x, labels) -> dE/dx of the mean softmax cross-entropy, by jax.grad."""
  def grad(params, x, labels):
    y = losses.one_hot_targets(labels, k, x.dtype)
    return jax.grad(lambda x: losses.softmax_cross_entropy(model.apply(params, x), y).mean())(x)
  return grad


def input_grad_manual(activation: str, k: int):
  """(params, x, labels) -> dE/dx of the same E by the hand-written MLP backward pass."""
  def grad(params, x, labels):
    y = losses.one_hot_targets(labels, k, x.dtype)
    return backprop_mlp.manual_grads_and_input_grad(params, x, y, 0.0, 1, activation=activation,
                                                    output="softmax")[1]
  return grad


def make_adversarial_loss_fn(model: models.Model, k: int, attack: str, eps, low, high,
                             clean_weight: float, num_steps: int = 1, step_factor: float = 2.5):
  """E = w E(x) + (1 - w) E(x_adv), x_adv = the `attack` ("fgsm" | "pgd": num_steps steps
  of step_factor eps / num_steps from a random start drawn from the step's rng) at the current
  weights, stopped. aux: "data_loss" (clean), "adversarial_loss", "accuracy" (clean)."""
  if attack not in ("fgsm", "pgd"):
    raise ValueError(f"attack={attack!r}: use 'fgsm' or 'pgd'")
  input_grad = input_grad_autodiff(model, k)

  def loss_fn(params, x, labels, rng):
    y = losses.one_hot_targets(labels, k, x.dtype)
    rng, start = jax.random.split(rng)
    if attack == "fgsm":
      x_adv = fgsm(x, input_grad(params, x, labels), eps, low, high)
    else:
      x_adv = pgd(input_grad, params, x, labels, eps, step_factor * eps / num_steps, num_steps,
                  low, high, start)
    x_adv = jax.lax.stop_gradient(x_adv)
    logits = model.apply(params, x, train=True, rng=rng)
    clean = losses.softmax_cross_entropy(logits, y).mean()
    adv = losses.softmax_cross_entropy(model.apply(params, x_adv, train=True, rng=rng), y).mean()
    accuracy = (losses.predictions(logits) == labels).mean()
    return clean_weight * clean + (1 - clean_weight) * adv, {
        "data_loss": clean, "adversarial_loss": adv, "accuracy": accuracy}

  return loss_fn


def make_attack_fn(model: models.Model, activation: str, k: int, low, high, num_steps: int,
                   step_factor: float, check_manual: bool = True, restarts: int = 1):
  """Jitted (params, x, labels, eps_E, key) -> {"clean": accuracy, "fgsm", "pgd": accuracy
  under each attack at each eps_E[i] (in the data's units), shape (E,), PGD's the worst of
  `restarts` random starts per example; "clean_N", "fgsm_ExN", "pgd_ExN": each example's
  correctness (1/0) behind them}; with check_manual
  also "fgsm_manual" (FGSM from the hand-written dE/dx), "grad_rel_err": max |manual -
  autodiff| / max |autodiff| of dE/dx, "sign_agreement": fraction of pixels where the two
  signs agree, "sign_flip_rel": the largest |dE/dx| where they do not, relative to
  max |dE/dx|. Compiles once per length E."""
  autodiff = input_grad_autodiff(model, k)
  manual = input_grad_manual(activation, k)
  correct = lambda params, x, labels: losses.predictions(model.apply(params, x)) == labels
  hits = lambda params, x, labels: correct(params, x, labels).astype(jnp.float32)
  accuracy = lambda params, x, labels: hits(params, x, labels).mean()

  @jax.jit
  def attack(params, x, labels, eps_E, key):
    g = autodiff(params, x, labels)
    keys = jax.random.split(key, eps_E.shape[0])
    clean_N = hits(params, x, labels)
    fgsm_ExN = jnp.stack([hits(params, fgsm(x, g, e, low, high), labels) for e in eps_E])
    pgd_ExN = jnp.stack([pgd_restarts(autodiff, params, x, labels, e,
                                      step_factor * e / num_steps, num_steps, low, high,
                                      keys[i], restarts, correct).astype(jnp.float32)
                         for i, e in enumerate(eps_E)])
    out = {"clean": clean_N.mean(), "fgsm": fgsm_ExN.mean(axis=1), "pgd": pgd_ExN.mean(axis=1),
           "clean_N": clean_N, "fgsm_ExN": fgsm_ExN, "pgd_ExN": pgd_ExN}
    if check_manual:
      g_manual = manual(params, x, labels)
      out["fgsm_manual"] = jnp.stack([accuracy(params, fgsm(x, g_manual, e, low, high), labels)
                                      for e in eps_E])
      out["grad_rel_err"] = jnp.abs(g_manual - g).max() / jnp.abs(g).max()
      differ = jnp.sign(g_manual) != jnp.sign(g)
      out["sign_agreement"] = 1 - differ.mean()
      # Where the signs differ, |dE/dx| is at rounding level: how large it gets, relative.
      out["sign_flip_rel"] = jnp.where(differ, jnp.abs(g), 0).max() / jnp.abs(g).max()
    return out

  return attack


# ------------------------------------------------------------------------------------ runner


def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_adversarial.py", RANGES, METHODS)
  if config.model.name != "mlp" or config.model.get("dropout", 0.0):
    raise errors.ConfigError("config.model: the adversarial experiment compares jax.grad's dE/dx "
                             "with the manual MLP's; set config.model.name='mlp', dropout=0")
  if config.loss.output != "softmax" or config.loss.l2 or config.loss.l1:
    raise errors.ConfigError("config.loss: the adversarial experiment uses softmax cross-entropy "
                             "without penalties; set output='softmax', l2=0, l1=0")
  for field in ("threat_epsilons", "eval_epsilons"):
    eps = tuple(exp[field])
    if not eps or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e <= 1
                      for e in eps):
      raise errors.ConfigError(f"config.experiment.{field}={eps!r} must be fractions of the "
                               "pixel range in (0, 1], e.g. (0.1, 0.2)")
  for lr in exp.learning_rates:
    errors.check_positive("experiment.learning_rates[]", lr)
  if "trades" in exp.methods:
    if not tuple(exp.trades_betas):
      raise errors.ConfigError("config.experiment.trades_betas is empty; give TRADES at least "
                               "one beta to choose from")
    for beta in exp.trades_betas:
      errors.check_positive("experiment.trades_betas[]", beta)
  weights = tuple(exp.clean_weights)
  if not weights or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < 1
                        for w in weights):
    raise errors.ConfigError(f"config.experiment.clean_weights={weights!r} must be weights of "
                             "the clean term in [0, 1), e.g. (0.5, 0.25, 0.0)")


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc): sizes are the threat model's eps."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  k = dataset.num_classes
  model = models.build(config.model, dataset.input_shape, k)
  low, high = float(dataset.train.x.min()), float(dataset.train.x.max())
  units = lambda eps: float(eps) * (high - low)  # A fraction of the pixel range, in data units.
  b = config.batch_size
  attack = make_attack_fn(model, config.model.activation, k, low, high, exp.attack_steps,
                          exp.step_factor, restarts=exp.attack_restarts)
  attack_valid = make_attack_fn(model, config.model.activation, k, low, high, exp.attack_steps,
                                exp.step_factor, check_manual=False,
                                restarts=exp.attack_restarts)
  splits = {s: (jnp.asarray(getattr(dataset, s).x), jnp.asarray(getattr(dataset, s).y))
            for s in ("valid", "test")}
  eval_eps = tuple(float(e) for e in exp.eval_epsilons)
  standard = {}  # Standard training does not depend on the threat eps: train it once.

  def fit(method, setting, eps, seeds, subsets):
    del subsets  # Every seed trains on the whole training split.
    lr = setting["learning_rate"]
    memo = (lr, tuple(seeds))
    if method == "standard" and memo in standard:
      return standard[memo]
    optimizer = optim.make_optimizer(config_lib.optimizer(
        **{**config.optimizer.to_dict(), "learning_rate": lr}), config.num_steps)
    if method == "standard":
      loss_fn = losses.make_loss_fn(model, "softmax", 0.0, len(dataset.train), k)
    elif method == "trades":
      loss_fn = make_trades_loss_fn(model, k, units(eps), low, high, setting["beta"],
                                    exp.train_attack_steps, exp.step_factor)
    else:
      steps = 1 if method == "fgsm_training" else exp.train_attack_steps
      loss_fn = make_adversarial_loss_fn(model, k, ATTACKS[method], units(eps), low, high,
                                         setting["clean_weight"], steps, exp.step_factor)
    params = harness.train_seeds(
        model, loss_fn, optimizer, config.num_steps, b, [dataset.train] * len(seeds), seeds,
        mode=exp.seed_mode, chunk_steps=config.eval_every,
        what=f"adversarial {method} at eps {eps:g}", writer=writer,
        tag={"threat_eps": eps, "arm": method, **setting})
    if method == "standard":
      standard[memo] = params
    return params

  def measure(method, setting, eps, seed, params, split):
    # The random starts: a function of the seed and split alone, so a resumed run repeats them.
    key = jax.random.fold_in(jax.random.key(seed), 1 + ("valid", "test").index(split))
    if split == "valid":
      out = jax.device_get(attack_valid(params, *splits[split], jnp.array([units(eps)]), key))
      return {"accuracy": float(out["clean"]), "fgsm_accuracy": float(out["fgsm"][0]),
              "pgd_accuracy": float(out["pgd"][0])}
    all_eps = (eps, *eval_eps)
    out = jax.device_get(attack(params, *splits[split], jnp.array([units(e) for e in all_eps]),
                                key))
    record = {"accuracy": float(out["clean"]), "fgsm_accuracy": float(out["fgsm"][0]),
              "pgd_accuracy": float(out["pgd"][0])}
    per_example = {"accuracy": out["clean_N"], "fgsm_accuracy": out["fgsm_ExN"][0],
                   "pgd_accuracy": out["pgd_ExN"][0]}
    for i, e in enumerate(eval_eps, start=1):
      record[f"fgsm eps={e:g}"] = float(out["fgsm"][i])
      record[f"pgd eps={e:g}"] = float(out["pgd"][i])
      per_example[f"fgsm eps={e:g}"] = out["fgsm_ExN"][i]
      per_example[f"pgd eps={e:g}"] = out["pgd_ExN"][i]
    record[harness.PER_EXAMPLE] = per_example
    record.update({f: float(out[f]) for f in GRADIENT_CHECKS[:3]},
                  manual_fgsm_gap=float(np.abs(out["fgsm_manual"] - out["fgsm"]).max()))
    return record

  lrs = {"learning_rate": tuple(exp.learning_rates)}
  grids = {"standard": lrs, "trades": {**lrs, "beta": tuple(exp.get("trades_betas", ()))}}
  arms = [harness.Arm(m, grids.get(m, {**lrs, "clean_weight": tuple(exp.clean_weights)}),
                      bounds={"clean_weight": "[0, 1)"}) for m in exp.methods]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "adversarial", arms, exp.baseline, tuple(float(e) for e in exp.threat_epsilons),
      SIZE_LABEL, seeds, fit, measure, select="pgd_accuracy",
      select_label=f"accuracy under PGD-{exp.attack_steps} at eps",
      # Standard training ignores the threat eps: one fit per setting serves every eps.
      fit_key=lambda method, setting, eps: (
          {"standard": setting} if method == "standard"
          else {"size": eps, "arm": method, "setting": setting}),
      data_note="each trains on the whole training split: no subset to draw",
      family=harness.fields_of(FIELDS))


FIELDS = [("accuracy", "clean test acc %", 100.0),
          ("fgsm_accuracy", "FGSM at eps %", 100.0), ("pgd_accuracy", "PGD at eps %", 100.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every method at every threat eps, under the harness's protocol; writes
  results.{md,json} and adversarial.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config) -> list[str]:
  exp = config.experiment
  return [
      f"digits: every seed trains on the whole training split; MLP "
      f"{tuple(config.model.hidden_sizes)} {config.model.activation}, {config.num_steps} steps "
      f"of {config.optimizer.name}, batch {config.batch_size}. eps (the size) is the threat "
      f"model, a fraction of the pixel range: adversarial training at eps (E = w E(x) + (1 - w) "
      f"E(x_adv); FGSM, or PGD-{exp.train_attack_steps} with step {exp.step_factor:g} eps / "
      f"{exp.train_attack_steps} from a random start), and every method's setting chosen by "
      f"validation accuracy under PGD-{exp.attack_steps} (step {exp.step_factor:g} eps / "
      f"{exp.attack_steps}, random start) at eps: every method's learning rate from "
      f"{tuple(exp.learning_rates)}, jointly with the FGSM and PGD trainings' clean weight w "
      f"from {tuple(exp.clean_weights)} and TRADES' beta (E(x) + beta KL(p(x) || p(x_adv)), x_adv by "
      f"PGD-{exp.train_attack_steps} on the KL) from {tuple(exp.get('trades_betas', ()))}. "
      f"PGD at evaluation and selection: the worst of {exp.attack_restarts} random start(s) "
      f"per example. Every network is attacked with its own gradient (white "
      f"box); 'FGSM at eps' and 'PGD at eps' are test accuracies under each attack."]


def eps_table(result, eval_eps) -> str:
  """Test accuracy % under FGSM / PGD at every evaluation eps, mean ± sample std, per size and
  method (the chosen setting)."""
  rows = []
  for entry in result["sizes"]:
    for name, arm in entry["arms"].items():
      st = arm["stats"]
      rows.append({result["size_label"]: entry["size"], "method": name,
                   **{f"eps={e:g} FGSM / PGD": f"{harness.fmt_summary(st[f'fgsm eps={e:g}'])}"
                      f" / {harness.fmt_summary(st[f'pgd eps={e:g}'])}" for e in eval_eps}})
  return report.markdown_table(report.columns_of(rows), rows)


def versus_table(result, arm: str = "pgd_training", other: str = "fgsm_training") -> str:
  """arm minus other, paired over the same seeds (the same inits), for every FIELDS entry, one
  Holm family over the table ('*': adjusted p < 0.05 and the t-interval excludes zero); ""
  unless both arms ran."""
  if any(arm not in e["arms"] or other not in e["arms"] for e in result["sizes"]):
    return ""
  get = lambda entry, name, f: [r[f] for r in entry["arms"][name]["test"]]
  diffs = iter(harness.holm_family([
      harness.paired(get(entry, arm, f), get(entry, other, f))
      for entry in result["sizes"] for f, _, _ in FIELDS]))
  rows = [{result["size_label"]: entry["size"], **{
      f"{heading}: {arm} - {other} [95% CI, seeds], p (Holm)": harness.fmt_paired(next(diffs))
      for _, heading, _ in FIELDS}} for entry in result["sizes"]]
  return report.markdown_table(report.columns_of(rows), rows)


def gradient_note(result) -> str:
  """The manual vs autodiff dE/dx check over every tested network."""
  tests = [r for e in result["sizes"] for a in e["arms"].values() for r in a["test"]]
  worst = {f: (min if f == "sign_agreement" else max)(r[f] for r in tests)
           for f in GRADIENT_CHECKS}
  return (f"dE/dx by the manual backward pass vs jax.grad, over the {len(tests)} tested "
          f"networks and every test example: max |manual - autodiff| / max |autodiff| = "
          f"{worst['grad_rel_err']:.2e}; the signs agree on {100 * worst['sign_agreement']:.3f}% "
          f"of the pixels (at worst), and where they do not, |dE/dx| is at most "
          f"{worst['sign_flip_rel']:.1e} of its maximum (rounding decides the sign); FGSM from "
          f"the two gradients gives accuracies at most "
          f"{100 * worst['manual_fgsm_gap']:.2f} points apart.")


def write(workdir, config, result) -> None:
  """results.{md,json} and adversarial.png from the harness's results (harness.write's
  layout, with this runner's protocol sentence: it draws no subsets)."""
  if jax.process_index() != 0:
    return
  eval_eps = tuple(float(e) for e in config.experiment.eval_epsilons)
  versus = versus_table(result)
  versus = ["The two adversarial trainings against each other, paired over seeds:",
            versus] if versus else []
  report.write_json(workdir / "results.json", result)
  workdir_lib.write_text(workdir / "results.md", "\n\n".join([
      "# Adversarial examples (FGSM, PGD) and adversarial training", *notes(config),
      harness.protocol_note(result), harness.table(result, FIELDS),
      "Test accuracy % under each attack at every eps (the chosen settings):",
      eps_table(result, eval_eps), *versus, gradient_note(result)]) + "\n")
  harness.plot(workdir / "adversarial.png", result, "pgd_accuracy",
               f"test accuracy under PGD-{config.experiment.attack_steps} at eps (%)",
               "Adversarial training: robustness at the eps it trains for")
