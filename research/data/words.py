"""Words of a documentation corpus, for embeddings learnt without labels (word2vec's data side,
Mikolov et al. 2013), as plain NumPy: documents, sentences, a vocabulary, the subsampling of
frequent words, the noise distribution and the (center, context) pairs of the skip-gram.

The corpus is the standard library's pydoc_data.topics: Python's help texts, one document per
topic ("if", "formatstrings", "debugger", ...). The topics overlap (the "compound" statement
topic repeats the "if", "while", "for" topics word for word), so each paragraph is kept once,
in the smallest topic that holds it: about 50,000 words in 79 documents. With
config.data.path a UTF-8 text file is read instead, one document per blank-line-separated
paragraph.

This module is not a registered loader of research.data (it makes no classification
Dataset); research/experiments/embeddings.py reads it directly.
"""
import dataclasses
import os
import re

import numpy as np

from research import errors

_WORD = re.compile(r"[a-z_][a-z0-9_]*")
# A sentence ends at . ! or ? followed by white space, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def tokenize(text: str) -> list[str]:
  """Lower-case words: a letter or _ then letters, digits or _ (identifiers like __init__
  stay whole; punctuation and numbers are dropped)."""
  return _WORD.findall(text.lower())


def split_sentences(text: str) -> list[str]:
  return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def documents(path: str = "") -> list[tuple[str, str]]:
  """[(name, text)]: the deduplicated pydoc topics in sorted order, or a file's paragraphs."""
  if path:
    try:
      with open(os.path.expanduser(path), encoding="utf-8") as f:
        text = f.read()
    except FileNotFoundError:
      raise errors.DataError(f"config.data.path={path!r} does not exist; give a UTF-8 text "
                             "file, or '' for the built-in pydoc corpus") from None
    except UnicodeDecodeError as e:
      raise errors.DataError(f"config.data.path={path!r} is not UTF-8 text ({e}); re-encode "
                             "it") from None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [(f"paragraph {i}", p) for i, p in enumerate(paragraphs)]
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  texts = topics.topics
  owners: dict[str, list[str]] = {}
  for name in sorted(texts):
    for paragraph in re.split(r"\n\s*\n", texts[name]):
      paragraph = paragraph.strip()
      if paragraph:
        owners.setdefault(paragraph, []).append(name)
  kept: dict[str, list[str]] = {name: [] for name in sorted(texts)}
  for paragraph, names in owners.items():  # insertion order: each topic's own order
    kept[min(names, key=lambda n: (len(texts[n]), n))].append(paragraph)
  return [(name, "\n\n".join(ps)) for name, ps in kept.items() if ps]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  words: tuple[str, ...]   # id -> word, most frequent first (ties alphabetical)
  counts: np.ndarray       # id -> count in the corpus it was built from, int64

  def __len__(self) -> int:
    return len(self.words)

  @property
  def index(self) -> dict[str, int]:
    return {w: i for i, w in enumerate(self.words)}

  def encode(self, tokens: list[str]) -> np.ndarray:
    """Ids of the tokens in the vocabulary, out-of-vocabulary tokens dropped (as word2vec)."""
    index = self.index
    return np.array([index[t] for t in tokens if t in index], np.int32)

  def ids(self, words, field: str) -> np.ndarray:
    """Ids of `words`; a DataError naming `field` and the word for one not in it."""
    index = self.index
    for w in words:
      if w not in index:
        close = [v for v in self.words if v.startswith(w[:3])][:5]
        raise errors.ConfigError(
            f"config.{field}: {w!r} is not in the vocabulary of {len(self)} words (count >= "
            f"min_count in the training text){'; similar: ' + ', '.join(close) if close else ''}"
            "; remove it or lower config.experiment.min_count")
    return np.array([index[w] for w in words], np.int32)


def build_vocabulary(token_lists, min_count: int) -> Vocabulary:
  """Every word occurring at least min_count times, most frequent first."""
  counts: dict[str, int] = {}
  for tokens in token_lists:
    for t in tokens:
      counts[t] = counts.get(t, 0) + 1
  kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
  return Vocabulary(tuple(kept), np.array([counts[w] for w in kept], np.int64))


def keep_probability(counts_V: np.ndarray, t: float) -> np.ndarray:
  """The paper's subsampling: word w is discarded with probability 1 - sqrt(t / f(w)), f its
  frequency; kept with min(1, sqrt(t / f)). t = 0 keeps every word."""
  if t == 0:
    return np.ones(len(counts_V))
  f_V = counts_V / counts_V.sum()
  return np.minimum(1.0, np.sqrt(t / f_V))


def noise_distribution(counts_V: np.ndarray, power: float = 0.75) -> np.ndarray:
  """P_n(w) = count(w)^power / sum_v count(v)^power, the paper's unigram^(3/4)."""
  p = counts_V.astype(np.float64) ** power
  return p / p.sum()


def skipgram_pairs(ids_N: np.ndarray, segment_N: np.ndarray, window: int,
                   rng: np.random.Generator) -> np.ndarray:
  """pairs_Px2 of (center, context) ids: for each position i a window b_i ~ U{1..window}
  (word2vec's dynamic window: near words are sampled more often) and every j with
  0 < |i - j| <= b_i in the same segment (a document: windows never cross documents)."""
  n = len(ids_N)
  b_N = rng.integers(1, window + 1, n)
  centers, contexts = [], []
  for d in range(1, window + 1):
    i = np.arange(n - d)
    same = segment_N[i] == segment_N[i + d]
    right = same & (d <= b_N[i])          # i sees i + d
    left = same & (d <= b_N[i + d])       # i + d sees i
    centers += [ids_N[i[right]], ids_N[i[left] + d]]
    contexts += [ids_N[i[right] + d], ids_N[i[left]]]
  if not centers:
    return np.zeros((0, 2), np.int32)
  return np.stack([np.concatenate(centers), np.concatenate(contexts)], axis=1).astype(np.int32)
