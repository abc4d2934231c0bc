"""The harness's store (research/experiments/store.py): cells addressed by content, params never
pickled, checksums on every line and params file, and a resumed run that ends with the records
and results of an uninterrupted one whatever the kill point and whatever happened to the store.

Kill points are taken from observed progress: the fake experiment raises after its k-th fit,
the real runner is SIGKILLed once harness/cells.jsonl holds k lines. Never a clock."""
import ast
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import ml_dtypes
import numpy as np
import pytest

from research import data as data_lib
from research import errors
from research import metrics as metrics_lib
from research.experiments import harness
from research.experiments import stats as stats_lib
from research.experiments import store as store_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ params files


def test_params_round_trip_without_pickle_and_the_same_params_make_the_same_bytes():
  tree = [{"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)},
          ({"h": np.ones((1,), ml_dtypes.bfloat16)}, None, 3, 0.5, "relu")]
  data = store_lib.params_bytes(tree)
  assert data == store_lib.params_bytes(tree)  # No timestamps: content addressed for real.
  back = store_lib.params_from_bytes(data)
  np.testing.assert_array_equal(back[0]["w"], tree[0]["w"])
  assert back[0]["w"].dtype == np.float32 and back[1][0]["h"].dtype == ml_dtypes.bfloat16
  assert back[1][1:] == (None, 3, 0.5, "relu") and isinstance(back[1], tuple)
  # Shapes come back as they were, a 0-d array's too (a scalar leaf, e.g. steps taken).
  scalars = store_lib.params_from_bytes(store_lib.params_bytes({"s": np.int32(7)}))
  assert scalars["s"].shape == () and scalars["s"] == 7


def test_a_params_file_holding_a_pickle_is_refused_and_runs_nothing(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as z:
    with z.open("0.npy", "w") as f:
      np.lib.format.write_array(f, np.array([Evil()], dtype=object), allow_pickle=True)
    with z.open("__tree__.npy", "w") as f:
      header = json.dumps({"tree": {"leaf": 0}, "dtypes": ["object"]}).encode()
      np.lib.format.write_array(f, np.frombuffer(header, np.uint8))
  with pytest.raises(ValueError):
    store_lib.params_from_bytes(buffer.getvalue())
  assert not marker.exists()


def test_no_pickle_import_outside_the_tests():
  found = []
  for top in ("research", "launch", "configs", "colab"):
    for path in (REPO / top).rglob("*.py"):
      for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path}: {n}" for n in names if n.split(".")[0] in ("pickle", "cloudpickle",
                                                                        "dill")]
  assert not found


# ------------------------------------------------------------------- a fake experiment's store


def _fake(calls, fail_after=None, writer=None, fit_key=None, draw=True):
  """Two arms x three learning rates x two sizes; fit writes two "train" records per seed to
  `writer` (as train_seeds does) and raises KeyboardInterrupt (a kill) after `fail_after`
  fits."""
  def fit(arm, setting, size, seeds, subsets):
    if fail_after is not None and len(calls) >= fail_after:
      raise KeyboardInterrupt("killed")
    calls.append((arm, size, setting["lr"]))
    for step in (1, 2):
      for seed in seeds:
        writer.write({"step": step, "split": "train", "arm": arm, "seed": seed,
                      "loss": setting["lr"] * step + seed + size})
    return [{"w": np.full(3, seed + setting["lr"], np.float32)} for seed in seeds]

  def measure(arm, setting, size, seed, params, split):
    score = 0.9 - abs(np.log10(setting["lr"]) + 1) * 0.1 + 0.01 * size
    return {"accuracy": score + (0.02 if arm == "b" else 0.0) + 0.001 * seed,
            "w0": float(params["w"][0])}

  labels = np.repeat(np.arange(3), 10)
  split = data_lib.Split(np.arange(60, dtype=np.float32).reshape(30, 2), labels.astype(np.int32))
  grid = {"lr": (0.01, 0.1, 1.0)}
  return harness.Experiment(
      "fake", [harness.Arm("a", grid), harness.Arm("b", grid)], "a", (1, 2), "labels per class",
      [0, 1, 2], fit, measure, draw=harness.labelled_draw(split, 3) if draw else None,
      fit_key=fit_key)


