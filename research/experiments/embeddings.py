"""Word embeddings learnt without labels (skip-gram with negative sampling), measured, and
reused by a classifier trained on few labelled sentences.

The lecture's Lego block "Embeddings (Unsupervised learning)". The runner:

  1. Reads the corpus (research/data/words.py: the standard library's pydoc topics, one
     document per topic), holds out experiment.test_per_topic sentences of each of the
     experiment.num_topics topics with the most sentences (the downstream test set; the
     embeddings never see them), and builds the vocabulary (count >= experiment.min_count)
     from the rest.
  2. Trains the skip-gram (research/models/skipgram.py) for experiment.epochs epochs: each
     epoch subsamples frequent words (kept with probability min(1, sqrt(t / f))), draws
     word2vec's dynamic windows of up to experiment.window words inside each document, and
     runs SGD on batches of experiment.batch_pairs pairs with experiment.negatives noise words
     each from count^0.75, the step linearly decayed from experiment.alpha per pair to 0.
     config.grad = manual: the hand-written backward pass (research/backprop/skipgram.py)
     updates only the rows of the batch's words; autodiff: jax.grad's dense V x D gradient.
  3. Measures what it learnt, against the untrained tables as a control:
       neighbours   the experiment.neighbours nearest words by cosine of each query word
       pairs        for each related pair (a, b) written in the config before any training,
                    the rank of b among a's neighbours (and of a among b's), as a percentile
                    of the vocabulary: 50% is chance
       topics       "topic words" (count >= 10, at least half of the occurrences in one
                    topic, their home): how often a topic word's 10 nearest topic words share
                    its home topic, against the rate for random pairs of topic words
     and the held-out skip-gram loss on the pairs of the held-out sentences.
  4. Reuse: a bag-of-embeddings classifier (research/models/bag_of_embeddings.py) of which
     topic a sentence comes from, trained on experiment.labels_per_topic sentences of each
     topic, its table initialised from the skip-gram's v (fine-tuned, or frozen) or at random
     with the same per-entry std, for experiment.repeats seeds (labelled set, classifier
     init, random table), all of them one jax.vmap of the library's train chunk.
  5. Writes results.md / results.json, neighbours in the log and the document, and a PCA
     projection of frequent words (embeddings_pca.png).
"""
import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from research import config_lib
from research import errors
from research import losses
from research import metrics as metrics_lib
from research import models
from research import workdir as workdir_lib
from research.data import words
from research.experiments import report
from research.experiments import variants as variants_lib
from research.models import skipgram

TABLES = ("random", "skipgram", "skipgram_frozen")
TABLE_LABELS = {"random": "random table (trained)", "skipgram": "skip-gram (fine-tuned)",
                "skipgram_frozen": "skip-gram (frozen)"}
# Topic words: at least this many occurrences, at least this share in their home topic.
TOPIC_MIN_COUNT, TOPIC_MIN_SHARE, TOPIC_K = 10, 0.5, 10

_RANGES = {
    "epochs": config_lib.Range(True, 1), "window": config_lib.Range(True, 1),
    "negatives": config_lib.Range(True, 1), "batch_pairs": config_lib.Range(True, 1),
    "alpha": config_lib.Range(False, 0.0, low_open=True),
    "subsample": config_lib.Range(False, 0.0), "noise_power": config_lib.Range(False, 0.0),
    "min_count": config_lib.Range(True, 1), "neighbours": config_lib.Range(True, 1),
    "num_topics": config_lib.Range(True, 2), "test_per_topic": config_lib.Range(True, 1),
    "min_words": config_lib.Range(True, 1), "max_words": config_lib.Range(True, 1),
    "repeats": config_lib.Range(True, 1), "plot_words": config_lib.Range(True, 2),
}


