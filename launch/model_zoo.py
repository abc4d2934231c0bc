"""Reproduces the README's model-zoo table: each config, each seed, as a user runs it.

  python launch/model_zoo.py --workdir=/tmp/zoo [--configs=default,lenet_digits] [--seeds=0,1,2]

Every cell is a fresh `python -m research.main --config=configs/<name>.py --config.seed=<s>`
process, so its wall time is what a user waits for: start-up, data, compilation, training,
evaluation. Next to it: the run's own wall time (from data loading to the test record), test
accuracy (or the test loss of the language models), and the load average. A workdir that
already holds a finished run is reused. Results go to WORKDIR/zoo.json and a markdown table,
which names the JAX version that produced it.

Configs whose data the user provides (an empty config.data.data_dir, e.g. alexnet_imagenet's
records) are left out, each named in one line: they cannot run on a fresh clone.
"""
import importlib.util
import argparse
import json
import os
import subprocess
import sys
import time
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from research import cli  # noqa: E402  No JAX import: the cells are subprocesses.
from research import errors  # noqa: E402
from research import workdir as workdir_lib  # noqa: E402

# Every config that trains one model is a cell row: configs/*.py but the experiment runners
# (exp_*), found on disk, so a new config joins without an edit here. The seeds the README
# reports where they are not DEFAULT_SEEDS, and the variants that are rows of their own:
DEFAULT_SEEDS = (0, 1, 2)
SEEDS = {"default": (0, 1, 2, 3), "breast_cancer": (0, 1, 2, 3), "lecture_algorithm": (0,),
         "lenet_digits:mnist_subset": (0,), "alexnet_small": (0,), "inception_digits": (0,),
         "transformer_mnist1d": (0, 1), "char_lstm": (0,), "char_transformer": (0,)}
VARIANTS = ("lenet_digits:mnist_subset",)


def needs_data(name: str) -> bool:
  """Whether configs/<name>.py reads data the user provides: a config.data.data_dir that is
  empty (loading a config file imports no JAX, so this is cheap)."""
  spec = importlib.util.spec_from_file_location("_zoo_config", os.path.join(
      REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  data = module.get_config().get("data", {})
  return "data_dir" in data and not data.data_dir


def zoo() -> dict[str, tuple[int, ...]]:
  """config[:variant] -> its seeds, a config's variants right after it (configs that need the
  user's data are in NEEDS_DATA instead)."""
  names = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "configs"))
                 if f.endswith(".py") and not f.startswith(("exp_", "_"))
                 and f[:-3] not in NEEDS_DATA)
  cells = [c for name in names
           for c in (name, *(v for v in VARIANTS if v.partition(":")[0] == name))]
  return {c: SEEDS.get(c, DEFAULT_SEEDS) for c in cells}


NEEDS_DATA = tuple(sorted(
    os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "configs"))
    if f.endswith(".py") and not f.startswith(("exp_", "_")) and needs_data(f[:-3])))
ZOO = zoo()


def run_cell(config: str, seed: int, workdir: str) -> dict:
  path, _, variant = config.partition(":")
  flag = f"configs/{path}.py" + (f":{variant}" if variant else "")
  cmd = [sys.executable, "-m", "research.main", f"--config={flag}", f"--config.seed={seed}",
         f"--workdir={workdir}"]
  env = dict(os.environ, PYTHONPATH=REPO)
  start = time.time()
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  process_s = time.time() - start
  row = {"config": config, "seed": seed, "process_s": process_s, "rc": result.returncode,
         "jax": metadata.version("jax"),
         "loadavg": os.getloadavg()[0]}
  if result.returncode != 0:
    row["error"] = result.stderr.strip().splitlines()[-1:] or ["?"]
    return row
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  test = [r for r in records if r.get("split") == "test"][-1]
  valid = [r for r in records if r.get("split") == "valid"]
  row.update(test_accuracy=test.get("accuracy"), test_loss=test.get("loss"),
             valid_loss=valid[-1]["loss"] if valid else None, run_s=test.get("wall_time"))
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--configs", default=",".join(ZOO))
  parser.add_argument("--seeds", default="", help="override every config's seeds, e.g. 0,1")
  args = parser.parse_args(argv)
  configs = [c.strip() for c in args.configs.split(",") if c.strip()]
  unknown = [c for c in configs if c not in ZOO]
  if unknown and unknown[0] in NEEDS_DATA:
    raise errors.ConfigError(
        f"--configs: {unknown[0]} reads data you provide (config.data.data_dir), which the "
        f"zoo cannot pass; run it with python -m research.main --config=configs/"
        f"{unknown[0]}.py --config.data.data_dir=DIR")
  if unknown:
    raise errors.ConfigError(f"--configs: unknown config {unknown[0]!r}; choose from "
                             f"{', '.join(ZOO)}")
  try:
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
  except ValueError:
    raise errors.ConfigError(f"--seeds={args.seeds}: give integers, e.g. 0,1,2") from None
  if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
    raise errors.WorkdirError(f"--workdir={args.workdir} is a file; pass a directory")
  os.makedirs(args.workdir, exist_ok=True)
  zoo_json = workdir_lib.check_output_file(os.path.join(args.workdir, "zoo.json"), "--workdir")
  if args.configs == parser.get_default("configs"):
    for name in NEEDS_DATA:
      print(f"skipped {name}: it reads data you provide (config.data.data_dir)", flush=True)
  rows = []
  for config in configs:
    for seed in seeds or ZOO[config]:
      workdir = os.path.join(args.workdir, f"{config.replace(':', '-')}-seed{seed}")
      row = run_cell(config, seed, workdir)
      rows.append(row)
      print(json.dumps(row), flush=True)
  with open(zoo_json, "w") as f:
    json.dump(rows, f, indent=1)
  print(f"\njax {metadata.version('jax')}, Python {sys.version.split()[0]}")
  print("\n| config | seed | test accuracy | test loss | run s | process s | load |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    acc = f"{100 * r['test_accuracy']:.1f}%" if r.get("test_accuracy") is not None else "-"
    loss = f"{r['test_loss']:.3f}" if r.get("test_loss") is not None else "-"
    run_s = f"{r['run_s']:.1f}" if r.get("run_s") is not None else "-"
    print(f"| {r['config']} | {r['seed']} | {acc} | {loss} | {run_s} | {r['process_s']:.1f} "
          f"| {r['loadavg']:.1f} |")
  return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
  sys.exit(cli.guarded(main)())
