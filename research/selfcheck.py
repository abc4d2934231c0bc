"""What to run first on a new runtime (a Colab GPU or TPU, a TPU VM, a new laptop):

  python -m research.selfcheck [--out=selfcheck.md] [--quick]

It writes (and prints) a markdown report of this machine as the project sees it: the backend,
devices and versions; the gradient check of every registered model (hand-written vs jax.grad vs
finite differences, at full matmul precision; float64 rows skipped where the backend has none;
--quick: the MLP's alone); 200
training steps of two configs, with their throughput and loss; and the benchmark of two
workloads (steps/s, autodiff and manual). Exit code 0 when every gradient agrees and both runs
trained, 1 otherwise. On a GPU, put its figures in docs/performance.md's GPU section.
"""
import json
import os
import sys
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags

from research import cli
from research import workdir as workdir_lib

QUICK_GRADCHECK = ("mlp",)  # --quick; otherwise every registered check (gradcheck.names())
TRAIN_CONFIGS = ("default", "lenet_digits")
BENCHMARK_WORKLOADS = ("mlp", "lenet5")


def environment() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  from research import gradcheck  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
          "devices": len(devices), "processes": jax.process_count(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "python": sys.version.split()[0],
          "float64": gradcheck.has_float64(), "cpus": os.cpu_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def check_gradients(models=None, batch: int = 8) -> tuple[list[str], bool]:
  """The gradcheck tables of `models` (default: every registered check) as markdown lines, and
  whether every array agreed."""
  from research import gradcheck  # pylint: disable=g-import-not-at-top
  lines = []
  code = gradcheck.run(gradcheck.names() if models is None else list(models), batch=batch,
                       timing=False, echo=lines.append)
  return lines, code == 0


def train_briefly(names=TRAIN_CONFIGS, num_steps: int = 200) -> list[dict]:
  """num_steps of each config (log every 50), in throwaway workdirs: loss, steps/s, wall."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from research import metrics  # pylint: disable=g-import-not-at-top
  from research import train  # pylint: disable=g-import-not-at-top
  rows = []
  for name in names:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_selfcheck_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update(num_steps=num_steps, log_every=50, eval_every=num_steps,
                  checkpoint_every=0)
    with tempfile.TemporaryDirectory() as workdir:
      start = time.time()
      result = train.train_and_evaluate(config, workdir)
      records = metrics.read_metrics(workdir, split="train")
    rates = [r["steps_per_sec"] for r in records[1:]]  # The first window includes warm-up.
    rows.append({"config": f"configs/{name}.py", "model": config.model.name,
                 "steps": num_steps, "first_loss": records[0]["loss"],
                 "last_loss": records[-1]["loss"],
                 "test_accuracy": result["test"].get("accuracy", float("nan")),
                 "steps_per_sec": sorted(rates)[len(rates) // 2] if rates else float("nan"),
                 "wall_s": time.time() - start})
  return rows


def benchmark(workloads=BENCHMARK_WORKLOADS, seconds: float = 3.0) -> list[dict]:
  from research import benchmark as bench  # pylint: disable=g-import-not-at-top
  out = bench.run(list(workloads), "both", seconds=seconds, windows=3, log=lambda _: None)
  return [{"workload": r["workload"], "grad": r["grad"], "steps_per_sec": r["steps_per_sec"],
           "examples_per_sec": r["examples_per_sec"], "batch": r["batch"],
           "compile_s": r["compile_s_scan"]} for r in out["results"]]


def report(quick: bool = False, log: Callable[[str], None] = print) -> tuple[str, bool]:
  """The markdown report and whether the machine passed."""
  env = environment()
  log(f"backend {env['backend']} ({env['device_kind']} x {env['devices']}), jax {env['jax']}")
  grad_lines, grads_ok = check_gradients(QUICK_GRADCHECK if quick else None)
  log(f"gradient check: {'all arrays agree' if grads_ok else 'FAILED'}")
  runs = train_briefly(TRAIN_CONFIGS[:1] if quick else TRAIN_CONFIGS, 100 if quick else 200)
  trained = all(r["last_loss"] < r["first_loss"] for r in runs)
  log(f"training: {'the loss fell in every run' if trained else 'a loss did not fall'}")
  bench = benchmark(BENCHMARK_WORKLOADS[:1] if quick else BENCHMARK_WORKLOADS,
                    1.0 if quick else 3.0)
  lines = [f"# Self-check: {env['backend']} ({env['device_kind']})", "",
           f"{time.strftime('%Y-%m-%d %H:%M %Z')}; `python -m research.selfcheck"
           f"{' --quick' if quick else ''}`", "", "| | |", "|---|---|"]
  lines += [f"| {k} | {v} |" for k, v in env.items()]
  lines += ["", "## Gradient check (manual vs jax.grad vs finite differences)", "", *grad_lines,
            "", f"## {runs[0]['steps']} training steps", "",
            "| config | model | loss at the first log | loss at the last | test accuracy "
            "| steps/s (median of log windows) | wall s |", "|---|---|---:|---:|---:|---:|---:|"]
  lines += [f"| {r['config']} | {r['model']} | {r['first_loss']:.4f} | {r['last_loss']:.4f} | "
            f"{r['test_accuracy']:.4f} | {r['steps_per_sec']:.1f} | {r['wall_s']:.1f} |"
            for r in runs]
  lines += ["", "## Benchmark (research.benchmark, synthetic data)", "",
            "| workload | grad | batch | steps/s | examples/s | compile s |",
            "|---|---|---:|---:|---:|---:|"]
  lines += [f"| {r['workload']} | {r['grad']} | {r['batch']} | {r['steps_per_sec']:.2f} | "
            f"{r['examples_per_sec']:.0f} | {r['compile_s']:.2f} |" for r in bench]
  ok = grads_ok and trained
  lines += ["", f"**{'PASS' if ok else 'FAIL'}**: gradients "
            f"{'agree' if grads_ok else 'disagree'}; training "
            f"{'lowers the loss' if trained else 'does not lower the loss'}."]
  return "\n".join(lines) + "\n", ok


_OUT = flags.DEFINE_string("out", "", "Write the report here (default: "
                           "selfcheck-<backend>.md in the current directory).")
_QUICK = flags.DEFINE_bool("quick", False, "One model, one config, one workload.")
_JSON = flags.DEFINE_bool("json", False, "Also print the environment as JSON.")


@cli.guarded
def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (pass --help for the flags)")
  cli.quiet_library_logs()
  import jax  # pylint: disable=g-import-not-at-top
  out = workdir_lib.check_output_file(_OUT.value or f"selfcheck-{jax.default_backend()}.md")
  text, ok = report(_QUICK.value)
  with open(out, "w", encoding="utf-8") as f:
    f.write(text)
  print(text)
  if _JSON.value:
    print(json.dumps(environment(), indent=2))
  print(f"wrote {out}")
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
