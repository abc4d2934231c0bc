"""Surrogate loss vs the real evaluation function.

Backprop needs a differentiable cost, so we train on a surrogate: cross-entropy for
classification and language, squared error for regression. What we report is another
function: F1 and BLEU are piecewise constant in the weights (their gradient is zero almost
everywhere), and MAE weighs residuals by |r| where the surrogate weighs them by r^2. This
runner trains on the surrogate and, at every eval, logs the surrogate and the real metric on
the validation split side by side; then it reports whether the eval with the best surrogate is
also the eval with the best metric, how often the two moved in opposite directions between
consecutive evals, and the test metric of each of the two checkpoints.

Tasks (config.experiment.task; each is a variant of configs/exp_surrogate.py):
  macro_f1   a K-class set (digits), softmax cross-entropy -> macro F1 over the K classes
  binary_f1  one class vs the rest (digits "is it a 9?", or breast cancer's malignant class
             subsampled), one sigmoid unit, cross-entropy -> F1 of the positive class
  mae        sklearn's diabetes regression, squared error on standardised targets -> mean
             absolute error in the original units
  bleu       a character LM (char_lstm / char_transformer), per-character cross-entropy ->
             BLEU (sacrebleu) of its greedy continuations of validation prompts vs the truth

"""
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from matplotlib import figure
from sklearn import datasets as skdatasets

from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research.data import text as text_data
from research.experiments import report

