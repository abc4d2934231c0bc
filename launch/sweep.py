"""Runs a grid (or random subset) of config overrides as local research.main processes.

  python launch/sweep.py --config=configs/default.py \
      --sweep=optimizer.name=sgd,momentum,adagrad --sweep=optimizer.learning_rate=0.01,0.1 \
      --workdir=runs/opt-sweep --parallel=2 [--executor=ray] [--random=4 --seed=0] \
      [--dry_run] [--config.num_steps=500 ...]

Each --sweep is `field=v1,v2,...` (commas inside (), [] or {} belong to the value, e.g.
`model.hidden_sizes=(32,),(64,32)`); the runs are their product, or --random=N distinct
points of it drawn with --seed. Other --config.field=value flags go to every run unchanged.
Run i goes to WORKDIR/<i>-<field>=<value>-..., logs to its log.txt, and a run whose workdir
already holds a test result is reused, so an interrupted sweep can be re-run. At the end:
WORKDIR/results.csv and results.md (ranked by validation accuracy: values, final test/valid
metrics, times, status, the error tail of failed runs) and comparison.png (learning curves).
Exit status 1 if a run failed. The runs go through research/executor.py: --executor=local
(default) runs them as subprocesses of this process, --executor=ray as Ray tasks of one CPU
each, on a local cluster or the one RAY_ADDRESS names (its machines must share --workdir);
either way at most --parallel at once.
"""
import argparse
import csv
import dataclasses
import importlib.util
import itertools
import os
import random
import shlex
import subprocess
import sys
import time
from typing import Sequence

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)  # `python launch/sweep.py` puts only launch/ on the path.

from research import cli  # noqa: E402
from research import errors  # noqa: E402
from research import executor  # noqa: E402
from research import metrics  # noqa: E402
from research import plot  # noqa: E402

_ERROR_TAIL_LINES = 15
_METRICS = ("test_accuracy", "test_loss", "valid_accuracy", "valid_loss", "wall_time")


def parse_value(text: str):
  """'3' -> 3, '0.1' / '1e-3' -> float, 'true' / 'False' -> bool, anything else -> str."""
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  return text


def split_values(text: str) -> list[str]:
  """Splits on commas outside brackets: '(32,),(64,32)' -> ['(32,)', '(64,32)']."""
  values, depth, current = [], 0, ""
  for ch in text:
    depth += ch in "([{"
    depth -= ch in ")]}"
    if ch == "," and depth == 0:
      values.append(current)
      current = ""
    else:
      current += ch
  values.append(current)
  return [v.strip() for v in values]


def parse_sweep(spec: str) -> tuple[str, list[str]]:
  """'optimizer.learning_rate=0.01,0.1' -> ('optimizer.learning_rate', ['0.01', '0.1'])."""
  field, sep, values = spec.partition("=")
  field = field.strip().removeprefix("config.")
  values = split_values(values)
  if not sep or not field or any(v == "" for v in values):
    raise errors.ConfigError(
        f"--sweep={spec!r} must look like field=v1,v2,... e.g. optimizer.learning_rate=0.01,0.1")
  return field, values


def grid(sweeps: Sequence[tuple[str, list[str]]], num_random: int = 0,
         seed: int = 0) -> list[tuple[int, dict[str, str]]]:
  """(index, point) for the product of the sweeps' values, or for `num_random` distinct points
  of it; the index is the point's place in the full product, so run names do not depend on
  the draw."""
  fields = [field for field, _ in sweeps]
  if len(set(fields)) != len(fields):
    raise errors.ConfigError(f"--sweep fields {fields} repeat one; give each field once")
  points = [dict(zip(fields, combo)) for combo in itertools.product(*(v for _, v in sweeps))]
  indices = range(len(points))
  if num_random:
    indices = sorted(random.Random(seed).sample(indices, min(num_random, len(points))))
  return [(i, points[i]) for i in indices]


