"""A run's workdir: where it lives, who holds it, and how its files are written.

  path = workdir.as_path("runs/x")     an etils.epath.Path: a local directory, or gs://, s3://
                                       and any other scheme epath (and orbax) can write
  with workdir.claim(path): ...        creates it, checks it is usable, and holds an exclusive
                                       lock on it until the block ends (or the process dies)
  workdir.write_text(path / "f", s)    all-or-nothing: a reader sees the old file or the new one
  workdir.append_line(path / "f", s)   one record per call, on disk when the call returns
  workdir.sync(path / "f")             fsync the file and its directory: survives a power loss
  workdir.check_kinds(path, dirs, files)   a directory the run expects is a directory (or
                                       absent), a file a file: else one line, before any write
  workdir.check_path_limits(path, rel) the longest paths the run will write fit the file system

Locking: on a local (or NFS) workdir, `claim` takes an flock on WORKDIR/.lock, which the OS
releases when the process exits, however it exits; a second run in the same workdir fails at
once naming the holder (pid, host, start time, command). Only process 0 of a multi-host run
takes it: the hosts of one run share the workdir by design. Object stores (gs://, s3://) have
no locks: there, one workdir must not be given to two runs at once.

Durability: write_text fsyncs the new file before its rename and the directory after it, so a
power loss leaves the old file or the new one; append_line only flushes (a record per call),
and the run calls sync on metrics.jsonl at each checkpoint and at the end.

Every failure is a errors.WorkdirError (before the run: the path cannot be used) or a
errors.StorageError (during the run: a write failed), with the path, the cause and the fix.
"""
import contextlib
import errno
import importlib
import importlib.util
import os
import re
import shutil
import socket
import stat
import sys
import time
from typing import Iterator

from absl import logging
from etils import epath

from research import errors

LOCK_FILE = ".lock"
# Object-store schemes a run can use (orbax writes their checkpoints through tensorstore) and
# the fsspec package etils.epath needs for the run's other files there.
SCHEMES = {"gs": "gcsfs", "s3": "s3fs"}
_ONE_SLASH = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")  # gs:/x, s3:/x
_NO_SLASH = re.compile(r"^(gs|s3|file):(?!/)", re.IGNORECASE)  # gs:bucket/x
_HELD: dict[str, tuple[int, int]] = {}  # local lock path -> (fd, depth): claims nest


def as_path(workdir, flag: str = "--workdir", checkpoints: bool = False) -> epath.Path:
  """`workdir` as an epath.Path; local paths are made absolute (orbax requires it).

  Raises errors.WorkdirError naming `flag` for a URL missing a slash (gs:/x, gs:x), a scheme
  etils cannot open or whose package is missing, and, with `checkpoints` (a run claiming it,
  orbax writing there), a local path whose absolute form has a folder name ending in ':'.
  """
  text = os.fspath(workdir)
  if not text:
    raise errors.WorkdirError(f"{flag} is empty; pass a directory, e.g. {flag}=runs/try1")
  if not is_remote(text):
    url = _ONE_SLASH.match(text) or _NO_SLASH.match(text)
    if url:  # "gs:/bucket/x" is a typo for gs://bucket/x, not a local "gs:" directory.
      scheme, rest = url.group(1), text[url.end():]
      fix = (f"write {os.path.abspath('/' + rest)} for a local path" if scheme.lower() == "file"
             else f"write {scheme.lower()}://{rest or 'BUCKET/DIR'}")
      raise errors.WorkdirError(f"{flag}={text} looks like a {scheme}:// URL missing a slash; "
                                f"{fix}")
    path = os.path.abspath(text)  # A relative path run from inside ".../gs:/" counts too.
    colon = next((c for c in path.split(os.sep) if c.endswith(":")), None)
    if colon and checkpoints:  # tensorstore reads ".../gs:/x" as a URL and fails mid-run.
      raise errors.WorkdirError(f"{flag}={text}: the folder name {colon!r} in {path} ends in "
                                "':', which the checkpoint writer reads as a URL scheme; "
                                f"rename it (e.g. {colon[:-1]}_)")
    return epath.Path(path)
  scheme = text.split("://", 1)[0]
  try:
    path = epath.Path(text)
  except KeyError:  # etils.epath knows no such scheme.
    raise errors.WorkdirError(f"{flag}={text}: {scheme}:// is not supported; use a local "
                              f"path or one of {_supported()}") from None
  if scheme in SCHEMES and not _can_open(scheme):
    raise errors.WorkdirError(
        f"{flag}={text} needs the {SCHEMES[scheme]} package to reach {scheme}://; "
        f"pip install {SCHEMES[scheme]}, or use a local path")
  return path