# task -> (name of the real metric, whether higher is better)
TASKS = {"macro_f1": ("macro_f1", True), "binary_f1": ("f1", True), "mae": ("mae", False),
         "bleu": ("bleu", True)}
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
  positive_keep fraction of its positive examples (1.0 = all), making the positives rarer."""
  if positive_class not in range(dataset.num_classes):
    raise errors.ConfigError(
        f"config.experiment.positive_class={positive_class!r} is not a class of "
        f"{dataset.name}; choose one of 0..{dataset.num_classes - 1}")
  if not 0 < positive_keep <= 1:
    raise errors.ConfigError(
        f"config.experiment.positive_keep={positive_keep!r} must be in (0, 1]")

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
  exp = report.check_experiment(config, "configs/exp_surrogate.py")
  errors.check_choice("experiment.task", exp.task, sorted(TASKS))
  if exp.task == "bleu":
    errors.check_choice("experiment.bleu_tokenize", exp.bleu_tokenize, BLEU_TOKENIZERS)
    _sacrebleu()  # Fail before training, not at the first eval.
    if not 0 < exp.prompt_len < config.data.seq_len:
      raise errors.ConfigError(
          f"config.experiment.prompt_len={exp.prompt_len} must be in [1, config.data.seq_len="
          f"{config.data.seq_len}): the rest of each window is the continuation")
    if exp.num_prompts <= 0:
      raise errors.ConfigError(f"config.experiment.num_prompts={exp.num_prompts} must be > 0")


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

    def measure(params, split):
      y_N = np.asarray(predict(params, split.x))[:, 0]
      return {"loss": float(0.5 * np.mean(np.square(y_N - split.y))),
              "mae": mean_absolute_error(y_N * t_std, split.y * t_std),
              "rmse": float(np.sqrt(np.mean(np.square(y_N - split.y)))) * t_std}
    summary = {"target_mean": t_mean, "target_std": t_std}
  elif task == "bleu":
    loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, n, k, config.loss.l1)
    eval_fn = kernel.make_eval_fn(model, config.loss.output, k)
    generate = make_generate(model, exp.prompt_len, exp.temperature)
    _, _, decode = text_data.vocab(config.data)
    key = jax.random.key(config.seed + 1)  # The same prompts and key at every eval.

    def measure(params, split):
      out = kernel.evaluate(eval_fn, params, split, config.eval_batch_size)
      ids_BxT = split.x[:exp.num_prompts]
      gen_BxT = np.asarray(generate(params, ids_BxT, key))
      hyps = [_normalise(decode(g[exp.prompt_len:])) for g in gen_BxT]
      refs = [_normalise(decode(r[exp.prompt_len:])) for r in ids_BxT]
      scores = {f"bleu_{t}": bleu(hyps, refs, t) for t in BLEU_TOKENIZERS}
      return {"loss": out["loss"], "accuracy": out["accuracy"],
              "bleu": scores[f"bleu_{exp.bleu_tokenize}"], **scores,
              "sample": {"prompt": decode(ids_BxT[0, :exp.prompt_len]), "generated": hyps[0],
                         "truth": refs[0]}}
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

    def measure(params, split):
      loss, pred_N = jax.device_get(loss_and_predictions(params, split.x, split.y))
      f1 = (binary_f1(pred_N, split.y) if task == "binary_f1"
            else macro_f1(pred_N, split.y, dataset.num_classes))
      return {"loss": float(loss), "accuracy": float(np.mean(pred_N == split.y)),
              TASKS[task][0]: f1}
    summary = {"positives": {s: int(getattr(dataset, s).y.sum())
                             for s in ("train", "valid", "test")}} if task == "binary_f1" else {}
  return {"dataset": dataset, "model": model, "loss_fn": loss_fn, "measure": measure,
          "summary": summary}


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains on the surrogate, tracking surrogate and real metric per eval; see the module doc.

  Returns {"evals": [one record per eval], "best_loss" / "best_metric": the eval record with
  the best valid loss / metric, "test": {"loss": test metrics of the best-loss checkpoint,
  "metric": of the best-metric checkpoint}, "disagreements": int, "wall_time": s, ...}.
  """
  t_start = time.time()
  validate(config)
  task = config.experiment.task
  metric, higher_is_better = TASKS[task]
  setup = _task_setup(config)
  dataset, model, measure = setup["dataset"], setup["model"], setup["measure"]
  if not len(dataset.valid):
    raise errors.ConfigError("config.data.valid_fraction=0 leaves no validation split to "
                             "compare the surrogate and the metric on; set it > 0")
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  n = len(dataset.train)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  chunk = kernel.make_train_chunk(setup["loss_fn"], optimizer)
  state = kernel.init_state(model, optimizer, jax.random.key(config.seed))
  x_all, y_all = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)
  logging.info("surrogate/%s: %s, %d train / %d valid / %d test", task, dataset.name, n,
               len(dataset.valid), len(dataset.test))

  evals = []
  better = lambda a, b: a > b if higher_is_better else a < b
  best = {"loss": None, "metric": None}  # Each: (record, host copy of the params).
  step = 0
  while step < config.num_steps:
    stop = min(step + config.eval_every, config.num_steps)
    idx = data_lib.batch_indices(config.seed, n, config.batch_size, step, stop - step)
    state, sums = chunk(state, x_all, y_all, idx)
    if int(sums["first_bad_step"]) >= 0:
      raise errors.NonFiniteLossError(
          f"loss became NaN/inf at step {int(sums['first_bad_step'])}; lower "
          "config.optimizer.learning_rate")
    record = {"step": stop, "split": "valid", "train_loss": float(sums["loss_sum"]) / (stop - step),
              **measure(state["params"], dataset.valid)}
    step = stop
    evals.append(record)
    writer.write(record)
    logging.info("step %6d | train E %.4f | valid loss %.4f | valid %s %.4f", step,
                 record["train_loss"], record["loss"], metric, record[metric])
    if best["loss"] is None or record["loss"] < best["loss"][0]["loss"]:
      best["loss"] = (record, jax.device_get(state["params"]))
    if best["metric"] is None or better(record[metric], best["metric"][0][metric]):
      best["metric"] = (record, jax.device_get(state["params"]))

  # Consecutive evals where the surrogate improved and the metric got worse, or the reverse.
  disagreements = [
      (a["step"], b["step"]) for a, b in zip(evals, evals[1:])
      if (b["loss"] < a["loss"]) != better(b[metric], a[metric]) and b[metric] != a[metric]]
  test = {which: measure(p, dataset.test) for which, (_, p) in best.items()}
  for which, out in test.items():
    writer.write({"step": best[which][0]["step"], "split": "test", "checkpoint": f"best_{which}",
                  **out})
  result = {
      "task": task, "dataset": dataset.name, "metric": metric,
      "higher_is_better": higher_is_better, **setup["summary"],
      "best_loss": {k: v for k, v in best["loss"][0].items() if k != "sample"},
      "best_metric": {k: v for k, v in best["metric"][0].items() if k != "sample"},
      "same_checkpoint": best["loss"][0]["step"] == best["metric"][0]["step"],
      "disagreements": len(disagreements), "eval_pairs": len(evals) - 1,
      "disagreeing_steps": disagreements, "test": test, "evals": evals,
      "wall_time": time.time() - t_start}
  writer.close()
  _write_report(workdir, result)
  logging.info("best valid loss at step %d (%s %.4f); best %s at step %d (%.4f); %d/%d "
               "disagreements; wall %.1f s", result["best_loss"]["step"], metric,
               result["best_loss"][metric], metric, result["best_metric"]["step"],
               result["best_metric"][metric], len(disagreements), len(evals) - 1,
               result["wall_time"])
  return result


