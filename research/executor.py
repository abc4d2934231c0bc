"""Where independent jobs run: in this process one after another, or as tasks on a Ray cluster.

  ex = executor.make("local")          # or "ray"; max_in_flight=N: at most N jobs at once
  ex.submit(order, fn, *args, tag=t)   # fn(*args) is one job
  while ex.pending:
    tag, result = ex.next()            # one finished job (the lowest `order` first, locally)
  ex.close()

The harness runs an experiment's cells on it (config.experiment.executor), launch/sweep.py
its runs (--executor, --parallel).

"local" runs each job in this process when next() asks, the lowest `order` first: a caller that
submits in its own order gets today's sequential loop. "ray" submits each job as a Ray task
(one CPU each by default, at most `max_in_flight` at once) and returns them as they finish:

  - ray.init() starts a local cluster on this machine, or joins the one RAY_ADDRESS names
    (research.main's --ray_address sets it); a cluster this executor started stops at close();
  - a task whose worker or node dies is retried (max_retries, Ray's lineage), so a killed
    worker costs its job's time, nothing else;
  - a job's exception reaches the caller as itself (a NaN in a worker is errors.NonFiniteLossError
    here);
  - jobs run with JAX_PLATFORMS from this process's environment (default cpu): one job per
    CPU, each in its own worker process.

Ray is the optional extra `pip install -e '.[cluster]'`; without it "ray" is errors.ConfigError.
Functions and arguments travel with Ray's serializer (cloudpickle): that is the transport between
processes, never what a workdir holds.
"""
import concurrent.futures
import heapq
import os
import shlex
import subprocess
import time
import warnings
from typing import Any, Callable

from absl import logging

from research import errors

EXECUTORS = ("local", "ray")
INSTALL = "pip install -e '.[cluster]'"
MAX_RETRIES = 3


def import_ray():
  """The ray module, or errors.ConfigError naming the extra that installs it."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError(
        f"config.experiment.executor='ray' needs Ray, which is not installed; {INSTALL} (or "
        "use executor='local')") from None
  return ray


def make(name: str, max_in_flight: int | None = None, field: str = "experiment.executor"):
  """Local(max_in_flight or 1) or Ray(max_in_flight=...) by name; errors.ConfigError for
  other names."""
  errors.check_choice(field, name, EXECUTORS)
  return Local(max_in_flight or 1) if name == "local" else Ray(max_in_flight=max_in_flight)


class _Ordered:
  """The jobs an executor holds: a queue by (order, submission) and those running."""

  def _init_queue(self) -> None:
    self._queue: list = []
    self._count = 0
    self._running: dict = {}  # Future or ObjectRef -> tag

  @property
  def pending(self) -> int:
    return len(self._queue) + len(self._running)

  def _push(self, order, fn: Callable, args: tuple, tag: Any) -> None:
    self._count += 1
    heapq.heappush(self._queue, (order, self._count, fn, args, tag))


class Local(_Ordered):
  """Runs each submitted job in this process, lowest `order` first: when next() is called
  (max_in_flight=1, the default), or up to max_in_flight at once in threads (jobs that wait
  on a subprocess, as launch/sweep.py's do)."""

  def __init__(self, max_in_flight: int = 1):
    self._init_queue()
    self._cap = max_in_flight
    self._pool = None

  def submit(self, order, fn: Callable, *args, tag: Any = None) -> None:
    self._push(order, fn, args, tag)

  def next(self) -> tuple[Any, Any]:
    if self._cap == 1:
      _, _, fn, args, tag = heapq.heappop(self._queue)
      return tag, fn(*args)
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(self._cap)
    while self._queue and len(self._running) < self._cap:
      _, _, fn, args, tag = heapq.heappop(self._queue)
      self._running[self._pool.submit(fn, *args)] = tag
    done, _ = concurrent.futures.wait(self._running,
                                      return_when=concurrent.futures.FIRST_COMPLETED)
    future = next(iter(done))
    return self._running.pop(future), future.result()

  def close(self) -> None:
    self._queue.clear()
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None
    self._running.clear()


def run_command(cmd: list[str], log_path: str, env: dict | None = None) -> tuple[int, float]:
  """Runs cmd with stdout and stderr into log_path (its first line the command); returns
  (exit code, seconds). A job for either executor: a sweep's run of research.main."""
  start = time.time()
  with open(log_path, "w", encoding="utf-8") as log:
    log.write(shlex.join(cmd) + "\n")
    log.flush()
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                        check=False).returncode
  return rc, time.time() - start


def _call(fn: Callable, *args):
  return fn(*args)


class Ray(_Ordered):
  """Jobs as Ray tasks (module doc): num_cpus each, at most max_in_flight at once (default: no
  cap beyond the cluster's CPUs), retried max_retries times when their worker dies."""

  def __init__(self, num_cpus: float = 1, max_in_flight: int | None = None,
               max_retries: int = MAX_RETRIES, address: str | None = None,
               init_kwargs: dict | None = None):
    ray = import_ray()
    self._ray = ray
    self._started = False
    if not ray.is_initialized():
      # "local": a cluster of our own, never one that another user's `ray start` left here.
      address = address or os.environ.get("RAY_ADDRESS") or "local"
      env = {"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
      if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
      t0 = time.time()
      try:
        with warnings.catch_warnings():
          # Ray forks and execs its daemons: JAX's fork warning is about fork without exec.
          warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
          ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False,
                   logging_level="WARNING", **(init_kwargs or {}))
      except (ConnectionError, RuntimeError, ValueError) as e:
        raise errors.ConfigError(
            f"cannot start or reach the Ray cluster{'' if address == 'local' else ' at ' + address} "
            f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); start it "
            "(ray start --head) or unset RAY_ADDRESS / --ray_address for a local one") from None
      self._started = True
      logging.info("Ray: %s in %.1f s", "started a local cluster" if address == "local" else
                   "joined " + address, time.time() - t0)
    self._remote = ray.remote(_call).options(num_cpus=num_cpus, max_retries=max_retries)
    self._retries = max_retries
    self._cap = max_in_flight
    self._init_queue()

  def submit(self, order, fn: Callable, *args, tag: Any = None) -> None:
    self._push(order, fn, args, tag)
    self._fill()

  def _fill(self) -> None:
    while self._queue and (self._cap is None or len(self._running) < self._cap):
      _, _, fn, args, tag = heapq.heappop(self._queue)
      self._running[self._remote.remote(fn, *args)] = tag

  def next(self) -> tuple[Any, Any]:
    ray = self._ray
    (ref,), _ = ray.wait(list(self._running), num_returns=1)
    tag = self._running.pop(ref)
    try:
      result = ray.get(ref)
    except ray.exceptions.RayTaskError as e:
      cause = getattr(e, "cause", None)
      raise (cause if isinstance(cause, BaseException) else e) from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError) as e:
      raise errors.LostWorkerError(
          f"a Ray task failed {self._retries + 1} time(s) ({type(e).__name__}: its worker or "
          "node died each time); check the cluster's nodes (ray status), then rerun the same "
          "command: finished cells are kept") from None
    self._fill()
    return tag, result

  def close(self) -> None:
    for ref in self._running:
      self._ray.cancel(ref, force=True)
    self._running.clear()
    self._queue.clear()
    if self._started:
      self._ray.shutdown()
      self._started = False
