"""Metrics of a run: JSON lines in workdir/metrics.jsonl plus TensorBoard event files.

  writer = MetricWriter(workdir)
  writer.write({"step": 250, "split": "train", "loss": 0.31, "accuracy": 0.92})
  writer.close()
  read_metrics(workdir) -> [{"step": 250, "split": "train", ...}, ...]
  truncate(workdir, last_step)    what a resumed run does first: keeps the records up to its
                                  checkpoint and rewrites TensorBoard's events from them
  check_restart(workdir, every)   before a run without checkpoints starts over: refuses when
                                  its records show that a checkpoint existed

metrics.jsonl is the record the tools read (research.plot, launch/sweep.py); the event files,
with scalars named "<split>/<key>" (e.g. "valid/accuracy", nested dicts as
"train/grad_norm/0/w"), are for `tensorboard --logdir`. They are derived from metrics.jsonl:
after a resume they are rebuilt from it, so TensorBoard shows every step once. Only process 0
writes, so a multi-host run produces one copy. Every path goes through etils.epath, so a
gs:// workdir works as a local one does.
"""
import contextlib
import io
import json
import os
import numbers
import socket
import sys

import jax
import numpy as np
from absl import logging
from etils import epath

from research import errors
from research import workdir as workdir_lib

FILENAME = "metrics.jsonl"
# Fields that measure time, not the computation: the only ones a resumed run may change.
TIMING_FIELDS = ("examples_per_sec", "steps_per_sec", "eta_sec", "elapsed", "wall_time")
_EVENTS_GLOB = "events.out.tfevents.*"
_SUFFIX = [0]


