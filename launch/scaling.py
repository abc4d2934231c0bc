"""How the cost of a training step grows with the work: batch size and width, project vs plain
JAX vs PyTorch eager, interleaved in one process.

  python launch/scaling.py --json=/tmp/scaling.json --plot=docs/scaling.png

Cells: batch sizes 16-1024 for the benchmark's mlp, lenet5 and lstm (at their benchmark
widths), and hidden widths 128-2048 for the mlp at batch 128. In each cell the three steps
alternate in short windows for several rounds (research.benchmark's interleaved protocol), so
their ratios hold on a machine whose speed drifts. The project's step is its scanned train
chunk (20 steps per call); plain JAX is research.benchmark.make_reference_step (jit of
value_and_grad + optax, one step per call); PyTorch is the peer harness's eager model of the
same layers, trained with torch.optim.SGD(momentum=0.9). PyTorch is optional (pip install
torch==2.13.0); without it the column is empty.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from research import benchmark  # noqa: E402
from research import cli  # noqa: E402
from research import errors  # noqa: E402
from research import workdir  # noqa: E402

BATCHES = (16, 64, 256, 1024)
WIDTHS = (128, 512, 2048)


def cells():
  out = [("mlp", {"batch": b}) for b in BATCHES]
  out += [("mlp", {"batch": 128, "width": h}) for h in WIDTHS]
  out += [("lenet5", {"batch": b}) for b in BATCHES]
  out += [("lstm", {"batch": b}) for b in BATCHES]
  return out


def torch_step(name: str, batch: int, width: int | None):
  """The peer harness's PyTorch eager model and step for one cell, as run(n) / sync()."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  from torch import nn  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  if name == "mlp":
    h = width or 512
    model = nn.Sequential(nn.Linear(784, h), nn.Sigmoid(), nn.Linear(h, h), nn.Sigmoid(),
                          nn.Linear(h, 10))
    shape = (784,)
  elif name == "lenet5":
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5),
        nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(),
        nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))
    shape = (1, 28, 28)
  else:
    class Net(nn.Module):

      def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

      def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])
    model = Net()
    shape = (28, 28)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  rng = np.random.default_rng(0)
  xs = [torch.from_numpy(rng.standard_normal((batch, *shape), dtype=np.float32))
        for _ in range(4)]
  ys = [torch.from_numpy(rng.integers(0, 10, size=(batch,)).astype(np.int64)) for _ in range(4)]
  state = {"i": 0, "loss": None}

  def run(n: int):
    for _ in range(n):
      i = state["i"]
      state["i"] = i + 1
      loss = nn.functional.cross_entropy(model(xs[i % 4]), ys[i % 4])
      loss.backward()
      opt.step()
      opt.zero_grad(set_to_none=True)
      state["loss"] = loss

  return run, lambda: float(state["loss"].item())


def measure(name: str, cell: dict, rounds: int, window_seconds: float) -> dict:
  width = cell.get("width")
  overrides = {"hidden_sizes": (width, width)} if width else {}
  w = benchmark.scaled(name, cell["batch"], **overrides)
  runners = {"project": benchmark.project_runner(name, "autodiff", 20, w=w),
             "plain_jax": benchmark.make_reference_step(name, w=w)}
  torch_runner = torch_step(name, cell["batch"], width)
  if torch_runner is not None:
    runners["torch"] = torch_runner
  steps, _ = benchmark.window_steps(runners, window_seconds, 20)
  rates, _ = benchmark.alternate(runners, steps, rounds)
  row = {"workload": name, "batch": cell["batch"], "width": width}
  for key, values in rates.items():
    row[f"{key}_steps_per_sec"] = statistics.median(values)
    row[f"{key}_examples_per_sec"] = statistics.median(values) * cell["batch"]
  for key in ("plain_jax", "torch"):
    if key in rates:
      q = benchmark.summary([a / b for a, b in zip(rates["project"], rates[key])])
      row[f"project_over_{key}"] = q["median"]
      row[f"project_over_{key}_range"] = (q["min"], q["max"])
  return row


def plot(rows: list[dict], path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  panels = [("mlp", "batch"), ("lenet5", "batch"), ("lstm", "batch"), ("mlp", "width")]
  fig = Figure(figsize=(16, 4), layout="constrained")
  for ax, (name, axis) in zip(fig.subplots(1, 4), panels):
    sel = [r for r in rows if r["workload"] == name and (r["width"] is None) == (axis == "batch")]
    xs = [r[axis] for r in sel]
    for key, style in (("project", "o-"), ("plain_jax", "s--"), ("torch", "^:")):
      if f"{key}_examples_per_sec" in (sel[0] if sel else {}):
        ax.plot(xs, [r[f"{key}_examples_per_sec"] for r in sel], style, label=key)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size" if axis == "batch" else "hidden width (batch 128)")
    ax.set_ylabel("examples/s")
    ax.set_title(f"{name}: examples/s vs {axis}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
  fig.savefig(path, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--window_seconds", type=float, default=1.0)
  parser.add_argument("--json", default="")
  parser.add_argument("--plot", default="")
  args = parser.parse_args(argv)
  if args.rounds <= 0 or args.window_seconds <= 0:
    raise errors.ConfigError(f"--rounds={args.rounds} and --window_seconds="
                             f"{args.window_seconds} must be positive")
  for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
    if path:
      workdir.check_output_file(path, flag)
  if args.plot and os.path.splitext(args.plot)[1].lower() not in (".png", ".pdf", ".svg"):
    raise errors.ConfigError(f"--plot={args.plot}: name a .png, .pdf or .svg file")
  rows = []
  started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  for name, cell in cells():
    rows.append(measure(name, cell, args.rounds, args.window_seconds))
    print(json.dumps(rows[-1]), flush=True)
  print("\n| workload | batch | width | project ex/s | plain JAX ex/s | torch ex/s "
        "| project / plain JAX | project / torch |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  fmt = lambda v, spec: "-" if v is None else format(v, spec)
  for r in rows:
    print(f"| {r['workload']} | {r['batch']} | {r['width'] or '-'} | "
          f"{fmt(r['project_examples_per_sec'], '.0f')} | "
          f"{fmt(r['plain_jax_examples_per_sec'], '.0f')} | "
          f"{fmt(r.get('torch_examples_per_sec'), '.0f')} | "
          f"{fmt(r['project_over_plain_jax'], '.2f')}x | "
          f"{fmt(r.get('project_over_torch'), '.2f')}x |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"started": started, "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "loadavg": os.getloadavg(), "rows": rows}, f, indent=1)
  if args.plot:
    plot(rows, args.plot)
  return 0


if __name__ == "__main__":
  sys.exit(cli.guarded(main)())
