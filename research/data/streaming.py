"""The streaming input pipeline (config.data.pipeline="streaming"): batches read from records
files a chunk at a time, for data sets that do not fit in memory (ImageNet).

  records set (research/data/records.py) -> grain: MapDataset over this host's example
  positions -> read + decode + augment (in grain worker processes when num_workers > 0)
  -> batches of B / P -> Feeder: a chunk's S batches stacked and placed on the devices in a
  background thread, while the previous chunk trains

The order is the memory pipeline's: step s's global batch is data.batch_indices(seed, n, B,
s, 1), each epoch a fresh permutation, so for the same records and seed both pipelines feed
the same examples at every step. Host p of P reads only positions [p B/P, (p+1) B/P) of each
global batch (parallel.host_slice's rows): the hosts' reads are disjoint and their union is
the epoch (less the n % B examples every epoch drops). Augmentation draws from
np.random.default_rng([seed, step, position in the global batch]): the same crop, flip and
jitter however many hosts and workers there are.

Resume: the iterator's state is its position (the next step) and the identity of the records
(a checksum of the manifest); the run's checkpoint carries both ("data"), and a resumed run
checks them and restarts the stream at the checkpoint's step, exactly.
"""
import queue
import threading

import jax
import numpy as np

from research import errors
from research import parallel
from research.data import core
from research.data import records


def enabled(data_config) -> bool:
  """Whether config.data asks for the streaming pipeline (ConfigError for a bad value or a
  data set that has no records)."""
  pipeline = data_config.get("pipeline", "memory")
  errors.check_choice("data.pipeline", pipeline, records.PIPELINES)
  if pipeline == "streaming" and data_config.name != "records":
    raise errors.ConfigError(
        f"config.data.pipeline='streaming' reads records files, not data set "
        f"{data_config.name!r}; convert it with launch/make_records.py and use "
        "config.data = records.config(data_dir=...)")
  return pipeline == "streaming"


def dataset(data_config) -> core.Dataset:
  """The records set with lazily decoded splits (records.LazyImages): shapes, labels and
  evaluation batches without holding the images."""
  return records.load_lazy(data_config)


class Examples:
  """This host's stream: element i = (x_HxWxC float32, label) at position j = i % (B/P) of
  this host's share of step i // (B/P)'s global batch. Picklable: grain's worker processes
  each hold one, with their own file readers."""

  def __init__(self, data_config, seed: int, batch_size: int, process_index: int = 0,
               process_count: int = 1):
    self.manifest = records.read_manifest(data_config.data_dir)
    self.source = records.open_split(data_config.data_dir, data_config.train_split,
                                     self.manifest)
    self.prep = records.preprocess(data_config, self.manifest, train=True)
    self.seed, self.n, self.batch_size = seed, len(self.source), batch_size
    errors.check_batch_size(batch_size, self.n, "training records")
    if batch_size % process_count:
      raise errors.ConfigError(f"batch_size={batch_size} is not divisible by the "
                               f"{process_count} processes; use a multiple of {process_count}")
    self.local = batch_size // process_count
    self.offset = process_index * self.local
    self.steps_per_epoch = self.n // batch_size
    self._perm = (-1, None)

  def record(self, step: int, j: int) -> int:
    """The record index at position j of this host's share of step's batch."""
    epoch, pos = divmod(step, self.steps_per_epoch)
    if self._perm[0] != epoch:
      self._perm = (epoch, core.epoch_permutation(self.seed, epoch, self.n))
    return int(self._perm[1][pos * self.batch_size + self.offset + j])

  def __call__(self, i: int):
    step, j = divmod(int(i), self.local)
    index = self.record(step, j)
    label, payload = self.source[index]
    rng = np.random.default_rng([self.seed, step, self.offset + j])
    shard, k = self.source.locate(index)
    where = f"{self.source.path(shard)}: record {k}"
    records.check_label(label, len(self.manifest["classes"]), where)
    x = self.prep(payload, where, rng)
    return x, np.int32(label)

  def __getstate__(self):
    return dict(self.__dict__, _perm=(-1, None))


def host_indices(seed: int, n: int, batch_size: int, start_step: int, num_steps: int,
                 process_index: int, process_count: int) -> np.ndarray:
  """The record indices host p reads for steps [start, start + num_steps), (S, B/P): the
  sampler alone, for tests and tools (Examples.record computes the same lazily)."""
  idx_SxB = core.batch_indices(seed, n, batch_size, start_step, num_steps)
  local = batch_size // process_count
  return idx_SxB[:, process_index * local:(process_index + 1) * local]


def batches(examples: Examples, start_step: int, stop_step: int, num_workers: int = 0):
  """An iterator of this host's (x_BxHxWxC, y_B) batches for steps [start, stop), in order,
  decoded by grain (num_workers processes, or threads in this one when 0)."""
  import grain  # pylint: disable=g-import-not-at-top  Only the streaming pipeline needs it.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    # grain reads its options as absl flags; outside an app (a notebook, a test) their
    # defaults stand.
    flags.FLAGS.mark_as_parsed()
  ds = grain.MapDataset.range(start_step * examples.local, stop_step * examples.local)
  ds = ds.map(examples).batch(examples.local, drop_remainder=True)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, min(16, examples.local)),
                                            prefetch_buffer_size=2 * examples.local))
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=2))
  return iter(it)


