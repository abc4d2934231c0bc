"""Skip-gram with negative sampling: the corpus pieces, the sparse hand-written backward pass
against jax.grad, the loss falling, what it learns, its reuse and one-line errors."""
import json
import os
import subprocess
import sys
import types

import processes
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import exp_skipgram
from research import errors
from research import gradcheck
from research import kernel
from research import models
from research.backprop import skipgram as backprop_sg
from research.data import words
from research.experiments import embeddings
from research.models import bag_of_embeddings as bag_of_embeddings_lib
from research.models import skipgram


# ---------------------------------------------------------------------------------- corpus


def test_tokenize_and_sentences():
  assert words.tokenize("The __init__() method, x2 = 3.5!") == ["the", "__init__", "method",
                                                                 "x2"]
  assert words.split_sentences("One two. Three?\n\nFour") == ["One two.", "Three?", "Four"]


def test_pydoc_documents_keep_each_paragraph_once():
  docs = dict(words.documents())
  paragraphs = [p for text in docs.values() for p in text.split("\n\n")]
  assert len(paragraphs) == len(set(paragraphs))
  # "compound" repeats the "if" topic (and "else" is a copy of "if"): its paragraphs stay in
  # the smallest topic, ties going to the first name.
  line = 'The "if" statement is used for conditional execution:'
  assert [name for name, text in docs.items() if line in text] == ["else"]
  assert 45_000 < sum(len(words.tokenize(t)) for t in docs.values()) < 60_000


def test_vocabulary_subsampling_and_noise_distribution():
  vocab = words.build_vocabulary([["a", "b", "a", "c"], ["a", "b", "d"]], min_count=2)
  assert vocab.words == ("a", "b") and vocab.counts.tolist() == [3, 2]
  np.testing.assert_array_equal(vocab.encode(["b", "zzz", "a"]), [1, 0])
  with pytest.raises(errors.ConfigError, match="'c' is not in the vocabulary of 2 words"):
    vocab.ids(["a", "c"], "experiment.query_words")
  counts = np.array([900, 90, 9, 1])
  keep = words.keep_probability(counts, 1e-2)
  np.testing.assert_allclose(keep, np.minimum(1, np.sqrt(1e-2 / (counts / 1000))))
  assert keep[0] < keep[1] < keep[2] == keep[3] == 1.0
  p = words.noise_distribution(counts)
  assert p.sum() == pytest.approx(1.0)
  assert p[0] / p[3] == pytest.approx(900 ** 0.75)


def test_pairs_stay_in_their_document_and_window():
  ids = np.arange(10, dtype=np.int32)
  segment = np.array([0] * 6 + [1] * 4)
  pairs = words.skipgram_pairs(ids, segment, 2, np.random.default_rng(0))
  assert len(pairs) and (segment[pairs[:, 0]] == segment[pairs[:, 1]]).all()
  gap = np.abs(pairs[:, 0] - pairs[:, 1])
  assert gap.min() == 1 and gap.max() <= 2
  one = words.skipgram_pairs(ids, segment, 1, np.random.default_rng(0))
  assert sorted(map(tuple, one.tolist())) == sorted(
      [(i, i + 1) for i in range(9) if i != 5] + [(i + 1, i) for i in range(9) if i != 5])


# ----------------------------------------------------------------------- the backward pass


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_manual_gradient_agrees_with_dense_autodiff(dtype):
  rows = gradcheck.check_model("skipgram", dtype, batch=16)
  assert [r.path for r in rows] == ["['v_in']", "['v_out']"]
  assert all(r.ok for r in rows), rows


def _sgd_problem():
  key_p, key_c, key_o = jax.random.split(jax.random.key(3), 3)
  params = {"v_in": jax.random.normal(key_p, (30, 4)), "v_out": jax.random.normal(key_o, (30, 4))}
  center = jax.random.randint(key_c, (6,), 0, 10)   # rows 10..29 are never used
  context = jax.random.randint(jax.random.fold_in(key_c, 1), (6, 3), 0, 10)
  return params, center, context


