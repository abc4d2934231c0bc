"""Throughput of the project's own training step on the five workloads of the peer benchmark.

  python -m research.benchmark --workloads=mlp,lenet5,lstm,attention,alexnet \
      --grad=both --seconds=10 --windows=5 --json=/tmp/project.json

Each workload is built from a ConfigDict with `research.models.build`, trained with the loss of
`research.losses.make_loss_fn` (softmax, lambda = 0) and stepped by
`research.train.make_train_chunk` (jitted, buffer-donating `lax.scan` that gathers each batch on the device from an index array)
with SGD-momentum (eta = 0.01, momentum 0.9) from `research.optim.make_optimizer`, on synthetic
float32 data. The workloads (shapes, batch sizes, layer sizes) and the model-FLOP formula
(3 x forward, 2 x multiply-accumulates of the matmuls and convolutions) follow the peer
benchmark's description, so its numbers and these can sit in one table
(launch/compare_peers.py). Where the project's model differs from the peers' (its layer set is
the paper's, not the peers'), `params` differs from `expected_params` and the JSON says so.

Per workload: params, compile time of the first call, steps/s and examples/s (median and min-max
over timed windows, `block_until_ready` at each window's end) both with one step per dispatch
and with K steps per dispatch (the project's default way to run), model FLOPs per step, MFU
against a float32 matmul peak measured in the same process, host RSS peak, device memory
statistics where the backend has them, host data time per step, and the share of the CPUs that
other processes used during the timed windows (the machine may be shared).

grad=manual times the hand-written backward pass (research/backprop/) in the same train step,
for the models that have one; grad=both (the default) times autodiff and then manual on each
workload, back to back, and prints their ratio.
"""
import dataclasses
import functools
import json
import os
import resource
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import config_lib
from research import data as data_lib
from research import errors
from research import gradients
from research import kernel
from research import losses
from research import models
from research import optim

NUM_CLASSES = 10
GRADS = gradients.GRADS
GRAD_CHOICES = (*GRADS, "both")
LEARNING_RATE, MOMENTUM = 0.01, 0.9


@dataclasses.dataclass(frozen=True)
class Workload:
  """One benchmark workload: the project's model config and the peers' reference counts."""
  batch: int
  input_shape: tuple[int, ...]       # one example, in the project's layout (NHWC for images)
  model: dict                        # config.model fields
  expected_params: int               # the peers' parameter count
  forward_macs: int                  # multiply-accumulates of one example's forward pass
  note: str = ""                     # how the project's model differs from the peers', if it does


def _dense(i: int, o: int) -> int:
  return i * o + o


def _conv(ci: int, co: int, k: int) -> int:
  return ci * co * k * k + co


# AlexNet-small of the peers: 3x3 SAME convs, 2x2/2 max pools after conv1, conv2, conv5.
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
_ALEX_POOL_AFTER = (0, 1, 4)
_ALEX_FC = (1024, 1024)


def alexnet_forward_macs(input_size: int = 32, in_ch: int = 3, channels=_ALEX_CHANNELS,
                         kernel: int = 3, pool_window: int = 2, pool_stride: int = 2,
                         fc_sizes=_ALEX_FC, num_outputs: int = NUM_CLASSES) -> int:
  """MACs of one example through SAME stride-1 convs with VALID max pools after conv 1, 2, 5."""
  macs, hw, ci = 0, input_size, in_ch
  for i, co in enumerate(channels):
    macs += hw * hw * co * ci * kernel * kernel
    ci = co
    if i in _ALEX_POOL_AFTER:
      hw = (hw - pool_window) // pool_stride + 1
  sizes = (hw * hw * ci, *fc_sizes, num_outputs)
  return macs + sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


def _alexnet_params(input_size: int = 32, in_ch: int = 3, pool_window: int = 2,
                    pool_stride: int = 2) -> int:
  hw = input_size
  for _ in _ALEX_POOL_AFTER:
    hw = (hw - pool_window) // pool_stride + 1
  ins = (in_ch, *_ALEX_CHANNELS[:-1])
  sizes = (hw * hw * _ALEX_CHANNELS[-1], *_ALEX_FC, NUM_CLASSES)
  return (sum(_conv(i, o, 3) for i, o in zip(ins, _ALEX_CHANNELS))
          + sum(_dense(i, o) for i, o in zip(sizes[:-1], sizes[1:])))


