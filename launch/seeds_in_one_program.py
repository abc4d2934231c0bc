"""Time to a finding: n seeds of one workload trained in one process, the project's two ways
against PyTorch's two ways, in interleaved windows.

  <venv with torch>/bin/python launch/seeds_in_one_program.py \\
      --workloads=digits_mlp,semi_mlp,mlp,lenet5,lstm --seeds=1,2,5,10,20 \\
      --rounds=5 --window_seconds=1 --json=/tmp/seeds.json --markdown=/tmp/seeds.md

The forms (--forms), for n seeds 0..n-1, each with its own initial params and data:

  vmap        the project's seeds as one jax.vmap-ped program: kernel.make_train_chunk under
              jax.jit(jax.vmap(.)), as harness.train_seeds(mode="vmap") runs them
  loop        the project's seeds as a loop over one compiled chunk (mode="loop")
  torch_loop  PyTorch eager, one model and optimizer per seed, stepped seed after seed
  torch_vmap  PyTorch's own ensemble: torch.func.stack_module_state + torch.func.vmap of the
              forward and loss, one backward and one optimizer step for the stack (the
              optimizers are elementwise, so this is n independent runs); where a model has no
              batching rule (nn.LSTM), the error is recorded and the loop stands for PyTorch

Workloads: digits_mlp is what configs/default.py trains (the lecture's 64-64-10 sigmoid MLP,
sigmoid cross-entropy + L2, momentum, batch 32, on the digits training split); semi_mlp is the
few-label runner's MLP of configs/exp_semi_supervised.py (64-256-10 ReLU, Adam, 16 labelled +
64 unlabelled rows per step, 5 labels per class redrawn per seed; its plain labelled step,
"labels_only"); mlp, lenet5 and lstm are research.benchmark's peer workloads (synthetic data,
SGD-momentum), with PyTorch models as in the peer harness (../shared/bench/run_peers.py).
PyTorch gets TORCH_THREADS threads per workload (--torch_threads=N sets one count for all).

Per workload, every (n, form) is one runner, and benchmark.alternate runs one window of each,
round after round, the order rotated (the forms of one n stay adjacent), so the ratios of one
round are immune to the machine's drift. Reported per workload and n: seed-steps/s (steps/s x
n) per form, median and min-max over rounds; vmap/loop and the project's faster form over
PyTorch's faster form, per round; and the seed_mode the harness should use (the faster project
form at n = 5). The JSON is rewritten after every workload, so a kill keeps what was measured.
PyTorch is a measurement dependency only, imported when a torch form is asked for.
"""
import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from research import augment  # noqa: E402
from research import benchmark  # noqa: E402
from research import cli  # noqa: E402
from research import data as data_lib  # noqa: E402
from research import errors  # noqa: E402
from research import kernel  # noqa: E402
from research import losses  # noqa: E402
from research import models  # noqa: E402
from research import optim  # noqa: E402
from research import workdir  # noqa: E402
from research.experiments import harness  # noqa: E402

WORKLOADS = ("digits_mlp", "semi_mlp", "mlp", "lenet5", "lstm")
FORMS = ("vmap", "loop", "torch_loop", "torch_vmap")
PROJECT_FORMS, TORCH_FORMS = FORMS[:2], FORMS[2:]
# Steps per dispatch: about what a runner's chunk holds for the tiny digits models (their
# step is tens of microseconds), few for the peer workloads so that a window of 20 seeds
# stays near a second.
STEPS_PER_CALL = {"digits_mlp": 100, "semi_mlp": 100, "mlp": 5, "lenet5": 2, "lstm": 2}
SEMI_LABELS_PER_CLASS = 5
TORCH_BATCHES = 4  # Pre-made batches per seed that PyTorch cycles through (as the peers do).
# torch.set_num_threads per workload: the peer harness's 2 cores for its workloads; 1 for the
# digits MLPs, whose 16-32 row matmuls have nothing to split and whose second thread only
# waits (with 2, PyTorch eager was seen 20x slower when other processes loaded the cores).
TORCH_THREADS = {"digits_mlp": 1, "semi_mlp": 1, "mlp": 2, "lenet5": 2, "lstm": 2}