def test_sparse_sgd_step_is_the_dense_step_and_leaves_other_rows_alone():
  params, center, context = _sgd_problem()
  E, sparse = jax.jit(backprop_sg.value_and_sparse_grad)(params, center, context)
  assert float(E) == pytest.approx(float(jax.jit(skipgram.loss)(params, center, context)),
                                   rel=1e-6)
  assert sparse["v_in"][1].shape == (6, 4) and sparse["v_out"][1].shape == (6, 3, 4)
  sparse_step = jax.jit(backprop_sg.sgd_rows)(params, sparse, 0.5)
  dense = jax.jit(jax.grad(skipgram.loss))(params, center, context)
  for name in params:
    np.testing.assert_allclose(sparse_step[name], params[name] - 0.5 * dense[name], atol=1e-6)
    np.testing.assert_array_equal(sparse_step[name][10:], params[name][10:])


def test_noise_sampling_follows_the_distribution():
  p = np.array([0.5, 0.3, 0.2, 0.0])
  draws = skipgram.sample_noise(jax.random.key(0), jnp.asarray(np.cumsum(p), jnp.float32),
                                (20000,))
  freq = np.bincount(np.asarray(draws), minlength=4) / 20000
  np.testing.assert_allclose(freq, p, atol=0.015)


# ------------------------------------------------------------------------------ the runner


def _small(**fields):
  config = exp_skipgram.get_config()
  config.model.embed_dim = 16
  config.experiment.update(dict(epochs=3, seeds=2, labels_per_topic=(5,),
                                methods=("bow_lr", "skipgram_frozen"), baseline="bow_lr",
                                learning_rates=(0.03,), l2s=(0.0,), max_extensions=0))
  config.num_steps, config.eval_every = 100, 100
  config.update(fields)
  return config


@pytest.fixture(scope="module")
def corpus():
  return embeddings.load_corpus(_small())


def test_corpus_holds_out_test_sentences_from_the_skipgram(corpus):
  assert len(corpus.classes) == 8 and all(len(c) == 40 for c in corpus.test)
  assert all(len(c) == 20 for c in corpus.valid)
  # Test, validation and the labelled pool split each topic's eligible sentences (the text
  # repeats a few sentences, so the check counts them rather than comparing their words).
  docs = dict(words.documents())
  for name, pool, valid, test in zip(corpus.classes, corpus.pool, corpus.valid, corpus.test):
    eligible = [s for s in words.split_sentences(docs[name]) if len(words.tokenize(s)) >= 5]
    assert len(pool) + len(valid) + len(test) == len(eligible)
  assert 38_000 < len(corpus.stream) < 46_000 and 1000 < len(corpus.vocab) < 1300
  # The held-out text is not in the training stream: its words' counts come from the rest.
  assert len(corpus.heldout_stream) > 3000
  assert corpus.vocab.counts.sum() == len(corpus.stream)


@pytest.mark.slow
def test_skipgram_loss_falls(corpus):
  curve = embeddings.train_skipgram(_small(), corpus, seed=0)["curve"]
  assert curve[-1]["train_loss"] < curve[1]["train_loss"] - 0.2
  assert curve[-1]["heldout_loss"] < curve[0]["heldout_loss"] - 0.8  # 6 log 2 = 4.16 at init


@pytest.mark.slow
def test_manual_sparse_and_autodiff_dense_training_agree(corpus):
  config = _small()
  config.experiment.epochs = 1
  trained = {}
  for grad in ("manual", "autodiff"):
    config.grad = grad
    trained[grad] = embeddings.train_skipgram(config, corpus, seed=0)["params"]
  for name in ("v_in", "v_out"):
    np.testing.assert_allclose(trained["manual"][name], trained["autodiff"][name], atol=2e-5)