def _supported() -> str:
  return ", ".join(f"{s}:// (with pip install {p})" for s, p in SCHEMES.items())


def _importable(name: str) -> bool:
  try:
    importlib.import_module(name)
  except ImportError:
    return False
  return True


def _can_open(scheme: str) -> bool:
  """Whether etils.epath can open scheme:// paths: it uses tf.io.gfile when TensorFlow is
  installed, else fsspec with the scheme's package (gcsfs, s3fs)."""
  if _importable(SCHEMES[scheme]):
    return True
  try:
    return importlib.util.find_spec("tensorflow") is not None
  except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules.
    return False


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
  path = as_path(workdir, checkpoints=True)
  try:
    what = (("a file" if path.exists() and not path.is_dir() else None) if is_remote(path)
            else _non_directory(os.fspath(path)))
    if what is not None:
      raise errors.WorkdirError(f"--workdir={path} is {what}, not a directory; pass a "
                                "directory path (it is created if missing)")
    created = [] if is_remote(path) else missing_dirs(os.fspath(path))
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
  if not os.path.lexists(lock_path):
    created.append(lock_path)  # Ours too: removed with the directories on a refusal.
  try:
    fd = _lock(path, lock_path)
  except BaseException:
    # Never the lock file here: another run may hold it (unlinked, a third could lock anew).
    remove_unused([p for p in created if p != lock_path])
    raise
  _HELD[lock_path] = (fd, 1)
  failed = True
  try:
    yield path
    failed = False
  finally:
    _HELD.pop(lock_path, None)
    os.close(fd)  # Releases the flock.
    if failed:
      remove_unused(created)


def missing_dirs(path: str) -> list[str]:
  """The directories of `path`'s chain that do not exist yet, deepest first."""
  missing = []
  while path and not os.path.lexists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def remove_unused(created: list[str]) -> None:
  """A run refused before it wrote anything leaves no trace: what this claim created (the
  lock file, then the directories, deepest first) goes again while it holds nothing else."""
  lock = [p for p in created if os.path.basename(p) == LOCK_FILE]
  if lock and os.listdir(os.path.dirname(lock[0])) == [LOCK_FILE]:
    with contextlib.suppress(OSError):
      os.remove(lock[0])
  for d in created:
    if d in lock:
      continue
    try:
      os.rmdir(d)
    except OSError:
      return  # Not empty (the run wrote something) or not ours to remove: kept.


def _lock(path: epath.Path, lock_path: str) -> int:
  import fcntl  # pylint: disable=g-import-not-at-top  POSIX only; imported where it is used.
  _probe_writable(path)
  try:
    # Owner-only: the lock holds the command line, which may name private paths.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
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
  with contextlib.suppress(OSError):  # A lock file made by an older version, or not ours.
    os.fchmod(fd, 0o600)
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


def _non_directory(path: str) -> str | None:
  """What a local `path` is when it is not a directory ("a file", "a symbolic link loop", ...);
  None for a directory (or a link to one) and for nothing at all."""
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    if e.errno == errno.ELOOP:
      return "a symbolic link loop"
    if e.errno not in (errno.ENOENT, errno.ENOTDIR):
      raise
    # Nothing there (or a parent is a file: creating it will say so), or a link to nothing.
    return f"a dangling symbolic link (to {os.readlink(path)})" if os.path.islink(path) else None
  if stat.S_ISDIR(mode):
    return None
  return "a file" if stat.S_ISREG(mode) else "a special file (a socket, FIFO or device)"


def _non_file(path: str) -> str | None:
  """What a local `path` is when the run cannot use it as a file; None for a file (or a link
  to one) and for nothing at all."""
  what = _non_directory(path)
  if what is None and os.path.isdir(path):
    return "a directory"
  return None if what == "a file" else what