def _run(workdir, calls, fail_after=None, fit_key=None, draw=True):
  """One process's worth of a runner: report.runner's truncation of an interrupted run's
  records, then the harness with a CellWriter over metrics.jsonl."""
  workdir = pathlib.Path(workdir)
  if (workdir / metrics_lib.FILENAME).exists():
    metrics_lib.truncate(workdir, -1)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  cells = harness.CellWriter(writer)
  try:
    return harness.run(_fake(calls, fail_after, cells, fit_key, draw), workdir, cells,
                       fingerprint="f")
  finally:
    writer.close()


def _strip(results):
  return json.dumps({k: v for k, v in results.items() if k != "wall_time"}, sort_keys=True)


def _records(workdir):
  return [{k: v for k, v in r.items() if k not in metrics_lib.TIMING_FIELDS}
          for r in metrics_lib.read_metrics(workdir)]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
  path = tmp_path_factory.mktemp("fresh")
  calls = []
  results = _run(path, calls)
  assert len(calls) == 12
  return path, results


def _files(path):
  return {p.name: p.read_bytes() for p in (path / "harness" / "params").iterdir()}


@pytest.mark.every_case
@pytest.mark.parametrize("kill_after", range(12))
def test_one_kill_at_any_fit_resumes_to_the_same_results_and_every_record(
    tmp_path, fresh, kill_after):
  calls = []
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, calls, fail_after=kill_after)
  done = list(calls)
  resumed = _run(tmp_path, calls)
  assert not set(calls[len(done):]) & set(done) and len(calls) == 12  # Nothing redone.
  assert _strip(resumed) == _strip(fresh[1])
  assert _records(tmp_path) == _records(fresh[0])
  assert _files(tmp_path) == _files(fresh[0])


def test_five_kills_lose_no_record(tmp_path, fresh):
  calls = []
  for kill_after in (1, 2, 4, 7, 11):
    with pytest.raises(KeyboardInterrupt):
      _run(tmp_path, calls, fail_after=kill_after)
  resumed = _run(tmp_path, calls)
  assert len(calls) == 12
  assert _strip(resumed) == _strip(fresh[1])
  assert _records(tmp_path) == _records(fresh[0])