_LSTM_T, _LSTM_F, _LSTM_H = 28, 28, 128
_ATT_T, _ATT_D, _ATT_HEADS, _ATT_MLP = 64, 128, 4, 512

WORKLOADS = {
    "mlp": Workload(
        batch=128, input_shape=(784,),
        model=dict(name="mlp", hidden_sizes=(512, 512), activation="sigmoid"),
        expected_params=_dense(784, 512) + _dense(512, 512) + _dense(512, 10),
        forward_macs=784 * 512 + 512 * 512 + 512 * 10),
    # The peers pad 28x28 inside conv1 (padding 2); LeNet-5 takes the padded 32x32 image, as in
    # the paper. C5 is a 5x5 conv on a 5x5 map: the peers' 400 -> 120 dense layer.
    "lenet5": Workload(
        batch=128, input_shape=(32, 32, 1),
        model=dict(name="lenet5", variant="classic", conv_impl="auto"),
        expected_params=(_conv(1, 6, 5) + _conv(6, 16, 5) + _dense(400, 120) + _dense(120, 84)
                         + _dense(84, 10)),
        forward_macs=(28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84
                      + 84 * 10)),
    "lstm": Workload(
        batch=128, input_shape=(_LSTM_T, _LSTM_F),
        model=dict(name="lstm_classifier", hidden_size=_LSTM_H, num_layers=1,
                   bidirectional=False, readout="last", dropout=0.0),
        expected_params=(4 * _LSTM_H * (_LSTM_F + _LSTM_H) + 4 * _LSTM_H
                         + _dense(_LSTM_H, 10)),
        forward_macs=_LSTM_T * (_LSTM_F + _LSTM_H) * 4 * _LSTM_H + _LSTM_H * 10),
    "attention": Workload(
        batch=64, input_shape=(_ATT_T, _ATT_D),
        model=dict(name="transformer_classifier", d_model=_ATT_D, num_heads=_ATT_HEADS,
                   num_layers=1, mlp_dim=_ATT_MLP, activation="relu",
                   pos_embedding="sinusoidal", dropout=0.0, patch_size=1,
                   input_projection=False),
        expected_params=((4 * _ATT_D * _ATT_D + 4 * _ATT_D) + 2 * (2 * _ATT_D)
                         + _dense(_ATT_D, _ATT_MLP) + _dense(_ATT_MLP, _ATT_D)
                         + _dense(_ATT_D, 10)),
        forward_macs=(_ATT_T * _ATT_D * 3 * _ATT_D + 2 * _ATT_T * _ATT_T * _ATT_D
                      + _ATT_T * _ATT_D * _ATT_D + 2 * _ATT_T * _ATT_D * _ATT_MLP + _ATT_D * 10),
        note="transformer_classifier ends with a layer norm (+256 params), as pre-LN "
             "transformers do"),
    "alexnet": Workload(
        batch=128, input_shape=(32, 32, 3),
        model=dict(name="alexnet", conv_channels=_ALEX_CHANNELS, kernel_sizes=(3,) * 5,
                   groups=(1,) * 5, conv1_stride=1, conv1_padding="SAME", width=1.0,
                   fc_sizes=_ALEX_FC, lrn=False, dropout=0.5, pool_window=2, pool_stride=2,
                   conv_impl="auto"),
        expected_params=_alexnet_params(),
        forward_macs=alexnet_forward_macs()),
}
ALIASES = {"alexnet-small": "alexnet", "alexnet_small": "alexnet", "attn": "attention"}


def gflops_per_step(name: str) -> float:
  """Model FLOPs of one training step: 3 x forward (backward ~ 2 x forward), in GFLOP."""
  w = WORKLOADS[name]
  return 3 * 2 * w.forward_macs * w.batch / 1e9


