"""Dropout as an ensemble: weight scaling vs a Monte Carlo average over dropout masks.

A network trained with dropout is an ensemble of the 2^H subnetworks its masks d pick:

  Pr(y|x) = sum_d Pr(d) Pr(y|x,d).

Two ways to predict with it, on the same trained params:
  weight scaling  one pass with every unit on and each unit's outgoing weights scaled by its
                  keep probability. The library's dropout is inverted (survivors are scaled by
                  1/(1-p) in training), so this is the standard `apply(train=False)`.
  Monte Carlo     (1/N) sum_{n=1..N} Pr(y|x,d_n) over N sampled masks: `apply(train=True)`
                  vmapped over N keys, averaged in probability space (losses.mixture_nll).

The harness (research/experiments/harness.py) runs the protocol. Its sizes are the training
dropout rate p (experiment.dropout_rates); at each, every seed trains one network on the whole
training split (there is no subset to draw; the seeds differ in the init, the batch order and
the masks), and the arms are the inference rules on those same networks: weight_scaling (the
baseline) and mc_N for N in experiment.mask_counts (the first N of the seed's masks, so the
ensembles are nested). Nothing is tuned (one setting per arm: the same budget). Measured on
the test split: accuracy, mean log-likelihood (1/n) sum log Pr(y|x) and agreement with weight
scaling's predictions; the ± and the paired intervals are over the independently trained
networks.
"""
from typing import Any, Callable

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
from research.experiments import harness
from research.experiments import report

RANGES = {"seeds": config_lib.Range(True, 2), "masks_per_call": config_lib.Range(True, 1),
          "mask_seed": config_lib.Range(True, 0)}
BASELINE = "weight_scaling"
SIZE_LABEL = "dropout p (training)"


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the config.experiment fields; fails with the field and the fix."""
  exp = report.check_experiment(config, "configs/exp_dropout_ensemble.py", RANGES)
  rates = tuple(exp.dropout_rates)
  if not rates or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1
                      for p in rates):
    raise errors.ConfigError(
        f"config.experiment.dropout_rates={rates!r}: with no dropout every mask is the same "
        "network; give dropout probabilities in (0, 1), e.g. (0.2, 0.5)")
  if config.model.get("dropout", 0.0):
    raise errors.ConfigError(f"config.model.dropout={config.model.dropout!r}: the sizes set "
                             "it (config.experiment.dropout_rates); set config.model.dropout=0")
  errors.check_ints("experiment.mask_counts", exp.mask_counts, ", e.g. (1, 4, 16, 64, 256)")
  if config.loss.l2 or config.loss.l1:
    raise errors.ConfigError("config.loss.l2 and config.loss.l1 must be 0: the experiment "
                             "measures dropout alone")


def make_mask_logits_fn(model: models.Model, masks_per_call: int) -> Callable:
  """Returns jitted fn(params, x_B..., keys_M) -> logits_MxBxK, one dropout mask per key.

  `apply(train=True, rng=key)` vmapped over the keys, masks_per_call of them at a time
  (lax.map's batch_size) so memory is masks_per_call x B x width, not M x B x width.
  """
  def mask_logits(params, x, keys_M):
    one = lambda key: model.apply(params, x, train=True, rng=key)
    return jax.lax.map(one, keys_M, batch_size=min(masks_per_call, keys_M.shape[0]))

  return jax.jit(mask_logits)


def split_logits(fn: Callable, params, x_N: np.ndarray, batch_size: int, *args) -> np.ndarray:
  """fn(params, x_batch, *args) -> (..., B, K) over x_N in batches; concatenated on axis -2."""
  parts = [np.asarray(fn(params, x_N[s:s + batch_size], *args))
           for s in range(0, len(x_N), batch_size)]
  return np.concatenate(parts, axis=-2)


def ensemble_metrics(logits_MxNxK: np.ndarray, labels_N: np.ndarray, output: str,
                     reference_pred_N: np.ndarray, per_example: bool = False) -> dict:
  """The M-member mixture's accuracy, mean log-likelihood (1/n) sum log Pr(y|x) and agreement
  with reference_pred_N (weight scaling's predictions); per_example: also each example's
  correctness and log-likelihood ("per_example": {field: values_N}, for the harness)."""
  nll_N, pred_N = losses.mixture_nll(jnp.asarray(logits_MxNxK), jnp.asarray(labels_N), output)
  pred_N, nll_N = np.asarray(pred_N), np.asarray(nll_N)
  out = {"accuracy": float((pred_N == labels_N).mean()), "log_likelihood": float(-nll_N.mean()),
         "agreement": float((pred_N == reference_pred_N).mean())}
  if per_example:
    out[harness.PER_EXAMPLE] = {"accuracy": (pred_N == labels_N).astype(np.float64),
                                "log_likelihood": -nll_N.astype(np.float64)}
  return out


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view of the runner (module doc): sizes are the training dropout rate."""
  exp = config.experiment
  dataset = data_lib.load(config.data)
  if not len(dataset.test) or not len(dataset.valid):
    raise errors.ConfigError("the valid or test split is empty; set config.data.valid_fraction "
                             "and config.data.test_fraction > 0")
  k = losses.num_outputs(config, dataset)
  output, bs = config.loss.output, config.eval_batch_size
  build = lambda p: models.build(ml_collections.ConfigDict(dict(config.model.to_dict(),
                                                                 dropout=p)),
                                 dataset.input_shape, k)
  by_rate = {float(p): build(float(p)) for p in exp.dropout_rates}
  mask_fns = {p: make_mask_logits_fn(m, exp.masks_per_call) for p, m in by_rate.items()}
  ws_fn = jax.jit(lambda params, x: by_rate[float(exp.dropout_rates[0])].apply(
      params, x, train=False))  # Eval mode is the same network at every p.
  splits = {"valid": dataset.valid, "test": dataset.test}
  max_masks = max(exp.mask_counts)
  trained, logits = {}, {}  # One network per (p, seeds); its mask logits per (p, seed, split).

  def fit(arm, setting, p, seeds, subsets):
    del setting, subsets  # Nothing to tune; every seed trains on the whole training split.
    memo = (p, tuple(seeds))
    if memo not in trained:
      model = by_rate[p]
      optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
      loss_fn = losses.make_loss_fn(model, output, 0.0, len(dataset.train), k)
      trained[memo] = harness.train_seeds(
          model, loss_fn, optimizer, config.num_steps, config.batch_size,
          [dataset.train] * len(seeds), seeds, mode=exp.seed_mode,
          chunk_steps=config.eval_every, what=f"dropout p={p:g}", writer=writer,
          tag={"dropout": p, "arm": arm})
    return trained[memo]

  def measure(arm, setting, p, seed, params, split):
    del setting
    data = splits[split]
    ws_logits = split_logits(ws_fn, params, data.x, bs)
    ws = ensemble_metrics(ws_logits[None], data.y, output, np.argmax(ws_logits, axis=-1),
                          split == "test")
    if arm == BASELINE:
      return ws
    memo = (p, seed, split)
    if memo not in logits:
      # The seed's masks, a function of (mask_seed, seed, split) alone: a resumed run repeats
      # them; mc_N reads the first N, so smaller ensembles are nested in larger ones.
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(exp.mask_seed), seed),
                               ("valid", "test").index(split))
      logits[memo] = split_logits(mask_fns[p], params, data.x, bs,
                                  jax.random.split(key, max_masks))
    n = int(arm.split("_")[1])
    return ensemble_metrics(logits[memo][:n], data.y, output, np.argmax(ws_logits, axis=-1),
                            split == "test")

  arms = [harness.Arm(BASELINE)] + [harness.Arm(f"mc_{n}") for n in exp.mask_counts]
  seeds = [config.seed + i for i in range(exp.seeds)]
  return harness.Experiment(
      "dropout_ensemble", arms, BASELINE, tuple(float(p) for p in exp.dropout_rates),
      SIZE_LABEL, seeds, fit, measure, select="accuracy",
      fit_key=lambda arm, setting, p: {"dropout": p},  # Every rule reads the same networks.
      data_note="one network per seed, trained on the whole training split; every inference "
                "rule reads the same networks", family=harness.fields_of(FIELDS, LL_FIELDS))