def test_kills_mid_append_and_mid_params_write_resume_to_the_same_records(tmp_path, fresh):
  calls = []
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, calls, fail_after=5)
  cells = tmp_path / "harness" / "cells.jsonl"
  lines = cells.read_text().splitlines(keepends=True)
  # Killed after a fit's params file was renamed into place, before its line: drop the line.
  # Then mid-append of the next line: half of it. And mid-write of a params file: a torn
  # temporary file beside the others.
  cells.write_text("".join(lines[:-1]) + lines[-1][:len(lines[-1]) // 2])
  torn = tmp_path / "harness" / "params" / ".x.npz.tmp-999"
  torn.write_bytes(b"PK\x03\x04torn")
  resumed = _run(tmp_path, calls)
  assert _strip(resumed) == _strip(fresh[1])
  assert _records(tmp_path) == _records(fresh[0])
  assert not torn.exists()  # Nothing left behind.
  assert store_lib.CellStore(tmp_path / "harness")  # Loads cleanly: the torn line ended.


# -------------------------------------------------------------------------- a damaged store


def test_a_garbage_line_redoes_only_its_cell_and_touches_no_other_file(tmp_path, fresh):
  calls = []
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, calls, fail_after=8)
  cells = tmp_path / "harness" / "cells.jsonl"
  lines = cells.read_text().splitlines(keepends=True)
  victim = json.loads(lines[2])
  lines[2] = "GARBAGE{\n"
  cells.write_text("".join(lines))
  before = {p: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in (tmp_path / "harness" / "params").iterdir()}
  calls.clear()
  resumed = _run(tmp_path, calls)
  assert _strip(resumed) == _strip(fresh[1])
  assert _records(tmp_path) == _records(fresh[0])
  others = {p: v for p, v in before.items() if victim.get("params", "-") not in str(p)}
  assert all((p.read_bytes(), p.stat().st_mtime_ns) == v for p, v in others.items())
  # The garbage line's cell (a fit or a test measurement), then the unfinished ones: 12 - 8.
  assert len(calls) == 4 + (victim["kind"] == "fit")
  assert "GARBAGE{" in cells.read_text()  # Nothing deleted.


def test_a_duplicate_line_is_one_cell(tmp_path, fresh):
  calls = []
  _run(tmp_path, calls)
  cells = tmp_path / "harness" / "cells.jsonl"
  lines = cells.read_text().splitlines(keepends=True)
  cells.write_text("".join(lines[:3] + lines[1:2] + lines[3:]))
  (tmp_path / "metrics.jsonl").unlink()
  calls.clear()
  assert _strip(_run(tmp_path, calls)) == _strip(fresh[1]) and not calls
  assert _records(tmp_path) == _records(fresh[0])


@pytest.mark.every_case
@pytest.mark.parametrize("damage", ["valid", "params"])
def test_an_edited_value_or_params_file_is_one_line_naming_it_and_nothing_is_deleted(
    tmp_path, damage):
  _run(tmp_path, [])
  cells = tmp_path / "harness" / "cells.jsonl"
  if damage == "valid":
    lines = cells.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"accuracy":0.', '"accuracy":0.9', 1)
    cells.write_text("".join(lines))
    expect = rf"{cells} line 2 does not match its checksum.*delete that line"
  else:
    target = sorted((tmp_path / "harness" / "params").iterdir())[0]
    data = bytearray(target.read_bytes())
    data[-20] ^= 1
    target.write_bytes(bytes(data))
    expect = rf"{target} does not match its checksum.*delete that file"
  store = lambda: {p: p.read_bytes() for p in (tmp_path / "harness").rglob("*") if p.is_file()}
  before = store()
  with pytest.raises(errors.WorkdirError, match=expect) as e:
    _run(tmp_path, [])
  assert "\n" not in str(e.value)
  assert store() == before


def test_a_missing_params_file_redoes_its_fit(tmp_path, fresh):
  calls = []
  _run(tmp_path, calls)
  sorted((tmp_path / "harness" / "params").iterdir())[0].unlink()
  calls.clear()
  assert _strip(_run(tmp_path, calls)) == _strip(fresh[1])
  assert len(calls) == 1
  assert _records(tmp_path) == _records(fresh[0])


def test_an_old_pickled_store_is_refused_and_never_unpickled(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  import pickle  # pylint: disable=g-import-not-at-top  Only to craft the attack.
  params = tmp_path / "harness" / "params"
  params.mkdir(parents=True)
  (params / "00000.pkl").write_bytes(pickle.dumps(Evil()))
  (tmp_path / "harness" / "cells.jsonl").write_text(
      json.dumps({"id": 'valid:{"arm": "a"}', "valid": [], "params": "params/00000.pkl"}) + "\n")
  with pytest.raises(errors.WorkdirError, match="older format.*never reads.*fresh --workdir"):
    _run(tmp_path, [])
  assert not marker.exists()
  (params / "00000.pkl").unlink()  # Old lines alone: refused too.
  with pytest.raises(errors.WorkdirError, match="older format.*fresh --workdir"):
    _run(tmp_path, [])


def test_cells_with_one_fit_key_train_once_and_resume_with_their_records(tmp_path):
  shared = lambda arm, setting, size: {"size": size, "lr": setting["lr"]}  # a and b share
  calls = []
  fresh = _run(tmp_path / "fresh", calls, fit_key=shared)
  assert len(calls) == 6 and all(arm == "a" for arm, _, _ in calls)
  assert len(list((tmp_path / "fresh" / "harness" / "params").iterdir())) == 6
  calls = []
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", calls, fail_after=3, fit_key=shared)
  resumed = _run(tmp_path / "killed", calls, fit_key=shared)
  assert len(calls) == 6
  assert _strip(resumed) == _strip(fresh)
  assert _records(tmp_path / "killed") == _records(tmp_path / "fresh")


def test_a_fit_key_shared_across_sizes_trains_once_when_the_data_is_the_same(tmp_path):
  # adversarial's standard training: one network per setting serves every threat eps.
  shared = lambda arm, setting, size: {"lr": setting["lr"]} if arm == "a" else {
      "size": size, "arm": arm, "setting": setting}
  calls = []
  fresh = _run(tmp_path / "fresh", calls, fit_key=shared, draw=False)
  assert sorted(calls) == sorted([("a", 1, lr) for lr in (0.01, 0.1, 1.0)]
                                 + [("b", size, lr) for size in (1, 2) for lr in (0.01, 0.1, 1.0)])
  calls = []
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", calls, fail_after=2, fit_key=shared, draw=False)
  assert _strip(_run(tmp_path / "killed", calls, fit_key=shared, draw=False)) == _strip(fresh)
  assert len(calls) == 9
  assert _records(tmp_path / "killed") == _records(tmp_path / "fresh")
  # With a draw per size, the draws differ, and so do the ids: nothing is shared.
  calls = []
  _run(tmp_path / "drawn", calls, fit_key=shared)
  assert len(calls) == 12


def test_the_cell_id_changes_with_what_changes_the_result():
  calls = []
  exp = _fake(calls, writer=harness.CellWriter())
  ids = set(harness._Plan(exp, [0, 1, 2], "f").fits)
  assert len(ids) == 12
  assert ids == set(harness._Plan(exp, [0, 1, 2], "f").fits)  # Stable.
  assert not ids & set(harness._Plan(exp, [0, 1, 2], "g").fits)  # Another config.
  assert not ids & set(harness._Plan(exp, [0, 1, 3], "f").fits)  # Other seeds.
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"seed": 0, "experiment": {"executor": "local", "a": 1},
                                      "keep_checkpoints": 3})
  other = ml_collections.ConfigDict({"seed": 0, "experiment": {"executor": "ray", "a": 1},
                                     "keep_checkpoints": 5})
  assert harness.config_fingerprint(config) == harness.config_fingerprint(other)
  other.experiment.max_extensions = 2  # A budget of extensions reuses every finished cell.
  assert harness.config_fingerprint(config) == harness.config_fingerprint(other)
  other.experiment.a = 2
  assert harness.config_fingerprint(config) != harness.config_fingerprint(other)


