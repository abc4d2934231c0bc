"""A whole run in a workdir that is not on the local file system.

`mem://` is an in-memory object store registered with etils.epath for this test: objects are
written whole (no appends, no renames of directories, no locks), as on gs:// or s3://. The run's
metrics.jsonl, config.json, TensorBoard events and results must all land there, through the
path abstraction; only the checkpoint arrays go to a local directory, since orbax writes them
with tensorstore's own drivers (gs:// included), which an in-memory store cannot stand in for.
"""
import fnmatch
import json
import os
import posixpath

import pytest
from etils import epath

from configs import default
from research import checkpoint
from research import metrics
from research import train

_STORE: dict[str, bytes] = {}


@epath.register_path_cls("mem://")
class MemPath:
  """The subset of the epath.Path API the project uses, over _STORE."""

  def __init__(self, *parts):
    text = posixpath.join(*(os.fspath(p) for p in parts))
    self._text = "mem://" + text.removeprefix("mem://").strip("/")

  def __fspath__(self):
    return self._text

  __str__ = __fspath__

  def __repr__(self):
    return f"MemPath({self._text!r})"

  def __eq__(self, other):
    return str(other) == self._text

  def __hash__(self):
    return hash(self._text)

  def __truediv__(self, other):
    return MemPath(self._text, os.fspath(other))

  def joinpath(self, *parts):
    return MemPath(self._text, *parts)

  @property
  def name(self):
    return posixpath.basename(self._text)

  @property
  def parent(self):
    return MemPath(posixpath.dirname(self._text.removeprefix("mem://")))

  def _key(self):
    return self._text

  def exists(self):
    return self._key() in _STORE or self.is_dir()

  def is_dir(self):
    prefix = self._key() + "/"
    return any(k.startswith(prefix) for k in _STORE) or self._key() + "/." in _STORE

  def mkdir(self, parents=False, exist_ok=False):
    _STORE.setdefault(self._key() + "/.", b"")

  def write_bytes(self, data):
    _STORE[self._key()] = bytes(data)

  def write_text(self, text, encoding=None):
    self.write_bytes(text.encode("utf-8"))

  def read_bytes(self):
    if self._key() not in _STORE:
      raise FileNotFoundError(self._text)
    return _STORE[self._key()]

  def read_text(self, encoding=None):
    return self.read_bytes().decode("utf-8")

  def unlink(self, missing_ok=False):
    _STORE.pop(self._key(), None)

  def rename(self, target):
    _STORE[str(target)] = _STORE.pop(self._key())
    return MemPath(target)

  def glob(self, pattern):
    prefix = self._key() + "/"
    for key in list(_STORE):
      rest = key[len(prefix):] if key.startswith(prefix) else None
      if rest and "/" not in rest and fnmatch.fnmatch(rest, pattern):
        yield MemPath(key)


@pytest.fixture
def local_checkpoints(tmp_path, monkeypatch):
  real = checkpoint.checkpoint_dir
  monkeypatch.setattr(checkpoint, "checkpoint_dir",
                      lambda workdir: real(tmp_path / str(workdir).removeprefix("mem://")))
  return tmp_path


def test_a_run_writes_metrics_config_and_events_through_the_path_abstraction(local_checkpoints):
  _STORE.clear()
  config = default.get_config()
  config.update(num_steps=60, log_every=20, eval_every=30, checkpoint_every=30)
  workdir = "mem://bucket/runs/one"
  result = train.train_and_evaluate(config, workdir)
  keys = sorted(_STORE)
  assert "mem://bucket/runs/one/config.json" in keys
  assert json.loads(_STORE["mem://bucket/runs/one/config.json"])["num_steps"] == 60
  records = metrics.read_metrics(workdir)
  assert [r["step"] for r in records if r["split"] == "train"] == [20, 40, 60]
  assert records[-1]["split"] == "test" and records[-1]["accuracy"] == result["test"]["accuracy"]
  events = [k for k in keys if "events.out.tfevents" in k]
  assert events and all(len(_STORE[k]) > 100 for k in events)
  # Nothing of the run went to a local directory named after the URI.
  assert not os.path.exists("mem:") and not os.path.exists(os.path.join("mem:", "bucket"))
  # The same command again: the run is finished (its identity is read back from the store).
  again = train.train_and_evaluate(config, workdir)
  assert again["test"] == result["test"]


def test_an_experiment_runner_writes_its_results_there(local_checkpoints):
  _STORE.clear()
  from configs import lecture_algorithm  # pylint: disable=g-import-not-at-top
  from research import experiments  # pylint: disable=g-import-not-at-top
  config = lecture_algorithm.get_config()
  config.update(num_steps=40, log_every=20, eval_every=20)
  experiments.run(config, "mem://bucket/lecture")
  assert "mem://bucket/lecture/finished.json" in _STORE
  assert metrics.read_metrics("mem://bucket/lecture")