# ------------------------------------------------------------------------------------ config


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the model and config.experiment fields; one line naming the fix."""
  exp = report.check_experiment(config, "configs/exp_skipgram.py", _RANGES)
  errors.check_choice("model.name", config.model.name, ("bag_of_embeddings",))
  if not isinstance(config.model.embed_dim, int) or config.model.embed_dim < 1:
    raise errors.ConfigError(f"config.model.embed_dim={config.model.embed_dim!r} must be a "
                             "positive integer (D of the skip-gram and of the classifier)")
  errors.check_choice("loss.output", config.loss.output, ("softmax",))
  for i, name in enumerate(exp.tables):
    errors.check_choice(f"experiment.tables[{i}]", name, TABLES)
  if tuple(exp.labels_per_topic):  # () is allowed: embeddings only.
    errors.check_ints("experiment.labels_per_topic", exp.labels_per_topic, ", e.g. (1, 5, 20)")
  for i, pair in enumerate(exp.related_pairs):
    if len(pair) != 2 or not all(isinstance(w, str) for w in pair):
      raise errors.ConfigError(f"config.experiment.related_pairs[{i}]={pair!r} must be two "
                               "words, e.g. ('list', 'tuple')")


# -------------------------------------------------------------------------------------- corpus


@dataclasses.dataclass(frozen=True)
class Corpus:
  topics: tuple[str, ...]          # document names
  vocab: words.Vocabulary          # from the training sentences
  stream: np.ndarray               # ids of the training text, document after document
  segment: np.ndarray              # its document index (windows never cross documents)
  heldout_stream: np.ndarray       # ids of the held-out sentences, and their documents
  heldout_segment: np.ndarray
  classes: tuple[str, ...]         # the downstream task's topics, label = index
  pool: list[list[np.ndarray]]     # per class: encoded training-pool sentences
  test: list[list[np.ndarray]]     # per class: encoded held-out sentences
  topic_counts: np.ndarray         # V x documents: how often each word occurs in each


def load_corpus(config: ml_collections.ConfigDict) -> Corpus:
  """The documents split into training text and the downstream task's held-out sentences."""
  exp = config.experiment
  docs = words.documents(config.data.path)
  sentences = [[words.tokenize(s) for s in words.split_sentences(text)] for _, text in docs]
  eligible = [[i for i, s in enumerate(doc) if len(s) >= exp.min_words] for doc in sentences]
  order = sorted(range(len(docs)), key=lambda d: (-len(eligible[d]), docs[d][0]))
  # No labels_per_topic: embeddings only, no downstream task and no held-out sentences.
  classes = order[:exp.num_topics] if exp.labels_per_topic else []
  need = exp.test_per_topic + max(exp.labels_per_topic, default=0)
  short = [d for d in classes if len(eligible[d]) < need]
  if exp.labels_per_topic and (len(classes) < exp.num_topics or short):
    have = min((len(eligible[d]) for d in classes), default=0)
    raise errors.ConfigError(
        f"config.experiment.num_topics={exp.num_topics}: the corpus has {len(docs)} documents "
        f"and the {exp.num_topics}th largest has {have} sentences of >= {exp.min_words} words, "
        f"fewer than test_per_topic + max(labels_per_topic) = {need}; lower those fields")
  held = {}  # document -> held-out sentence indices (seeded by config.data.split_seed)
  for d in classes:
    rng = np.random.default_rng([config.data.split_seed, d])
    held[d] = set(rng.permutation(eligible[d])[:exp.test_per_topic].tolist())
  train_tokens = [[s for i, s in enumerate(doc) if i not in held.get(d, ())]
                  for d, doc in enumerate(sentences)]
  vocab = words.build_vocabulary((s for doc in train_tokens for s in doc), exp.min_count)
  if len(vocab) < 2:
    raise errors.ConfigError(
        f"the corpus has {len(vocab)} word(s) occurring >= config.experiment.min_count="
        f"{exp.min_count} times; give a longer text (config.data.path) or lower min_count")

  def encode_docs(token_docs):
    ids = [vocab.encode([t for s in doc for t in s]) for doc in token_docs]
    return (np.concatenate(ids), np.concatenate([np.full(len(a), d, np.int32)
                                                for d, a in enumerate(ids)]))

  stream, segment = encode_docs(train_tokens)
  if not len(stream) or np.bincount(segment).max() <= exp.window:
    raise errors.ConfigError(
        f"the training text has {len(stream)} words in the vocabulary, too few for "
        f"config.experiment.window={exp.window}: no document holds window + 1 = "
        f"{exp.window + 1} of them; give a longer text or lower the window")
  heldout_stream, heldout_segment = encode_docs(
      [[s for i, s in enumerate(doc) if i in held.get(d, ())] for d, doc in enumerate(sentences)])
  pool = [[vocab.encode(sentences[d][i]) for i in eligible[d] if i not in held[d]]
          for d in classes]
  test = [[vocab.encode(sentences[d][i]) for i in sorted(held[d])] for d in classes]
  topic_counts = np.zeros((len(vocab), len(docs)), np.int64)
  index = vocab.index
  for d, doc in enumerate(sentences):
    for s in doc:
      for t in s:
        if t in index:
          topic_counts[index[t], d] += 1
  return Corpus(tuple(name for name, _ in docs), vocab, stream, segment, heldout_stream,
                heldout_segment, tuple(docs[d][0] for d in classes), pool, test, topic_counts)