# ------------------------------------------------------------------------ grid extension


def test_extend_grid_steps_geometric_or_arithmetic_within_the_bounds():
  ext = lambda axes, chosen, bounds=None, added=None, budget=2: harness.extend_grid(
      axes, chosen, added or {}, bounds or {}, budget)
  lr = {"learning_rate": [1e-3, 3e-3, 1e-2]}
  assert ext(lr, {"learning_rate": 1e-2})[0] == {"learning_rate": [1e-3, 3e-3, 1e-2, 3e-2]}
  assert ext(lr, {"learning_rate": 1e-3})[0]["learning_rate"][0] == 3e-4
  assert ext(lr, {"learning_rate": 3e-3}) == (lr, [])  # interior: nothing to do
  w = {"weight": [0.3, 0.5, 0.7]}  # evenly spaced: arithmetic
  assert ext(w, {"weight": 0.7})[0]["weight"] == [0.3, 0.5, 0.7, 0.9]
  # A weight in [0, 1): 0.9 + 0.2 is outside, so the open end is approached halfway.
  axes, edges = ext({"weight": [0.5, 0.7, 0.9]}, {"weight": 0.9}, {"weight": "[0, 1)"})
  assert axes == {"weight": [0.5, 0.7, 0.9, pytest.approx(0.95)]} and edges == []
  # A closed end is reached exactly, once.
  assert ext({"weight": [0.5, 0.7, 0.9]}, {"weight": 0.9}, {"weight": "[0, 1]"})[0] == {
      "weight": [0.5, 0.7, 0.9, 1.0]}
  assert ext({"weight": [0.7, 0.9, 1.0]}, {"weight": 1.0}, {"weight": "[0, 1]"})[1][0]["why"] == (
      "bound")
  # 0 is a natural bound; past it, the positive candidates set a geometric step.
  l2 = {"l2": [0.0, 1e-4, 1e-3]}
  assert ext(l2, {"l2": 0.0})[1] == [{"axis": "l2", "value": 0.0, "side": "low", "why": "bound"}]
  assert ext(l2, {"l2": 1e-3})[0] == {"l2": [0.0, 1e-4, 1e-3, 1e-2]}
  # The default bound of a positive axis is 0, exclusive: an arithmetic step past it halves.
  assert ext({"eps": [0.1, 0.2, 0.3]}, {"eps": 0.1})[0] == {"eps": [0.05, 0.1, 0.2, 0.3]}
  # The budget counts per axis; a descending axis grows at its own ends; integers stay whole.
  assert ext(lr, {"learning_rate": 1e-2}, added={"learning_rate": [1, 2]})[1][0]["why"] == (
      "budget")
  assert ext({"lr": [1.0, 0.1]}, {"lr": 0.1})[0] == {"lr": [1.0, 0.1, 0.01]}
  assert ext({"steps": [10, 20, 30]}, {"steps": 30})[0] == {"steps": [10, 20, 30, 40]}
  # Unsorted, one candidate, or not numbers: never extended (unsorted edges are listed).
  assert ext({"lr": [1e-3, 3e-4, 3e-3]}, {"lr": 3e-3})[1][0]["why"] == "unsorted"
  assert ext({"lr": [1e-3]}, {"lr": 1e-3}) == ({"lr": [1e-3]}, [])
  assert ext({"kind": ["a", "b"]}, {"kind": "b"}) == ({"kind": ["a", "b"]}, [])


