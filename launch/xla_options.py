"""XLA compiler options against the defaults, on the project's own train step, in one process.

  python launch/xla_options.py --workloads=lstm,lenet5 \\
      --options=xla_cpu_use_onednn=true,xla_cpu_experimental_onednn_custom_call=true \\
      --options=xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY \\
      --rounds=6 --window_seconds=1

XLA reads XLA_FLAGS once per process, so trying a flag the usual way compares two processes,
which this kind of machine's drift (up to 2x within minutes) makes meaningless. Here each
--options set is compiled into the same train chunk of research.benchmark
(`chunk.lower(...).compile(compiler_options=...)`), the default compile is the first variant,
and the variants alternate in windows, rotated every round, as in `research.benchmark
--mode=interleaved`; each round gives each variant's ratio to the default. Every variant starts
from the same state, and its first chunk's loss is printed next to the default's, so an option
that changes the numbers shows.

Option names are XLA DebugOptions fields without the leading dashes; values true/false, integers
and enum names; a repeated enum takes its values comma-separated
(xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,
LIBRARY_FUSION_TYPE_ELTWISE, written without the line break).
--model=conv_impl=xla changes the workloads' model fields. An option this XLA does not know is
one line and exit 2. docs/performance.md ("Why the PyTorch gaps stay") has the figures of
2026-12-01.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research import cli  # noqa: E402
from research import errors  # noqa: E402


def parse_options(text: str, flag: str = "--options") -> dict:
  """'name=value,name=value' -> {name: bool | int | str}."""
  items = []
  for token in [t.strip() for t in text.split(",") if t.strip()]:
    if "=" not in token and items:  # A repeated enum's next value: a=X,Y,b=1.
      items[-1] += "," + token
    else:
      items.append(token)
  options = {}
  for item in items:
    name, eq, value = item.partition("=")
    if not eq or not name:
      raise errors.ConfigError(f"{flag}: {item!r} is not name=value (e.g. "
                               "xla_cpu_enable_fast_math=true)")
    name = name.lstrip("-")
    if value.lower() in ("true", "false"):
      options[name] = value.lower() == "true"
    else:
      try:
        options[name] = int(value)
      except ValueError:
        options[name] = value
  return options


def label(options: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in options.items()) or "default"


def compile_variants(name: str, grad: str, option_sets: list[dict], steps_per_dispatch: int,
                     model_overrides: dict | None = None):
  """{label: run(n), sync()} for the project's chunk of workload `name` (its model fields
  changed by model_overrides) compiled with each option set, all from the same initial state,
  and {label: the first chunk's mean loss}."""
  import jax  # pylint: disable=g-import-not-at-top
  from research import benchmark  # pylint: disable=g-import-not-at-top
  from research import data as data_lib  # pylint: disable=g-import-not-at-top
  w = benchmark.scaled(name, **(model_overrides or {}))
  built = benchmark.make_step(name, grad, w=w)
  if built is None:
    raise errors.ConfigError(f"--grad=manual: workload {name!r} has no hand-written backward "
                             "pass; use --grad=autodiff")
  chunk, state0, x_all, y_all, _ = built
  idx0 = data_lib.batch_indices(0, x_all.shape[0], w.batch, 0, steps_per_dispatch)
  lowered = chunk.lower(state0, x_all, y_all, idx0)  # One trace; a compile per option set.
  runners, first_loss = {}, {}
  for options in option_sets:
    try:
      compiled = lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as e:  # How XLA refuses an unknown option or value.
      if not options:
        raise
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise errors.ConfigError(f"--options={label(options)}: XLA refused it ({first}); "
                               "check the name and value against this jaxlib's XLA") from None
    # The chunk donates its state: each variant trains its own copy.
    run, sync, last_sums = benchmark.chunk_runner(
        compiled, jax.tree.map(lambda a: a.copy(), state0), x_all, y_all, w.batch,
        steps_per_dispatch)
    run(steps_per_dispatch)
    sync()
    first_loss[label(options)] = float(last_sums()["loss_sum"]) / steps_per_dispatch
    runners[label(options)] = (run, sync)
  return runners, first_loss


def measure(runners: dict, rounds: int, window_seconds: float, k: int) -> dict:
  """Rotated windows per round; {label: [steps/s per round]} and the foreign CPU load."""
  from research import benchmark  # pylint: disable=g-import-not-at-top
  steps, _ = benchmark.window_steps(runners, window_seconds, k)
  rates, loads = benchmark.alternate(runners, steps, rounds)
  return {"rates": rates,
          "foreign_load_median": statistics.median(x for v in loads.values() for x in v)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workloads", default="lstm")
  parser.add_argument("--options", action="append", default=[],
                      help="name=value[,name=value...]; repeat for more variants")
  parser.add_argument("--grad", default="autodiff", choices=("autodiff", "manual"))
  parser.add_argument("--model", default="",
                      help="field=value[,...]: the workloads' model fields changed, e.g. "
                           "conv_impl=xla")
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--window_seconds", type=float, default=1.0)
  parser.add_argument("--steps_per_dispatch", type=int, default=0,
                      help="steps per call; 0: 2 for alexnet, 20 otherwise")
  args = parser.parse_args(argv)
  if args.rounds <= 0 or args.window_seconds <= 0 or args.steps_per_dispatch < 0:
    raise errors.ConfigError(f"--rounds={args.rounds} and --window_seconds="
                             f"{args.window_seconds} must be positive, --steps_per_dispatch="
                             f"{args.steps_per_dispatch} >= 0")
  option_sets = [{}] + [parse_options(text) for text in args.options]
  if len(option_sets) == 1:
    raise errors.ConfigError("no --options given: name at least one set to compare with the "
                             "default, e.g. --options=xla_cpu_enable_fast_math=true")
  model_overrides = parse_options(args.model, "--model")
  from research import benchmark  # pylint: disable=g-import-not-at-top
  print(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average "
        f"{os.getloadavg()[0]:.2f}", flush=True)
  for name in benchmark.resolve(args.workloads):
    k = args.steps_per_dispatch or benchmark.steps_per_call(name)
    runners, first_loss = compile_variants(name, args.grad, option_sets, k, model_overrides)
    out = measure(runners, args.rounds, args.window_seconds, k)
    base = out["rates"]["default"]
    width = max(len(key) for key in runners)
    model = f", {args.model}" if args.model else ""
    print(f"{name} ({args.grad}{model}, {args.rounds} rounds of {args.window_seconds:g} s, "
          f"foreign load {out['foreign_load_median']:.0%}):", flush=True)
    for key, rates in out["rates"].items():
      ratios = [a / b for a, b in zip(rates, base)]
      print(f"  {key:{width}s} {statistics.median(rates):8.2f} steps/s  "
            f"{statistics.median(ratios):.3f}x [{min(ratios):.2f}-{max(ratios):.2f}]  "
            f"first loss {first_loss[key]:.6f}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.guarded(main)())