@dataclasses.dataclass
class Setup:
  """One workload's project side for a list of seeds: the kernel's chunk (one for every seed),
  each seed's initial state and data x_NxD..., y_N, and batches(seed, start, num) -> idx_SxB;
  for the digits workloads also what harness.train_seeds takes (model, loss_fn, optimizer,
  augment_fn, with_step), so a test can check that this is the harness's program."""
  chunk: Callable
  states: list
  xs: list
  ys: list
  batches: Callable
  batch: int
  train_seeds_args: dict | None = None


def _configs():
  from configs import default  # pylint: disable=g-import-not-at-top
  from configs import exp_semi_supervised  # pylint: disable=g-import-not-at-top
  return default.get_config(), exp_semi_supervised.get_config()


def project_setup(workload: str, seeds) -> Setup:
  """The project's chunk, states and data of `workload` for `seeds` (module doc)."""
  errors.check_choice("workloads", workload, WORKLOADS)
  if workload == "digits_mlp":
    config = _configs()[0]
    dataset = data_lib.load(config.data)
    train, k = dataset.train, dataset.num_classes
    model = models.build(config.model, dataset.input_shape, k)
    optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
    loss_fn = losses.make_loss_fn(model, config.loss.output, config.loss.l2, len(train), k,
                                  config.loss.l1)
    augment_fn = augment.make_augment(config.augment)
    chunk = kernel.make_train_chunk(loss_fn, optimizer, augment_fn)
    b = config.batch_size
    return Setup(chunk, [kernel.init_state(model, optimizer, jax.random.key(s)) for s in seeds],
                 [train.x] * len(seeds), [train.y] * len(seeds),
                 lambda seed, start, num: data_lib.batch_indices(seed, len(train), b, start, num),
                 b, dict(model=model, loss_fn=loss_fn, optimizer=optimizer, augment_fn=augment_fn))
  if workload == "semi_mlp":
    from research.experiments import semi_supervised  # pylint: disable=g-import-not-at-top
    from research.experiments import variants  # pylint: disable=g-import-not-at-top
    config = _configs()[1]
    dataset = data_lib.load(config.data)
    k, unlabelled = dataset.num_classes, dataset.train
    model = models.build(config.model, dataset.input_shape, k)
    optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
    b_l, b_u = config.batch_size, config.experiment.unlabelled_batch_size
    loss_fn = semi_supervised.make_loss_fn(model, k, "labels_only", b_l, None, 0.0,
                                           config.experiment.threshold)
    chunk = kernel.make_train_chunk(loss_fn, optimizer, with_step=True)
    xs, ys = [], []
    for s in seeds:  # As the runner's fit: the seed's labelled draw, then every input unlabelled.
      sub = harness.stratified_subset(dataset.train, SEMI_LABELS_PER_CLASS, s, k)
      xs.append(np.concatenate([sub.x, unlabelled.x]))
      ys.append(np.concatenate([sub.y, np.full(len(unlabelled), -1, np.int32)]))
    two = variants.two_source_batches(SEMI_LABELS_PER_CLASS * k, b_l, len(unlabelled), b_u)
    return Setup(chunk, [kernel.init_state(model, optimizer, jax.random.key(s)) for s in seeds],
                 xs, ys, two, b_l,
                 dict(model=model, loss_fn=loss_fn, optimizer=optimizer, with_step=True))
  built = [benchmark.make_step(workload, seed=s, norms=False) for s in seeds]
  b = benchmark.WORKLOADS[workload].batch
  m = built[0][2].shape[0]
  return Setup(built[0][0], [x[1] for x in built], [x[2] for x in built],
               [x[3] for x in built],
               lambda seed, start, num: data_lib.batch_indices(seed, m, b, start, num), b)