@pytest.mark.slow
def test_related_pairs_and_topics_beat_chance_after_training(corpus):
  config = _small()
  config.model.embed_dim, config.experiment.epochs = 32, 10
  sg = embeddings.train_skipgram(config, corpus, seed=0)
  pairs = [tuple(p) for p in config.experiment.related_pairs]
  trained = np.asarray(sg["params"]["v_in"])
  ranks = embeddings.pair_ranks(trained, corpus.vocab, pairs)
  assert ranks["mean_percentile"] < 0.15  # chance 0.5; measured: 0.07
  topics = embeddings.topic_agreement(trained, corpus)
  assert topics["agreement"] > 3 * topics["chance"]  # measured: 42% vs 6.3%
  near = embeddings.neighbours(trained, corpus.vocab, ["breakpoint"], 5)
  assert len(near["breakpoint"]) == 5 and "breakpoint" not in dict(near["breakpoint"])


def test_bag_of_embeddings_means_the_real_words_and_can_freeze_the_table():
  cfg = ml_collections.ConfigDict(dict(name="bag_of_embeddings", vocab_size=5, embed_dim=3,
                                       freeze_embeddings=False))
  model = models.build(cfg, (4,), 2)
  params = model.init(jax.random.key(0))
  ids = jnp.array([[1, 3, -1, -1], [2, -1, -1, -1]])
  table = params["embed"]["table"]
  expected = jnp.stack([(table[1] + table[3]) / 2, table[2]]) @ params["head"]["w"]
  np.testing.assert_allclose(model.apply(params, ids), expected + params["head"]["b"], atol=1e-6)
  loss = lambda m: lambda p: m.apply(p, ids).sum()
  assert float(jnp.abs(jax.grad(loss(model))(params)["embed"]["table"]).sum()) > 0
  cfg.freeze_embeddings = True
  frozen = models.build(cfg, (4,), 2)
  assert float(jnp.abs(jax.grad(loss(frozen))(params)["embed"]["table"]).sum()) == 0


# ------------------------------------------------------------------------------- downstream


def test_bag_of_words_and_mean_vectors_read_only_the_real_words():
  ids = np.array([[1, 3, 1, -1], [-1, -1, -1, -1]], np.int32)
  tf = embeddings.bag_of_words(ids, 4)
  np.testing.assert_allclose(tf, [[0, 2 / 3, 0, 1 / 3], [0, 0, 0, 0]])
  table = np.arange(8, dtype=np.float32).reshape(4, 2)
  np.testing.assert_allclose(embeddings.mean_vectors(table, ids),
                             bag_of_embeddings_lib.mean_embedding(
                                 jnp.asarray(table), jnp.asarray(ids)), atol=1e-6)


def test_cooccurrence_weights_windows_and_stays_in_documents():
  corpus = types.SimpleNamespace(vocab=[0] * 4, stream=np.array([0, 1, 2, 3, 0], np.int32),
                                 segment=np.array([0, 0, 0, 1, 1], np.int32))
  counts = embeddings.cooccurrence(corpus, 2)
  expected = np.zeros((4, 4))
  for a, b, w in ((0, 1, 1.0), (1, 2, 1.0), (0, 2, 0.5), (3, 0, 1.0)):
    expected[a, b] += w
    expected[b, a] += w
  np.testing.assert_allclose(counts, expected)


def test_ppmi_svd_is_the_truncated_svd_of_the_smoothed_ppmi():
  counts = np.array([[0, 4, 1], [4, 0, 2], [1, 2, 6]], np.float64)
  table = embeddings.ppmi_svd(counts, 2, 0.75)
  total = counts.sum()
  p_c = counts.sum(0) ** 0.75 / (counts.sum(0) ** 0.75).sum()
  ppmi = np.zeros_like(counts)
  for w in range(3):
    for c in range(3):
      if counts[w, c]:
        ppmi[w, c] = max(0.0, np.log(counts[w, c] / total / (counts[w].sum() / total * p_c[c])))
  u, s, _ = np.linalg.svd(ppmi)
  np.testing.assert_allclose(table, u[:, :2] * np.sqrt(s[:2]), atol=1e-6)
  assert table.shape == (3, 2) and table.dtype == np.float32


