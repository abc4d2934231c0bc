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
  4. Reuse, under the experiment harness (research/experiments/harness.py): which topic a
     sentence comes from, from experiment.labels_per_topic labelled sentences per topic
     (stratified, redrawn per seed), for experiment.seeds seeds. The methods:
       bow_lr           logistic regression on the sentence's bag of words (term frequencies
                        over the vocabulary), trained like the others
       tfidf_lr         the strongest cheap baseline: logistic regression on TF-IDF features
                        (term counts times idf = log((1 + n) / (1 + df)) + 1 over the pool's n
                        sentences, no labels read; rows L2-normalised), fitted to convergence
                        by L-BFGS (scikit-learn) with its inverse strength C chosen on
                        validation from experiment.tfidf_Cs
       skipgram_frozen  logistic regression on the mean of the sentence's skip-gram vectors
       skipgram         the same bag-of-embeddings classifier with the table fine-tuned
       random           its table a random one (the skip-gram's per-entry std), trained from
                        scratch on the labels
       ppmi_svd         logistic regression on mean vectors from PPMI-SVD (Levy & Goldberg
                        2014), skip-gram's count-based counterpart: the PPMI matrix of the same
                        windows, truncated SVD to the same D
     Every Adam-trained method's step and L2 are chosen on held-out validation sentences from
     the same grid (experiment.learning_rates x experiment.l2s); tfidf_lr, which has no step,
     chooses C from as many candidates. Each seed trains its own skip-gram
     (a function of the seed, shared by every method and size of that seed); PPMI-SVD has no
     randomness and is computed once.
  5. Writes results.md / results.json, neighbours in the log and the document, the downstream
     accuracies against the labels per topic (embeddings_downstream.png) and a PCA projection
     of frequent words (embeddings_pca.png).
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
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import metrics as metrics_lib
from research import models
from research import optim
from research import workdir as workdir_lib
from research.data import words
from research.experiments import harness
from research.experiments import report
from research.experiments import store
from research.models import layers
from research.models import skipgram

METHODS = ("bow_lr", "tfidf_lr", "skipgram_frozen", "skipgram", "random", "ppmi_svd")
# The methods whose classifier reads a fixed table's mean vectors (logistic regression), and
# those that train the table (ids in, bag_of_embeddings).
FROZEN, TRAINED = ("skipgram_frozen", "ppmi_svd"), ("skipgram", "random")
# Topic words: at least this many occurrences, at least this share in their home topic.
TOPIC_MIN_COUNT, TOPIC_MIN_SHARE, TOPIC_K = 10, 0.5, 10

RANGES = {
    "max_extensions": config_lib.Range(True, 0),
    "epochs": config_lib.Range(True, 1), "window": config_lib.Range(True, 1),
    "negatives": config_lib.Range(True, 1), "batch_pairs": config_lib.Range(True, 1),
    "alpha": config_lib.Range(False, 0.0, low_open=True),
    "subsample": config_lib.Range(False, 0.0), "noise_power": config_lib.Range(False, 0.0),
    "min_count": config_lib.Range(True, 1), "neighbours": config_lib.Range(True, 1),
    "num_topics": config_lib.Range(True, 2), "test_per_topic": config_lib.Range(True, 1),
    "min_words": config_lib.Range(True, 1), "max_words": config_lib.Range(True, 1),
    "valid_per_topic": config_lib.Range(True, 1), "seeds": config_lib.Range(True, 2),
    "plot_words": config_lib.Range(True, 2),
}


# ------------------------------------------------------------------------------------ config


def validate(config: ml_collections.ConfigDict) -> None:
  """train.validate plus the model and config.experiment fields; one line naming the fix."""
  exp = report.check_experiment(config, "configs/exp_skipgram.py", RANGES, METHODS)
  errors.check_choice("model.name", config.model.name, ("bag_of_embeddings",))
  errors.check_choice("loss.output", config.loss.output, ("softmax",))
  if tuple(exp.labels_per_topic):  # () is allowed: embeddings only.
    errors.check_ints("experiment.labels_per_topic", exp.labels_per_topic, ", e.g. (1, 5, 20)")
  if not exp.learning_rates or not exp.l2s:
    raise errors.ConfigError("config.experiment.learning_rates and l2s must each name at least "
                             "one value (every method's grid is their product)")
  for lr in exp.learning_rates:
    errors.check_positive("experiment.learning_rates[]", lr)
  for l2 in exp.l2s:
    if not isinstance(l2, (int, float)) or isinstance(l2, bool) or not l2 >= 0:
      raise errors.ConfigError(f"config.experiment.l2s holds {l2!r}; each must be a number >= 0")
  if "tfidf_lr" in exp.methods:
    for c in exp.tfidf_Cs:
      errors.check_positive("experiment.tfidf_Cs[]", c)
    if len(exp.tfidf_Cs) != len(exp.learning_rates) * len(exp.l2s):
      raise errors.ConfigError(
          f"config.experiment.tfidf_Cs has {len(exp.tfidf_Cs)} values but the other methods "
          f"choose from {len(exp.learning_rates)} x {len(exp.l2s)} = "
          f"{len(exp.learning_rates) * len(exp.l2s)} settings; give tfidf_lr as many")
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
  valid: list[list[np.ndarray]]    # per class: encoded validation sentences (held out too)
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
  need = exp.test_per_topic + exp.valid_per_topic + max(exp.labels_per_topic, default=0)
  short = [d for d in classes if len(eligible[d]) < need]
  if exp.labels_per_topic and (len(classes) < exp.num_topics or short):
    have = min((len(eligible[d]) for d in classes), default=0)
    raise errors.ConfigError(
        f"config.experiment.num_topics={exp.num_topics}: the corpus has {len(docs)} documents "
        f"and the {exp.num_topics}th largest has {have} sentences of >= {exp.min_words} words, "
        f"fewer than test_per_topic + valid_per_topic + max(labels_per_topic) = {need}; lower "
        "those fields")
  # document -> held-out sentence indices (seeded by config.data.split_seed): the first
  # test_per_topic of the permutation are the test set, the next valid_per_topic validation.
  held, held_test = {}, {}
  for d in classes:
    rng = np.random.default_rng([config.data.split_seed, d])
    order_d = rng.permutation(eligible[d]).tolist()
    held[d] = set(order_d[:exp.test_per_topic + exp.valid_per_topic])
    held_test[d] = set(order_d[:exp.test_per_topic])
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
  test = [[vocab.encode(sentences[d][i]) for i in sorted(held_test[d])] for d in classes]
  valid = [[vocab.encode(sentences[d][i]) for i in sorted(held[d] - held_test[d])]
           for d in classes]
  topic_counts = np.zeros((len(vocab), len(docs)), np.int64)
  index = vocab.index
  for d, doc in enumerate(sentences):
    for s in doc:
      for t in s:
        if t in index:
          topic_counts[index[t], d] += 1
  return Corpus(tuple(name for name, _ in docs), vocab, stream, segment, heldout_stream,
                heldout_segment, tuple(docs[d][0] for d in classes), pool, valid, test,
                topic_counts)


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


# --------------------------------------------------------------------------------- PPMI-SVD


def cooccurrence(corpus: Corpus, window: int) -> np.ndarray:
  """counts_VxV: word2vec's dynamic windows in expectation, both directions, never across
  documents. A context d words away lies in a window b ~ U{1..window} with probability
  (window - d + 1) / window, and is counted with that weight."""
  v = len(corpus.vocab)
  counts = np.zeros((v, v), np.float64)
  for d in range(1, window + 1):
    same = corpus.segment[d:] == corpus.segment[:-d]
    a, b = corpus.stream[:-d][same], corpus.stream[d:][same]
    weight = (window - d + 1) / window
    np.add.at(counts, (a, b), weight)
    np.add.at(counts, (b, a), weight)
  return counts


def ppmi_svd(counts_VxV: np.ndarray, dim: int, power: float) -> np.ndarray:
  """table_VxD (Levy, Goldberg & Dagan 2015): PPMI(w, c) = max(0, log P(w, c) / (P(w)
  P_power(c))) with the context distribution smoothed as skip-gram's noise (count^power),
  then the truncated SVD U_D sqrt(S_D) (the symmetric weighting of word and context)."""
  total = counts_VxV.sum()
  p_w = counts_VxV.sum(axis=1, keepdims=True) / total
  c_pow = counts_VxV.sum(axis=0) ** power
  p_c = (c_pow / c_pow.sum())[None, :]
  with np.errstate(divide="ignore", invalid="ignore"):
    pmi = np.log(counts_VxV / total / (p_w * p_c))
  ppmi = np.where(counts_VxV > 0, np.maximum(pmi, 0.0), 0.0)
  u, s, _ = np.linalg.svd(ppmi)
  return (u[:, :dim] * np.sqrt(s[:dim])).astype(np.float32)


# ------------------------------------------------------------------------------- downstream


def pad(sentences: list[np.ndarray], length: int) -> np.ndarray:
  """ids_NxT: each sentence cut to `length` words, padded with -1."""
  out = np.full((len(sentences), length), -1, np.int32)
  for i, s in enumerate(sentences):
    s = s[:length]
    out[i, :len(s)] = s
  return out


def labelled(sentences: list[list[np.ndarray]], length: int) -> data_lib.Split:
  """Per-class sentence lists as one Split: x = ids_NxT (padded with -1), y = class."""
  return data_lib.Split(pad([s for c in sentences for s in c], length),
                        np.concatenate([np.full(len(c), i, np.int32)
                                        for i, c in enumerate(sentences)]))


def bag_of_words(ids_NxT: np.ndarray, vocab_size: int) -> np.ndarray:
  """x_NxV: each sentence's term frequencies (counts over its real words, summing to 1)."""
  out = np.zeros((len(ids_NxT), vocab_size), np.float32)
  rows, cols = np.nonzero(ids_NxT >= 0)
  np.add.at(out, (rows, ids_NxT[rows, cols]), 1.0)
  return out / np.maximum(out.sum(axis=1, keepdims=True), 1.0)


def inverse_document_frequency(ids_NxT: np.ndarray, vocab_size: int) -> np.ndarray:
  """idf_V = log((1 + n) / (1 + df)) + 1 over n sentences (df: how many hold the word): the
  smoothed idf of scikit-learn's TfidfTransformer."""
  df = np.zeros(vocab_size, np.float64)
  for row in ids_NxT:
    df[np.unique(row[row >= 0])] += 1
  return (np.log((1 + len(ids_NxT)) / (1 + df)) + 1).astype(np.float32)


def tfidf(ids_NxT: np.ndarray, idf_V: np.ndarray) -> np.ndarray:
  """x_NxV: term frequency times idf, each row scaled to unit L2 norm (0 stays 0)."""
  x = bag_of_words(ids_NxT, len(idf_V)) * idf_V
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_logistic_regression(x_NxV: np.ndarray, y_N: np.ndarray, k: int, C: float) -> dict:
  """Multinomial logistic regression fitted to convergence by L-BFGS (scikit-learn): C times
  the summed cross-entropy plus (1/2) ||w||^2. Returns linear_model's params {"head": {"w":
  w_VxK, "b": b_K}}; classes missing from y get w = 0 and b = -inf's stand-in, -1e9."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  clf = LogisticRegression(C=C, max_iter=10_000, tol=1e-6).fit(x_NxV, y_N)
  w = np.zeros((x_NxV.shape[1], k), np.float32)
  b = np.full((k,), -1e9, np.float32)
  coef, intercept = clf.coef_, clf.intercept_
  if len(clf.classes_) == 2:  # scikit-learn's binary form: one row for class 1
    coef, intercept = np.stack([-coef[0], coef[0]]) / 2, np.stack([-intercept, intercept])[:, 0] / 2
  w[:, clf.classes_] = coef.T
  b[clf.classes_] = intercept
  return {"head": {"w": jnp.asarray(w), "b": jnp.asarray(b)}}


def mean_vectors(table_VxD: np.ndarray, ids_NxT: np.ndarray) -> np.ndarray:
  """x_NxD: the mean of each sentence's word vectors (0 for a sentence of no known word)."""
  return bag_of_words(ids_NxT, len(table_VxD)) @ np.asarray(table_VxD, np.float32)


def linear_model(d_in: int, k: int) -> models.Model:
  """Logistic regression (softmax) on fixed features x_NxD."""
  return models.Model(lambda key: {"head": layers.init_dense(key, d_in, k)},
                      lambda params, x, *, train=False, rng=None: layers.dense(params["head"], x))


def with_tables(model: models.Model, tables: dict[int, np.ndarray]) -> models.Model:
  """The bag-of-embeddings model whose init puts seed s's table in params["embed"]["table"].

  harness.train_seeds builds each seed's state with kernel.init_state(model, optimizer,
  jax.random.key(s)), which hands init the first half of jax.random.split(key(s)): init finds
  the seed from that key (it has no other way to know it)."""
  by_key = {np.asarray(jax.random.key_data(jax.random.split(jax.random.key(s))[0])).tobytes(): s
            for s in tables}

  def init(key):
    seed = by_key.get(np.asarray(jax.random.key_data(key)).tobytes())
    if seed is None:
      raise ValueError("with_tables: init got a key not derived from one of the seeds "
                       f"{sorted(tables)} as kernel.init_state derives it")
    params = model.init(key)
    params["embed"]["table"] = jnp.asarray(tables[seed], jnp.float32)
    return params

  return models.Model(init, model.apply)


def experiment(config, corpus: Corpus, seeds: list[int], sg_tables: dict[int, np.ndarray],
               ppmi_VxD: np.ndarray, writer=None) -> harness.Experiment:
  """The harness's view of the downstream task: the methods (each tuned on the same learning
  rate x L2 grid), the labels per topic, fit and measure."""
  exp = config.experiment
  k, v, length = len(corpus.classes), len(corpus.vocab), exp.max_words
  pool = labelled(corpus.pool, length)
  splits = {"valid": labelled(corpus.valid, length), "test": labelled(corpus.test, length)}
  # Per seed: the fixed tables read by the frozen methods and the starting tables of the
  # trained ones, all with the per-entry std of that seed's skip-gram table.
  scale = lambda table, s: np.asarray(table) * (sg_tables[s].std() / np.asarray(table).std())
  tables = {"skipgram_frozen": dict(sg_tables), "skipgram": dict(sg_tables),
            "ppmi_svd": {s: scale(ppmi_VxD, s) for s in seeds},
            "random": {s: scale(np.random.default_rng([s, 7]).standard_normal(
                sg_tables[s].shape), s) for s in seeds}}
  cfg = config.model.copy_and_resolve_references()
  cfg.vocab_size, cfg.freeze_embeddings = v, False
  bag = models.build(cfg, (length,), k)
  idf = inverse_document_frequency(pool.x, v)
  by_method = {"bow_lr": linear_model(v, k), "tfidf_lr": linear_model(v, k),
               **{m: linear_model(config.model.embed_dim, k) for m in FROZEN},
               **{m: with_tables(bag, tables[m]) for m in TRAINED}}
  eval_fns = {m: kernel.make_eval_fn(model, "softmax", k) for m, model in by_method.items()}

  def inputs(method, seed, x_NxT):
    """What the method's classifier reads: term frequencies, mean vectors or the ids."""
    if method == "bow_lr":
      return bag_of_words(x_NxT, v)
    if method == "tfidf_lr":
      return tfidf(x_NxT, idf)
    if method in FROZEN:
      return mean_vectors(tables[method][seed], x_NxT)
    return x_NxT

  def fit(method, setting, per_topic, seeds_, subsets):
    n = k * per_topic
    b = min(config.batch_size, n)
    data = [data_lib.Split(inputs(method, s, sub.x), sub.y) for s, sub in zip(seeds_, subsets)]
    if method == "tfidf_lr":
      return [fit_logistic_regression(d.x, d.y, k, setting["C"]) for d in data]
    optimizer = optim.make_optimizer(
        config_lib.optimizer(**{**config.optimizer.to_dict(),
                                "learning_rate": setting["learning_rate"]}), config.num_steps)
    loss_fn = losses.make_loss_fn(by_method[method], "softmax", setting["l2"], n, k)
    return harness.train_seeds(
        by_method[method], loss_fn, optimizer, config.num_steps, b, data, seeds_,
        mode=exp.seed_mode, chunk_steps=config.eval_every,
        what=f"the topic classifier ({method}) at {per_topic} labels per topic",
        writer=writer, tag={"labels_per_topic": per_topic, "arm": method, **setting})

  cache = {}

  def measure(method, setting, per_topic, seed, params, split):
    key = (method, seed if method not in ("bow_lr", "tfidf_lr") else None, split)
    if key not in cache:
      cache[key] = data_lib.Split(inputs(method, seed, splits[split].x), splits[split].y)
    out = kernel.evaluate(eval_fns[method], params, cache[key], config.eval_batch_size,
                          per_example=split == "test")
    return harness.evaluation(out)

  grid = {"learning_rate": tuple(exp.learning_rates), "l2": tuple(exp.l2s)}
  grids = {"tfidf_lr": {"C": tuple(exp.get("tfidf_Cs", ()))}}
  return harness.Experiment(
      # tfidf_lr is fitted to convergence: no step size, its C over the others' whole budget.
      "embeddings", [harness.Arm(m, grids.get(m, grid), step=m != "tfidf_lr")
                     for m in exp.methods], exp.baseline,
      tuple(exp.labels_per_topic), "labelled sentences per topic", seeds, fit, measure,
      select="accuracy", draw=harness.labelled_draw(pool, k),
      select_label="validation accuracy",
      data_note="labelled sentences redrawn per seed, stratified; each seed also trains its "
                "own skip-gram", family=harness.fields_of(FIELDS))


# ------------------------------------------------------------------------------------ runner


def skipgram_of_seed(config, corpus: Corpus, seed: int, workdir, writer,
                     keep: bool = True) -> dict[str, Any]:
  """train_skipgram's result for `seed`, kept in WORKDIR/skipgram/seed_<s>.npz (never
  pickled) so that an interrupted run resumes without training it again. keep=False (a Ray
  worker, which may not reach the driver's workdir) reads the file but never writes it."""
  path = workdir / "skipgram" / f"seed_{seed}.npz"
  sg = store.load_tree(path)  # None when missing or torn: train it again.
  if sg is not None:
    # The restart truncated the records: write this seed's curve again, as training would.
    steps = sg["pairs"] // config.experiment.batch_pairs // config.experiment.epochs
    for record in sg["curve"][1:] if writer is not None else ():
      writer.write({"step": steps * record["epoch"], "split": "skipgram", "seed": seed,
                    **record})
    return sg
  sg = jax.device_get(train_skipgram(config, corpus, seed, writer))
  if keep and jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    store.save_tree(path, sg)
  return sg


def ppmi_of(config, corpus: Corpus, workdir, keep: bool = True) -> tuple[np.ndarray, float]:
  """(ppmi_svd of the corpus's co-occurrences V x D, the seconds it took), kept in
  WORKDIR/skipgram/ppmi_svd.npz (never pickled) so that a resumed run and every Ray worker
  that reaches the workdir read the same table; keep=False never writes it."""
  path = workdir_lib.as_path(workdir) / "skipgram" / "ppmi_svd.npz"
  saved = store.load_tree(path)
  if saved is None:
    exp = config.experiment
    t0 = time.time()
    table = ppmi_svd(cooccurrence(corpus, exp.window), config.model.embed_dim,
                     exp.noise_power)
    saved = {"table": np.asarray(table), "seconds": time.time() - t0}
    if keep and jax.process_index() == 0:
      path.parent.mkdir(parents=True, exist_ok=True)
      store.save_tree(path, saved)
  return np.asarray(saved["table"]), float(saved["seconds"])


def downstream_experiment(config, workdir, writer=None) -> harness.Experiment:
  """experiment(...) rebuilt from config and the workdir's caches (the corpus, each seed's
  skip-gram table, the PPMI-SVD table): what a Ray worker runs the downstream cells with.
  The runner has computed the caches before the cells; a worker that cannot reach the
  workdir computes them again (functions of the config and seed) and writes nothing."""
  corpus = load_corpus(config)
  seeds = [config.seed + i for i in range(config.experiment.seeds)]
  path = workdir_lib.as_path(workdir)
  sg_tables = {s: np.asarray(skipgram_of_seed(config, corpus, s, path, None, keep=False)
                             ["params"]["v_in"]) for s in seeds}
  return experiment(config, corpus, seeds, sg_tables,
                    ppmi_of(config, corpus, path, keep=False)[0], writer)


def embedding_measures(config, corpus: Corpus, sgs: dict, ppmi_VxD) -> dict[str, Any]:
  """Per seed and summarised (mean, sample std): the related-pair ranks and topic agreement of
  the trained and the untrained tables, the losses, and the same measures of PPMI-SVD."""
  exp = config.experiment
  pairs = [tuple(p) for p in exp.related_pairs]
  seeds = list(sgs)
  per_seed = {}
  for s, sg in sgs.items():
    trained, init = np.asarray(sg["params"]["v_in"]), np.asarray(sg["init"]["v_in"])
    per_seed[s] = {"pairs": {"trained": pair_ranks(trained, corpus.vocab, pairs),
                             "init": pair_ranks(init, corpus.vocab, pairs)},
                   "topics": {"trained": topic_agreement(trained, corpus),
                              "init": topic_agreement(init, corpus)}}
  out = {group: {which: {key: harness.summary([per_seed[s][group][which][key] for s in seeds])
                         for key in per_seed[seeds[0]][group][which] if key != "ranks"}
                 for which in ("trained", "init")} for group in ("pairs", "topics")}
  out["pairs"]["ppmi_svd"] = {key: value for key, value in pair_ranks(
      ppmi_VxD, corpus.vocab, pairs).items() if key != "ranks"}
  out["topics"]["ppmi_svd"] = topic_agreement(ppmi_VxD, corpus)
  curves = {s: sg["curve"] for s, sg in sgs.items()}
  for key, first in (("train_loss", 1), ("heldout_loss", 0)):
    if curves[seeds[0]][-1][key] is not None:
      out[key] = {when: harness.summary([curves[s][i][key] for s in seeds])
                  for when, i in (("first", first), ("last", -1))}
  out["per_seed"] = per_seed
  return out


@report.runner
def run(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  """Trains and measures the skip-gram of every seed, then the downstream task under the
  harness; see the module docstring.

  Returns {"corpus", "skipgram" (per seed: curve, pairs, seconds), "neighbours",
  "embeddings" (embedding_measures), "downstream" (the harness's results or None),
  "wall_time"}.
  """
  t_start = time.time()
  validate(config)
  harness.executor_of(config)
  exp = config.experiment
  corpus = load_corpus(config)
  # Bad query or pair words fail before any training.
  corpus.vocab.ids(list(exp.query_words), "experiment.query_words")
  corpus.vocab.ids([w for p in exp.related_pairs for w in p], "experiment.related_pairs")
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  logging.info("corpus: %d documents, %d training words in a vocabulary of %d (count >= %d); "
               "downstream: %d topics, %d validation and %d test sentences", len(corpus.topics),
               len(corpus.stream), len(corpus.vocab), exp.min_count, len(corpus.classes),
               sum(len(c) for c in corpus.valid), sum(len(c) for c in corpus.test))

  seeds = [config.seed + i for i in range(exp.seeds)]
  sgs = {s: skipgram_of_seed(config, corpus, s, workdir, writer) for s in seeds}
  sg_tables = {s: np.asarray(sg["params"]["v_in"]) for s, sg in sgs.items()}
  ppmi_VxD, ppmi_seconds = ppmi_of(config, corpus, workdir)
  near = neighbours(sg_tables[seeds[0]], corpus.vocab, list(exp.query_words), exp.neighbours)
  for w, row in near.items():
    logging.info("%-12s %s", w, ", ".join(f"{v} {c:.2f}" for v, c in row))
  measures = embedding_measures(config, corpus, sgs, ppmi_VxD)
  logging.info("related pairs: mean percentile %.1f%% (init %.1f%%, PPMI-SVD %.1f%%); topic "
               "agreement of the 10 nearest topic words %.1f%% (init %.1f%%, PPMI-SVD %.1f%%, "
               "chance %.1f%%)",
               100 * measures["pairs"]["trained"]["mean_percentile"]["mean"],
               100 * measures["pairs"]["init"]["mean_percentile"]["mean"],
               100 * measures["pairs"]["ppmi_svd"]["mean_percentile"],
               100 * measures["topics"]["trained"]["agreement"]["mean"],
               100 * measures["topics"]["init"]["agreement"]["mean"],
               100 * measures["topics"]["ppmi_svd"]["agreement"],
               100 * measures["topics"]["trained"]["chance"]["mean"])

  downstream = None
  if tuple(exp.labels_per_topic):
    cells = harness.CellWriter(writer)
    downstream = harness.run_cells(
        config, workdir, cells, downstream_experiment, str(workdir),
        built=experiment(config, corpus, seeds, sg_tables, ppmi_VxD, cells))
  result = {"corpus": {"documents": len(corpus.topics), "training_words": len(corpus.stream),
                       "vocabulary": len(corpus.vocab), "classes": list(corpus.classes),
                       "valid_sentences": sum(len(c) for c in corpus.valid),
                       "test_sentences": sum(len(c) for c in corpus.test),
                       "pool_sentences": [len(c) for c in corpus.pool]},
            "skipgram": {s: {key: sg[key] for key in ("curve", "pairs", "seconds")}
                         for s, sg in sgs.items()},
            "ppmi_seconds": ppmi_seconds, "neighbours": near, "embeddings": measures,
            "downstream": downstream, "wall_time": time.time() - t_start}
  if jax.process_index() == 0:
    write(workdir, config, corpus, result)
    _plot_pca(workdir / "embeddings_pca.png", sg_tables[seeds[0]], corpus, exp.plot_words)
  logging.info("done in %.1f s; results in %s", result["wall_time"], workdir / "results.md")
  return result


FIELDS = [("accuracy", "test acc %", 100.0)]
TITLE = "Embeddings learnt without labels: skip-gram with negative sampling"


def embedding_notes(config, corpus: Corpus, result: dict) -> list[str]:
  """The markdown blocks on what the embeddings learnt (before the downstream table); no
  timings (results.json keeps them), so that a rerun renders the same text."""
  exp = config.experiment
  m = result["embeddings"]
  p, t = m["pairs"], m["topics"]
  sg = list(result["skipgram"].values())
  n = len(sg)
  pct = lambda v: harness.fmt_summary(v) + "%"
  num = lambda v, d=3: harness.fmt_summary(v, 1.0, d)
  heldout = (f"; on the pairs of the held-out sentences {num(m['heldout_loss']['first'])} "
             f"(init) -> {num(m['heldout_loss']['last'])}." if "heldout_loss" in m else ".")
  lines = [
      f"Skip-gram with negative sampling on {len(corpus.topics)} documents "
      f"({result['corpus']['training_words']} training words, vocabulary "
      f"{len(corpus.vocab)}, count >= {exp.min_count}): D={config.model.embed_dim}, window "
      f"{exp.window}, {exp.negatives} noise words from count^{exp.noise_power:g}, subsampling "
      f"t={exp.subsample:g}, {exp.epochs} epochs ({sg[0]['pairs']:,} pairs), "
      f"alpha={exp.alpha:g} per pair, "
      f"grad={config.grad}; one skip-gram per seed, mean ± sample std over n = {n} seeds. "
      f"PPMI-SVD: the co-occurrence counts of the same windows (word2vec's dynamic windows in "
      f"expectation, no subsampling), context distribution smoothed by "
      f"count^{exp.noise_power:g}, truncated SVD U_D sqrt(S_D) to D={config.model.embed_dim} "
      "(no randomness: one table).",
      f"Loss per pair: train {num(m['train_loss']['first'])} (epoch 1) -> "
      f"{num(m['train_loss']['last'])}" + heldout,
      report.markdown_table(
          ["measure", f"skip-gram (n={n})", f"untrained tables (n={n})", "PPMI-SVD", "chance"],
          [{"measure": f"related pairs ({len(exp.related_pairs)}, both directions): mean rank "
                       "percentile",
            f"skip-gram (n={n})": pct(p["trained"]["mean_percentile"]),
            f"untrained tables (n={n})": pct(p["init"]["mean_percentile"]),
            "PPMI-SVD": f"{100 * p['ppmi_svd']['mean_percentile']:.1f}%", "chance": "50%"},
           {"measure": f"related pairs: median rank among {len(corpus.vocab) - 1} words",
            f"skip-gram (n={n})": num(p["trained"]["median_rank"], 1),
            f"untrained tables (n={n})": num(p["init"]["median_rank"], 0),
            "PPMI-SVD": f"{p['ppmi_svd']['median_rank']:.1f}",
            "chance": f"{len(corpus.vocab) / 2:.0f}"},
           {"measure": "related pairs: partner in the 10 nearest",
            f"skip-gram (n={n})": pct(p["trained"]["top10"]),
            f"untrained tables (n={n})": pct(p["init"]["top10"]),
            "PPMI-SVD": f"{100 * p['ppmi_svd']['top10']:.1f}%",
            "chance": f"{100 * p['ppmi_svd']['chance_top10']:.1f}%"},
           {"measure": f"topic words ({t['ppmi_svd']['words']} in {t['ppmi_svd']['topics']} "
                       "topics): 10 nearest share the home topic",
            f"skip-gram (n={n})": pct(t["trained"]["agreement"]),
            f"untrained tables (n={n})": pct(t["init"]["agreement"]),
            "PPMI-SVD": f"{100 * t['ppmi_svd']['agreement']:.1f}%",
            "chance": f"{100 * t['ppmi_svd']['chance']:.1f}%"}]),
      f"Nearest neighbours (cosine) of the query words, skip-gram of seed {config.seed}:",
      report.markdown_table(["word", "neighbours"], [
          {"word": w, "neighbours": ", ".join(f"{v} ({c:.2f})" for v, c in row)}
          for w, row in result["neighbours"].items()])]
  if result["downstream"] is not None:
    lines.append(
        f"Downstream: which of {len(corpus.classes)} topics ({', '.join(corpus.classes)}) a "
        f"sentence comes from, test accuracy on {result['corpus']['test_sentences']} held-out "
        f"sentences (chance {100 / len(corpus.classes):.1f}%). Methods: bow_lr = logistic "
        f"regression on term frequencies over the {len(corpus.vocab)} words; skipgram_frozen / "
        f"ppmi_svd = logistic regression on the mean of the sentence's vectors; skipgram = the "
        f"same with the table fine-tuned; random = a random table (same per-entry std) trained "
        f"from scratch. Each: {config.num_steps} full-batch steps of {config.optimizer.name}, "
        f"learning rate x L2 chosen from {tuple(exp.learning_rates)} x {tuple(exp.l2s)} on "
        f"{result['corpus']['valid_sentences']} validation sentences (held out from the "
        f"skip-gram too).")
  return lines


def write(workdir, config, corpus: Corpus, result: dict) -> None:
  """results.{md,json} (and embeddings_downstream.png) from the result."""
  notes = embedding_notes(config, corpus, result)
  downstream = result["downstream"]
  if downstream is None:  # embeddings only
    report.write_json(workdir / "results.json", result)
    workdir_lib.write_text(workdir / "results.md", "\n\n".join([f"# {TITLE}", *notes]) + "\n")
    return
  # results.json: the harness's results (what its table and plot read) plus the embeddings'.
  harness.write(workdir, {**downstream, **{k: v for k, v in result.items() if k != "downstream"}},
                TITLE, FIELDS, notes)
  harness.plot(workdir / "embeddings_downstream.png", downstream, "accuracy",
               "test accuracy (%)", "Topic of a sentence from few labels: which features?")


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
  explained = s[:2] ** 2 / (s ** 2).sum()  # each component's share of the variance
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
  for j, set_label in enumerate((ax.set_xlabel, ax.set_ylabel)):
    set_label(f"principal component {j + 1} ({100 * explained[j]:.1f}% of the variance)")
  ax.set_title(f"Skip-gram vectors of {len(ids)} frequent words (ranks 21-{20 + len(ids)}), "
               "PCA of the unit vectors", fontsize=10)
  report.save_figure(fig, path)