class Feeder:
  """The train chunks' batches, placed on the mesh ahead of use: next(start, stop) returns
  (x_SxB..., y_SxB) global arrays split over "data" along B, for the chunks of `bounds`
  in order. A background thread reads, stacks and places up to `prefetch` chunks ahead, so
  decoding overlaps the train step."""

  def __init__(self, data_config, seed: int, batch_size: int, bounds, mesh):
    self.examples = Examples(data_config, seed, batch_size, jax.process_index(),
                             jax.process_count())
    self.bounds = list(bounds)
    self._queue = queue.Queue(maxsize=data_config.get("prefetch", 2))
    self._stop = threading.Event()
    start = self.bounds[0][0] if self.bounds else 0
    stop = self.bounds[-1][1] if self.bounds else 0
    self._iter = batches(self.examples, start, stop, data_config.get("num_workers", 0))
    self._mesh = mesh
    self._thread = threading.Thread(target=self._fill, daemon=True, name="feeder")
    self._thread.start()

  def _fill(self) -> None:
    try:
      for start, stop in self.bounds:
        xs, ys = zip(*(next(self._iter) for _ in range(stop - start)))
        item = ((start, stop),
                parallel.shard_batch((np.stack(xs), np.stack(ys)), self._mesh, axis=1))
        if not self._put(item):
          return
    except BaseException as e:  # noqa: BLE001  Handed to the train loop, raised there.
      self._put(((None, None), e))

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def next(self, start: int, stop: int):
    """(x_SxB..., y_SxB) for the chunk [start, stop), the next of `bounds`."""
    bounds, item = self._queue.get()
    if isinstance(item, BaseException):
      raise _one_line(item) from None
    if bounds != (start, stop):
      raise RuntimeError(f"feeder out of step: has chunk {bounds}, the loop asked for "
                         f"{(start, stop)}")
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=30)
    close_batches(self._iter)
    self._iter = None


def close_batches(it) -> None:
  """Stops a `batches` iterator's worker processes now, not at interpreter exit, and waits
  until the shared memory of the batches it handed out is unlinked."""
  close = getattr(it, "close", None)
  if close is not None:
    close()
  _drain_shared_memory_deletions()


def _drain_shared_memory_deletions() -> None:
  """grain unlinks a worker's batch from shared memory in a background thread pool when the
  batch is freed; deletions still queued at exit are never run, and Python's resource tracker
  then warns of "leaked shared_memory objects". Runs them now; later frees unlink at once."""
  try:
    from grain._src.python.ipc import shared_memory_array  # pylint: disable=g-import-not-at-top
  except ImportError:  # Another grain layout: nothing of ours to drain.
    return
  cls = getattr(shared_memory_array, "SharedMemoryArray", None)
  pool = getattr(cls, "_del_thread_pool", None)
  if pool is None:
    return
  with cls._lock:  # pylint: disable=protected-access
    cls._del_thread_pool, cls._outstanding_del_requests = None, None
  pool.close()
  pool.join()


def identity(data_config) -> int:
  """The records' identity (a checksum of their manifest), kept in the iterator's state."""
  return records.manifest_crc(records.read_manifest(data_config.data_dir))


def iterator_state(step: int, identity: int, mesh) -> dict:
  """{"position": the next step, "records": the records' identity}, replicated."""
  return parallel.replicate({"position": np.asarray(step, np.int32),
                             "records": np.asarray(identity, np.int32)}, mesh)


def check_identity(saved: int, identity: int, data_dir, workdir=None) -> None:
  """DataError when the records a checkpoint was trained on (`saved`) are not these."""
  if int(saved) != int(identity):
    where = f"{workdir}'s checkpoints were" if workdir else "the checkpoint was"
    raise errors.DataError(
        f"the records in {data_dir} changed since {where} written (its manifest.json "
        "differs); the run is kept as it is: pass the records it was trained on, or a new "
        "--workdir to train on these")


def check_restored(restored: dict, step: int, identity: int, data_dir) -> None:
  """A resumed run's stream restarts at the checkpoint's step over the same records."""
  local = lambda a: int(np.asarray(a.addressable_data(0)))
  check_identity(local(restored["records"]), identity, data_dir)
  if local(restored["position"]) != step:
    raise errors.DataError(f"checkpoint step {step} holds data position "
                           f"{local(restored['position'])}; the checkpoint is inconsistent: "
                           "delete it to resume from the one before")


def _one_line(e: BaseException) -> BaseException:
  """A worker's error as the project's own: a DataError's one line survives grain's
  wrapping (its text appears in the wrapped message)."""
  if isinstance(e, (errors.DataError, errors.ConfigError)):
    return e
  text = str(e)
  for kind in (errors.DataError, errors.ConfigError):
    marker = f"{kind.__name__}: "
    if marker in text:
      return kind(text.split(marker, 1)[1].splitlines()[0])
  return e