def check_kinds(workdir, dirs=(), files=()) -> None:
  """Checks, before the run writes anything, that each of workdir/`dirs` is a directory or
  absent and each of workdir/`files` a file or absent (a regular file, a symbolic link loop or
  a dangling link in their place would make the run misread or lose what it holds).
  Raises errors.WorkdirError naming the path and what it is."""
  path = as_path(workdir)
  for names, expected, probe in ((dirs, "directory", _non_directory), (files, "file", _non_file)):
    for name in names:
      full = path / name
      try:
        what = (("a file" if expected == "directory" and full.exists() and not full.is_dir()
                 else None) if is_remote(full) else probe(os.fspath(full)))
      except OSError as e:
        raise errors.WorkdirError(f"{full} cannot be read ({errors.describe_os_error(e)}); "
                                  "restore read access to it, or pass another --workdir") from None
      if what is not None:
        raise errors.WorkdirError(
            f"{full} is {what}, not a {expected}; move it out of the way (the run makes "
            f"the {expected}), or pass another --workdir")


def check_path_limits(workdir, relative_paths) -> None:
  """Creates and removes, under a local workdir, a throwaway path of the same component
  lengths as each of `relative_paths` (tuples of names, e.g. a checkpoint's deepest file): a
  workdir too long for its file system (a name over NAME_MAX, a path over PATH_MAX) fails
  here, before any work, instead of at the first checkpoint. Raises errors.WorkdirError."""
  path = as_path(workdir)
  if is_remote(path):
    return
  for parts in relative_paths:
    # The first name is ours, as long as the real one (pid digits may make it longer).
    root = f".path-probe-{os.getpid()}"
    root = root + "_" * (len(parts[0]) - len(root))
    probe = [root] + ["x" * len(p) for p in parts[1:]]
    full = os.path.join(os.fspath(path), *probe)
    try:
      os.makedirs(os.path.dirname(full), exist_ok=True)
      with open(full, "w", encoding="utf-8"):
        pass
    except OSError as e:
      if e.errno != errno.ENAMETOOLONG:
        raise errors.WorkdirError(f"--workdir={path} cannot be written "
                                  f"({errors.describe_os_error(e)}); pass a path you can "
                                  "write to") from None
      longest = os.path.join(os.fspath(path), *parts)
      raise errors.WorkdirError(
          f"--workdir={path} is too long for its file system: the run writes paths such as "
          f"{longest} ({len(longest)} characters, names up to {max(map(len, parts))}); pass "
          "a shorter --workdir") from None
    finally:
      top = os.path.join(os.fspath(path), root)
      if os.path.isdir(top):
        shutil.rmtree(top, ignore_errors=True)
      else:
        with contextlib.suppress(OSError):
          os.remove(top)


def sync(path) -> None:
  """fsync a local file and then its directory, so the file and its name survive a power loss
  (an object store's write is durable once it returns: no-op there). Raises StorageError."""
  path = epath.Path(path)
  if is_remote(path):
    return
  try:
    _fsync(os.fspath(path))
    _fsync_directory(os.fspath(path.parent))
  except OSError as e:
    raise storage_error(path, e) from None


def sync_tree(path) -> None:
  """sync for a local directory: every file and directory under it, then its parent."""
  path = epath.Path(path)
  if is_remote(path):
    return
  try:
    for root, dirs, files in os.walk(os.fspath(path)):
      for name in files:
        _fsync(os.path.join(root, name))
      for name in dirs:
        _fsync_directory(os.path.join(root, name))
    _fsync_directory(os.fspath(path))
    _fsync_directory(os.fspath(path.parent))
  except OSError as e:
    raise storage_error(path, e) from None


def _fsync(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_directory(path: str) -> None:
  try:
    _fsync(path)
  except OSError as e:
    # Some file systems (and platforms) cannot fsync a directory; their renames are what
    # they are.
    if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
      raise


def write_text(path: epath.Path, text: str) -> None:
  """Writes the whole file or nothing: a temporary file, fsynced, renamed over it, then the
  directory fsynced, so a power loss leaves the old file or the new one (an object store's
  single write is atomic and durable already). Raises errors.StorageError."""
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path: epath.Path, data: bytes) -> None:
  """write_text for bytes (a figure, a params file): the whole file or nothing."""
  path = epath.Path(path)
  try:
    if is_remote(path):
      path.write_bytes(data)
      return
    tmp = os.fspath(path.parent / f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_directory(os.fspath(path.parent))
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