def resolve(names: str | list[str]) -> list[str]:
  """Workload names from a comma-separated string or a list; ConfigError on an unknown one."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  out = [ALIASES.get(n, n) for n in names]
  for n in out:
    errors.check_choice("workloads", n, sorted(WORKLOADS))
  return out


# ---------------------------------------------------------------------------- measurement


def matmul_peak_gflops(sizes=(1024, 2048), reps: int = 5) -> float:
  """Best median float32 GFLOP/s of jnp.dot on n x n matrices, measured here and now."""
  best = 0.0
  dot = jax.jit(jnp.dot)
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot(a, b).block_until_ready()
    times = []
    for _ in range(reps):
      t = time.perf_counter()
      dot(a, b).block_until_ready()
      times.append(time.perf_counter() - t)
    best = max(best, 2 * n ** 3 / statistics.median(times) / 1e9)
  return best


def _cpu_sample() -> tuple[float, float, float]:
  """(wall s, busy CPU s of the whole machine, CPU s of this process)."""
  busy = 0.0
  try:
    with open("/proc/stat") as f:
      v = [int(x) for x in f.readline().split()[1:8]]
    busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    pass
  t = os.times()
  return time.perf_counter(), busy, t.user + t.system


def _foreign_load(a, b) -> float:
  """Share of the machine's CPUs used by other processes between two samples (0 if unknown)."""
  wall = max(b[0] - a[0], 1e-9)
  return min(1.0, max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / ((os.cpu_count() or 1) * wall))


def summary(values: list[float]) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def host_rss_peak_mb() -> float:
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_memory_stats() -> dict | None:
  """bytes_in_use / peak_bytes_in_use of the first device, where the backend reports them."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  return {k: stats[k] for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


# ---------------------------------------------------------------------------- the step


def model_config(name: str, w: Workload | None = None) -> ml_collections.ConfigDict:
  """The workload's model group; fields it does not name take the family's defaults."""
  return models.resolve(ml_collections.ConfigDict((w or WORKLOADS[name]).model))


def scaled(name: str, batch: int | None = None, **model_overrides) -> Workload:
  """WORKLOADS[name] with another batch size or model fields (e.g. hidden_sizes): the cells
  of a scaling study. Its FLOPs and params are the original's; use it for steps/s only."""
  w = WORKLOADS[name]
  unknown = sorted(set(model_overrides) - set(w.model))
  if unknown:
    raise errors.ConfigError(f"workload {name!r} has no model field {unknown[0]!r}; its fields "
                             f"are: {', '.join(sorted(w.model))}")
  return dataclasses.replace(w, batch=batch or w.batch, model={**w.model, **model_overrides})


def steps_per_call(name: str) -> int:
  """The steps per dispatch the launch scripts use: 2 for alexnet (about 1 step/s here, so a
  window still holds several calls), 20 otherwise."""
  return 2 if name == "alexnet" else 20


def make_step(name: str, grad: str = "autodiff", seed: int = 0, num_batches: int = 4,
              norms: bool = True, w: Workload | None = None, compute_dtype: str = "float32"):
  """The project's train chunk, initial state and on-device synthetic data for a workload.

  Returns (chunk, state, x_all, y_all, n_params), or None when grad="manual" and the model
  has no hand-written backward pass. chunk(state, x_all, y_all, idx_SxB) runs S steps.
  """
  errors.check_choice("grad", grad, GRADS)
  w = w or WORKLOADS[name]
  m = num_batches * w.batch
  model = models.build(model_config(name, w), w.input_shape, NUM_CLASSES,
                       compute_dtype=compute_dtype)
  loss_fn = losses.make_loss_fn(model, "softmax", 0.0, m, NUM_CLASSES)
  if grad == "manual" and w.model["name"] not in gradients.manual_models():
    return None
  config = ml_collections.ConfigDict({"grad": grad, "model": w.model,
                                      "loss": config_lib.loss("softmax")})
  value_and_grad = gradients.make_value_and_grad(config, loss_fn, NUM_CLASSES, m, w.input_shape)
  opt_cfg = config_lib.optimizer(name="momentum", learning_rate=LEARNING_RATE,
                                 momentum=MOMENTUM)
  optimizer = optim.make_optimizer(opt_cfg, total_steps=1)
  chunk = kernel.make_train_chunk(loss_fn, optimizer, value_and_grad=value_and_grad, norms=norms)

  state = kernel.init_state(model, optimizer, jax.random.key(seed))
  rng = np.random.default_rng(seed)  # Synthetic data only; params come from the JAX key.
  x_all = jax.device_put(rng.standard_normal((m, *w.input_shape), dtype=np.float32))
  y_all = jax.device_put(rng.integers(0, NUM_CLASSES, size=(m,), dtype=np.int32))
  n_params = sum(int(x.size) for x in jax.tree.leaves(state["params"]))
  return chunk, state, x_all, y_all, n_params


