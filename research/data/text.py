"""Characters for next-character language models.

The corpus is the standard library's pydoc_data.topics (Python's own help texts, about
465,000 characters, so it is always there), or a UTF-8 text file named by config.data.path
(e.g. a Shakespeare corpus). The vocabulary is the sorted set of the corpus's characters,
computed on the fly (nothing is written to disk). The text is split into contiguous
train / valid / test ranges, in that order, so no window straddles two splits, and each
split becomes windows x_NxT of character ids with targets y_NxT = the next characters.
"""
import os
from typing import Callable

import ml_collections
import numpy as np

from research import config_lib
from research import errors
from research.data import core


def config(**overrides) -> ml_collections.ConfigDict:
  """config.data for a character-level corpus."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "text"
  cfg.path = ""                # a UTF-8 text file; "" = pydoc_data.topics (always available)
  cfg.seq_len = 64             # T: characters per example (the model sees x_NxT, predicts y_NxT)
  cfg.stride = 0               # characters between window starts; 0 = seq_len (no overlap)
  cfg.valid_fraction = 0.05    # the contiguous range after the training text
  cfg.test_fraction = 0.05     # the contiguous range at the end of the text
  cfg.update(overrides)
  return cfg


def read_corpus(path: str = "") -> str:
  """The text of `path`, or pydoc_data.topics' topic strings joined in sorted key order."""
  if not path:
    from pydoc_data import topics
    return "".join(topics.topics[k] for k in sorted(topics.topics))
  try:
    with open(os.path.expanduser(path), encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise errors.DataError(
        f"config.data.path={path!r} does not exist; give a UTF-8 text file, or '' for the "
        "built-in pydoc corpus")
  except UnicodeDecodeError as e:
    raise errors.DataError(f"config.data.path={path!r} is not UTF-8 text ({e}); re-encode it")
  if not text:
    raise errors.DataError(f"config.data.path={path!r} is empty; give a non-empty text file")
  return text


def _code_points(s: str) -> np.ndarray:
  return np.frombuffer(s.encode("utf-32-le"), "<u4")


def vocabulary(text: str) -> tuple[str, Callable[[str], np.ndarray], Callable]:
  """(chars, encode, decode): chars is the sorted unique characters, char id = its index.

  encode(str) -> int32 ids of shape (len,); decode(ids) -> str, for any int array shape
  flattened in order (e.g. sampled ids).
  """
  chars = "".join(sorted(set(text)))
  codes_V = _code_points(chars)

  def encode(s: str) -> np.ndarray:
    codes = _code_points(s)
    ids = np.searchsorted(codes_V, codes).clip(max=len(chars) - 1)
    unknown = codes_V[ids] != codes
    if unknown.any():
      raise errors.DataError(
          f"character {s[int(np.argmax(unknown))]!r} is not in the corpus's vocabulary")
    return ids.astype(np.int32)

  def decode(ids) -> str:
    return "".join(chars[i] for i in np.asarray(ids).reshape(-1))

  return chars, encode, decode


def vocab(cfg) -> tuple[str, Callable, Callable]:
  """`vocabulary` of the corpus that cfg (config.data) names: for sampling from a model."""
  return vocabulary(read_corpus(cfg.path))


def split_ranges(n: int, valid_fraction: float, test_fraction: float) -> tuple[slice, ...]:
  """Contiguous (train, valid, test) slices of a length-n text, in that order."""
  for field, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
    if not 0 <= frac < 1:
      raise errors.ConfigError(f"config.data.{field}={frac!r} must be in [0, 1)")
  if valid_fraction + test_fraction >= 1:
    raise errors.ConfigError("config.data.valid_fraction + test_fraction must be < 1")
  n_valid, n_test = int(round(n * valid_fraction)), int(round(n * test_fraction))
  n_train = n - n_valid - n_test
  return slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, n)


def windows(ids: np.ndarray, seq_len: int, stride: int) -> core.Split:
  """x_NxT = ids[s:s+T], y_NxT = ids[s+1:s+T+1] for s = 0, stride, 2*stride, ..."""
  if len(ids) < seq_len + 1:
    return core.Split(np.zeros((0, seq_len), np.int32), np.zeros((0, seq_len), np.int32))
  all_NxT1 = np.lib.stride_tricks.sliding_window_view(ids, seq_len + 1)[::stride]
  return core.Split(np.ascontiguousarray(all_NxT1[:, :-1]),
                    np.ascontiguousarray(all_NxT1[:, 1:]))


def _stride(cfg) -> int:
  """The stride between windows (0 = seq_len, no overlap), after the group's declared ranges."""
  config_lib.check_group(cfg, "data")
  return cfg.stride or cfg.seq_len


@core.register("text")
def text(cfg) -> core.Dataset:
  """Next-character prediction: Split.x and Split.y are int32 (N, T); K = vocabulary size."""
  stride = _stride(cfg)
  corpus = read_corpus(cfg.path)
  chars, encode, _ = vocabulary(corpus)
  ids = encode(corpus)
  ranges = split_ranges(len(ids), cfg.valid_fraction, cfg.test_fraction)
  splits = [windows(ids[r], cfg.seq_len, stride) for r in ranges]
  for split_name, r, split in zip(("train", "valid", "test"), ranges, splits):
    if len(split) == 0 and r.stop > r.start:  # A fraction of 0 may leave a split empty.
      raise errors.ConfigError(
          f"the {split_name} split has {r.stop - r.start} characters, fewer than "
          f"config.data.seq_len + 1 = {cfg.seq_len + 1}; lower seq_len or raise its fraction")
  return core.Dataset("text", *splits, num_classes=len(chars))


def unigram_cross_entropy(fit_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
  """Nats per character of eval_ids under fit_ids' character frequencies (add-one smoothed).

  The loss of a model that ignores all context; with fit_ids = eval_ids and no smoothing it
  would be the entropy -sum_c p_c log p_c of eval_ids' own character distribution.
  """
  counts_V = np.bincount(fit_ids, minlength=vocab_size) + 1.0
  log_p_V = np.log(counts_V / counts_V.sum())
  return float(-log_p_V[eval_ids].mean())


def unigram_entropy(cfg) -> float:
  """The baseline for a character LM's validation loss, in nats per character.

  The cross-entropy of the validation text under the training text's character
  frequencies (`unigram_cross_entropy`): a model that beats it has learnt to use context.
  Compare with the LM's loss, also in nats per character (divide by ln 2 for bits).
  """
  corpus = read_corpus(cfg.path)
  chars, encode, _ = vocabulary(corpus)
  ids = encode(corpus)
  train, valid, _ = split_ranges(len(ids), cfg.valid_fraction, cfg.test_fraction)
  if valid.stop == valid.start:
    raise errors.ConfigError("config.data.valid_fraction=0 leaves no validation text")
  return unigram_cross_entropy(ids[train], ids[valid], len(chars))