# ------------------------------------------------------------------------------ skip-gram


def epoch_pairs(corpus: Corpus, exp, seed: int, epoch: int) -> np.ndarray:
  """pairs_SxBx2 of one epoch: subsample, dynamic windows, shuffle, cut into batches."""
  rng = np.random.default_rng([seed, epoch])
  keep_V = words.keep_probability(corpus.vocab.counts, exp.subsample)
  kept = rng.random(len(corpus.stream)) < keep_V[corpus.stream]
  pairs = words.skipgram_pairs(corpus.stream[kept], corpus.segment[kept], exp.window, rng)
  pairs = pairs[rng.permutation(len(pairs))]
  steps = len(pairs) // exp.batch_pairs
  if steps == 0:
    raise errors.ConfigError(
        f"an epoch of the corpus gives {len(pairs)} (center, context) pairs, fewer than "
        f"config.experiment.batch_pairs={exp.batch_pairs}; lower it or use a longer text")
  return pairs[:steps * exp.batch_pairs].reshape(steps, exp.batch_pairs, 2)


def make_epoch_fn(grad: str, negatives: int):
  """jitted epoch(params, pairs_SxBx2, cdf_V, key, eta_S) -> (params, E_S): SGD on each batch
  with `negatives` noise words per pair; grad = manual (sparse rows) | autodiff (dense)."""
  from research.backprop import skipgram as backprop_sg  # pylint: disable=g-import-not-at-top

  def epoch(params, pairs_SxBx2, cdf_V, key, eta_S):
    keys = jax.random.split(key, pairs_SxBx2.shape[0])

    def one(params, inputs):
      pairs_Bx2, eta, k = inputs
      noise_BxK = skipgram.sample_noise(k, cdf_V, (pairs_Bx2.shape[0], negatives))
      center_B, context_BxC = pairs_Bx2[:, 0], jnp.concatenate(
          [pairs_Bx2[:, 1:], noise_BxK], axis=1)
      if grad == "manual":
        E, sparse = backprop_sg.value_and_sparse_grad(params, center_B, context_BxC)
        return backprop_sg.sgd_rows(params, sparse, eta), E
      E, g = jax.value_and_grad(skipgram.loss)(params, center_B, context_BxC)
      return jax.tree.map(lambda p, d: p - eta * d, params, g), E

    return jax.lax.scan(one, params, (pairs_SxBx2, eta_S, keys))

  return jax.jit(epoch, donate_argnums=0)


def heldout_loss_fn(corpus: Corpus, exp, seed: int):
  """E(params) on the held-out sentences' pairs (full windows, no subsampling) with fixed
  noise words: the same pairs and noise at every evaluation."""
  rng = np.random.default_rng([seed, 10**6])
  pairs = words.skipgram_pairs(corpus.heldout_stream, corpus.heldout_segment, exp.window, rng)
  if not len(pairs):
    return None
  p_V = words.noise_distribution(corpus.vocab.counts, exp.noise_power)
  noise = rng.choice(len(p_V), size=(len(pairs), exp.negatives), p=p_V).astype(np.int32)
  center, context = jnp.asarray(pairs[:, 0]), jnp.asarray(
      np.concatenate([pairs[:, 1:], noise], axis=1))
  fn = jax.jit(skipgram.loss)
  return lambda params: float(fn(params, center, context))


