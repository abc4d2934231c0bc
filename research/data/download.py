"""The local data cache and a checksummed, atomic download into it.

Nothing here runs unless a loader's config says `download=True`; training jobs are meant to
read files that are already on disk. A download streams into a temporary file beside its
destination, is hashed on the way, and is renamed into place only when the checksum matches,
so an interrupted or corrupted transfer never leaves a file that a later run could trust.
"""
import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.request
from typing import Callable, Sequence

from research import errors

CACHE_ENV = "RESEARCH_DATA_DIR"
TIMEOUT_S = 60.0  # per blocking socket operation, not for the whole transfer
_CHUNK = 1 << 20
_ALGORITHMS = ("md5", "sha256")


def cache_dir(subdir: str = "") -> pathlib.Path:
  """$RESEARCH_DATA_DIR, else ~/.cache/research, joined with `subdir`; not created here."""
  root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "research")
  return pathlib.Path(root, subdir)


def _parse_checksum(checksum: str) -> tuple[str, str]:
  algorithm, _, digest = checksum.partition(":")
  if algorithm not in _ALGORITHMS or not digest:
    raise ValueError(f"checksum {checksum!r} must look like 'md5:<hex>' or 'sha256:<hex>'")
  return algorithm, digest.lower()


def file_checksum(path: os.PathLike, algorithm: str) -> str:
  """Hex digest of a file's bytes, read in chunks (files may be larger than memory)."""
  h = hashlib.new(algorithm)
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      h.update(chunk)
  return h.hexdigest()


def matches(path: os.PathLike, checksum: str) -> bool:
  """Whether `path` exists and its bytes have `checksum` ('md5:<hex>' or 'sha256:<hex>')."""
  algorithm, digest = _parse_checksum(checksum)
  return os.path.isfile(path) and file_checksum(path, algorithm) == digest


def fetch(urls: Sequence[str], dest: os.PathLike, checksum: str, *,
          timeout_s: float = TIMEOUT_S, urlopen: Callable = urllib.request.urlopen) -> pathlib.Path:
  """Downloads the first of `urls` (mirrors, tried in order) that yields `checksum` to dest.

  A dest that already has the checksum is kept without touching the network. Raises
  DataError naming every URL tried and why it failed; no partial file is left behind.
  `urlopen` is injectable for tests.
  """
  dest = pathlib.Path(dest)
  algorithm, digest = _parse_checksum(checksum)
  if matches(dest, checksum):
    return dest
  dest.parent.mkdir(parents=True, exist_ok=True)
  failures = []
  for url in urls:
    try:
      _fetch_one(url, dest, algorithm, digest, timeout_s, urlopen)
      return dest
    # URLError, HTTPError and socket timeouts are OSErrors; a cut connection can raise
    # IncompleteRead (an HTTPException); a checksum mismatch is a ValueError.
    except (OSError, http.client.HTTPException, ValueError) as e:
      failures.append(f"{url}: {e}")
  raise errors.DataError(
      f"could not download {dest.name} ({'; '.join(failures)}); check the network, or fetch "
      f"it yourself and put it at {dest}")


def _fetch_one(url, dest: pathlib.Path, algorithm, digest, timeout_s, urlopen) -> None:
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
  try:
    h = hashlib.new(algorithm)
    with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout_s) as response:
      for chunk in iter(lambda: response.read(_CHUNK), b""):
        h.update(chunk)
        out.write(chunk)
    if h.hexdigest() != digest:
      raise ValueError(f"{algorithm} checksum {h.hexdigest()} != expected {digest}")
    os.replace(tmp, dest)  # Atomic on POSIX: dest is either absent or complete.
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