def _edgy(calls, fail_after=None, writer=None, fail_test_after=None, budget=2):
  """Arms whose validation score is monotone: "up" and "bounded" prefer the largest step
  size, "down" the smallest, and "bounded" (a weight in [0, 0.9]) and "closed" (in [0, 1]) the
  largest weight. Fit writes a "train" record per seed; KeyboardInterrupt (a kill) after
  `fail_after` fits or `fail_test_after` test measurements."""
  tests = []

  def fit(arm, setting, size, seeds, subsets):
    if fail_after is not None and len(calls) >= fail_after:
      raise KeyboardInterrupt("killed")
    calls.append((arm, tuple(sorted(setting.items()))))
    for seed in seeds:
      writer.write({"step": 1, "split": "train", "arm": arm, "seed": seed,
                    "loss": setting["learning_rate"] + seed})
    return [{"w": np.full(2, seed + setting["learning_rate"], np.float32)} for seed in seeds]

  def measure(arm, setting, size, seed, params, split):
    if split == "test":
      if fail_test_after is not None and len(tests) >= fail_test_after:
        raise KeyboardInterrupt("killed")
      tests.append(arm)
    sign = -1.0 if arm == "down" else 1.0
    score = 0.5 + 0.1 * sign * np.log10(setting["learning_rate"]) + 0.1 * setting.get("w", 0)
    return {"accuracy": score + 0.001 * seed, "w0": float(params["w"][0])}

  lr = {"learning_rate": (0.01, 0.1)}
  arms = [harness.Arm("up", lr), harness.Arm("down", lr),
          harness.Arm("bounded", {**lr, "w": (0.5, 0.7, 0.9)}, bounds={"w": "[0, 0.9]"}),
          harness.Arm("closed", {**lr, "w": (0.5, 0.7, 0.9)}, bounds={"w": "[0, 1]"})]
  return harness.Experiment("edgy", arms, "up", (1,), "size", [0, 1], fit, measure,
                            max_extensions=budget)