def _write_report(workdir: str, result: dict) -> None:
  metric, evals = result["metric"], result["evals"]
  extra = [c for c in ("accuracy", "bleu_13a", "bleu_char", "rmse") if c in evals[0]
           and c != metric]
  columns = ["step", "train_loss", "loss", metric, *extra, "best"]
  rows = []
  for r in evals:
    marks = [name for name in ("loss", "metric") if result[f"best_{name}"]["step"] == r["step"]]
    rows.append({**r, "best": " + ".join(f"best {m}" for m in marks)})
  sense = "higher" if result["higher_is_better"] else "lower"
  bl, bm = result["best_loss"], result["best_metric"]
  lines = [
      f"Task {result['task']} on {result['dataset']}: surrogate = valid loss (lower is better), "
      f"real metric = valid {metric} ({sense} is better).",
      f"- best valid loss at step {bl['step']}: loss {bl['loss']:.4f}, {metric} {bl[metric]:.4f}",
      f"- best valid {metric} at step {bm['step']}: loss {bm['loss']:.4f}, "
      f"{metric} {bm[metric]:.4f}",
      f"- same checkpoint: {result['same_checkpoint']}; consecutive evals where the two moved in "
      f"opposite directions: {result['disagreements']} of {result['eval_pairs']}",
      f"- test {metric}: best-loss checkpoint {result['test']['loss'][metric]:.4f}, best-"
      f"{metric} checkpoint {result['test']['metric'][metric]:.4f}",
  ]
  if "bleu_tokenize" in result:
    lines.append(f"- bleu = sacrebleu corpus BLEU with tokenize={result['bleu_tokenize']!r} "
                 "(both tokenisations are in the table); greedy continuations of "
                 f"{result['num_prompts']} valid prompts")
  if "sample" in evals[-1]:
    s = evals[-1]["sample"]
    lines.append(f"- last eval, prompt {s['prompt']!r} -> {s['generated']!r} (truth "
                 f"{s['truth']!r})")
  report.write_results(workdir, f"Surrogate loss vs {metric}", columns, rows, lines, result)

  fig = figure.Figure(figsize=(7, 4), layout="constrained")
  ax = fig.add_subplot()
  steps = [r["step"] for r in evals]
  ax.plot(steps, [r["loss"] for r in evals], "o-", color="tab:blue", label="valid loss")
  ax.plot(steps, [r["train_loss"] for r in evals], ":", color="tab:blue", label="train E")
  ax.set_xlabel("step")
  ax.set_ylabel("surrogate (cross-entropy / squared error)", color="tab:blue")
  ax2 = ax.twinx()
  ax2.plot(steps, [r[metric] for r in evals], "s-", color="tab:red", label=f"valid {metric}")
  ax2.set_ylabel(f"real metric: {metric}", color="tab:red")
  ax.axvline(bl["step"], color="tab:blue", ls="--", lw=1, label="best loss")
  ax2.axvline(bm["step"], color="tab:red", ls="--", lw=1, label=f"best {metric}")
  handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
  ax.legend(handles=handles, loc="center right", fontsize=8)
  ax.set_title(f"{result['dataset']}: surrogate vs {metric}")
  report.save_figure(fig, workdir / "surrogate.png")
