"""A run's workdir: where it lives, who holds it, and how its files are written.

  path = workdir.as_path("runs/x")     an etils.epath.Path: a local directory, or gs://, s3://
                                       and any other scheme epath (and orbax) can write
  with workdir.claim(path): ...        creates it, checks it is usable, and holds an exclusive
                                       lock on it until the block ends (or the process dies)
  workdir.write_text(path / "f", s)    all-or-nothing: a reader sees the old file or the new one
  workdir.append_line(path / "f", s)   one record per call, on disk when the call returns

Locking: on a local (or NFS) workdir, `claim` takes an flock on WORKDIR/.lock, which the OS
releases when the process exits, however it exits; a second run in the same workdir fails at
once naming the holder (pid, host, start time, command). Only process 0 of a multi-host run
takes it: the hosts of one run share the workdir by design. Object stores (gs://, s3://) have
no locks: there, one workdir must not be given to two runs at once.

Every failure is a errors.WorkdirError (before the run: the path cannot be used) or a
errors.StorageError (during the run: a write failed), with the path, the cause and the fix.
"""
import contextlib
import os
import re
import socket
import sys
import time
from typing import Iterator

from absl import logging
from etils import epath

from research import errors

LOCK_FILE = ".lock"
_HELD: dict[str, tuple[int, int]] = {}  # local lock path -> (fd, depth): claims nest


def as_path(workdir) -> epath.Path:
  """The workdir as an epath.Path; local paths are made absolute (orbax requires it)."""
  text = os.fspath(workdir)
  if not text:
    raise errors.WorkdirError("--workdir is empty; pass a directory, e.g. --workdir=runs/try1")
  return epath.Path(text if is_remote(text) else os.path.abspath(text))


def is_remote(path) -> bool:
  """True for URI paths (gs://, s3://, ...), which only etils.epath and orbax can open."""
  return "://" in os.fspath(path)


@contextlib.contextmanager
def claim(workdir, *, process_index: int = 0) -> Iterator[epath.Path]:
  """Creates `workdir` if needed, checks that it can be written, and holds its lock.

  Raises errors.WorkdirError, before anything else happens, when the path is a file, cannot
  be created or written, or another run holds it. Claims of one workdir nest within a process
  (a runner that calls train_and_evaluate on its own workdir holds one lock).
  """
  path = as_path(workdir)
  try:
    if path.exists() and not path.is_dir():
      raise errors.WorkdirError(f"--workdir={path} is a file, not a directory; pass a "
                                "directory path (it is created if missing)")
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.WorkdirError(f"--workdir={path} cannot be created "
                              f"({errors.describe_os_error(e)}); pass a path you can write "
                              "to") from None
  if process_index != 0:
    yield path
    return
  if is_remote(path):
    logging.warning("%s is not on a local file system: it has no lock, so never start two "
                    "runs in it at once", path)
    _probe_writable(path)
    yield path
    return
  lock_path = os.path.join(os.fspath(path), LOCK_FILE)
  if lock_path in _HELD:
    fd, depth = _HELD[lock_path]
    _HELD[lock_path] = (fd, depth + 1)
    try:
      yield path
    finally:
      fd, depth = _HELD[lock_path]
      _HELD[lock_path] = (fd, depth - 1)
    return
  fd = _lock(path, lock_path)
  _HELD[lock_path] = (fd, 1)
  try:
    yield path
  finally:
    _HELD.pop(lock_path, None)
    os.close(fd)  # Releases the flock.


def _lock(path: epath.Path, lock_path: str) -> int:
  import fcntl  # pylint: disable=g-import-not-at-top  POSIX only; imported where it is used.
  _probe_writable(path)
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise errors.WorkdirError(f"--workdir={path} cannot be written "
                              f"({errors.describe_os_error(e)}: {lock_path}); pass a path you "
                              "can write to") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "another process"
    os.close(fd)
    raise errors.WorkdirError(
        f"--workdir={path} is in use by another run ({holder}); wait for it to finish, or "
        "pass another --workdir") from None
  holder = (f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {' '.join(sys.argv)[:300]}")
  os.ftruncate(fd, 0)
  os.pwrite(fd, holder.encode() + b"\n", 0)
  return fd


def _probe_writable(path: epath.Path) -> None:
  """Creates and removes a small file: a read-only workdir fails here, before any work."""
  probe = path / f".write-probe-{os.getpid()}"
  try:
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise errors.WorkdirError(f"--workdir={path} cannot be written "
                              f"({errors.describe_os_error(e)}); pass a path you can write "
                              "to") from None


def check_output_file(path, flag: str = "--out") -> str:
  """Checks, before any work, that a local output file can be written where `path` says;
  returns it. Raises errors.WorkdirError naming the flag, the cause and the fix."""
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  if os.path.isdir(path):
    cause = "it is a directory"
  elif not os.path.isdir(parent):
    cause = (f"{parent} is not a directory" if os.path.exists(parent) else
             f"its directory {parent} does not exist")
  elif not os.access(parent, os.W_OK):
    cause = f"{parent} is not writable"
  else:
    return path
  raise errors.WorkdirError(f"{flag}={path} cannot be written ({cause}); pass a file path in "
                            "a directory you can write to")


def write_text(path: epath.Path, text: str) -> None:
  """Writes the whole file or nothing: a temporary file renamed over it (an object store's
  single write is atomic already). Raises errors.StorageError."""
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path: epath.Path, data: bytes) -> None:
  """write_text for bytes (a figure, pickled params): the whole file or nothing."""
  path = epath.Path(path)
  try:
    if is_remote(path):
      path.write_bytes(data)
      return
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_bytes(data)
    os.replace(tmp, path)
  except OSError as e:
    raise storage_error(path, e) from None


def append_line(path: epath.Path, line: str) -> None:
  """Appends one line (a record) and flushes it; raises errors.StorageError.

  Object stores cannot append: there the file is rewritten whole, which costs O(file) per
  record (metrics files hold hundreds of lines, so that is cheap).
  """
  path = epath.Path(path)
  try:
    if is_remote(path):
      old = path.read_text() if path.exists() else ""
      path.write_text(old + line + "\n")
      return
    with open(path, "a", encoding="utf-8") as f:
      f.write(line + "\n")
  except OSError as e:
    raise storage_error(path, e) from None


def storage_error(path, e: BaseException) -> errors.StorageError:
  """A one-line StorageError for a failed read or write of `path` during a run."""
  text = str(e)
  wrapped = re.search(r"os_error_code='?(\d+)", text)  # tensorstore's wrapping of an OSError
  code = e.errno if isinstance(e, OSError) else int(wrapped.group(1)) if wrapped else None
  if isinstance(e, OSError):
    cause = errors.describe_os_error(e)
  elif wrapped:
    cause = os.strerror(code)
  else:
    cause = text.splitlines()[0][:200] if text else type(e).__name__
  return errors.StorageError(
      f"writing {path} failed ({cause}); {errors.os_error_fix(code)}, then rerun the same "
      "command: a run resumes from its last checkpoint, with metrics.jsonl's records up to it")
