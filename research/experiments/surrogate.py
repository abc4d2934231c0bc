"""Surrogate loss vs the real evaluation function.

Backprop needs a differentiable cost, so we train on a surrogate: cross-entropy for
classification and language, squared error for regression. What we report is another
function: F1 and BLEU are piecewise constant in the weights (their gradient is zero almost
everywhere), and MAE weighs residuals by |r| where the surrogate weighs them by r^2. This
runner trains on the surrogate and, at every eval, logs the surrogate and the real metric on
the validation split side by side.

The harness (research/experiments/harness.py) runs the protocol. The methods it compares are
checkpoint rules (experiment.methods) over the same training runs, one per seed:
  best_loss    the eval with the lowest valid surrogate (the usual early stopping): the baseline
  best_metric  the eval with the best valid metric (the first on a tie)
  last         the final step
Each rule is one setting (the rule itself is what reads the validation split: the same
budget). Each seed redraws the train/valid/test split (data.split_seed + seed; the text of the
bleu task has one fixed split), the init and the batch order, so the paired interval of a
difference on test covers which examples the test split holds. Measured on test: the metric,
the surrogate, the chosen step, and per seed whether the two rules chose the same eval and how
often the surrogate and the metric moved in opposite directions between consecutive evals.

Tasks (config.experiment.task; each is a variant of configs/exp_surrogate.py):
  macro_f1   a K-class set (digits), softmax cross-entropy -> macro F1 over the K classes
  binary_f1  one class vs the rest (digits "is it a 9?", or breast cancer's malignant class
             subsampled), one sigmoid unit, cross-entropy -> F1 of the positive class
  mae        sklearn's diabetes regression, squared error on standardised targets -> mean
             absolute error in the original units
  bleu       a character LM (char_lstm / char_transformer), per-character cross-entropy ->
             BLEU (sacrebleu) of its greedy continuations of validation prompts vs the truth

"""
import json
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from matplotlib import figure
from sklearn import datasets as skdatasets

from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import workdir as workdir_lib
from research.data import text as text_data
from research.experiments import harness
from research.experiments import report

# task -> (name of the real metric, whether higher is better)
TASKS = {"macro_f1": ("macro_f1", True), "binary_f1": ("f1", True), "mae": ("mae", False),
         "bleu": ("bleu", True)}
RULES = ("best_loss", "best_metric", "last")  # the arms: which checkpoint of a run is kept
RANGES = {"seeds": config_lib.Range(True, 2), "positive_class": config_lib.Range(True, 0),
          "positive_keep": config_lib.Range(False, 0.0, 1.0, low_open=True),
          "prompt_len": config_lib.Range(True, 1), "num_prompts": config_lib.Range(True, 1),
          "temperature": config_lib.Range(False, 0.0)}
BLEU_TOKENIZERS = ("13a", "char")


# ---------------------------------------------------------------------------------------------
# The real metrics.

def f1_per_class(pred_N: np.ndarray, label_N: np.ndarray, num_classes: int) -> np.ndarray:
  """F1_c = 2 tp_c / (2 tp_c + fp_c + fn_c) for each class c, shape (num_classes,).

  A class that is neither predicted nor present (0/0) gets F1 = 0, as sklearn's default.
  """
  pred_N, label_N = np.asarray(pred_N).reshape(-1), np.asarray(label_N).reshape(-1)
  classes_C = np.arange(num_classes)[:, None]
  tp = ((pred_N == classes_C) & (label_N == classes_C)).sum(axis=1)
  fp = ((pred_N == classes_C) & (label_N != classes_C)).sum(axis=1)
  fn = ((pred_N != classes_C) & (label_N == classes_C)).sum(axis=1)
  denom = 2 * tp + fp + fn
  return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(pred_N: np.ndarray, label_N: np.ndarray, num_classes: int) -> float:
  """The unweighted mean of the per-class F1: every class counts the same, however rare."""
  return float(f1_per_class(pred_N, label_N, num_classes).mean())


def binary_f1(pred_N: np.ndarray, label_N: np.ndarray) -> float:
  """F1 of the positive class (label 1): 2 precision recall / (precision + recall)."""
  return float(f1_per_class(pred_N, label_N, 2)[1])