def train_skipgram(config, corpus: Corpus, seed: int, writer=None) -> dict[str, Any]:
  """Trains the skip-gram from `seed` (init, subsampling, windows, order, noise words);
  returns {"params", "init", "curve": [per epoch {"epoch", "train_loss", "heldout_loss"}],
  "pairs": pairs seen, "seconds"}."""
  exp = config.experiment
  params = skipgram.init(jax.random.key(seed), len(corpus.vocab), config.model.embed_dim)
  init_params = jax.device_get(params)
  cdf_V = jnp.asarray(np.cumsum(words.noise_distribution(corpus.vocab.counts,
                                                         exp.noise_power)), jnp.float32)
  cdf_V = cdf_V.at[-1].set(1.0)
  epoch_fn = make_epoch_fn(config.grad, exp.negatives)
  heldout = heldout_loss_fn(corpus, exp, seed)
  curve = [{"epoch": 0, "train_loss": None,
            "heldout_loss": heldout(params) if heldout else None}]
  batches = [epoch_pairs(corpus, exp, seed, e) for e in range(exp.epochs)]
  # Subsampling makes epochs differ by a few batches; one length for all compiles once.
  steps = min(len(b) for b in batches)
  batches = [b[:steps] for b in batches]
  total = steps * len(batches)
  done, t0 = 0, time.time()
  for e, pairs in enumerate(batches):
    # word2vec's schedule: alpha decayed linearly to alpha * 1e-4 over all steps; the step on
    # the batch mean is alpha * B, the same step per pair as per-pair SGD.
    frac = (done + np.arange(len(pairs))) / total
    eta_S = exp.alpha * exp.batch_pairs * np.maximum(1 - frac, 1e-4)
    params, E_S = epoch_fn(params, jnp.asarray(pairs), cdf_V,
                           jax.random.fold_in(jax.random.key(seed), 1 + e),
                           jnp.asarray(eta_S, jnp.float32))
    done += len(pairs)
    train_loss = float(jnp.mean(E_S))
    if not math.isfinite(train_loss):
      raise errors.NonFiniteLossError(f"skip-gram: the loss became NaN/inf in epoch {e + 1}; "
                                      "lower config.experiment.alpha")
    record = {"epoch": e + 1, "train_loss": train_loss,
              "heldout_loss": heldout(params) if heldout else None}
    curve.append(record)
    if writer is not None:
      writer.write({"step": done, "split": "skipgram", "seed": seed, **record})
  seconds = time.time() - t0
  logging.info("skip-gram seed %d: %d epochs, %d pairs, %.1f s; train loss %.3f -> %.3f, "
               "held-out %.3f -> %.3f", seed, exp.epochs, done * exp.batch_pairs, seconds,
               curve[1]["train_loss"], curve[-1]["train_loss"], curve[0]["heldout_loss"] or 0,
               curve[-1]["heldout_loss"] or 0)
  return {"params": params, "init": init_params, "curve": curve,
          "pairs": done * exp.batch_pairs, "seconds": seconds}


# ---------------------------------------------------------------------------------- measures


def neighbours(table_VxD, vocab: words.Vocabulary, query: list[str], k: int) -> dict:
  """{query word: [(neighbour, cosine), ...]} by cosine similarity, most similar first."""
  ids, cos = skipgram.nearest(jnp.asarray(table_VxD), jnp.asarray(vocab.ids(
      query, "experiment.query_words")), k)
  return {w: [(vocab.words[int(i)], float(c)) for i, c in zip(row_i, row_c)]
          for w, row_i, row_c in zip(query, np.asarray(ids), np.asarray(cos))}