def _run_edgy(workdir, calls, **kw):
  workdir = pathlib.Path(workdir)
  if (workdir / metrics_lib.FILENAME).exists():
    metrics_lib.truncate(workdir, -1)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  cells = harness.CellWriter(writer)
  try:
    return harness.run(_edgy(calls, writer=cells, **kw), workdir, cells, fingerprint="f")
  finally:
    writer.close()


# Round 0: 2 + 2 + 6 + 6 fits; round 1: up 1.0, down 1e-3, bounded 1.0 x 3 weights, closed
# (1.0 and w=1.0) 12 - 6; round 2: 1 + 1 + 3 + 4 (10.0 x 4 weights).
_ROUNDS = (16, 16 + 11, 16 + 11 + 9)


@pytest.fixture(scope="module")
def edgy_fresh(tmp_path_factory):
  path = tmp_path_factory.mktemp("edgy")
  calls = []
  results = _run_edgy(path, calls)
  assert len(calls) == _ROUNDS[-1] and len(set(calls)) == len(calls)
  return path, results


def test_an_edge_choice_is_extended_until_the_budget_and_recorded(edgy_fresh):
  _, results = edgy_fresh
  arms = results["sizes"][0]["arms"]
  assert results["max_extensions"] == 2
  up = arms["up"]
  assert [c["setting"]["learning_rate"] for c in up["grid"]] == [0.01, 0.1, 1.0, 10.0]
  assert up["chosen"] == {"learning_rate": 10.0}
  assert up["added"] == {"learning_rate": [1.0, 10.0]}
  assert up["edges"] == [{"axis": "learning_rate", "value": 10.0, "side": "high",
                          "why": "budget"}]
  down = arms["down"]
  assert down["added"] == {"learning_rate": [0.001, 0.0001]}
  assert down["chosen"] == {"learning_rate": 0.0001} and down["edges"][0]["side"] == "low"
  # A weight in [0, 0.9] stops at its closed end, 0.9; in [0, 1] it reaches 1 exactly.
  bounded = arms["bounded"]
  assert bounded["added"] == {"learning_rate": [1.0, 10.0]}
  assert bounded["chosen"] == {"learning_rate": 10.0, "w": 0.9}
  assert {e["axis"]: e["why"] for e in bounded["edges"]} == {"learning_rate": "budget",
                                                             "w": "bound"}
  closed = arms["closed"]
  assert closed["added"] == {"learning_rate": [1.0, 10.0], "w": [1.0]}
  assert closed["chosen"] == {"learning_rate": 10.0, "w": 1.0} and len(closed["grid"]) == 16
  # The rendering marks what remains at an edge, and the list names every one.
  text = harness.table(results, [("accuracy", "acc %", 100.0)])
  assert "learning_rate=10 ⇥ (budget)" in text and "learning_rate=0.0001 ⇤ (budget)" in text
  assert "w=0.9 ⇥ (bound)" in text
  note = harness.protocol_note(results)
  assert "its own edges), up to 2 steps per axis" in note
  assert "(why: bound, the axis's limit; budget, the extensions ran out)" in note
  lines = stats_lib.edges([results])
  assert len(lines) == 6 and "edgy, size=1, up: learning_rate=10 at the high edge (budget" in (
      lines[0])