def mean_absolute_error(pred_N: np.ndarray, target_N: np.ndarray) -> float:
  return float(np.mean(np.abs(np.asarray(pred_N) - np.asarray(target_N))))


def _sacrebleu():
  try:
    import sacrebleu  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError(
        "config.experiment.task='bleu' needs the sacrebleu package, which is not installed: "
        "run `pip install sacrebleu` (or choose another config.experiment.task)") from None
  return sacrebleu


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
  """Corpus BLEU (0-100) of hypotheses against one reference each, with sacrebleu.

  tokenize: "13a" = sacrebleu's standard word tokenisation; "char" = character n-grams
  (short continuations of a small model rarely share word 4-grams with the truth).
  """
  errors.check_choice("experiment.bleu_tokenize", tokenize, BLEU_TOKENIZERS)
  return float(_sacrebleu().corpus_bleu(list(hypotheses), [list(references)],
                                        tokenize=tokenize).score)


# ---------------------------------------------------------------------------------------------
# Data for the tasks that the registered loaders do not provide as such.

def binary_dataset(dataset: data_lib.Dataset, positive_class: int, positive_keep: float,
                   seed: int) -> data_lib.Dataset:
  """Labels become 1 for positive_class and 0 otherwise; each split keeps a seeded
  positive_keep fraction of its positive examples (1.0 = all), making the positives rarer.
  (validate checks positive_keep against RANGES.)"""
  if positive_class not in range(dataset.num_classes):
    raise errors.ConfigError(
        f"config.experiment.positive_class={positive_class!r} is not a class of "
        f"{dataset.name}; choose one of 0..{dataset.num_classes - 1}")

  def convert(i, split):
    positive_N = split.y == positive_class
    keep_N = ~positive_N | (np.random.default_rng([seed, i]).random(len(split)) < positive_keep)
    return data_lib.Split(split.x[keep_N], positive_N[keep_N].astype(np.int32))

  splits = [convert(i, s) for i, s in enumerate((dataset.train, dataset.valid, dataset.test))]
  return data_lib.Dataset(f"{dataset.name}[{positive_class} vs rest]", *splits, num_classes=2)


def diabetes(cfg) -> tuple[data_lib.Dataset, float, float]:
  """sklearn's diabetes: 442 patients, 10 features -> disease progression after a year.

  Returns (dataset, t_mean, t_std): Split.y holds float32 targets standardised with the
  train split's mean and std, so the original units are y * t_std + t_mean.
  """
  x_NxD, t_N = skdatasets.load_diabetes(return_X_y=True)
  # The library's split takes class labels; passing the row numbers as "labels" gives the
  # same seeded split for the real-valued targets.
  ds = data_lib.split_and_standardize(
      x_NxD, np.arange(len(t_N)), name="diabetes", num_classes=1,
      valid_fraction=cfg.valid_fraction, test_fraction=cfg.test_fraction, seed=cfg.split_seed,
      standardize=cfg.standardize)
  t_mean, t_std = float(t_N[ds.train.y].mean()), float(t_N[ds.train.y].std())
  scale = lambda s: data_lib.Split(s.x, ((t_N[s.y] - t_mean) / t_std).astype(np.float32))
  return (data_lib.Dataset("diabetes", scale(ds.train), scale(ds.valid), scale(ds.test), 1),
          t_mean, t_std)


def make_squared_error_loss(model: models.Model, lam: float, m: int) -> Callable:
  """E(params, x_BxD, t_B, rng) = (1/2B) sum_n (y_n - t_n)^2 + (lambda/2m) sum w^2.

  The batch mean of the sum of squared errors (the same minimiser as the sum, with a step
  size that does not depend on B).
  """
  def loss_fn(params, x_BxD, t_B, rng):
    r_B = model.apply(params, x_BxD, train=True, rng=rng)[:, 0] - t_B
    data_term = 0.5 * jnp.mean(jnp.square(r_B))
    # make_train_chunk sums aux["accuracy"]; a regression has none, so it sums zeros.
    return data_term + losses.l2_penalty(params, lam, m), {"data_loss": data_term,
                                                           "accuracy": jnp.zeros(())}
  return loss_fn


# ---------------------------------------------------------------------------------------------
# Generation for the BLEU task.