def test_with_tables_starts_each_seed_from_its_table():
  cfg = ml_collections.ConfigDict(dict(name="bag_of_embeddings", vocab_size=5, embed_dim=3,
                                       freeze_embeddings=False))
  bag = models.build(cfg, (4,), 2)
  tables = {s: np.full((5, 3), float(s), np.float32) for s in (3, 4)}
  model = embeddings.with_tables(bag, tables)
  optimizer = optax.sgd(0.1)
  for s in (3, 4):
    state = kernel.init_state(model, optimizer, jax.random.key(s))
    np.testing.assert_array_equal(state["params"]["embed"]["table"], tables[s])
  with pytest.raises(ValueError, match="not derived from one of the seeds"):
    kernel.init_state(model, optimizer, jax.random.key(5))


@pytest.mark.slow
def test_tfidf_is_scikit_learns_and_the_fitted_classifier_predicts_as_it_does(corpus):
  """The features are TfidfTransformer's (smooth idf, L2 rows) fitted on the pool, and the
  linear model with fit_logistic_regression's params gives LogisticRegression's outputs."""
  from sklearn.feature_extraction.text import TfidfTransformer
  from sklearn.linear_model import LogisticRegression
  v, k = len(corpus.vocab), len(corpus.classes)
  pool = embeddings.labelled(corpus.pool, 48)
  test = embeddings.labelled(corpus.test, 48)
  counts = lambda ids: np.stack([np.bincount(r[r >= 0], minlength=v) for r in ids])
  ref = TfidfTransformer().fit(counts(pool.x))
  idf = embeddings.inverse_document_frequency(pool.x, v)
  np.testing.assert_allclose(idf, ref.idf_, rtol=1e-5)
  x_test = embeddings.tfidf(test.x, idf)
  np.testing.assert_allclose(x_test, ref.transform(counts(test.x)).toarray(), rtol=1e-5,
                             atol=1e-6)
  x_pool = embeddings.tfidf(pool.x, idf)
  params = embeddings.fit_logistic_regression(x_pool, pool.y, k, 10.0)
  logits = embeddings.linear_model(v, k).apply(params, jnp.asarray(x_test))
  clf = LogisticRegression(C=10.0, max_iter=10_000, tol=1e-6).fit(x_pool, pool.y)
  np.testing.assert_allclose(jax.nn.softmax(logits), clf.predict_proba(x_test), atol=1e-4)
  # Two classes: scikit-learn's one-row form becomes two logits with the same softmax.
  two = pool.y < 2
  params2 = embeddings.fit_logistic_regression(x_pool[two], pool.y[two], k, 10.0)
  clf2 = LogisticRegression(C=10.0, max_iter=10_000, tol=1e-6).fit(x_pool[two], pool.y[two])
  p2 = jax.nn.softmax(embeddings.linear_model(v, k).apply(params2, jnp.asarray(x_test)))
  np.testing.assert_allclose(p2[:, :2], clf2.predict_proba(x_test), atol=1e-4)


def test_runner_under_the_harness_writes_its_documents_and_resumes(tmp_path):
  config = _small()
  config.model.embed_dim = 50
  config.experiment.update(dict(epochs=10, methods=("bow_lr", "tfidf_lr", "skipgram_frozen",
                                                   "ppmi_svd"),
                                learning_rates=(0.01, 0.03), tfidf_Cs=(3.0, 30.0),
                                baseline="tfidf_lr"))
  out = embeddings.run(config, str(tmp_path))
  for name in ("results.md", "results.json", "metrics.jsonl", "embeddings_pca.png",
               "embeddings_downstream.png"):
    assert os.path.getsize(tmp_path / name) > 0, name
  arms = out["downstream"]["sizes"][0]["arms"]
  assert set(arms) == {"bow_lr", "tfidf_lr", "skipgram_frozen", "ppmi_svd"}
  assert all(len(arm["grid"]) == 2 and len(arm["test"]) == 2 for arm in arms.values())
  # Measured at 5 labels per topic: PPMI-SVD 55%, bag of words 32% (the test's 2 seeds).
  ppmi, bow = (arms[m]["stats"]["accuracy"]["mean"] for m in ("ppmi_svd", "bow_lr"))
  assert ppmi > bow + 0.05, (ppmi, bow)
  # The converged TF-IDF baseline is the stronger of the two bag-of-words classifiers.
  assert arms["tfidf_lr"]["stats"]["accuracy"]["mean"] > bow, arms["tfidf_lr"]["stats"]
  text = (tmp_path / "results.md").read_text()
  assert "| breakpoint |" in text and "Δ vs tfidf_lr" in text and "PPMI-SVD" in text
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert saved["embeddings"]["pairs"]["ppmi_svd"]["mean_percentile"] < 0.15
  assert saved["embeddings"]["pairs"]["trained"]["mean_percentile"]["n"] == 2
  # A finished run does nothing on rerun; an interrupted one reuses the skip-grams and cells.
  assert embeddings.run(config, str(tmp_path))["finished"]
  os.remove(tmp_path / "finished.json")
  cells = (tmp_path / "harness" / "cells.jsonl").read_text()
  again = embeddings.run(config, str(tmp_path))
  assert (tmp_path / "harness" / "cells.jsonl").read_text() == cells
  assert again["downstream"]["sizes"] == out["downstream"]["sizes"]


