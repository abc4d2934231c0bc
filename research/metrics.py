"""Metrics of a run: JSON lines in workdir/metrics.jsonl plus TensorBoard event files.

  writer = MetricWriter(workdir)
  writer.write({"step": 250, "split": "train", "loss": 0.31, "accuracy": 0.92})
  writer.close()
  read_metrics(workdir) -> [{"step": 250, "split": "train", ...}, ...]

metrics.jsonl is the record the tools read (research.plot, launch/sweep.py); the event files,
with scalars named "<split>/<key>" (e.g. "valid/accuracy"), are for `tensorboard --logdir`.
Only process 0 writes, so a multi-host run produces one copy.
"""
import json
import numbers
import os

import jax
import numpy as np
from absl import logging

from research import errors

FILENAME = "metrics.jsonl"


class MetricWriter:
  """Appends records to workdir/metrics.jsonl and TensorBoard (a no-op off process 0)."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.path = os.path.join(workdir, FILENAME)
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        import tensorboardX  # Imported here: only process 0 of a run needs it.
        self._tb = tensorboardX.SummaryWriter(logdir=workdir)

  def write(self, record: dict) -> None:
    """Writes one record: "step" (int) and "split" (str) plus metrics; numbers go to TB too."""
    if not isinstance(record.get("step"), numbers.Integral) or not isinstance(
        record.get("split"), str):
      raise ValueError(f"a metrics record needs an int 'step' and a str 'split', got {record}")
    if not self.enabled:
      return
    record = {k: _to_python(v) for k, v in record.items()}
    # Appending and closing per record keeps every line on disk if the run dies.
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for key, value in record.items():
        if key not in ("step", "split") and _is_number(value):
          self._tb.add_scalar(f"{record['split']}/{key}", value, record["step"])
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
  """The records of workdir/metrics.jsonl in order (only `split`'s if given).

  A malformed last line (a run killed mid-write) is skipped with a warning; a malformed line
  elsewhere raises errors.DataError.
  """
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    raise errors.DataError(f"{path} does not exist; pass the --workdir of a run that has logged")
  with open(path) as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    except ValueError as e:
      if i == len(lines) - 1:
        logging.warning("%s: skipping the malformed last line (%s)", path, e)
        break
      raise errors.DataError(f"{path} line {i + 1} is not a JSON object ({e}); "
                             "remove or repair that line") from None
    records.append(record)
  return [r for r in records if split is None or r.get("split") == split]


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _to_python(value):
  """0-d NumPy/JAX numbers -> Python numbers, so json.dumps accepts them."""
  if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
    return np.asarray(value).item()
  return value