def make_generate(model: models.Model, prompt_len: int, temperature: float = 0.0) -> Callable:
  """Returns jitted generate(params, ids_BxT, key) -> ids_BxT with positions >= prompt_len
  replaced by the model's continuation of ids[:, :prompt_len].

  temperature 0 = greedy (argmax), else sampling from softmax(logits / temperature). Each new
  character reruns the causal model on the whole fixed-length buffer and reads position t-1,
  so the same code serves the LSTM and the transformer (whose positions fix T) with one shape.
  """
  def generate(params, ids_BxT, key):
    def body(t, ids):
      logits_BxV = model.apply(params, ids)[:, t - 1]
      if temperature > 0:
        nxt_B = jax.random.categorical(jax.random.fold_in(key, t), logits_BxV / temperature)
      else:
        nxt_B = jnp.argmax(logits_BxV, axis=-1)
      return ids.at[:, t].set(nxt_B.astype(ids.dtype))
    return jax.lax.fori_loop(prompt_len, ids_BxT.shape[1], body, ids_BxT)

  return jax.jit(generate)


def _normalise(s: str) -> str:
  """One line, single spaces: sacrebleu scores one segment per line."""
  return " ".join(s.split())


# ---------------------------------------------------------------------------------------------
# The runner.

def validate(config: ml_collections.ConfigDict) -> None:
  exp = report.check_experiment(config, "configs/exp_surrogate.py", RANGES, RULES)
  errors.check_choice("experiment.task", exp.task, sorted(TASKS))
  if exp.task == "bleu":
    errors.check_choice("experiment.bleu_tokenize", exp.bleu_tokenize, BLEU_TOKENIZERS)
    _sacrebleu()  # Fail before training, not at the first eval.
    if exp.prompt_len >= config.data.seq_len:
      raise errors.ConfigError(
          f"config.experiment.prompt_len={exp.prompt_len} must be in [1, config.data.seq_len="
          f"{config.data.seq_len}): the rest of each window is the continuation")


def _task_setup(config) -> dict[str, Any]:
  """Data, model, loss and a measure(params, split) -> {"loss", metric, ...} for the task."""
  exp = config.experiment
  task = exp.task
  if task == "mae":
    dataset, t_mean, t_std = diabetes(config.data)
  else:
    dataset = data_lib.load(config.data)
    if task == "binary_f1":
      dataset = binary_dataset(dataset, exp.positive_class, exp.positive_keep,
                               config.data.split_seed)
  n = len(dataset.train)
  errors.check_batch_size(config.batch_size, n, f"training examples of {dataset.name}")
  if task == "mae":
    k = 1
  else:
    if task == "binary_f1" and config.loss.output != "sigmoid":
      raise errors.ConfigError("config.loss.output must be 'sigmoid' for task 'binary_f1' (one "
                               "unit sigma = Pr(positive | x)); got "
                               f"{config.loss.output!r}")
    k = losses.num_outputs(config, dataset)
  model = models.build(config.model, dataset.input_shape, k)

  if task == "mae":
    loss_fn = make_squared_error_loss(model, config.loss.l2, n)
    predict = jax.jit(lambda params, x: model.apply(params, x))

    def measure(params, split, per_example=False):
      y_N = np.asarray(predict(params, split.x))[:, 0]
      out = {"loss": float(0.5 * np.mean(np.square(y_N - split.y))),
             "mae": mean_absolute_error(y_N * t_std, split.y * t_std),
             "rmse": float(np.sqrt(np.mean(np.square(y_N - split.y)))) * t_std}
      if per_example:
        out[harness.PER_EXAMPLE] = {"mae": np.abs(y_N.astype(np.float64) - split.y) * t_std}
      return out
    summary = {"target_mean": t_mean, "target_std": t_std}
  elif task == "bleu":
    loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
    eval_fn = kernel.make_eval_fn(model, config.loss.output, k)
    generate = make_generate(model, exp.prompt_len, exp.temperature)
    _, _, decode = text_data.vocab(config.data)
    key = jax.random.key(config.seed + 1)  # The same prompts and key at every eval.

    def measure(params, split, per_example=False):
      out = kernel.evaluate(eval_fn, params, split, config.eval_batch_size,
                            per_example=per_example)
      ids_BxT = split.x[:exp.num_prompts]
      gen_BxT = np.asarray(generate(params, ids_BxT, key))
      hyps = [_normalise(decode(g[exp.prompt_len:])) for g in gen_BxT]
      refs = [_normalise(decode(r[exp.prompt_len:])) for r in ids_BxT]
      scores = {f"bleu_{t}": bleu(hyps, refs, t) for t in BLEU_TOKENIZERS}
      return {"loss": out["loss"], "accuracy": out["accuracy"],
              "bleu": scores[f"bleu_{exp.bleu_tokenize}"], **scores,
              "sample": {"prompt": decode(ids_BxT[0, :exp.prompt_len]), "generated": hyps[0],
                         "truth": refs[0]},
              **({harness.PER_EXAMPLE: out[harness.PER_EXAMPLE]} if per_example else {})}
    summary = {"unigram_entropy": text_data.unigram_entropy(config.data),
               "bleu_tokenize": exp.bleu_tokenize, "num_prompts": exp.num_prompts}
  else:
    loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
    data_loss = losses.DATA_LOSSES[config.loss.output]

    @jax.jit
    def loss_and_predictions(params, x, labels_N):
      logits_NxK = model.apply(params, x)
      loss_N = data_loss(logits_NxK, losses.one_hot_targets(labels_N, k, logits_NxK.dtype))
      return loss_N.mean(), losses.predictions(logits_NxK)

    def measure(params, split, per_example=False):
      loss, pred_N = jax.device_get(loss_and_predictions(params, split.x, split.y))
      f1 = (binary_f1(pred_N, split.y) if task == "binary_f1"
            else macro_f1(pred_N, split.y, dataset.num_classes))
      out = {"loss": float(loss), "accuracy": float(np.mean(pred_N == split.y)),
             TASKS[task][0]: f1}
      if per_example:
        out[harness.PER_EXAMPLE] = {"accuracy": (pred_N == split.y).astype(np.float64)}
      return out
    summary = {"positives": {s: int(getattr(dataset, s).y.sum())
                             for s in ("train", "valid", "test")}} if task == "binary_f1" else {}
  return {"dataset": dataset, "model": model, "loss_fn": loss_fn, "measure": measure,
          "summary": summary}


