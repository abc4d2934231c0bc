"""Learning curves of one or several runs, overlaid, from their metrics.jsonl.

  python -m research.plot runs/a runs/b --out=curves.png --metrics=loss,accuracy

One panel per metric; each run has one colour, labelled by its workdir's basename. Train is
solid, valid dashed, and the final test value a star at the last step. The "loss" panel draws
the train records' data term (their "data_loss"), the quantity valid and test report, not E
with its penalty.
"""
import argparse
import os
from typing import Sequence

from matplotlib import ticker
from matplotlib.figure import Figure  # The object API needs no pyplot state; it renders with Agg.

from research import cli
from research import errors
from research import metrics as metrics_lib
from research import workdir as workdir_lib

_STYLES = {"train": dict(linestyle="-", alpha=0.6),
           "valid": dict(linestyle="--", marker="."),
           "test": dict(linestyle="none", marker="*", markersize=12)}


def plot_runs(workdirs: Sequence[str], out_path: str,
              metrics: Sequence[str] = ("loss", "accuracy")) -> str:
  """Draws `metrics` vs step for each run in `workdirs` into the PNG `out_path`; returns it."""
  if not workdirs:
    raise errors.ConfigError("plot_runs needs at least one workdir")
  if not metrics:
    raise errors.ConfigError("plot_runs needs at least one metric, e.g. loss,accuracy")
  workdir_lib.check_output_file(out_path)
  runs = [(_label(w), metrics_lib.read_metrics(w)) for w in workdirs]
  fig = Figure(figsize=(5.5 * len(metrics), 4), layout="constrained")
  axes = fig.subplots(1, len(metrics), squeeze=False)[0]
  for ax, metric in zip(axes, metrics):
    drawn = False
    for i, (label, records) in enumerate(runs):
      color = f"C{i % 10}"
      test = [r for r in records if r.get("split") == "test" and _is_number(r.get(metric))]
      if test:
        label += f" (test {test[-1][metric]:.4g})"
        ax.plot([test[-1]["step"]], [test[-1][metric]], color=color, **_STYLES["test"])
      for split in ("train", "valid"):
        # Like with like: a train record's "loss" is E, data term plus penalty; its
        # "data_loss" is the cross-entropy alone, what valid and test report as "loss".
        key = "data_loss" if split == "train" and metric == "loss" else metric
        points = [(r["step"], r[key]) for r in records
                  if r.get("split") == split and _is_number(r.get(key))]
        if points:
          ax.plot(*zip(*points), color=color, label=label, **_STYLES[split])
          label = None  # One legend entry per run.
      drawn = drawn or bool(test) or label is None
    if not drawn:
      raise errors.DataError(
          f"no run in {list(workdirs)} logged {metric!r}; choose --metrics from the keys of "
          "their metrics.jsonl")
    # Black stand-ins explain the line styles once, after the runs' colours.
    for split, style in _STYLES.items():
      ax.plot([], [], color="black", label=split, **style)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if metric == "loss":
      ax.set_yscale("log")  # Losses fall over orders of magnitude.
      # Plain numbers, not 2x10^0; minor ticks are labelled only when the span is short.
      ax.yaxis.set_major_formatter(ticker.LogFormatter())
      ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
  fig.savefig(out_path, dpi=120)
  return out_path


def _label(workdir: str) -> str:
  return os.path.basename(os.path.normpath(workdir))


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m research.plot", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdirs", nargs="+", help="run directories holding metrics.jsonl")
  parser.add_argument("--out", default="curves.png", help="PNG file to write")
  parser.add_argument("--metrics", default="loss,accuracy",
                      help="comma-separated metric keys, one panel each")
  args = parser.parse_args(argv)
  cli.quiet_library_logs()
  out = cli.guarded(plot_runs)(args.workdirs, args.out, [m for m in args.metrics.split(",") if m])
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