def _time_mode(chunk, state, x_all, y_all, batch: int, steps_per_dispatch: int,
               seconds: float, windows: int, start_step: int):
  """Times chunk with `steps_per_dispatch` steps per call; returns (state, step, result)."""
  n = x_all.shape[0]
  k = steps_per_dispatch
  step = start_step
  data_s = 0.0

  def dispatch(state, step):
    nonlocal data_s
    t = time.perf_counter()
    idx = data_lib.batch_indices(0, n, batch, step, k)
    data_s += time.perf_counter() - t
    state, sums = chunk(state, x_all, y_all, idx)
    return state, step + k, sums

  t = time.perf_counter()
  state, step, sums = dispatch(state, step)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t
  loss_first = float(sums["loss_sum"]) / k

  # Calibrate: dispatches per window so that all windows take about `seconds`.
  t = time.perf_counter()
  state, step, _ = dispatch(state, step)
  jax.block_until_ready(state)
  per_dispatch = max(time.perf_counter() - t, 1e-6)
  per_window = max(1, int(seconds / windows / per_dispatch))

  data_s, rates, loads = 0.0, [], []
  for _ in range(windows):
    a = _cpu_sample()
    for _ in range(per_window):
      state, step, sums = dispatch(state, step)
    jax.block_until_ready(state)
    b = _cpu_sample()
    rates.append(per_window * k / (b[0] - a[0]))
    loads.append(_foreign_load(a, b))
  if int(sums["first_bad_step"]) >= 0:
    raise errors.NonFiniteLossError(f"loss became NaN/inf at step {int(sums['first_bad_step'])}")
  timed_steps = windows * per_window * k
  return state, step, {
      "steps_per_dispatch": k, "compile_s": compile_s, "steps_per_window": per_window * k,
      "steps_per_sec": summary(rates), "foreign_load_median": statistics.median(loads),
      "foreign_load_max": max(loads), "data_s_per_step": data_s / timed_steps,
      "loss_first": loss_first, "loss_last": float(sums["loss_sum"]) / k}