def _seed_config(config, seed: int):
  """config with the data split of `seed`: split_seed + seed (text has one fixed split)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if "split_seed" in config.data:
    config.data.split_seed = config.data.split_seed + seed
  return config


def train_and_track(config, setup, seed: int, writer=None) -> dict:
  """Trains one seed on the surrogate from kernel.init_state(key(seed)), measuring the valid
  split every eval_every steps; returns {"evals": [records], rule: (eval index, host params)
  for each of RULES, "disagreements": consecutive evals where the surrogate and the metric
  moved in opposite directions, "eval_pairs"}."""
  task = config.experiment.task
  metric, higher_is_better = TASKS[task]
  dataset, measure = setup["dataset"], setup["measure"]
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  better = lambda a, b: a > b if higher_is_better else a < b
  evals, out = [], {}

  def on_chunk(seed, step, params, train):
    record = {"step": step, "split": "valid", "seed": seed, "train_loss": train["loss"],
              **measure(params, dataset.valid)}
    evals.append(record)
    if writer is not None:
      writer.write(record)
    # The first eval wins a tie (the earliest checkpoint with that value).
    if "best_loss" not in out or record["loss"] < evals[out["best_loss"][0]]["loss"]:
      out["best_loss"] = (len(evals) - 1, jax.device_get(params))
    if "best_metric" not in out or better(record[metric], evals[out["best_metric"][0]][metric]):
      out["best_metric"] = (len(evals) - 1, jax.device_get(params))

  (last,) = harness.train_seeds(
      setup["model"], setup["loss_fn"], optimizer, config.num_steps, config.batch_size,
      [dataset.train], [seed], chunk_steps=config.eval_every, what=f"surrogate {task}",
      on_chunk=on_chunk)
  out["last"] = (len(evals) - 1, jax.device_get(last))
  out["disagreements"] = sum(
      (b["loss"] < a["loss"]) != better(b[metric], a[metric]) and b[metric] != a[metric]
      for a, b in zip(evals, evals[1:]))
  return {**out, "evals": evals, "eval_pairs": len(evals) - 1}


def experiment(config: ml_collections.ConfigDict, writer=None) -> harness.Experiment:
  """The harness's view (module doc): one size, the task; the arms are the checkpoint rules,
  all reading the same training runs (one per seed)."""
  exp = config.experiment
  task = exp.task
  metric, _ = TASKS[task]
  setups = {}

  def setup(seed):
    if seed not in setups:
      setups[seed] = _task_setup(_seed_config(config, seed))
      if not len(setups[seed]["dataset"].valid):
        raise errors.ConfigError("config.data.valid_fraction=0 leaves no validation split to "
                                 "choose a checkpoint on; set it > 0")
    return setups[seed]

  def fit(rule, setting, size, seeds, subsets):
    # One fit for every rule (Experiment.fit_key): each seed's run, trained once, keeps the
    # checkpoint of every rule; measure reads its own.
    del rule, setting, size, subsets  # One setting per rule; each seed splits its own data.
    out = []
    for seed in seeds:
      run = train_and_track(config, setup(seed), seed, writer)
      logging.info("surrogate %s seed %d: best valid loss at step %d, best %s at step %d",
                   task, seed, run["evals"][run["best_loss"][0]]["step"],
                   metric, run["evals"][run["best_metric"][0]]["step"])
      out.append({"rules": {r: {"params": run[r][1], "step": run["evals"][run[r][0]]["step"]}
                            for r in RULES},
                  "same_checkpoint": float(run["best_loss"][0] == run["best_metric"][0]),
                  "disagreements": float(run["disagreements"]),
                  "eval_pairs": float(run["eval_pairs"])})
    return out

  def measure(rule, setting, size, seed, run, split):
    del setting, size
    ds = setup(seed)["dataset"]
    chosen = run["rules"][rule]
    record = {k: v for k, v in setup(seed)["measure"](
        chosen["params"], getattr(ds, split), split == "test").items() if k != "sample"}
    record["chosen_step"] = float(chosen["step"])
    if split == "test":
      record.update({k: run[k] for k in ("same_checkpoint", "disagreements", "eval_pairs")},
                    test_examples=float(len(ds.test)))
      if task == "binary_f1":
        record["test_positives"] = float(ds.test.y.sum())
    return record

  seeds = [config.seed + i for i in range(exp.seeds)]
  split_note = ("the train/valid/test split redrawn per seed (data.split_seed + seed)"
                if "split_seed" in config.data else "one fixed contiguous split for every seed")
  return harness.Experiment(
      "surrogate", [harness.Arm(r) for r in exp.methods], exp.baseline, (task,), "task", seeds,
      fit, measure, select=metric, higher_is_better=TASKS[task][1],
      select_label=f"{metric} (one setting per rule: the rule itself reads the validation "
      "split)", data_note=f"{split_note}; the init and batch order also differ by seed",
      test_shared="split_seed" not in config.data,
      family=harness.fields_of(fields(task), FIELDS_LOSS, FIELDS_STEP),
      fit_key=lambda rule, setting, size: {"runs": size})


def fields(task: str) -> list[tuple[str, str, float]]:
  metric = TASKS[task][0]
  scale = 100.0 if task in ("macro_f1", "binary_f1") else 1.0
  unit = " (x100)" if scale == 100.0 else ""
  return [(metric, f"test {metric}{unit}", scale)]


FIELDS_LOSS = [("loss", "test surrogate loss", 1.0)]
FIELDS_STEP = [("chosen_step", "chosen step", 1.0)]


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Every checkpoint rule on the task, under the harness's protocol (module doc); writes
  results.{md,json} and surrogate.png. Returns the harness's results."""
  validate(config)
  harness.executor_of(config)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  result = harness.run_cells(config, workdir, harness.CellWriter(writer), experiment)
  writer.close()
  if jax.process_index() == 0:
    _write_report(workdir, config, result)
  return result