def pair_ranks(table_VxD, vocab: words.Vocabulary, pairs) -> dict[str, Any]:
  """For each (a, b): b's rank among a's neighbours and a's among b's (1 = nearest), as
  percentiles of the V - 1 other words; mean percentile, median rank, share in the top 10."""
  a_ids = vocab.ids([a for a, _ in pairs], "experiment.related_pairs")
  b_ids = vocab.ids([b for _, b in pairs], "experiment.related_pairs")
  unit = np.asarray(skipgram.normalize(jnp.asarray(table_VxD)), np.float64)
  cos_VxV = unit @ unit.T
  np.fill_diagonal(cos_VxV, -np.inf)
  ranks = []
  for a, b in zip(a_ids, b_ids):
    for x, y in ((a, b), (b, a)):
      ranks.append(int((cos_VxV[x] > cos_VxV[x, y]).sum()) + 1)
  ranks = np.array(ranks)
  v = len(vocab) - 1
  return {"mean_percentile": float(np.mean(ranks / v)), "median_rank": float(np.median(ranks)),
          "top10": float(np.mean(ranks <= 10)), "ranks": ranks.tolist(),
          "chance_top10": 10 / v}


def topic_words(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
  """(ids, home topics) of the words with >= TOPIC_MIN_COUNT occurrences, at least
  TOPIC_MIN_SHARE of them in one document (counted over all the text)."""
  counts = corpus.topic_counts
  total = counts.sum(axis=1)
  home = counts.argmax(axis=1)
  share = counts.max(axis=1) / np.maximum(total, 1)
  ids = np.flatnonzero((total >= TOPIC_MIN_COUNT) & (share >= TOPIC_MIN_SHARE))
  return ids, home[ids]


def topic_agreement(table_VxD, corpus: Corpus) -> dict[str, float]:
  """How often a topic word's TOPIC_K nearest topic words share its home topic, and the rate
  for a random other topic word (chance)."""
  ids, home = topic_words(corpus)
  unit = np.asarray(skipgram.normalize(jnp.asarray(table_VxD)), np.float64)[ids]
  cos = unit @ unit.T
  np.fill_diagonal(cos, -np.inf)
  near = np.argsort(-cos, axis=1)[:, :TOPIC_K]
  same = (home[near] == home[:, None]).mean()
  sizes = np.bincount(home)
  chance = float(np.mean((sizes[home] - 1) / (len(ids) - 1)))
  return {"words": int(len(ids)), "topics": int((sizes > 0).sum()), "agreement": float(same),
          "chance": chance}


# ------------------------------------------------------------------------------- downstream


def pad(sentences: list[np.ndarray], length: int) -> np.ndarray:
  """ids_NxT: each sentence cut to `length` words, padded with -1."""
  out = np.full((len(sentences), length), -1, np.int32)
  for i, s in enumerate(sentences):
    s = s[:length]
    out[i, :len(s)] = s
  return out


def downstream(config, corpus: Corpus, tables: dict[int, np.ndarray], per_topic: int,
               seeds: list[int]) -> list[dict]:
  """Test accuracy of the topic classifier for every (table, seed) at one label count;
  tables[seed] is the skip-gram v of that seed, and the random table of that seed has its
  per-entry std."""
  exp = config.experiment
  k = len(corpus.classes)
  n = per_topic * k
  length = exp.max_words
  test_x = pad([s for c in corpus.test for s in c], length)
  test_y = np.concatenate([np.full(len(c), i, np.int32) for i, c in enumerate(corpus.test)])
  results = []
  for frozen in (False, True):
    names = [t for t in exp.tables if (t == "skipgram_frozen") == frozen]
    if not names:
      continue
    cfg = config.model.copy_and_resolve_references()
    cfg.vocab_size, cfg.freeze_embeddings = len(corpus.vocab), frozen
    model = models.build(cfg, (length,), k)
    combos = [(name, s) for name in names for s in seeds]
    xs, ys, params = [], [], []
    for name, s in combos:
      rng = np.random.default_rng([s, per_topic])
      picked = [rng.choice(len(c), per_topic, replace=False) for c in corpus.pool]
      xs.append(pad([corpus.pool[i][j] for i, js in enumerate(picked) for j in js], length))
      ys.append(np.repeat(np.arange(k, dtype=np.int32), per_topic))
      p = model.init(jax.random.key(s))
      v = np.asarray(tables[s])
      table = (v if name.startswith("skipgram")
               else v.std() * np.random.default_rng([s, 7]).standard_normal(v.shape))
      p["embed"]["table"] = jnp.asarray(table, jnp.float32)
      params.append(p)
    params_R = jax.tree.map(lambda *a: jnp.stack(a), *params)
    loss_fn = losses.make_loss_fn(model, "softmax", config.loss.l2, n, k)
    batch = min(config.batch_size, n)
    x_R, y_R = jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys))
    # Each step a fresh permutation's first `batch` sentences (a function of (seed, step)).
    params_R = variants_lib.fit_replicas(
        config, loss_fn, params_R, x_R, y_R,
        lambda start, stop: np.stack([np.stack([
            np.random.default_rng([s, step]).permutation(n)[:batch]
            for step in range(start, stop)]) for _, s in combos]),
        "the topic classifier")
    measure = variants_lib.replica_measure_fn(model, "softmax", k)
    acc, _ = measure(params_R, jnp.asarray(test_x), jnp.asarray(test_y), shared_data=True)
    train_acc, _ = measure(params_R, x_R, y_R)
    results += [{"table": name, "seed": s, "labels_per_topic": per_topic,
                 "test_accuracy": float(acc[i]), "train_accuracy": float(train_acc[i])}
                for i, (name, s) in enumerate(combos)]
  return results