def project_runner(setup: Setup, seeds, form: str, k: int, run_chunk=None):
  """(run(steps), sync(), params()) training every seed `steps` steps per call of run, K per
  dispatch: form "vmap" through run_chunk (jax.jit(jax.vmap(setup.chunk)), shared between
  runners so each n compiles once), "loop" through setup.chunk itself. params() -> the list of
  each seed's params. Batches follow setup.batches step by step, as harness.train_seeds."""
  errors.check_choice("forms", form, PROJECT_FORMS)
  state = {"step": 0}
  if form == "vmap":
    state["s"] = jax.tree.map(lambda *a: jnp.stack(a), *setup.states)
    x_R, y_R = jnp.asarray(np.stack(setup.xs)), jnp.asarray(np.stack(setup.ys))
    run_chunk = run_chunk or jax.jit(jax.vmap(setup.chunk), donate_argnums=0)

    def run(steps: int):
      for _ in range(max(1, steps // k)):
        idx = np.stack([setup.batches(s, state["step"], k) for s in seeds])
        state["s"], state["sums"] = run_chunk(state["s"], x_R, y_R, idx)
        state["step"] += k

    def params():
      return [jax.tree.map(lambda a, i=i: a[i], state["s"]["params"]) for i in range(len(seeds))]
  else:
    state["s"] = list(setup.states)
    data = [(jnp.asarray(x), jnp.asarray(y)) for x, y in zip(setup.xs, setup.ys)]

    def run(steps: int):
      calls = max(1, steps // k)
      for i, seed in enumerate(seeds):
        for c in range(calls):
          idx = setup.batches(seed, state["step"] + c * k, k)
          state["s"][i], state["sums"] = setup.chunk(state["s"][i], *data[i], idx)
      state["step"] += calls * k

    def params():
      return [s["params"] for s in state["s"]]
  return run, lambda: jax.block_until_ready(state["s"]), params


# ------------------------------------------------------------------------------------ PyTorch


def import_torch():
  """torch, or a ConfigError naming the fix (it is a measurement dependency, never the
  project's)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError(
        "PyTorch is not installed here: run this with a venv that has it (pip install "
        "torch==2.13.0 takes the CPU build on disk), or pass --forms=vmap,loop") from None
  return torch


def _torch_workload(torch, workload: str, setup: Setup, seed: int, index: int):
  """(model, make_optimizer(params), loss(logits, targets, named_params), batches [(x,
  targets)] of one seed, setup's index-th): the PyTorch twin of the project's workload."""
  nn, F = torch.nn, torch.nn.functional
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  ce = lambda logits, y, p: F.cross_entropy(logits, y)
  if workload == "digits_mlp":
    config = _configs()[0]
    model = nn.Sequential(nn.Linear(64, 64), nn.Sigmoid(), nn.Linear(64, 10))
    m, lam = len(setup.xs[0]), config.loss.l2

    def loss(logits, t, p):  # The lecture's E: sigmoid units' cross-entropy + (lambda/2m) sum w^2.
      data = F.binary_cross_entropy_with_logits(logits, t, reduction="none").sum(-1).mean()
      return data + lam / (2 * m) * sum((w * w).sum() for n, w in p.items() if "weight" in n)
    make_opt = lambda ps: torch.optim.SGD(ps, lr=config.optimizer.learning_rate,
                                          momentum=config.optimizer.momentum)
    rows = lambda j: setup.batches(seed, j, 1)[0]
    # One-hot targets made here: F.one_hot inside torch.func.vmap reads its input's values.
    x_src, y_src = setup.xs[index], np.eye(10, dtype=np.float32)[setup.ys[index]]
  elif workload == "semi_mlp":
    config = _configs()[1]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    loss = ce
    make_opt = lambda ps: torch.optim.Adam(ps, lr=config.optimizer.learning_rate)
    b_l = config.batch_size
    rows = lambda j: setup.batches(seed, j, 1)[0][:b_l]  # The labelled rows only.
    x_src, y_src = setup.xs[index], setup.ys[index]
  else:
    model = _peer_torch_model(torch, workload)
    loss = ce
    make_opt = lambda ps: torch.optim.SGD(ps, lr=benchmark.LEARNING_RATE,
                                          momentum=benchmark.MOMENTUM)
    w = benchmark.WORKLOADS[workload]
    shape = {"lenet5": (1, 28, 28)}.get(workload, w.input_shape)  # The peers' NCHW 28x28.
    x_src = rng.standard_normal((TORCH_BATCHES * w.batch, *shape), dtype=np.float32)
    y_src = rng.integers(0, benchmark.NUM_CLASSES, TORCH_BATCHES * w.batch)
    rows = lambda j: np.arange(j * w.batch, (j + 1) * w.batch)
  target = lambda t: t if t.dtype == np.float32 else t.astype(np.int64)
  batches = [(torch.from_numpy(np.ascontiguousarray(x_src[rows(j)])),
              torch.from_numpy(np.ascontiguousarray(target(y_src[rows(j)]))))
             for j in range(TORCH_BATCHES)]
  return model.train(), make_opt, loss, batches


def _peer_torch_model(torch, workload: str):
  """The peer harness's PyTorch models (../shared/bench/run_peers.py, build_torch)."""
  nn = torch.nn
  if workload == "mlp":
    return nn.Sequential(nn.Linear(784, 512), nn.Sigmoid(), nn.Linear(512, 512), nn.Sigmoid(),
                         nn.Linear(512, 10))
  if workload == "lenet5":
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))
  return _lstm_class(torch)()


_LSTM_CLASS = []


def _lstm_class(torch):
  """The peers' LSTM classifier, one class for every model (stack_module_state needs it)."""
  if _LSTM_CLASS:
    return _LSTM_CLASS[0]
  nn = torch.nn

  class LSTMNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.lstm = nn.LSTM(28, 128, batch_first=True)
      with torch.no_grad():  # One bias vector, as the JAX models (the peers do the same).
        self.lstm.bias_hh_l0.zero_()
      self.lstm.bias_hh_l0.requires_grad_(False)
      self.fc = nn.Linear(128, 10)

    def forward(self, x):
      out, _ = self.lstm(x)
      return self.fc(out[:, -1])
  _LSTM_CLASS.append(LSTMNet)
  return LSTMNet


def torch_runner(torch, workload: str, setup: Setup, seeds, form: str):
  """(run(steps), sync()) for the PyTorch forms (module doc), or a one-line reason (str) when
  the ensemble cannot be built or stepped."""
  built = [_torch_workload(torch, workload, setup, s, i) for i, s in enumerate(seeds)]
  state = {"i": 0, "loss": None}
  if form == "torch_loop":
    runs = [(model, make_opt([p for p in model.parameters() if p.requires_grad]), loss, batches)
            for model, make_opt, loss, batches in built]

    def run(steps: int):
      for model, opt, loss, batches in runs:
        for j in range(state["i"], state["i"] + steps):
          x, y = batches[j % TORCH_BATCHES]
          out = loss(model(x), y, dict(model.named_parameters()))
          out.backward()
          opt.step()
          opt.zero_grad(set_to_none=True)
          state["loss"] = out
      state["i"] += steps
  else:
    from torch import func  # pylint: disable=g-import-not-at-top
    models_ = [b[0] for b in built]
    params, buffers = func.stack_module_state(models_)
    trainable = {n: p for n, p in params.items() if dict(models_[0].named_parameters())[n]
                 .requires_grad}
    frozen = {n: p.detach() for n, p in params.items() if n not in trainable}
    opt = built[0][1](list(trainable.values()))
    loss = built[0][2]
    base = copy.deepcopy(models_[0]).to("meta")

    def one(p, b, x, y):
      return loss(func.functional_call(base, ({**p, **frozen}, b), (x,)), y, p)
    ensemble = func.vmap(one)
    stacked = [(torch.stack([b[3][j][0] for b in built]), torch.stack([b[3][j][1] for b in built]))
               for j in range(TORCH_BATCHES)]

    def run(steps: int):
      for j in range(state["i"], state["i"] + steps):
        x, y = stacked[j % TORCH_BATCHES]
        out = ensemble(trainable, buffers, x, y).sum()  # Each seed's loss has its own params.
        out.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["loss"] = out
      state["i"] += steps

    try:
      run(1)
    except RuntimeError as e:
      return f"torch.func.vmap fails: {str(e).splitlines()[0]}"
  return run, lambda: float(state["loss"].detach())


# -------------------------------------------------------------------------------- measurement


def measure(workload: str, ns, forms, rounds: int, window_seconds: float, torch=None,
            log: Callable[[str], None] = print) -> dict:
  """Every (n, form) of one workload in alternating windows; returns its JSON record."""
  k = STEPS_PER_CALL[workload]
  t0 = time.time()
  setups = {n: project_setup(workload, range(n)) for n in ns}
  vmapped = jax.jit(jax.vmap(setups[ns[0]].chunk), donate_argnums=0)
  runners, skipped = {}, {}
  for n in ns:
    seeds = list(range(n))
    # One chunk for every n: the loop compiles once; the vmapped program once per n.
    setup = dataclasses.replace(setups[n], chunk=setups[ns[0]].chunk)
    for form in forms:
      if form in PROJECT_FORMS:
        run, sync, _ = project_runner(setup, seeds, form, k, vmapped)
        runners[(n, form)] = (run, sync)
      else:
        built = torch_runner(torch, workload, setup, seeds, form)
        if isinstance(built, str):
          skipped[form] = built
        else:
          runners[(n, form)] = built
  for form, why in skipped.items():
    log(f"{workload}: {form} skipped, {why}")
  steps, first_s = benchmark.window_steps(runners, window_seconds, k)
  rates, loads = benchmark.alternate(runners, steps, rounds)
  record = {"workload": workload, "steps_per_call": k, "skipped": skipped, "cells": [],
            "wall_s": time.time() - t0, "loadavg": os.getloadavg()}
  for n in ns:
    seed_rates = {f: [r * n for r in rates[(n, f)]] for f in forms if (n, f) in rates}
    cell = {"n": n, "seed_steps_per_sec": {f: benchmark.summary(v) for f, v in seed_rates.items()},
            "per_round": seed_rates, "first_call_s": {f: first_s[(n, f)] for f in seed_rates},
            "steps_per_window": {f: steps[(n, f)] for f in seed_rates},
            "foreign_load_median": statistics.median(
                [x for f in seed_rates for x in loads[(n, f)]]),
            "foreign_load_max": max(x for f in seed_rates for x in loads[(n, f)])}
    if "vmap" in seed_rates and "loop" in seed_rates:
      cell["vmap_over_loop"] = _ratio(seed_rates["vmap"], seed_rates["loop"])
    best = {side: max((f for f in fs if f in seed_rates), default=None,
                      key=lambda f: cell["seed_steps_per_sec"][f]["median"])
            for side, fs in (("project", PROJECT_FORMS), ("torch", TORCH_FORMS))}
    cell["project_best"], cell["torch_best"] = best["project"], best["torch"]
    if best["project"] and best["torch"]:
      cell["project_over_torch"] = _ratio(seed_rates[best["project"]], seed_rates[best["torch"]])
    record["cells"].append(cell)
    log(format_cell(workload, cell))
  at = {c["n"]: c for c in record["cells"]}
  pick = at.get(5) or record["cells"][-1]
  if "vmap_over_loop" in pick:
    record["seed_mode"] = "vmap" if pick["vmap_over_loop"]["median"] >= 1.0 else "loop"
    log(f"{workload}: seed_mode={record['seed_mode']} (vmap/loop at n={pick['n']}: "
        f"{pick['vmap_over_loop']['median']:.2f}x)")
  return record


def _ratio(a, b) -> dict:
  return benchmark.summary([x / y for x, y in zip(a, b)])


def format_cell(workload: str, cell: dict) -> str:
  rates = " ".join(f"{f}={q['median']:.0f}[{q['min']:.0f}-{q['max']:.0f}]"
                   for f, q in cell["seed_steps_per_sec"].items())
  out = f"{workload:10s} n={cell['n']:<3d} seed-steps/s {rates}"
  for key, name in (("vmap_over_loop", "vmap/loop"), ("project_over_torch", "project/torch")):
    if key in cell:
      q = cell[key]
      out += f" | {name} {q['median']:.2f}x [{q['min']:.2f}-{q['max']:.2f}]"
  return out + f" | foreign load {cell['foreign_load_median']:.0%}"


def _us(v: float) -> str:
  return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def markdown(results: list[dict]) -> str:
  """One row per workload and n: microseconds per seed-step of each form (median [min-max]),
  vmap/loop and the faster project form over the faster PyTorch form (speed ratios, >1: the
  first is faster)."""
  us = lambda q: f"{_us(1e6 / q['median'])} [{_us(1e6 / q['max'])}-{_us(1e6 / q['min'])}]"
  ratio = lambda q: f"{q['median']:.2f}x [{q['min']:.2f}-{q['max']:.2f}]" if q else "-"
  lines = ["| workload | n | " + " | ".join(f"{f} µs/seed-step" for f in FORMS)
           + " | vmap/loop | project best / torch best | others' CPU share |",
           "|---|---|" + "---|" * (len(FORMS) + 3)]
  for r in results:
    for c in r["cells"]:
      q = c["seed_steps_per_sec"]
      best = (f"{ratio(c.get('project_over_torch'))} ({c['project_best']} / {c['torch_best']})"
              if c.get("project_over_torch") else "-")
      lines.append(f"| {r['workload']} | {c['n']} | "
                   + " | ".join(us(q[f]) if f in q else "-" for f in FORMS)
                   + f" | {ratio(c.get('vmap_over_loop'))} | {best} | "
                   f"{c['foreign_load_median']:.0%} |")
  return "\n".join(lines) + "\n"


def parse_ints(text: str, flag: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    values = []
  if not values or min(values) < 1 or len(set(values)) != len(values):
    raise errors.ConfigError(f"{flag}={text}: give distinct positive integers, e.g. "
                             f"{flag}=1,2,5,10,20")
  return values


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--seeds", default="1,2,5,10,20", help="the numbers of seeds n")
  parser.add_argument("--forms", default=",".join(FORMS))
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--window_seconds", type=float, default=1.0)
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="torch.set_num_threads for every workload (0: TORCH_THREADS's)")
  parser.add_argument("--json", default="")
  parser.add_argument("--markdown", default="")
  args = parser.parse_args(argv)
  names = [w.strip() for w in args.workloads.split(",") if w.strip()]
  for name in names or [""]:
    if name not in WORKLOADS:
      raise errors.ConfigError(f"--workloads: {name!r} is not a workload; choose from "
                               f"{','.join(WORKLOADS)}")
  ns = parse_ints(args.seeds, "--seeds")
  forms = [f.strip() for f in args.forms.split(",") if f.strip()]
  for form in forms or [""]:
    if form not in FORMS:
      raise errors.ConfigError(f"--forms: {form!r} is not a form; choose from {','.join(FORMS)}")
  if args.rounds <= 0 or args.window_seconds <= 0:
    raise errors.ConfigError(f"--rounds={args.rounds} and --window_seconds="
                             f"{args.window_seconds} must be positive")
  if args.torch_threads < 0:
    raise errors.ConfigError(f"--torch_threads={args.torch_threads}: give a thread count, or 0 "
                             "for each workload's own (TORCH_THREADS)")
  for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
    if path:
      workdir.check_output_file(path, flag)
  torch = import_torch() if set(forms) & set(TORCH_FORMS) else None
  cli.quiet_library_logs()
  meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "loadavg_start": os.getloadavg(),
          "jax": jax.__version__, "torch": torch.__version__ if torch else None,
          "ncpu": os.cpu_count(), "seeds": ns, "forms": forms, "rounds": args.rounds,
          "window_seconds": args.window_seconds, "steps_per_call": STEPS_PER_CALL}
  print(f"started {meta['started']}, load average {meta['loadavg_start'][0]:.2f}", flush=True)
  results = []
  for name in names:
    threads = args.torch_threads or TORCH_THREADS[name]
    if torch is not None:
      torch.set_num_threads(threads)
    results.append(measure(name, ns, forms, args.rounds, args.window_seconds, torch,
                           log=lambda line: print(line, flush=True)))
    results[-1]["torch_threads"] = threads if torch is not None else None
    meta.update(ended=time.strftime("%Y-%m-%d %H:%M:%S %Z"), loadavg_end=os.getloadavg())
    if args.json:  # After every workload: a kill keeps what was measured.
      workdir.write_text(args.json, json.dumps({"meta": meta, "results": results}, indent=1))
  table = markdown(results)
  if args.markdown:
    workdir.write_text(args.markdown, table)
  print(table, flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.guarded(main)())