def notes(config, result) -> list[str]:
  exp = config.experiment
  metric, higher = TASKS[exp.task]
  base = result["sizes"][0]["arms"][result["baseline"]]["test"]
  m = sorted({int(r["test_examples"]) for r in base})
  pos = sorted({int(r["test_positives"]) for r in base if "test_positives" in r})
  model = config.model
  net = (f"{model.name} {tuple(model.hidden_sizes)} {model.activation}"
         if model.name == "mlp" else f"{model.name} (E={model.embed_dim}, H={model.hidden_size})")
  lines = [
      f"Task {exp.task} on {config.data.name}: {net}, {config.num_steps} steps of "
      f"{config.optimizer.name} at {config.optimizer.learning_rate:g}, batch "
      f"{config.batch_size}, no early stop; the valid split measured every "
      f"{config.eval_every} steps. The methods are checkpoint rules on the same runs: "
      f"best_loss = the eval with the lowest valid surrogate (the usual early stopping), "
      f"best_metric = the eval with the best valid {metric} ({'higher' if higher else 'lower'}"
      f" is better; the first on a tie), last = the final step. Each test split holds "
      f"{'/'.join(map(str, m))} examples" + (f" ({'/'.join(map(str, pos))} positives)"
                                              if pos else "") + "."]
  if exp.task == "bleu":
    lines.append(f"bleu = sacrebleu corpus BLEU with tokenize={exp.bleu_tokenize!r} of greedy "
                 f"continuations of {exp.num_prompts} prompts of each split.")
  return lines