FIELDS = [("accuracy", "test acc %", 100.0), ("agreement", "agrees with weight scaling %",
                                               100.0)]
LL_FIELDS = [("log_likelihood", "mean test log-likelihood", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every inference rule at every training dropout rate, under the harness's protocol;
  writes results.{md,json} and dropout_ensemble.png. Returns the harness's results."""
  return harness.run_from_config(config, workdir, validate, experiment, write)


def notes(config) -> list[str]:
  exp = config.experiment
  return [
      f"{config.data.name}: every seed trains one {config.model.name} "
      f"{tuple(config.model.get('hidden_sizes', ()))} {config.model.get('activation', '')} "
      f"network with dropout p on its hidden units, on the whole training split, "
      f"{config.num_steps} steps of {config.optimizer.name} (learning rate "
      f"{config.optimizer.learning_rate:g}), batch {config.batch_size}. On those networks: "
      f"weight scaling (one pass, every unit on) and mc_N, the average of Pr(y|x,d) over the "
      f"first N of the seed's {max(exp.mask_counts)} masks. The arms share the networks, so "
      f"nothing is tuned per arm (the 'chosen' column is empty) and the paired differences "
      f"isolate the inference rule; ± is over independently trained networks."]


def write(workdir, config, result) -> None:
  """results.{md,json} and dropout_ensemble.png from the harness's results (harness.write's
  layout, with accuracies to 0.01 points: the rules differ by tenths)."""
  if jax.process_index() != 0:
    return
  report.write_json(workdir / "results.json", result)
  workdir_lib.write_text(workdir / "results.md", "\n\n".join([
      "# Dropout as an ensemble: weight scaling vs Monte Carlo", *notes(config),
      harness.protocol_note(result), harness.table(result, FIELDS, digits=2),
      "Mean test log-likelihood (1/n) sum log Pr(y|x):",
      harness.table(result, LL_FIELDS, digits=4)]) + "\n")
  harness.plot(workdir / "dropout_ensemble.png", result, "log_likelihood",
               "mean test log-likelihood (nats)",
               "Dropout as an ensemble: weight scaling vs N-mask Monte Carlo", scale=1.0)