def run_workload(name: str, grad: str = "autodiff", seconds: float = 10.0, windows: int = 5,
                 steps_per_dispatch: int = 20, peak_gflops: float | None = None) -> dict | None:
  """Benchmarks one workload; returns its JSON record (None: no manual backward for it).

  `seconds` is the timed budget of each dispatch mode (1 step per call, then up to
  `steps_per_dispatch` steps per call), split over `windows` windows.
  """
  [name] = resolve([name])
  if seconds <= 0 or windows <= 0 or steps_per_dispatch <= 0:
    raise errors.ConfigError(
        f"seconds={seconds}, windows={windows}, steps_per_dispatch={steps_per_dispatch} must "
        "all be positive")
  built = make_step(name, grad)
  if built is None:
    return None
  chunk, state, x_all, y_all, n_params = built
  w = WORKLOADS[name]
  state, step, single = _time_mode(chunk, state, x_all, y_all, w.batch, 1, seconds, windows, 0)
  # K steps per call, with K no larger than the steps of one window, so windows stay short.
  rate = single["steps_per_sec"]["median"]
  k = int(max(1, min(steps_per_dispatch, rate * seconds / windows / 2)))
  scanned = single
  if k > 1:  # A slow workload (a few steps per window) is already measured at K = 1.
    state, step, scanned = _time_mode(chunk, state, x_all, y_all, w.batch, k, seconds,
                                      windows, step)
  if peak_gflops is None:
    peak_gflops = matmul_peak_gflops()
  gflops = gflops_per_step(name)
  sps = scanned["steps_per_sec"]
  return {
      "workload": name, "grad": grad, "framework": "project", "batch": w.batch,
      "params": n_params, "expected_params": w.expected_params,
      "same_as_peers": n_params == w.expected_params, "note": w.note,
      "gflops_per_step": gflops,
      "compile_s": single["compile_s"], "compile_s_scan": scanned["compile_s"],
      "steps_per_dispatch": scanned["steps_per_dispatch"],
      "steps_per_sec": sps["median"], "steps_per_sec_min": sps["min"],
      "steps_per_sec_max": sps["max"],
      "examples_per_sec": sps["median"] * w.batch,
      "examples_per_sec_min": sps["min"] * w.batch,
      "examples_per_sec_max": sps["max"] * w.batch,
      "steps_per_sec_1": single["steps_per_sec"]["median"],
      "steps_per_sec_1_min": single["steps_per_sec"]["min"],
      "steps_per_sec_1_max": single["steps_per_sec"]["max"],
      "achieved_gflops": sps["median"] * gflops, "peak_gflops": peak_gflops,
      "mfu": sps["median"] * gflops / peak_gflops,
      "mfu_1": single["steps_per_sec"]["median"] * gflops / peak_gflops,
      "data_s_per_step": scanned["data_s_per_step"],
      "data_s_per_step_1": single["data_s_per_step"],
      "foreign_load_median": max(single["foreign_load_median"], scanned["foreign_load_median"]),
      "foreign_load_max": max(single["foreign_load_max"], scanned["foreign_load_max"]),
      "host_rss_peak_mb": host_rss_peak_mb(), "device_memory": device_memory_stats(),
      "loss_first": single["loss_first"], "loss_last": scanned["loss_last"],
      "windows": windows, "seconds": seconds,
  }


def run(workloads, grad: str = "both", seconds: float = 10.0, windows: int = 5,
        steps_per_dispatch: int = 20, log: Callable[[str], None] | None = None) -> dict:
  """Benchmarks each workload in turn (grad "both": autodiff, then manual, back to back);
  returns {"meta": ..., "results": [records]}."""
  names = resolve(workloads)
  errors.check_choice("grad", grad, GRAD_CHOICES)
  grads = GRADS if grad == "both" else (grad,)
  log = log or functools.partial(print, flush=True)
  started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  peak_start = matmul_peak_gflops()
  log(f"float32 matmul peak (jnp.dot): {peak_start:.1f} GFLOP/s; device {jax.devices()[0]}")
  results = []
  for name in names:
    pair = {}
    for g in grads:
      record = run_workload(name, g, seconds, windows, steps_per_dispatch, peak_start)
      if record is None:
        log(f"{name:9s} grad={g}: no hand-written backward pass for this model; skipped")
        continue
      results.append(record)
      pair[g] = record["steps_per_sec"]
      log(format_record(record))
    if len(pair) == 2:
      log(f"{name:9s} manual / autodiff: {pair['manual'] / pair['autodiff']:.2f}x")
  peak_end = matmul_peak_gflops()
  peak = max(peak_start, peak_end)
  for r in results:  # MFU against the best peak of the run, as the peer benchmark does.
    r["peak_gflops"] = peak
    r["mfu"] = r["achieved_gflops"] / peak
    r["mfu_1"] = r["steps_per_sec_1"] * r["gflops_per_step"] / peak
  meta = {"started": started, "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
          "jax": jax.__version__,
          "device": str(jax.devices()[0]), "ncpu": os.cpu_count(),
          "peak_gflops": peak, "peak_gflops_start": peak_start, "peak_gflops_end": peak_end,
          "loadavg": os.getloadavg(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "grad": grad, "seconds": seconds, "windows": windows}
  return {"meta": meta, "results": results}


# ----------------------------------------------------------------- the interleaved protocol
#
# On a shared machine the same command moves by up to 2x within minutes, so a ratio is only
# trusted when both sides ran in one process, in alternating short windows: here, round after
# round, one window of each variant in a rotated order. Each round gives one ratio per pair
# (e.g. project / reference); the report is their median with the min-max over rounds, and the
# share of the CPUs other processes used during the windows.

VARIANTS = ("project", "reference", "manual", "project_no_norms", "project_bf16")


def make_reference_step(name: str, seed: int = 0, num_batches: int = 4,
                        w: Workload | None = None):
  """The same model in a minimal plain-JAX step: jax.jit of value_and_grad of optax's softmax
  cross-entropy, optax.sgd with momentum, donated buffers, one step per call over
  `num_batches` on-device batches (as the peer harness's plain-JAX column). None of the
  project's machinery: no lax.scan chunk, no index gather, no norms, no penalty terms."""
  import optax  # pylint: disable=g-import-not-at-top
  w = w or WORKLOADS[name]
  model = models.build(model_config(name, w), w.input_shape, NUM_CLASSES)
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)

  def loss_fn(params, x, y, key):
    logits = model.apply(params, x, train=True, rng=key)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, x, y, key, i):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, jax.random.fold_in(key, i))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  init_key, key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key)
  rng = np.random.default_rng(seed)
  xs = [jax.device_put(rng.standard_normal((w.batch, *w.input_shape), dtype=np.float32))
        for _ in range(num_batches)]
  ys = [jax.device_put(rng.integers(0, NUM_CLASSES, size=(w.batch,), dtype=np.int32))
        for _ in range(num_batches)]
  state = {"params": params, "opt_state": tx.init(params), "i": 0, "loss": None}

  def run(n: int):
    for _ in range(n):
      i = state["i"]
      state["params"], state["opt_state"], state["loss"] = step(
          state["params"], state["opt_state"], xs[i % num_batches], ys[i % num_batches], key,
          np.int32(i))
      state["i"] = i + 1

  return run, lambda: jax.block_until_ready((state["params"], state["opt_state"]))