def check_fields(config_arg: str, fields: Sequence[str]) -> None:
  """Fails before launching anything if a swept field is not in the config."""
  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("_sweep_config", path)
  if spec is None or not os.path.exists(path):
    raise errors.ConfigError(f"--config={config_arg}: no such file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for field in fields:
    node = config
    for i, part in enumerate(field.split(".")):
      if not hasattr(node, "keys") or part not in node:
        parent = ".".join(field.split(".")[:i]) or "the config"
        choices = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "none"
        raise errors.ConfigError(
            f"--sweep field {field!r} is not in {path}; fields of {parent}: {choices}")
      node = node[part]


def run_name(index: int, point: dict[str, str]) -> str:
  """'003-name=sgd-learning_rate=0.1': the index keeps names unique, the rest readable."""
  parts = [f"{field.split('.')[-1]}={value}" for field, value in point.items()]
  name = "-".join([f"{index:03d}", *parts])
  name = "".join(c for c in name if c not in "()[]{} '\"")
  return "".join(c if c.isalnum() or c in "=-_.," else "_" for c in name)


def command(config_arg: str, point: dict[str, str], fixed: Sequence[str],
            workdir: str) -> list[str]:
  return [sys.executable, "-m", "research.main", f"--config={config_arg}", *fixed,
          *(f"--config.{field}={value}" for field, value in point.items()),
          f"--workdir={workdir}"]


@dataclasses.dataclass
class Result:
  name: str
  point: dict[str, str]
  status: str = "ok"             # ok | reused | failed (rc=N) | no test metrics
  process_s: float = 0.0         # the subprocess's wall time, start-up and compilation included
  metrics: dict = dataclasses.field(default_factory=dict)
  error_tail: str = ""


def final_metrics(workdir: str) -> dict:
  """test_* from the last "test" record, valid_* from the last "valid" one; {} if none."""
  out = {}
  try:
    records = metrics.read_metrics(workdir)
  except errors.DataError:
    return out
  for split in ("valid", "test"):
    last = [r for r in records if r.get("split") == split]
    if last:
      out.update({f"{split}_{k}": last[-1][k] for k in ("loss", "accuracy") if k in last[-1]})
  tests = [r for r in records if r.get("split") == "test"]
  if tests and "wall_time" in tests[-1]:
    out["wall_time"] = tests[-1]["wall_time"]
  return out


def run_one(cmd: list[str], name: str, point: dict[str, str], workdir: str,
            ex=None) -> Result:
  """The run's Result: "reused" when its workdir holds a test result already, else it runs
  (on `ex`, an executor.Local or executor.Ray; default this thread) and is read back."""
  done = final_metrics(workdir)
  if "test_accuracy" in done:
    return Result(name, point, status="reused", metrics=done)
  ex = ex or executor.Local()
  _submit(ex, 0, cmd, workdir)
  _, (rc, seconds) = ex.next()
  return _result(name, point, workdir, rc, seconds)


def _submit(ex, order: int, cmd: list[str], workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (_REPO, os.environ.get("PYTHONPATH")) if p))
  ex.submit(order, executor.run_command, cmd, os.path.join(workdir, "log.txt"), env, tag=order)


def _result(name: str, point: dict[str, str], workdir: str, rc: int, seconds: float) -> Result:
  result = Result(name, point, process_s=seconds, metrics=final_metrics(workdir))
  if rc != 0 or "test_accuracy" not in result.metrics:
    result.status = f"failed (rc={rc})" if rc else "no test metrics"
    with open(os.path.join(workdir, "log.txt")) as log:
      result.error_tail = "".join(log.readlines()[-_ERROR_TAIL_LINES:])
  print(f"[{result.status}] {name} {_format_metrics(result.metrics)}", flush=True)
  return result


def run_all(cmds, names, points, run_dirs, ex) -> list[Result]:
  """Every run on `ex` (at most its max_in_flight at once); reused runs are not submitted."""
  results: list = [None] * len(cmds)
  for i, (name, point, d) in enumerate(zip(names, points, run_dirs)):
    done = final_metrics(d)
    if "test_accuracy" in done:
      results[i] = Result(name, point, status="reused", metrics=done)
    else:
      _submit(ex, i, cmds[i], d)
  try:
    while ex.pending:
      i, (rc, seconds) = ex.next()
      results[i] = _result(names[i], points[i], run_dirs[i], rc, seconds)
  finally:
    ex.close()
  return results