class MetricWriter:
  """Appends records to workdir/metrics.jsonl and TensorBoard (a no-op off process 0)."""

  def __init__(self, workdir, *, tensorboard: bool = True):
    self.workdir = workdir_lib.as_path(workdir)
    self.path = self.workdir / FILENAME
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      try:
        self.workdir.mkdir(parents=True, exist_ok=True)
      except OSError as e:
        raise workdir_lib.storage_error(self.workdir, e) from None
      if tensorboard:
        self._tb = _summary_writer(self.workdir)

  def write(self, record: dict) -> None:
    """Writes one record: "step" (int) and "split" (str) plus metrics; numbers go to TB too."""
    if not isinstance(record.get("step"), numbers.Integral) or not isinstance(
        record.get("split"), str):
      raise ValueError(f"a metrics record needs an int 'step' and a str 'split', got {record}")
    if not self.enabled:
      return
    record = {k: _to_python(v) for k, v in record.items()}
    # One line per call, flushed: every record is on disk if the run dies afterwards.
    workdir_lib.append_line(self.path, json.dumps(record))
    if self._tb is not None:
      _add_scalars(self._tb, record)
      try:
        self._tb.flush()
      except OSError as e:
        raise workdir_lib.storage_error(self.workdir, e) from None

  def sync(self) -> None:
    """fsyncs metrics.jsonl and its directory: the run calls it before each checkpoint, so a
    checkpoint that survives a power loss has every record up to its step."""
    if self.enabled and self.path.exists():
      workdir_lib.sync(self.path)

  def close(self) -> None:
    """Closes TensorBoard's file and fsyncs metrics.jsonl (the end of a run)."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if sys.exc_info()[0] is None:
      self.sync()
    else:  # Closing on the way out of an error: that error is the one to report.
      with contextlib.suppress(OSError):
        self.sync()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_metrics(workdir, split: str | None = None) -> list[dict]:
  """The records of workdir/metrics.jsonl in order (only `split`'s if given).

  A malformed last line (a run killed or a disk filled mid-write) is skipped with a warning;
  a malformed line elsewhere raises errors.DataError.
  """
  path = workdir_lib.as_path(workdir) / FILENAME
  if not path.exists():
    raise errors.DataError(f"{path} does not exist; pass the --workdir of a run that has logged")
  records = _parse(path, path.read_text())
  return [r for r in records if split is None or r.get("split") == split]


def _parse(path, text: str) -> list[dict]:
  lines = [line for line in text.splitlines() if line.strip()]
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
  return records


def truncate(workdir, last_step: int, records: list[dict] | None = None) -> list[dict]:
  """Keeps the records with step <= last_step (dropping a torn last line), atomically, and
  rebuilds the TensorBoard events from them; returns the kept records. Process 0 only.
  `records`: the file's records when the caller has read them already."""
  workdir = workdir_lib.as_path(workdir)
  path = workdir / FILENAME
  if jax.process_index() != 0:
    return []
  if last_step < 0 or not path.exists():
    kept = []  # Nothing to keep: no need to read (and warn about) the file.
  else:
    records = _parse(path, path.read_text()) if records is None else records
    kept = [r for r in records if r.get("step", 0) <= last_step]
  workdir_lib.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
  rebuild_tensorboard(workdir, kept)
  return kept


def check_restart(workdir, checkpoint_every: int) -> None:
  """Raises errors.WorkdirError when workdir's records reach past step checkpoint_every: the
  run that wrote them saved a checkpoint there, so one that cannot be found (moved, deleted,
  unreadable) must not let a new run start over and drop those records."""
  path = workdir_lib.as_path(workdir) / FILENAME
  if checkpoint_every <= 0 or not path.exists():
    return
  last = max((r.get("step", 0) for r in _parse(path, path.read_text())), default=0)
  if last > checkpoint_every:
    raise errors.WorkdirError(
        f"{path} holds records up to step {last}, past config.checkpoint_every="
        f"{checkpoint_every}, but {workdir_lib.as_path(workdir) / 'checkpoints'} holds no "
        "checkpoint: starting over would drop them; put the checkpoints back, or pass a new "
        "--workdir (or delete metrics.jsonl to start over here)")


def longest_names() -> list[tuple[str, ...]]:
  """The longest paths, relative to the workdir, that the metrics write: the temporary file of
  a rewrite, and TensorBoard's event files (tensorboardX names them
  events.out.tfevents.<time>.<host><suffix>; the suffix is ".<pid>.<n>")."""
  return [(f".{FILENAME}.tmp-{'0' * 10}",),
          (f"events.out.tfevents.{'0' * 10}.{socket.gethostname()}.{'0' * 10}.{'0' * 6}",)]


def rebuild_tensorboard(workdir, records: list[dict]) -> None:
  """Replaces the event files in workdir with one holding exactly `records`' scalars.

  The old files go first: if the process dies in between, the events are missing until the
  next resume rebuilds them, but metrics.jsonl (their source) is intact.
  """
  workdir = workdir_lib.as_path(workdir)
  try:
    for f in workdir.glob(_EVENTS_GLOB):
      f.unlink()
  except OSError as e:
    raise workdir_lib.storage_error(workdir, e) from None
  writer = _summary_writer(workdir)
  for record in records:
    _add_scalars(writer, record)
  writer.close()


def read_tensorboard(workdir) -> list[tuple[str, int, float]]:
  """Every scalar of workdir's event files as (tag, step, value), in file order (the files'
  TFRecord framing: length u64, its crc u32, the Event proto, the data's crc u32)."""
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = []
  for path in sorted(workdir_lib.as_path(workdir).glob(_EVENTS_GLOB)):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      out += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
  return out


def _summary_writer(workdir: epath.Path):
  import tensorboardX  # pylint: disable=g-import-not-at-top  Only process 0 needs it.
  if workdir_lib.is_remote(workdir):
    _register_epath_events(str(workdir).split(":", 1)[0])
  # A unique suffix: a rebuilt file and the next writer's, made in the same second, would
  # otherwise share one name and the second would truncate the first.
  _SUFFIX[0] += 1
  try:
    return tensorboardX.SummaryWriter(logdir=str(workdir),
                                      filename_suffix=f".{os.getpid()}.{_SUFFIX[0]}")
  except OSError as e:
    raise workdir_lib.storage_error(workdir, e) from None


def _add_scalars(writer, record: dict) -> None:
  """Numbers as "<split>/<key>"; nested dicts of numbers as "<split>/<key>/<subkey>", all at
  the record's step (which is no scalar of its own)."""
  _add_group(writer, {k: v for k, v in record.items() if k not in ("step", "split")},
             record["split"], record["step"])


def _add_group(writer, values: dict, prefix: str, step: int) -> None:
  for key, value in values.items():
    if isinstance(value, dict):
      _add_group(writer, value, f"{prefix}/{key}", step)
    elif _is_number(value):
      writer.add_scalar(f"{prefix}/{key}", value, step)


class _EpathEvents:
  """A TensorBoard event file on any epath URI: buffered, the whole object written on flush
  (object stores cannot append)."""

  def __init__(self, path: str):
    self.path = epath.Path(path)
    self.buffer = io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    self.path.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _EpathEventsFactory:

  def open(self, path: str) -> _EpathEvents:
    return _EpathEvents(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def _register_epath_events(scheme: str) -> None:
  """Routes tensorboardX's event files for `scheme`:// through etils.epath."""
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
  record_writer.register_writer_factory(scheme, _EpathEventsFactory())


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _to_python(value):
  """0-d NumPy/JAX numbers -> Python numbers (also inside dicts), so json.dumps takes them."""
  if isinstance(value, dict):
    return {k: _to_python(v) for k, v in value.items()}
  if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
    return np.asarray(value).item()
  return value
