"""The harness's store of finished work: WORKDIR/harness/cells.jsonl and harness/params/.

Every entry is addressed by its content, never by its position:

  entry_id(key) = sha256 of the canonical JSON of `key` (sorted keys, no spaces)

A "fit" entry is one training (the harness's fit for one or more cells that share it): its
key names the experiment, the config fingerprint, the seeds, the identity of each seed's data
draw and the fit (default: size, arm and setting); it holds the trained params (in
params/<id>.npz), the cell's records (its "train" metric lines) and the validation
measurements of every cell it serves. A "test" entry holds the test measurements of one arm's
chosen setting; its key names the fit entry it measured. Each line of cells.jsonl carries
"sha256", the checksum of the line's other fields, and a fit entry "params_sha256", the
checksum of its params file.

Params are never pickled: params/<id>.npz holds the leaves as .npy members (read with
allow_pickle=False) and the pytree structure as JSON in its "__tree__" member; the zip members
carry a fixed date, so the same params make the same bytes. Files are written whole or not at
all (workdir.write_bytes: a temporary file, fsynced, renamed).

Loading (CellStore(root)):
  - a line that is not a JSON object (a kill mid-append, a damaged line) is skipped with a
    warning: its cell is redone, and no other cell's file is touched (a redone fit writes its
    own params/<id>.npz); the file is never rewritten, only a torn last line terminated;
  - a duplicate line is one entry;
  - a JSON line whose checksum does not match its content, or a params file whose checksum does
    not match its entry, is errors.WorkdirError (exit 2) naming the file and the fix; nothing
    is deleted;
  - a params file that is missing has its fit redone;
  - a store of the older format (params/*.pkl, lines without checksums) is refused in one line:
    it is never unpickled.
"""
import dataclasses
import hashlib
import io
import json
import zipfile
from typing import Any

import numpy as np
from absl import logging

from research import errors
from research import workdir as workdir_lib

CELLS = "cells.jsonl"
PARAMS = "params"
FORMAT = 2  # Entries' "format": 1 was the pickled store (params/<n>.pkl, no checksums).
_TREE = "__tree__"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def canonical(obj: Any) -> str:
  """The canonical JSON of obj: sorted keys, no spaces, NumPy numbers as Python's."""
  return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=json_default)


def entry_id(key: dict) -> str:
  """The content address of an entry: sha256 of canonical(key), hex."""
  return hashlib.sha256(canonical(key).encode()).hexdigest()


def digest(obj) -> str:
  """sha256 of a data draw's content: its arrays' dtypes, shapes and bytes (a Split's x and
  y, any dataclass's or pytree's fields), other values by their JSON. Never by identity."""
  h = hashlib.sha256()
  _feed(h, obj)
  return h.hexdigest()


def _feed(h, obj) -> None:
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
  if isinstance(obj, dict):
    for k in sorted(obj, key=str):
      h.update(f"<{k}>".encode())
      _feed(h, obj[k])
  elif isinstance(obj, (list, tuple)):
    h.update(f"[{len(obj)}".encode())
    for v in obj:
      _feed(h, v)
  elif isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
    a = np.ascontiguousarray(np.asarray(obj))
    if a.dtype == object:
      raise TypeError(f"cannot hash an object array ({type(obj)}) as a data draw")
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  else:
    h.update(canonical(obj).encode())


def json_default(v):
  if isinstance(v, np.generic) or hasattr(v, "__array__"):
    return np.asarray(v).tolist()
  raise TypeError(f"not JSON serialisable: {type(v)}")


# ------------------------------------------------------------------------------- params files


def _structure(tree, leaves: list) -> Any:
  """tree as JSON: dicts, lists and tuples kept, each array replaced by {"leaf": index}."""
  if isinstance(tree, dict):
    return {"dict": {str(k): _structure(v, leaves) for k, v in tree.items()}}
  if isinstance(tree, (list, tuple)):
    return {"list" if isinstance(tree, list) else "tuple": [_structure(v, leaves) for v in tree]}
  if tree is None or isinstance(tree, (bool, int, float, str)):
    return {"value": tree}
  leaves.append(np.asarray(tree))
  return {"leaf": len(leaves) - 1}