def test_no_budget_extends_nothing_and_still_lists_the_edges(tmp_path):
  calls = []
  results = _run_edgy(tmp_path, calls, budget=0)
  assert len(calls) == _ROUNDS[0]
  up = results["sizes"][0]["arms"]["up"]
  assert up["added"] == {} and up["edges"][0]["why"] == "budget"
  assert "not extended" in harness.protocol_note(results)


def test_a_larger_budget_later_reuses_every_cell_and_ends_as_a_fresh_run(tmp_path, edgy_fresh):
  calls = []
  _run_edgy(tmp_path, calls, budget=1)
  assert len(calls) == _ROUNDS[1]
  assert _strip(_run_edgy(tmp_path, calls)) == _strip(edgy_fresh[1])
  assert len(calls) == _ROUNDS[-1] and len(set(calls)) == len(calls)  # nothing trained twice
  assert _records(tmp_path) == _records(edgy_fresh[0])


@pytest.mark.every_case
@pytest.mark.parametrize("kill", [("fit", _ROUNDS[0]), ("fit", _ROUNDS[1]), ("fit", 5),
                                  ("fit", _ROUNDS[0] + 4), ("fit", _ROUNDS[1] + 3),
                                  ("test", 0), ("test", 3)],
                         ids=["after-round-0", "after-round-1", "mid-round-0", "mid-round-1",
                              "mid-round-2", "before-tests", "mid-tests"])
def test_a_kill_between_or_mid_round_resumes_to_the_same_results_and_records(
    tmp_path, edgy_fresh, kill):
  calls = []
  kind, k = kill
  with pytest.raises(KeyboardInterrupt):
    _run_edgy(tmp_path, calls, **({"fail_after": k} if kind == "fit" else
                                  {"fail_test_after": k}))
  done = list(calls)
  assert len(done) == (k if kind == "fit" else _ROUNDS[-1])  # observed progress
  resumed = _run_edgy(tmp_path, calls)
  assert not set(calls[len(done):]) & set(done) and len(calls) == _ROUNDS[-1]
  assert _strip(resumed) == _strip(edgy_fresh[1])
  assert _records(tmp_path) == _records(edgy_fresh[0])
  assert _files(tmp_path) == _files(edgy_fresh[0])


def test_three_kills_in_three_rounds_lose_no_record(tmp_path, edgy_fresh):
  calls = []
  for k in (3, _ROUNDS[0] + 2, _ROUNDS[1] + 1):
    with pytest.raises(KeyboardInterrupt):
      _run_edgy(tmp_path, calls, fail_after=k)
  assert _strip(_run_edgy(tmp_path, calls)) == _strip(edgy_fresh[1])
  assert _records(tmp_path) == _records(edgy_fresh[0])


# ----------------------------------------------------------- the real runner, killed for real


def _dropout_cmd(workdir):
  return [sys.executable, "-m", "research.main", "--config=configs/exp_dropout_ensemble.py",
          f"--workdir={workdir}", "--config.model.hidden_sizes=(32,)", "--config.num_steps=60",
          "--config.eval_every=30", "--config.log_every=30", "--config.experiment.seeds=2",
          "--config.experiment.dropout_rates=(0.2,0.5)", "--config.experiment.mask_counts=(1,16)"]


_ENV = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
_LINES = 8  # 2 fits (one per dropout rate, shared by the 3 rules) + 6 test measurements


def _lines(path) -> int:
  return path.read_text().count("\n") if path.exists() else 0