def agreement_table(result) -> str:
  """Per seed: whether the two rules chose the same eval, and how often the surrogate and the
  metric moved in opposite directions between consecutive evals."""
  entry = result["sizes"][0]
  rows = []
  for seed, loss_r, metric_r in zip(result["seeds"], entry["arms"]["best_loss"]["test"],
                                    entry["arms"]["best_metric"]["test"]):
    rows.append({"seed": seed, "best-loss step": int(loss_r["chosen_step"]),
                 "best-metric step": int(metric_r["chosen_step"]),
                 "same eval": "yes" if loss_r["same_checkpoint"] else "no",
                 "opposite moves": f"{int(loss_r['disagreements'])} of "
                                   f"{int(loss_r['eval_pairs'])}"})
  return report.markdown_table(report.columns_of(rows), rows)


def _write_report(workdir, config, result: dict) -> None:
  """results.{md,json} (harness.write's layout, one table per measure with its own digits)
  and surrogate.png."""
  task = config.experiment.task
  tables = [harness.table(result, fields(task), digits=2 if task in ("mae", "bleu") else 1),
            harness.table(result, FIELDS_LOSS, digits=3), harness.table(result, FIELDS_STEP, 0)]
  if {"best_loss", "best_metric"} <= set(result["sizes"][0]["arms"]):
    tables += ["Per seed, the evals the two rules chose:", agreement_table(result)]
  report.write_json(workdir / "results.json", result)
  workdir_lib.write_text(workdir / "results.md", "\n\n".join([
      f"# Surrogate loss vs {TASKS[task][0]}: which checkpoint to keep",
      *notes(config, result), harness.protocol_note(result), *tables]) + "\n")
  _plot(workdir / "surrogate.png", workdir, result)


def _plot(path, workdir, result: dict) -> None:
  """Valid surrogate and valid metric per eval, one thin line per seed."""
  metric = TASKS[result["sizes"][0]["size"]][0]
  records = [json.loads(line) for line in (workdir / metrics_lib.FILENAME).read_text()
             .splitlines() if line.strip()]
  evals = [r for r in records if r.get("split") == "valid"]
  fig = figure.Figure(figsize=(11, 4), layout="constrained")
  ax_loss, ax_metric = fig.subplots(1, 2)
  for i, seed in enumerate(result["seeds"]):
    mine = [r for r in evals if r["seed"] == seed]
    color = f"C{i % 10}"
    ax_loss.plot([r["step"] for r in mine], [r["loss"] for r in mine], color=color, lw=1,
                 label=f"seed {seed}")
    ax_metric.plot([r["step"] for r in mine], [r[metric] for r in mine], color=color, lw=1,
                   label=f"seed {seed}")
  ax_loss.set_ylabel("valid surrogate loss (cross-entropy / squared error)")
  ax_metric.set_ylabel(f"valid {metric}")
  for ax in (ax_loss, ax_metric):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  ax_loss.set_title("the surrogate on the valid split")
  ax_metric.set_title("the real metric on the valid split")
  report.save_figure(fig, path)