# ------------------------------------------------------------------------------- bad input


def test_unknown_query_word_and_too_short_corpus_are_one_line_config_errors(tmp_path, corpus):
  with pytest.raises(errors.ConfigError) as info:
    corpus.vocab.ids(["list", "frobnicate"], "experiment.query_words")
  assert "config.experiment.query_words: 'frobnicate' is not in the vocabulary" in str(
      info.value) and "\n" not in str(info.value)
  short = tmp_path / "short.txt"
  short.write_text("alpha beta gamma alpha.\n\nbeta gamma.\n")
  config = _small()
  config.data.path = str(short)
  config.experiment.update(dict(min_count=1, window=5, num_topics=2, test_per_topic=1,
                                labels_per_topic=(1,), min_words=1))
  with pytest.raises(errors.ConfigError) as info:
    embeddings.load_corpus(config)
  assert "the 2th largest has 1 sentences" in str(info.value)
  config.experiment.labels_per_topic = ()  # embeddings only: no held-out sentences
  with pytest.raises(errors.ConfigError) as info:
    embeddings.load_corpus(config)
  message = str(info.value)
  assert "too few for config.experiment.window=5" in message and "\n" not in message
  config.experiment.window = 2
  assert len(embeddings.load_corpus(config).stream) == 6


def test_bad_fields_are_config_errors():
  config = _small()
  config.experiment.window = 0
  with pytest.raises(errors.ConfigError, match="config.experiment.window=0 must be an integer"):
    embeddings.validate(config)
  config = _small()
  config.experiment.methods = ("random", "glove")
  with pytest.raises(errors.ConfigError, match=r"experiment.methods\[1\]='glove'"):
    embeddings.validate(config)
  config = _small()
  config.experiment.baseline = "random"  # not among the methods
  with pytest.raises(errors.ConfigError, match="experiment.baseline"):
    embeddings.validate(config)
  config = _small()
  config.experiment.l2s = (0.0, -1.0)
  with pytest.raises(errors.ConfigError, match=r"config.experiment.l2s holds -1.0"):
    embeddings.validate(config)
  config = exp_skipgram.get_config()
  config.experiment.tfidf_Cs = (1.0, 10.0)
  with pytest.raises(errors.ConfigError, match=r"tfidf_Cs has 2 values but the other methods "
                                               r"choose from 5 x 2 = 10 settings"):
    embeddings.validate(config)
  config = exp_skipgram.get_config()
  config.experiment.l2s = (0.0, -1.0)
  with pytest.raises(errors.ConfigError, match=r"config.experiment.l2s holds -1.0"):
    embeddings.validate(config)


@pytest.mark.slow
def test_cli_unknown_query_word_exits_2_with_one_line(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "-m", "research.main", "--config=configs/exp_skipgram.py",
       "--config.experiment.query_words=('list', 'frobnicate')",
       f"--workdir={tmp_path / 'run'}"],
      cwd=repo, env=dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=processes.GUARD_S)
  assert result.returncode == 2, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "'frobnicate' is not in the vocabulary" in lines[0], result.stderr
  assert "Traceback" not in result.stderr
