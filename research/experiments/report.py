"""What every runner without checkpoints shares: how it claims and reruns its workdir, and
the results files it writes.

  @report.runner                                    claims the workdir, checks the config,
                                                    makes reruns idempotent (see `runner`)
  check_experiment(config, example, ranges, methods)  train.validate + config.experiment
  mean_std(values)                                  {"mean", "std"} over seeds
  markdown_table(columns, rows)                     a GitHub table, floats to 4 digits
  write_results(workdir, title, columns, rows, notes, result)   results.md and results.json
"""
import functools
import json
import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging

import ml_collections

from research import config_lib
from research import errors
from research import kernel
from research import metrics as metrics_lib
from research import run_config
from research import train
from research import workdir as workdir_lib

FINISHED = "finished.json"


def runner(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
  """Decorates `fn(config, workdir) -> result` (a runner that keeps no checkpoints).

  The workdir is claimed (created, writable, locked) before anything runs; a workdir holding
  records of another config's run is refused (the config is kept in config.json and in
  finished.json);
  rerunning a finished run does nothing and returns {"finished": True, "results": the saved
  results.json}; an interrupted run starts again from scratch (its records are functions of
  the config, so the restart writes the same ones, not duplicates). `fn` receives the
  workdir as an etils.epath.Path and runs under config.matmul_precision (kernel.precision).
  """
  @functools.wraps(fn)
  def run(config, workdir) -> dict[str, Any]:
    t_start = time.time()
    with (workdir_lib.claim(workdir, process_index=jax.process_index()) as path,
          kernel.precision(config)):
      finished = _read_json(path / FINISHED)
      records = path / metrics_lib.FILENAME
      if finished is not None or (records.exists() and records.read_text().strip()):
        # Results on disk: only the same config may finish or redo them.
        run_config.check_same_config(config, run_config.saved_config(path) or (finished or {}).get(
            "config"), path)
      if finished is not None:
        logging.info("%s already finished (%s); nothing to do", path, FINISHED)
        return {"finished": True, "results": _read_json(path / "results.json")}
      if (path / metrics_lib.FILENAME).exists():
        logging.info("%s: starting again a run of this config that was interrupted", path)
        metrics_lib.truncate(path, -1)
      run_config.write_config(config, path)
      result = fn(config, path)
      if jax.process_index() == 0:
        if records.exists():  # finished.json durable means its records are too
          workdir_lib.sync(records)
        workdir_lib.write_text(path / FINISHED, json.dumps(
            {"config": json.loads(config.to_json_best_effort()),
             "wall_time": time.time() - t_start}, indent=2) + "\n")
        logging.info("done: %s finished in %.1f s; results in %s", config.trainer,
                     time.time() - t_start, path)
      return result
  return run


def check_experiment(config: ml_collections.ConfigDict, example: str,
                     ranges: dict[str, config_lib.Range] | None = None,
                     methods: Sequence[str] | None = None,
                     nested: dict[str, str] | None = None,
                     arms: str = "methods") -> ml_collections.ConfigDict:
  """train.validate, config.experiment present, its numeric fields in `ranges`, its groups
  in `nested` ({field: a RANGES group, e.g. "optimizer"}) against that group's RANGES, and
  (when `methods` is given) experiment.<arms> (the field naming the experiment's arms:
  "methods", "inits", ...) a non-empty tuple of them and experiment.baseline one of it; and
  experiment.seed_mode, where there is one, one of kernel.SEED_MODES: every runner's
  protocol checks in one place. Returns config.experiment. `example` names the config file
  to start from."""
  train.validate(config)
  if config.get("experiment") is None:
    raise errors.ConfigError(f"config.experiment is missing; start from {example}")
  exp = config.experiment
  if ranges:
    config_lib.check_ranges(exp, ranges, prefix="config.experiment")
  for field, group in (nested or {}).items():
    if field in exp:
      config_lib.check_group(exp[field], group, prefix=f"config.experiment.{field}")
  if methods is not None:
    if not exp[arms]:
      raise errors.ConfigError(f"config.experiment.{arms} is empty; name at least one of "
                               + ", ".join(methods))
    for i, method in enumerate(exp[arms]):
      errors.check_choice(f"experiment.{arms}[{i}]", method, methods)
    if "baseline" in exp:
      errors.check_choice("experiment.baseline", exp.baseline, tuple(exp[arms]))
  if "seed_mode" in exp:
    errors.check_choice("experiment.seed_mode", exp.seed_mode, kernel.SEED_MODES)
  return exp


def _read_json(path) -> Any:
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError:
    return None


def mean_std(values: Sequence[float]) -> dict[str, float]:
  """{"mean", "std"} of one measure over seeds (std: population)."""
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def summarize(runs: Sequence[dict], fields: Sequence[str]) -> dict[str, dict[str, float]]:
  """{field: {"mean", "std"}} over the runs (std: population, over seeds)."""
  return {f: mean_std([r[f] for r in runs]) for f in fields}


def columns_of(rows: Sequence[dict]) -> list[str]:
  """Every key of rows, in first-seen order: a row with a column the first lacks (a grid
  extended for one arm) keeps it; a row without a column shows it empty."""
  return list(dict.fromkeys(k for r in rows for k in r))


def markdown_table(columns: Sequence[str], rows: Sequence[dict]) -> str:
  """A GitHub markdown table; floats with 4 significant digits."""
  def fmt(v):
    if isinstance(v, float):
      return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def write_results(workdir: str, title: str, columns: Sequence[str], rows: Sequence[dict],
                  notes: Sequence[str], result: dict) -> None:
  """workdir/results.md (title, notes, table) and workdir/results.json (the result dict)."""
  if jax.process_index() != 0:
    return
  path = workdir_lib.as_path(workdir)
  workdir_lib.write_text(path / "results.md", f"# {title}\n\n" + "\n".join(notes) + "\n\n"
                         + markdown_table(columns, rows) + "\n")
  write_json(path / "results.json", result)


def write_json(path, obj) -> None:
  """obj as indented JSON (NumPy and JAX numbers as lists/numbers), written atomically."""
  workdir_lib.write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def save_figure(fig, path) -> None:
  """A matplotlib figure as PNG at `path` (any epath), written atomically."""
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=120)
  workdir_lib.write_bytes(workdir_lib.as_path(path), buffer.getvalue())


def _json_default(v):
  if isinstance(v, (np.generic, jax.Array)):
    return np.asarray(v).tolist()
  raise TypeError(f"not JSON serialisable: {type(v)}")