def _rebuild(node, leaves: dict) -> Any:
  (kind, value), = node.items()
  if kind == "dict":
    return {k: _rebuild(v, leaves) for k, v in value.items()}
  if kind in ("list", "tuple"):
    items = [_rebuild(v, leaves) for v in value]
    return items if kind == "list" else tuple(items)
  if kind == "value":
    return value
  return leaves[value]


def params_bytes(params) -> bytes:
  """params (a pytree of arrays: dicts, lists, tuples) as .npz bytes: the same params, the
  same bytes. Dtypes NumPy cannot read without pickle (bfloat16) are stored as their bits."""
  leaves: list = []
  tree = _structure(params, leaves)
  dtypes = []
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
    for i, a in enumerate(leaves):
      dtypes.append(a.dtype.name)
      if a.dtype.kind == "V":  # ml_dtypes' bfloat16, float8_*: NumPy reads them via pickle.
        a = a.view(f"u{a.dtype.itemsize}")
      _member(z, f"{i}.npy", a)
    header = canonical({"tree": tree, "dtypes": dtypes}).encode()
    _member(z, f"{_TREE}.npy", np.frombuffer(header, np.uint8))
  return buffer.getvalue()


def _member(z: zipfile.ZipFile, name: str, a: np.ndarray) -> None:
  with z.open(zipfile.ZipInfo(name, date_time=_ZIP_DATE), "w", force_zip64=True) as f:
    # np.asarray(order="C"), not ascontiguousarray: that one makes a 0-d array 1-d.
    np.lib.format.write_array(f, np.asarray(a, order="C"), allow_pickle=False)


