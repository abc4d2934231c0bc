"""The project's step against the peer harness's steps, interleaved in one process.

  <peers venv>/bin/python launch/interleave_peers.py --peers=PEERS/run_peers.py \\
      --workloads=mlp,lenet5,lstm,attention,alexnet --frameworks=torch,torch_compile,jax \\
      --rounds=5 --window_seconds=2 --json=/tmp/interleaved_peers.json

The peer harness (PyTorch eager and compiled, Flax, Equinox, plain JAX; not part of this
repository, see launch/README.md) is imported from the path given, not copied; its
build_<framework>(workload) returns the step and sync functions it times itself. Here, round
after round, one window of each (the project's autodiff and manual steps, the plain-JAX
reference of research.benchmark, and every peer) runs in a rotated order, so each round gives
one ratio of the project to each peer, immune to the machine's drift between rounds. Needs a
venv with this project, torch and the peers' packages (the harness's own setup, then pip
install -e . into it).
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research import benchmark  # noqa: E402
from research import cli  # noqa: E402
from research import errors  # noqa: E402
from research import workdir  # noqa: E402


FRAMEWORKS = ("torch", "torch_compile", "jax", "flax", "equinox")


def load_peers(path: str):
  """The peer harness as a module; a path that is not one, or whose imports fail, is a
  ConfigError naming the fix."""
  if not os.path.isfile(path) or not path.endswith(".py"):
    raise errors.ConfigError(f"--peers={path}: no such Python file; give the peer harness's "
                             "run_peers.py")
  spec = importlib.util.spec_from_file_location("run_peers", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except ImportError as e:
    raise errors.ConfigError(f"--peers={path} cannot be imported ({e}); run this script with "
                             "the peers' venv (the harness's own setup)") from None
  return module


def peer_runner(peers, framework: str, workload: str):
  builders = {"torch": lambda: peers.build_torch(workload, compiled=False),
              "torch_compile": lambda: peers.build_torch(workload, compiled=True),
              "jax": lambda: peers.build_jax(workload),
              "flax": lambda: peers.build_flax(workload),
              "equinox": lambda: peers.build_equinox(workload)}
  built = builders[framework]()

  def run(n: int):
    for _ in range(n):
      built["step"]()

  return run, built["sync"]


def measure(workload: str, runners: dict, rounds: int, window_seconds: float, k: int) -> dict:
  steps, _ = benchmark.window_steps(runners, window_seconds, k)
  rates, loads_by_key = benchmark.alternate(runners, steps, rounds)
  loads = [x for key in runners for x in loads_by_key[key]]
  out = {"workload": workload, "steps_per_sec": {k: statistics.median(v) for k, v in rates.items()},
         "rates": rates, "foreign_load_median": statistics.median(loads),
         "foreign_load_max": max(loads), "ratios": {}}
  for mine in ("project", "manual"):
    for other in rates:
      if other not in ("project", "manual") and mine in rates:
        out["ratios"][f"{mine} / {other}"] = benchmark.summary(
            [a / b for a, b in zip(rates[mine], rates[other])])
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--peers", default="../shared/bench/run_peers.py")
  parser.add_argument("--workloads", default="mlp,lenet5,lstm,attention,alexnet")
  parser.add_argument("--frameworks", default="torch,torch_compile,jax")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--window_seconds", type=float, default=2.0)
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  unknown = [f for f in frameworks if f not in FRAMEWORKS]
  if unknown:
    raise errors.ConfigError(f"--frameworks: {unknown[0]!r} is not a peer; choose from "
                             f"{','.join(FRAMEWORKS)}")
  names = benchmark.resolve(args.workloads)
  if args.json:
    workdir.check_output_file(args.json, "--json")
  peers = load_peers(args.peers)
  started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  results = []
  for workload in names:
    k = benchmark.steps_per_call(workload)
    runners = {"project": benchmark.project_runner(workload, "autodiff", k),
               "manual": benchmark.project_runner(workload, "manual", k),
               "reference": benchmark.make_reference_step(workload)}
    runners = {key: r for key, r in runners.items() if r is not None}  # No manual step.
    for framework in frameworks:
      runners[framework] = peer_runner(peers, framework, workload)
    results.append(measure(workload, runners, args.rounds, args.window_seconds, k))
    r = results[-1]
    print(json.dumps({"workload": workload, "steps_per_sec": r["steps_per_sec"],
                      "foreign_load_median": r["foreign_load_median"]}), flush=True)
    for pair, q in r["ratios"].items():
      print(f"  {workload:9s} {pair:26s} {q['median']:.3f}x [{q['min']:.3f}-{q['max']:.3f}]",
            flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"started": started, "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "rounds": args.rounds, "window_seconds": args.window_seconds,
                 "results": results}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(cli.guarded(main)())