def _kill_at(workdir, lines: int) -> None:
  """Runs the tiny dropout experiment and SIGKILLs it once its cells.jsonl holds `lines`."""
  cells = workdir / "harness" / "cells.jsonl"
  proc = subprocess.Popen(_dropout_cmd(workdir), cwd=REPO, env=_ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  while proc.poll() is None and _lines(cells) < lines:
    time.sleep(0.05)
  assert proc.poll() is None, "ended before the kill point: " + proc.stderr.read()[-500:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stderr.close()


def _finish(workdir) -> subprocess.CompletedProcess:
  return subprocess.run(_dropout_cmd(workdir), cwd=REPO, env=_ENV, capture_output=True,
                        text=True, timeout=900)


def _results(workdir):
  return {k: v for k, v in json.loads((workdir / "results.json").read_text()).items()
          if k != "wall_time"}


@pytest.fixture(scope="module")
def dropout_fresh(tmp_path_factory):
  path = tmp_path_factory.mktemp("dropout") / "fresh"
  done = _finish(path)
  assert done.returncode == 0, done.stderr[-2000:]
  assert _lines(path / "harness" / "cells.jsonl") == _LINES
  assert len(_records(path)) == 20  # 8 train (2 rates x 2 seeds x 2 chunks), 12 result
  return path


@pytest.mark.slow
def test_a_real_kill_with_a_garbage_line_resumes_to_the_uninterrupted_results(
    tmp_path, dropout_fresh):
  """The issue's case: killed mid-run, line 3 replaced with GARBAGE{, rerun: the same
  results.json and metrics.jsonl as an uninterrupted run (exit 0)."""
  workdir = tmp_path / "killed"
  _kill_at(workdir, 5)
  cells = workdir / "harness" / "cells.jsonl"
  lines = cells.read_text().splitlines(keepends=True)
  lines[2] = "GARBAGE{\n"
  cells.write_text("".join(lines))
  done = _finish(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "line 3 is not an entry" in done.stderr
  assert _results(workdir) == _results(dropout_fresh)
  assert _records(workdir) == _records(dropout_fresh)
  assert _files(workdir) == _files(dropout_fresh)


@pytest.mark.slow
def test_five_real_kills_keep_every_record(tmp_path, dropout_fresh):
  workdir = tmp_path / "killed"
  cells = workdir / "harness" / "cells.jsonl"
  for _ in range(5):
    start = _lines(cells)
    if start >= _LINES - 2:  # Leave the last lines to the final run: a kill needs work left.
      break
    _kill_at(workdir, start + 1)
  done = _finish(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  assert _results(workdir) == _results(dropout_fresh)
  assert _records(workdir) == _records(dropout_fresh)


@pytest.mark.slow
def test_a_hand_edited_valid_value_is_exit_2_in_one_line(tmp_path, dropout_fresh):
  workdir = tmp_path / "edited"
  _kill_at(workdir, 1)
  cells = workdir / "harness" / "cells.jsonl"
  text = cells.read_text().replace('"accuracy":0.', '"accuracy":0.0', 1)
  cells.write_text(text)
  done = _finish(workdir)
  assert done.returncode == 2, done.stderr[-2000:]
  errors_ = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors_) == 1 and f"{cells} line 1 does not match its checksum" in errors_[0]
  assert cells.read_text() == text


def test_a_tie_with_an_extension_keeps_the_setting_tried_first(tmp_path):
  """lr 0.01 sits at the low edge, so 0.001 is tried (and listed first); it scores the same:
  the tie keeps 0.01, now interior, and the grid stops growing."""
  score = {0.001: 0.9, 0.01: 0.9, 0.1: 0.5}

  def fit(arm, setting, size, seeds, subsets):
    return [{"w": np.zeros(1, np.float32)} for _ in seeds]

  def measure(arm, setting, size, seed, params, split):
    return {"accuracy": score.get(setting["learning_rate"], 0.1)}

  exp = harness.Experiment("ties", [harness.Arm("a", {"learning_rate": (0.01, 0.1)})], "a",
                           (1,), "size", [0, 1], fit, measure, max_extensions=2)
  writer = metrics_lib.MetricWriter(tmp_path, tensorboard=False)
  try:
    arm = harness.run(exp, tmp_path, harness.CellWriter(writer), fingerprint="f")[
        "sizes"][0]["arms"]["a"]
  finally:
    writer.close()
  assert arm["chosen"] == {"learning_rate": 0.01}
  assert arm["added"] == {"learning_rate": [0.001]} and arm["edges"] == []