def project_runner(name: str, grad: str, steps_per_dispatch: int, norms: bool = True,
                   w: Workload | None = None, compute_dtype: str = "float32"):
  """The project's train chunk (K steps per call) as run(n) / sync(); None without a manual
  backward pass."""
  built = make_step(name, grad, norms=norms, w=w, compute_dtype=compute_dtype)
  if built is None:
    return None
  chunk, state0, x_all, y_all, _ = built
  run, sync, _ = chunk_runner(chunk, state0, x_all, y_all, (w or WORKLOADS[name]).batch,
                              steps_per_dispatch)
  return run, sync


def chunk_runner(chunk, state0, x_all, y_all, batch: int, k: int):
  """(run(n), sync(), last_sums()) driving chunk (jitted or compiled) K steps per call over
  x_all's batches from state0, which the chunk donates."""
  n = x_all.shape[0]
  state = {"state": state0, "step": 0, "sums": None}

  def run(steps: int):
    for _ in range(max(1, steps // k)):
      idx = data_lib.batch_indices(0, n, batch, state["step"], k)
      state["state"], state["sums"] = chunk(state["state"], x_all, y_all, idx)
      state["step"] += k

  return run, lambda: jax.block_until_ready(state["state"]), lambda: state["sums"]


def window_steps(runners: dict, window_seconds: float, k: int) -> tuple[dict, dict]:
  """Calls each runner's run(k) twice: ({key: steps of a window of about window_seconds, a
  multiple of k, sized by the second call}, {key: the first call's seconds, compilation
  included}). runners: {key: (run(n), sync())}."""
  if window_seconds <= 0 or k <= 0:
    raise errors.ConfigError(f"window_seconds={window_seconds} and steps per call {k} must be "
                             "positive")
  steps, first_s = {}, {}
  for key, (run, sync) in runners.items():
    t = time.perf_counter()
    run(k)
    sync()
    first_s[key] = time.perf_counter() - t
    t = time.perf_counter()
    run(k)
    sync()
    per_step = max((time.perf_counter() - t) / k, 1e-6)
    steps[key] = max(k, int(window_seconds / per_step) // k * k)
  return steps, first_s


def alternate(runners: dict, steps: dict, rounds: int,
              each_round: Callable[[], None] | None = None) -> tuple[dict, dict]:
  """`rounds` rounds of one window of steps[key] steps per runner, the order rotated every
  round: ({key: steps/s per round}, {key: the other processes' CPU share per window}).
  each_round runs before a round's windows (e.g. a matmul peak sample)."""
  if rounds <= 0:
    raise errors.ConfigError(f"rounds={rounds} must be positive")
  rates = {key: [] for key in runners}
  loads = {key: [] for key in runners}
  order = list(runners)
  for r in range(rounds):
    if each_round is not None:
      each_round()
    for key in order[r % len(order):] + order[:r % len(order)]:
      run, sync = runners[key]
      a = _cpu_sample()
      run(steps[key])
      sync()
      b = _cpu_sample()
      rates[key].append(steps[key] / (b[0] - a[0]))
      loads[key].append(_foreign_load(a, b))
  return rates, loads


def interleaved(workloads, variants=("project", "reference", "manual"), rounds: int = 5,
                window_seconds: float = 2.0, steps_per_dispatch: int = 20,
                log: Callable[[str], None] | None = None) -> dict:
  """Runs `variants` of each workload in alternating windows (see the protocol above).

  Returns {"meta", "results": [one record per (workload, variant)], "ratios": [per workload
  and pair: median, min, max over rounds]}. MFU is against the best float32 matmul rate
  measured in the sitting (a window of it every round) and never exceeds 100%: where a
  workload's model FLOPs outrun the measured peak, the peak is raised to them (and flagged).
  """
  names = resolve(workloads)
  for v in variants:
    errors.check_choice("variants", v, VARIANTS)
  if rounds <= 0 or window_seconds <= 0 or steps_per_dispatch <= 0:
    raise errors.ConfigError(f"rounds={rounds}, window_seconds={window_seconds}, "
                             f"steps_per_dispatch={steps_per_dispatch} must all be positive")
  log = log or functools.partial(print, flush=True)
  started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  results, ratios, peaks = [], [], []
  for name in names:
    w = WORKLOADS[name]
    runners = {}
    for v in variants:
      if v == "reference":
        runners[v] = make_reference_step(name)
      else:
        grad = "manual" if v == "manual" else "autodiff"
        built = project_runner(name, grad, steps_per_dispatch, norms=v != "project_no_norms",
                               compute_dtype="bfloat16" if v == "project_bf16" else "float32")
        if built is not None:
          runners[v] = built
    steps, compile_s = window_steps(runners, window_seconds, steps_per_dispatch)
    rates, loads = alternate(
        runners, steps, rounds,
        each_round=lambda: peaks.append(matmul_peak_gflops(sizes=(1024,), reps=3)))
    for v in runners:
      stats = summary(rates[v])
      results.append({"workload": name, "variant": v,
                      "grad": {"manual": "manual", "reference": "reference"}.get(v, "autodiff"),
                      "norms": v != "project_no_norms", "batch": w.batch,
                      "steps_per_sec": stats["median"], "steps_per_sec_min": stats["min"],
                      "steps_per_sec_max": stats["max"],
                      "examples_per_sec": stats["median"] * w.batch,
                      "steps_per_window": steps[v], "compile_s": compile_s[v],
                      "rates": rates[v], "foreign_load_median": statistics.median(loads[v]),
                      "foreign_load_max": max(loads[v]),
                      "gflops_per_step": gflops_per_step(name)})
    for a, b in (("project", "reference"), ("manual", "project"),
                 ("project", "project_no_norms"), ("project_bf16", "project")):
      if a in rates and b in rates:
        per_round = [x / y for x, y in zip(rates[a], rates[b])]
        ratios.append({"workload": name, "pair": f"{a} / {b}", **summary(per_round),
                       "per_round": per_round})
    for r in results[-len(runners):]:
      log(f"{name:9s} {r['variant']:16s} {r['steps_per_sec']:9.2f} steps/s "
          f"[{r['steps_per_sec_min']:.2f}-{r['steps_per_sec_max']:.2f}] "
          f"foreign load {r['foreign_load_median']:.0%}")
    for q in ratios:
      if q["workload"] == name:
        log(f"{name:9s} {q['pair']:28s} {q['median']:.3f}x [{q['min']:.3f}-{q['max']:.3f}]")
  peak = max(peaks)
  for r in results:
    achieved = r["steps_per_sec"] * r["gflops_per_step"]
    r["achieved_gflops"] = achieved
    r["peak_exceeded"] = achieved > peak
    r["mfu"] = achieved / max(peak, achieved)
  meta = {"mode": "interleaved", "started": started,
          "ended": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "jax": jax.__version__,
          "device": str(jax.devices()[0]), "ncpu": os.cpu_count(), "peak_gflops": peak,
          "peaks": peaks, "loadavg": os.getloadavg(), "rounds": rounds,
          "window_seconds": window_seconds, "steps_per_dispatch": steps_per_dispatch,
          "variants": list(variants), "xla_flags": os.environ.get("XLA_FLAGS", "")}
  return {"meta": meta, "results": results, "ratios": ratios}


def format_record(r: dict) -> str:
  mem = r["device_memory"]
  dev = f" device peak {mem['peak_bytes_in_use'] / 2**20:.0f} MiB" if mem and (
      "peak_bytes_in_use" in mem) else ""
  return (f"{r['workload']:9s} {r['grad']:8s} params={r['params']:>8d}"
          f"{'' if r['same_as_peers'] else ' (peers ' + str(r['expected_params']) + ')'}"
          f" compile={r['compile_s']:.2f}s/{r['compile_s_scan']:.2f}s"
          f" | 1/dispatch {r['steps_per_sec_1']:8.2f} steps/s"
          f" | {r['steps_per_dispatch']}/dispatch {r['steps_per_sec']:8.2f} steps/s"
          f" [{r['steps_per_sec_min']:.2f}-{r['steps_per_sec_max']:.2f}]"
          f" {r['examples_per_sec']:9.0f} ex/s | {r['gflops_per_step']:.3f} GFLOP/step"
          f" MFU {r['mfu']:.1%} | data {r['data_s_per_step'] * 1e6:.0f} us/step"
          f" | RSS {r['host_rss_peak_mb']:.0f} MiB{dev}"
          f" | foreign load {r['foreign_load_median']:.0%}")


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from research import cli  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (pass --help for the flags)")
  cli.quiet_library_logs()
  f = flags.FLAGS
  if f.mode == "interleaved":
    out = interleaved(f.workloads, [v.strip() for v in f.variants.split(",") if v.strip()],
                      f.rounds, f.window_seconds, f.steps_per_dispatch)
  else:
    out = run(f.workloads, f.grad, f.seconds, f.windows, f.steps_per_dispatch)
  if f.json:
    with open(f.json, "w") as fh:
      json.dump(out, fh, indent=1)
    print(f"wrote {f.json}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workloads", ",".join(WORKLOADS), "Comma-separated workloads.")
  flags.DEFINE_enum("grad", "both", GRAD_CHOICES, "autodiff: jax.value_and_grad; manual: the "
                    "hand-written backward pass (models that have one); both: each in turn.")
  flags.DEFINE_float("seconds", 10.0, "Timed seconds per workload and dispatch mode.")
  flags.DEFINE_integer("windows", 5, "Timed windows per workload and dispatch mode.")
  flags.DEFINE_integer("steps_per_dispatch", 20, "Steps per jitted call in the scanned mode.")
  flags.DEFINE_string("json", None, "Write {meta, results} here.")
  flags.DEFINE_enum("mode", "interleaved", ("interleaved", "sequential"),
                    "interleaved: the variants alternate in short windows, round after round, "
                    "and each round gives one ratio (drift-proof); sequential: each workload "
                    "and dispatch mode timed in turn (absolute figures, compile times, MFU).")
  flags.DEFINE_string("variants", "project,reference,manual",
                      "Interleaved mode: " + ", ".join(VARIANTS) + ".")
  flags.DEFINE_integer("rounds", 5, "Interleaved mode: rounds of one window per variant.")
  flags.DEFINE_float("window_seconds", 2.0, "Interleaved mode: seconds per window.")
  from research import cli  # pylint: disable=g-import-not-at-top
  sys.exit(app.run(cli.guarded(main), flags_parser=cli.parse_flags))