# ------------------------------------------------------------------------------------ runner


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains and measures the skip-gram, reuses it downstream; see the module docstring.

  Returns {"corpus", "skipgram" (curve, pairs, seconds), "neighbours", "pairs": {"trained",
  "init"}, "topics": {"trained", "init"}, "downstream": [per label count {table: mean, std}],
  "runs", "wall_time"}.
  """
  t_start = time.time()
  validate(config)
  exp = config.experiment
  corpus = load_corpus(config)
  # Bad query or pair words fail before any training.
  corpus.vocab.ids(list(exp.query_words), "experiment.query_words")
  pairs = [tuple(p) for p in exp.related_pairs]
  corpus.vocab.ids([w for p in pairs for w in p], "experiment.related_pairs")
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  logging.info("corpus: %d documents, %d training words in a vocabulary of %d (count >= %d); "
               "downstream: %d topics, %d held-out sentences", len(corpus.topics),
               len(corpus.stream), len(corpus.vocab), exp.min_count, len(corpus.classes),
               sum(len(c) for c in corpus.test))

  seeds = [config.seed + i for i in range(exp.repeats)]
  sgs = {s: train_skipgram(config, corpus, s, writer) for s in seeds}
  trained = {s: np.asarray(sg["params"]["v_in"]) for s, sg in sgs.items()}
  first = seeds[0]
  near = neighbours(trained[first], corpus.vocab, list(exp.query_words), exp.neighbours)
  for w, row in near.items():
    logging.info("%-12s %s", w, ", ".join(f"{v} {c:.2f}" for v, c in row))
  per_seed = {s: {"pairs": {"trained": pair_ranks(trained[s], corpus.vocab, pairs),
                            "init": pair_ranks(np.asarray(sgs[s]["init"]["v_in"]),
                                               corpus.vocab, pairs)},
                  "topics": {"trained": topic_agreement(trained[s], corpus),
                             "init": topic_agreement(np.asarray(sgs[s]["init"]["v_in"]),
                                                     corpus)},
                  "curve": sgs[s]["curve"]} for s in seeds}
  measures = {group: {which: {key: report.mean_std([per_seed[s][group][which][key] for s in seeds])
                              for key in per_seed[first][group][which] if key != "ranks"}
                      for which in ("trained", "init")} for group in ("pairs", "topics")}
  for key in ("train_loss", "heldout_loss"):
    if per_seed[first]["curve"][-1][key] is None:  # no held-out sentences
      continue
    measures[key] = {when: report.mean_std([per_seed[s]["curve"][i][key] for s in seeds])
                     for when, i in (("first", 1 if key == "train_loss" else 0),
                                     ("last", -1))}
  logging.info("related pairs: mean percentile %.1f%% (init %.1f%%), in the top 10: %.0f%% "
               "(init %.0f%%); topic agreement of the 10 nearest topic words %.1f%% (init "
               "%.1f%%, chance %.1f%%)",
               100 * measures["pairs"]["trained"]["mean_percentile"]["mean"],
               100 * measures["pairs"]["init"]["mean_percentile"]["mean"],
               100 * measures["pairs"]["trained"]["top10"]["mean"],
               100 * measures["pairs"]["init"]["top10"]["mean"],
               100 * measures["topics"]["trained"]["agreement"]["mean"],
               100 * measures["topics"]["init"]["agreement"]["mean"],
               100 * measures["topics"]["trained"]["chance"]["mean"])

  table, runs = [], []
  for per_topic in exp.labels_per_topic:
    out = downstream(config, corpus, trained, per_topic, seeds)
    row = {"labels_per_topic": per_topic}
    for name in exp.tables:
      row[name] = report.mean_std([r["test_accuracy"] for r in out if r["table"] == name])
      row[name + "_train"] = report.mean_std([r["train_accuracy"] for r in out if r["table"] == name])
    for r in out:
      writer.write({"step": config.num_steps, "split": "downstream", **r})
    runs += out
    table.append(row)
    logging.info("%3d labelled sentences per topic: %s", per_topic, ", ".join(
        f"{name} {100 * row[name]['mean']:.1f} ± {100 * row[name]['std']:.1f}%"
        for name in exp.tables))

  wall = time.time() - t_start
  result = {"corpus": {"documents": len(corpus.topics), "training_words": len(corpus.stream),
                       "vocabulary": len(corpus.vocab), "classes": list(corpus.classes),
                       "test_sentences": sum(len(c) for c in corpus.test),
                       "pool_sentences": [len(c) for c in corpus.pool]},
            "skipgram": {s: {k: sg[k] for k in ("curve", "pairs", "seconds")}
                         for s, sg in sgs.items()},
            "neighbours": near, **measures, "per_seed": per_seed, "downstream": table,
            "runs": runs, "wall_time": wall}
  if jax.process_index() == 0:
    _write_results(workdir, config, corpus, result)
    _plot_pca(workdir / "embeddings_pca.png", trained[first], corpus, exp.plot_words)
  logging.info("done in %.1f s; results in %s", wall, workdir / "results.md")
  return result


def _write_results(workdir, config, corpus: Corpus, result: dict) -> None:
  exp = config.experiment
  report.write_json(workdir / "results.json", result)
  p, t = result["pairs"], result["topics"]
  sg = list(result["skipgram"].values())
  pct = lambda v: f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}%"
  num = lambda v, d=3: f"{v['mean']:.{d}f} ± {v['std']:.{d}f}"
  lines = [
      f"Skip-gram with negative sampling on {len(corpus.topics)} documents "
      f"({result['corpus']['training_words']} training words, vocabulary "
      f"{len(corpus.vocab)}, count >= {exp.min_count}): D={config.model.embed_dim}, window "
      f"{exp.window}, {exp.negatives} noise words from count^{exp.noise_power:g}, subsampling "
      f"t={exp.subsample:g}, {exp.epochs} epochs ({sg[0]['pairs']:,} pairs, "
      f"{np.mean([x['seconds'] for x in sg]):.1f} s per seed), alpha={exp.alpha:g} per pair, "
      f"grad={config.grad}; mean ± std over {exp.repeats} seeds.", "",
      f"Loss per pair: train {num(result['train_loss']['first'])} (epoch 1) -> "
      f"{num(result['train_loss']['last'])}" + (
          f"; on the pairs of the held-out sentences {num(result['heldout_loss']['first'])} "
          f"(init) -> {num(result['heldout_loss']['last'])}." if "heldout_loss" in result
          else "."), "",
      "| measure | trained | untrained tables | chance |", "|---|---|---|---|",
      f"| related pairs ({len(exp.related_pairs)}, both directions): mean rank percentile | "
      f"{pct(p['trained']['mean_percentile'])} | {pct(p['init']['mean_percentile'])} | 50% |",
      f"| related pairs: median rank among {len(corpus.vocab) - 1} words | "
      f"{num(p['trained']['median_rank'], 1)} | {num(p['init']['median_rank'], 0)} | "
      f"{len(corpus.vocab) / 2:.0f} |",
      f"| related pairs: partner in the 10 nearest | {pct(p['trained']['top10'])} | "
      f"{pct(p['init']['top10'])} | {100 * p['trained']['chance_top10']['mean']:.1f}% |",
      f"| topic words ({t['trained']['words']['mean']:.0f} in "
      f"{t['trained']['topics']['mean']:.0f} topics): 10 nearest share the home topic | "
      f"{pct(t['trained']['agreement'])} | {pct(t['init']['agreement'])} | "
      f"{100 * t['trained']['chance']['mean']:.1f}% |", "",
      f"Nearest neighbours (cosine) of the query words, seed {config.seed}:", "",
      "| word | neighbours |", "|---|---|"]
  for w, row in result["neighbours"].items():
    lines.append(f"| {w} | " + ", ".join(f"{v} ({c:.2f})" for v, c in row) + " |")
  lines += ["", f"Downstream: which of {len(corpus.classes)} topics ({', '.join(corpus.classes)})"
            f" a sentence comes from; bag-of-embeddings + softmax, {config.num_steps} steps of "
            f"{config.optimizer.name} (eta={config.optimizer.learning_rate:g}); test accuracy "
            f"on {result['corpus']['test_sentences']} held-out sentences, mean ± std over "
            f"{exp.repeats} seeds (chance {100 / len(corpus.classes):.1f}%).", "",
            "| labelled sentences / topic | " + " | ".join(TABLE_LABELS[n] for n in exp.tables)
            + " |", "|---|" + "---|" * len(exp.tables)]
  for row in result["downstream"]:
    lines.append(f"| {row['labels_per_topic']} | " + " | ".join(
        f"{100 * row[n]['mean']:.1f} ± {100 * row[n]['std']:.1f}" for n in exp.tables) + " |")
  workdir_lib.write_text(workdir / "results.md", "\n".join(lines) + "\n")


def _plot_pca(path, table_VxD, corpus: Corpus, count: int) -> None:
  """The `count` most frequent words after the 20 most frequent (function words), projected
  on the first two principal components of their vectors; topic words coloured by home topic
  (the 8 commonest homes), a third of the words labelled."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  ids = np.arange(20, min(20 + count, len(corpus.vocab)))
  x = np.asarray(skipgram.normalize(jnp.asarray(table_VxD)))[ids]
  x = x - x.mean(axis=0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  xy = x @ vt[:2].T
  explained = (s[:2] ** 2).sum() / (s ** 2).sum()
  topic_ids, homes = topic_words(corpus)
  home_of = dict(zip(topic_ids.tolist(), homes.tolist()))
  common = [h for h, _ in sorted(
      ((h, c) for h, c in zip(*np.unique([home_of[i] for i in ids if i in home_of],
                                          return_counts=True))), key=lambda hc: -hc[1])][:8]
  fig = Figure(figsize=(11, 8.5), layout="constrained")
  ax = fig.subplots()
  colours = {h: f"C{j}" for j, h in enumerate(common)}
  c = [colours.get(home_of.get(i), "lightgrey") for i in ids]
  ax.scatter(xy[:, 0], xy[:, 1], s=10, c=c)
  for j, i in enumerate(ids):
    if j % 3 == 0 or home_of.get(i) in colours:
      ax.annotate(corpus.vocab.words[i], xy[j], fontsize=6.5, alpha=0.85,
                  color=colours.get(home_of.get(i), "dimgrey"))
  for h, col in colours.items():
    ax.scatter([], [], c=col, label=corpus.topics[h])
  ax.legend(title="home topic", fontsize=8, loc="best")
  ax.set_title(f"Skip-gram vectors of {len(ids)} frequent words (ranks 21-{20 + len(ids)}), "
               f"PCA of the unit vectors ({100 * explained:.0f}% of the variance)", fontsize=10)
  report.save_figure(fig, path)