def write_results(sweep_dir: str, results: Sequence[Result], fields: Sequence[str],
                  header: str) -> None:
  """results.csv (one row per run) and results.md (best validation accuracy first, then
  failures). Runs are ranked by validation accuracy: choosing the best run by its test
  accuracy would make the test set part of the selection, and its figure optimistic."""
  columns = ["run", *fields, *_METRICS, "process_s", "status"]

  def row(r: Result) -> dict:
    values = {f: parse_value(r.point[f]) for f in fields}
    return {"run": r.name, **values, **{m: r.metrics.get(m, "") for m in _METRICS},
            "process_s": round(r.process_s, 1), "status": r.status}

  with open(os.path.join(sweep_dir, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(row(r) for r in results)

  ranked = sorted(results, key=lambda r: -r.metrics.get("valid_accuracy", -1.0))
  lines = [f"# Sweep results\n\n{header}\n", "| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  for r in ranked:
    cells = [_cell(v) for v in row(r).values()]
    lines.append("| " + " | ".join(cells) + " |")
  failed = [r for r in results if r.error_tail]
  if failed:
    lines.append("\n## Failed runs\n")
    for r in failed:
      lines += [f"### {r.name}: {r.status}\n", "```", r.error_tail.rstrip(), "```\n"]
  with open(os.path.join(sweep_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def _cell(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def _format_metrics(m: dict) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, (int, float)))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="launch/sweep.py", description=__doc__, allow_abbrev=False,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="config file, as for research.main")
  parser.add_argument("--sweep", action="append", default=[], help="field=v1,v2,... (repeat)")
  parser.add_argument("--workdir", required=True, help="sweep directory, one subdir per run")
  parser.add_argument("--parallel", type=int, default=1, help="runs at a time, at most")
  parser.add_argument("--executor", default="local",
                      help="local: runs as subprocesses of this process; ray: each run a Ray "
                           "task (one CPU) on a local cluster, or the one RAY_ADDRESS names")
  parser.add_argument("--random", type=int, default=0, help="run N random grid points")
  parser.add_argument("--seed", type=int, default=0, help="seed of the --random draw")
  parser.add_argument("--dry_run", action="store_true", help="print the commands only")
  args, fixed = parser.parse_known_args(argv)
  cli.quiet_library_logs()
  try:
    bad = [a for a in fixed if not a.startswith("--config.")]
    if bad:
      raise errors.ConfigError(f"unknown arguments {bad}; only --config.field=value passes "
                               "through to every run")
    if not args.sweep:
      raise errors.ConfigError("give at least one --sweep=field=v1,v2,...")
    if args.parallel < 1 or args.random < 0:
      raise errors.ConfigError(f"--parallel={args.parallel} must be >= 1 and "
                               f"--random={args.random} >= 0")
    sweeps = [parse_sweep(s) for s in args.sweep]
    fields = [field for field, _ in sweeps]
    check_fields(args.config, fields)
    points = grid(sweeps, args.random, args.seed)
  except errors.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  names = [run_name(i, p) for i, p in points]
  points = [p for _, p in points]
  run_dirs = [os.path.join(args.workdir, n) for n in names]
  cmds = [command(args.config, p, fixed, d) for p, d in zip(points, run_dirs)]
  if args.dry_run:
    for cmd in cmds:
      print(shlex.join(cmd))
    return 0

  os.makedirs(args.workdir, exist_ok=True)
  print(f"{len(cmds)} runs, {args.parallel} at a time, in {args.workdir}", flush=True)
  try:
    ex = executor.make(args.executor, args.parallel, field="--executor")
  except errors.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  results = run_all(cmds, names, points, run_dirs, ex)
  header = "    " + shlex.join(["python", "launch/sweep.py", *(argv or sys.argv[1:])])
  write_results(args.workdir, results, fields, header)
  good = [d for d, r in zip(run_dirs, results) if r.status in ("ok", "reused")]
  if good:
    plot.plot_runs(good, os.path.join(args.workdir, "comparison.png"))
  failed = len(results) - len(good)
  print(f"{len(good)} ok, {failed} failed; see {os.path.join(args.workdir, 'results.md')}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