def params_from_bytes(data: bytes) -> Any:
  """The pytree params_bytes wrote, as NumPy arrays; nothing is unpickled (ValueError for
  a file that is not one, or that holds pickled objects)."""
  try:
    return _from_bytes(data)
  except (OSError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
    raise ValueError(f"not a params file ({type(e).__name__}: {e})") from None


def save_tree(path, tree) -> None:
  """A pytree of arrays and plain numbers/strings (a cache of a run) at `path` as
  params_bytes, written whole or not at all."""
  workdir_lib.write_bytes(workdir_lib.as_path(path), params_bytes(tree))


def load_tree(path) -> Any | None:
  """What save_tree wrote at `path`; None when it is missing or unreadable (torn): redo it."""
  path = workdir_lib.as_path(path)
  try:
    return params_from_bytes(path.read_bytes()) if path.exists() else None
  except (OSError, ValueError):
    return None


def _from_bytes(data: bytes) -> Any:
  with np.load(io.BytesIO(data), allow_pickle=False) as f:
    header = json.loads(f[_TREE].tobytes().decode())
    leaves = {}
    for i, dtype in enumerate(header["dtypes"]):
      a = f[str(i)]
      if a.dtype.name != dtype:
        import ml_dtypes  # pylint: disable=g-import-not-at-top  bfloat16 & co., jax's dependency.
        a = a.view(getattr(ml_dtypes, dtype))
      leaves[i] = a
  return _rebuild(header["tree"], leaves)


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------- the store


class CellStore:
  """The entries of root/cells.jsonl (module doc), verified on load; the only writer is the
  process that runs the harness (Ray workers return their results to it)."""

  def __init__(self, root):
    self.root = workdir_lib.as_path(root)
    self.path = self.root / CELLS
    self.entries: dict[str, dict] = {}
    self._refuse_old_format()
    # A kill mid-write leaves workdir.write_bytes's temporary file; its cell has no line, so
    # it is redone. The harness's process holds the workdir, so no other writer owns these.
    for torn in (self.root / PARAMS).glob(".*.tmp-*") if (self.root / PARAMS).is_dir() else ():
      logging.warning("%s is a torn write (its cell is redone); removed", torn)
      torn.unlink(missing_ok=True)
    if not self.path.exists():
      return
    text = self.path.read_text()
    for number, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
          raise ValueError("not a JSON object")
      except ValueError:
        logging.warning("%s line %d is not an entry (a torn or damaged line); its cell is "
                        "redone", self.path, number)
        continue
      self._check_line(entry, number)
      self.entries[entry["id"]] = entry  # A duplicate line is one entry.
    for entry in list(self.entries.values()):
      if entry["kind"] == "fit":
        self._check_params(entry)
    if text and not text.endswith("\n"):
      # Terminate a torn last line, so the next append starts a line of its own.
      workdir_lib.append_line(self.path, "")

  def _refuse_old_format(self) -> None:
    old = self.root / PARAMS
    if old.exists() and any(old.glob("*.pkl")):
      raise errors.WorkdirError(
          f"{self.root} holds cells in the harness's older format (pickled params, "
          f"{old}/*.pkl), which this version never reads: a pickle can run code; rerun in a "
          "fresh --workdir")

  def _check_line(self, entry: dict, number: int) -> None:
    body = {k: v for k, v in entry.items() if k != "sha256"}
    if "sha256" not in entry and str(entry.get("id", "")).startswith(("valid:", "test:")):
      raise errors.WorkdirError(
          f"{self.path} is in the harness's older format (lines without checksums, params "
          "pickled), which this version never reads; rerun in a fresh --workdir")
    if entry.get("sha256") != sha256(canonical(body).encode()) or entry.get(
        "kind") not in ("fit", "test") or entry.get("id") != entry_id(entry.get("key")):
      raise errors.WorkdirError(
          f"{self.path} line {number} does not match its checksum (edited or damaged); delete "
          "that line to redo its cell, or rerun in a fresh --workdir")

  def _check_params(self, entry: dict) -> None:
    path = self.root / entry["params"]
    if not path.exists():
      logging.warning("%s is missing; its cell is redone", path)
      del self.entries[entry["id"]]
      return
    try:
      data = path.read_bytes()
    except OSError as e:
      raise errors.WorkdirError(f"{path} cannot be read ({errors.describe_os_error(e)}); "
                                "restore read access, or rerun in a fresh --workdir") from None
    if sha256(data) != entry["params_sha256"]:
      raise errors.WorkdirError(
          f"{path} does not match its checksum in {self.path} (damaged or replaced); delete "
          "that file to train its cell again, or rerun in a fresh --workdir")

  def get(self, entry_id_: str) -> dict | None:
    return self.entries.get(entry_id_)

  def put(self, kind: str, key: dict, values: dict, params=None) -> dict:
    """Appends the entry {kind, key, **values} (with params: written first, to
    params/<id>.npz); returns it. A kill between the two leaves a params file and no line:
    the cell is redone and rewrites that file."""
    eid = entry_id(key)
    entry = {"format": FORMAT, "kind": kind, "id": eid, "key": key, **values}
    self.root.mkdir(parents=True, exist_ok=True)
    if params is not None:
      data = params_bytes(params)
      name = f"{PARAMS}/{eid}.npz"
      (self.root / PARAMS).mkdir(parents=True, exist_ok=True)
      workdir_lib.write_bytes(self.root / name, data)
      entry.update(params=name, params_sha256=sha256(data))
    # What a reader will see (tuples as lists, NumPy numbers as Python's), in written order.
    entry = json.loads(json.dumps(entry, default=json_default))
    entry["sha256"] = sha256(canonical(entry).encode())
    workdir_lib.append_line(self.path, json.dumps(entry, separators=(",", ":")))
    self.entries[eid] = entry
    return entry

  def params(self, entry_id_: str) -> Any:
    """The params of a fit entry, checked against its checksum, as NumPy arrays."""
    entry = self.entries[entry_id_]
    path = self.root / entry["params"]
    try:
      data = path.read_bytes()
    except OSError as e:
      raise errors.WorkdirError(f"{path} cannot be read ({errors.describe_os_error(e)}); "
                                "delete its line in cells.jsonl to train that cell again") from None
    if sha256(data) != entry["params_sha256"]:
      raise errors.WorkdirError(
          f"{path} does not match its checksum in {self.path} (damaged or replaced); delete "
          "that file to train its cell again, or rerun in a fresh --workdir")
    try:
      return params_from_bytes(data)
    except ValueError as e:
      raise errors.WorkdirError(
          f"{path} is not a params file this version reads ({str(e)[:150]}); delete that file "
          "to train its cell again, or rerun in a fresh --workdir") from None
