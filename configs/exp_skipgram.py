"""Word embeddings learnt without labels (skip-gram), then reused by a few-label classifier.

Skip-gram with negative sampling on the standard library's pydoc topics, measured, and reused
by a few-label topic classifier (research/experiments/embeddings.py).

  python -m research.main --config=configs/exp_skipgram.py --workdir=/tmp/skipgram

Every method is compared with the strongest cheap baseline, TF-IDF logistic regression fitted
to convergence (tfidf_lr); docs/experiments.md section 8 holds the measured tables.
"""
import ml_collections

from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(trainer="embeddings", batch_size=400, num_steps=300,
                           log_every=100, eval_every=100, eval_batch_size=1024, grad="manual")
  # grad: manual = the hand-written skip-gram pass, SGD on the rows of the batch's words only;
  # autodiff = jax.grad's dense V x D gradient. batch_size, num_steps, optimizer and loss are
  # the downstream classifier's (batch capped at the labelled set: full batch here).
  config.data = ml_collections.ConfigDict(dict(
      name="words",            # research/data/words.py (not a registered classifier loader)
      path="",                 # a UTF-8 text file (one document per paragraph); "" = pydoc
      split_seed=0,            # which sentences of each topic are held out for the test
  ))
  # The downstream classifier: the mean of the word vectors -> dense.
  config.model = model_configs.bag_of_embeddings(
      vocab_size=0,            # set by the runner from the corpus's vocabulary
      embed_dim=50,            # D of the skip-gram's vectors and the classifier's table
      freeze_embeddings=False,  # set by the runner per table (skipgram_frozen: True)
  )
  config.loss = config_lib.loss("softmax", l2=0.0)
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=0.01)
  config.experiment = ml_collections.ConfigDict(dict(
      # The skip-gram.
      min_count=5,             # vocabulary: words occurring at least this often
      epochs=30,               # passes over the (subsampled) training text
      window=5,                # dynamic window: b ~ U{1..window} words on each side
      negatives=5,             # K noise words per (center, context) pair
      noise_power=0.75,        # P_n(w) ~ count(w)^noise_power (the paper's 3/4)
      subsample=1e-3,          # t: word w kept with probability min(1, sqrt(t / f(w)))
      batch_pairs=256,         # B pairs per SGD step
      alpha=0.025,             # word2vec's step per pair, decayed linearly to 0; the step on
                               # the batch-mean gradient is alpha * B
      # What it learnt.
      query_words=("list", "dict", "int", "exception", "class", "import", "string",
                   "true", "breakpoint", "format", "iterator", "lambda"),
      neighbours=8,            # nearest words printed per query word
      # Related pairs, written down before any training; all in the vocabulary.
      related_pairs=(("list", "tuple"), ("int", "float"), ("true", "false"),
                     ("key", "value"), ("keys", "values"), ("class", "instance"),
                     ("method", "function"), ("exception", "raised"), ("import", "module"),
                     ("str", "bytes"), ("integer", "float"), ("start", "end"),
                     ("left", "right"), ("lower", "upper"), ("first", "last"),
                     ("break", "continue"), ("try", "except"), ("dict", "mapping"),
                     ("yield", "generator"), ("async", "await"), ("global", "nonlocal"),
                     ("breakpoint", "debugger"), ("width", "precision"),
                     ("iterator", "iterable"), ("positional", "keyword"),
                     ("local", "global"), ("add", "remove"), ("step", "next")),
      plot_words=300,          # frequent words in the PCA plot
      # Reuse: which topic a sentence comes from.
      num_topics=8,            # the topics with the most sentences are the classes
      test_per_topic=40,       # held-out sentences per topic (never seen by the skip-gram)
      min_words=5,             # sentences shorter than this are not used downstream
      max_words=48,            # longer sentences are cut to this many words
      valid_per_topic=20,      # validation sentences per topic (held out like the test)
      labels_per_topic=(1, 5, 20, 50),  # labelled training sentences per topic
      # bow_lr: logistic regression on term frequencies (tfidf_lr: on TF-IDF, converged);
      # skipgram_frozen / ppmi_svd: on mean
      # vectors; skipgram: the table fine-tuned; random: a random table trained.
      methods=("bow_lr", "tfidf_lr", "skipgram_frozen", "skipgram", "random", "ppmi_svd"),
      baseline="tfidf_lr",     # the arm every other is compared with, paired over seeds: the
                               # strongest cheap baseline
      seeds=5,                 # config.seed, +1, ...: skip-gram, labelled set, inits
      # Every method's grid, learning rate x L2 (lambda in lambda/2m sum w^2), chosen on the
      # validation sentences.
      learning_rates=(0.003, 0.01, 0.03, 0.1, 0.3),
      l2s=(0.0, 0.3),
      # tfidf_lr: logistic regression on TF-IDF fitted to convergence; its inverse strength
      # C, as many candidates as the grid above (the same budget).
      tfidf_Cs=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0),
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
  ))
  return config
