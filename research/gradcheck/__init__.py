"""Hand-written gradients vs jax.grad vs finite differences, one row per parameter array.

The library; `python -m research.gradcheck` is its command line (command.py). For a
registered problem it builds params, a batch and the training loss E, then compares the
manual gradient (research/backprop/) with jax.grad(E), per parameter array, in float64 (x64
enabled only inside the check) and float32: max|manual - autodiff|, ||manual - autodiff|| /
||autodiff||, and a float64 central difference of E along random unit directions that move one
array at a time against the manual directional derivative <manual, v>. A row is ok within
TOLERANCES. check_model, time_model and run serve notebooks and tests.
"""
import contextlib
import functools
import statistics
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research import backprop
from research import errors
from research.backprop import mlp as backprop_mlp
from research.backprop.core import Problem  # noqa: F401  Re-exported for problem authors.


# rel: manual vs autodiff. fd: manual vs float64 central differences, whose own error
# (truncation ~eps^4, rounding ~1e-16 |E| / eps) is 1e-11..1e-8 relative to <g, v>; in float32
# the manual gradient's own rounding (~1e-7 ||g||) sets the fd error.
TOLERANCES = {"float64": {"rel": 1e-10, "fd": 1e-6}, "float32": {"rel": 1e-4, "fd": 1e-3}}
# A leaf whose autodiff gradient is below ZERO_GRAD_ULPS x eps(dtype) x the whole gradient's
# norm is identically 0 (attention's key bias b_k shifts a softmax row by a constant): manual,
# autodiff and fd all hold rounding noise there (measured: ~0.1 eps x the norm), so its errors
# are measured against the whole gradient's norm. A fixed threshold cannot serve both dtypes:
# 1e-8 is 4e7 float64 rounding units but a tenth of one float32 unit.
ZERO_GRAD_ULPS = 100
NUM_DIRECTIONS = 2


class Row(NamedTuple):
  model: str
  dtype: str
  path: str              # the array's place in the params pytree, e.g. "[0]['w']"
  shape: tuple
  max_abs_err: float     # max |manual - autodiff|
  rel_err: float         # ||manual - autodiff|| / ||autodiff||
  fd_rel_err: float      # worst |fd - <manual, v>| / (|fd| + |<manual, v>|) over directions
  ok: bool



def names() -> list[str]:
  """The registered gradient checks (research.backprop's register_problem)."""
  return backprop.problem_names()


def build(name: str, *, seed: int = 0, batch: int = 32, dtype: str = "float32") -> Problem:
  """The named problem, its params and inputs in `dtype`.

  Cached, so that repeated checks reuse the same functions and hit JAX's compilation cache.
  Float64 arrays are made with x64 enabled; call the problem's functions inside
  `jax.enable_x64(True)` too, or they compute in float32.
  """
  backprop.problem_builder(name)  # ConfigError naming the choices for an unknown name
  if not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0:
    raise errors.ConfigError(f"--batch={batch!r} must be a positive integer")
  dtype = str(jnp.dtype(dtype))
  with jax.enable_x64(dtype == "float64"):
    return _build(name, seed, batch, dtype)


@functools.lru_cache(maxsize=32)
def _build(name, seed, batch, dtype):
  return backprop.problem_builder(name)(jax.random.key(seed), batch, jnp.dtype(dtype))


@functools.lru_cache(maxsize=32)
def _autodiff(loss_fn: Callable) -> Callable:
  return jax.grad(loss_fn)


def compare(problem: Problem, *, model: str, dtype: str, key: jax.Array,
            grad_fn: Callable | None = None) -> list[Row]:
  """Rows for one problem whose arrays are already in `dtype`.

  Everything on the device is jitted (eager ops would each compile); the error arithmetic
  is numpy in float64.
  """
  tol = TOLERANCES[dtype]
  manual = jax.jit(grad_fn or problem.grad_fn)(problem.params, *problem.args)
  autodiff = jax.jit(_autodiff(problem.loss_fn))(problem.params, *problem.args)
  if jax.tree.structure(manual) != jax.tree.structure(autodiff):
    raise ValueError(f"{model}: the manual gradient's pytree {jax.tree.structure(manual)} is "
                     f"not the params' {jax.tree.structure(autodiff)}")
  paths = [jax.tree_util.keystr(path)
           for path, _ in jax.tree_util.tree_flatten_with_path(problem.params)[0]]
  manual = [np.asarray(g, np.float64) for g in jax.tree.leaves(manual)]
  autodiff = [np.asarray(g, np.float64) for g in jax.tree.leaves(autodiff)]
  norm_all = float(np.sqrt(sum(np.sum(g ** 2) for g in autodiff)))
  zero = ZERO_GRAD_ULPS * float(jnp.finfo(dtype).eps) * norm_all
  scales = [norm_all if np.linalg.norm(g) <= zero else None for g in autodiff]
  fd_errs = _fd_errors(problem, manual, key, scales)
  rows = []
  for path, g_m, g_a, fd_err, scale in zip(paths, manual, autodiff, fd_errs, scales):
    norm_a, norm_d = np.linalg.norm(g_a), np.linalg.norm(g_m - g_a)
    norm_a = norm_a if scale is None else scale
    rel = float(norm_d / norm_a if norm_a > 0 else norm_d)
    ok = bool(rel <= tol["rel"] and fd_err <= tol["fd"])  # False for NaN.
    rows.append(Row(model, dtype, path, tuple(g_a.shape), float(np.abs(g_m - g_a).max()),
                    rel, fd_err, ok))
  return rows


def _fd_errors(problem: Problem, manual: list[np.ndarray], key: jax.Array,
               scales: Sequence[float | None]) -> list[float]:
  """Per params leaf: the worst |fd - <manual, v>| / (|fd| + |<manual, v>|) over directions
  (/ scales[i] instead where that is not None: a leaf whose gradient is 0), each direction's
  error the smallest over the steps eps in problem.fd_eps.

  fd = [E(p - 2 eps v) - 8 E(p - eps v) + 8 E(p + eps v) - E(p + 2 eps v)] / 12 eps, the
  central difference with O(eps^4) truncation error, is evaluated in float64 at the point
  whatever the problem's dtype: in float32 the rounding of E (~1e-7 |E|) / eps swamps the
  directional derivative of arrays with small gradients, so a float32 difference quotient
  cannot tell a right gradient from a wrong one there. On a backend without float64 (TPU)
  they run on the host's CPU backend.
  """
  to64 = lambda a: a.astype(np.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a
  where = contextlib.nullcontext() if has_float64() else jax.default_device(
      jax.devices("cpu")[0])
  with jax.enable_x64(True), where:
    leaves, treedef = jax.tree.flatten(jax.tree.map(to64, jax.device_get(problem.params)))
    args = jax.tree.map(to64, jax.device_get(problem.args))
    directions = jax.device_get(_unit_directions(key, leaves))
    loss = jax.jit(problem.loss_fn)
    errs = []
    for i, g_m in enumerate(manual):
      err = 0.0
      for v in directions[i]:
        def at(step):
          moved = leaves[:i] + [leaves[i] + step * v] + leaves[i + 1:]
          return jax.tree.unflatten(treedef, moved)
        dot = float(np.vdot(g_m, v))
        best = float("inf")
        for eps in problem.fd_eps:
          E = {k: float(loss(at(k * eps), *args)) for k in (-2, -1, 1, 2)}
          fd = (E[-2] - 8 * E[-1] + 8 * E[1] - E[2]) / (12 * eps)
          denom = abs(fd) + abs(dot) if scales[i] is None else scales[i]
          e = abs(fd - dot) / denom if denom > 0 else 0.0
          best = min(best, e if np.isfinite(e) else float("inf"))  # min() would drop a NaN.
        err = max(err, best)
      errs.append(err)
  return errs


@jax.jit
def _unit_directions(key, params):
  """NUM_DIRECTIONS random unit vectors per params leaf: leaf_i -> (NUM_DIRECTIONS, *shape)."""
  shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct((NUM_DIRECTIONS, *p.shape), p.dtype),
                        jax.tree.leaves(params))
  dtype = jax.tree.leaves(params)[0].dtype
  return [v / jnp.linalg.norm(v.reshape(NUM_DIRECTIONS, -1), axis=1).reshape(
      (NUM_DIRECTIONS,) + (1,) * (v.ndim - 1))
          for v in backprop.core.random_like(key, shapes, dtype)]


# Manual and autodiff are compared at full float32 matmul precision: on TPUs (and GPUs with
# TF32) the default runs float32 matmuls in bfloat16 passes, whose rounding (1e-3) would fail
# the float32 tolerance for reasons that have nothing to do with backprop.
PRECISION = "highest"


def has_float64() -> bool:
  """Whether the default backend computes in float64 (TPUs do not)."""
  return _has_float64(jax.default_backend())


@functools.cache
def _has_float64(backend: str) -> bool:
  """Asked once per backend: the probe compiles a program."""
  if backend == "tpu":
    return False
  try:
    with jax.enable_x64(True):
      return jax.jit(lambda x: x + 1)(np.float64(1.0)).dtype == np.float64
  except Exception:  # noqa: BLE001  A backend without float64 may raise anything here.
    return False


def describe_backend() -> str:
  """One line for the tables: backend, device kind and the matmul precision of the check."""
  return (f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"matmul precision {PRECISION}")


def check_model(name: str, dtype: str = "float64", *, seed: int = 0, batch: int = 32,
                grad_fn: Callable | None = None) -> list[Row]:
  """Checks the named model's manual gradient in `dtype` (float64 | float32), at full
  float32 matmul precision.

  grad_fn replaces the registered manual gradient (e.g. to show that a wrong one fails).
  """
  if dtype not in TOLERANCES:
    raise errors.ConfigError(f"dtype={dtype!r}: choose one of {sorted(TOLERANCES)}")
  if dtype == "float64" and not has_float64():
    raise errors.ConfigError(f"the {jax.default_backend()} backend has no float64; check "
                             "dtype='float32' (or run the float64 check on a CPU)")
  with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision(PRECISION):
    problem = build(name, seed=seed, batch=batch, dtype=dtype)
    return compare(problem, model=name, dtype=dtype, key=jax.random.key(seed + 1),
                   grad_fn=grad_fn)


def time_model(name: str, *, seed: int = 0, batch: int = 32, dtype: str = "float32",
               repeats: int = 20) -> dict[str, float]:
  """Median wall time in ms of the jitted manual and jax.grad gradients (after compiling)."""
  with jax.enable_x64(dtype == "float64"):
    problem = build(name, seed=seed, batch=batch, dtype=dtype)
    result = {}
    for label, fn in (("manual_ms", problem.grad_fn),
                      ("autodiff_ms", _autodiff(problem.loss_fn))):
      fn = jax.jit(fn)
      jax.block_until_ready(fn(problem.params, *problem.args))  # compile
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(problem.params, *problem.args))
        times.append(time.perf_counter() - start)
      result[label] = 1e3 * statistics.median(times)
  return result


def format_rows(rows: Sequence[Row]) -> str:
  """A markdown table of check rows."""
  lines = ["| model | dtype | param | shape | max abs err | rel err | fd rel err | ok |",
           "|---|---|---|---|---:|---:|---:|---|"]
  for r in rows:
    lines.append(f"| {r.model} | {r.dtype} | `{r.path}` | {r.shape} | {r.max_abs_err:.2e} | "
                 f"{r.rel_err:.2e} | {r.fd_rel_err:.2e} | {'ok' if r.ok else 'FAIL'} |")
  return "\n".join(lines)


def format_timing(timings: dict[str, dict[str, float]], batch: int) -> str:
  lines = ["| model | B | manual (ms) | jax.grad (ms) | manual / jax.grad |",
           "|---|---:|---:|---:|---:|"]
  for name, t in timings.items():
    lines.append(f"| {name} | {batch} | {t['manual_ms']:.3f} | {t['autodiff_ms']:.3f} | "
                 f"{t['manual_ms'] / t['autodiff_ms']:.2f} |")
  return "\n".join(lines)


def format_saturation(rows: Sequence[dict]) -> str:
  """A markdown table of backprop.mlp.saturation_study rows: one line per scale."""
  dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
  forms = list(dict.fromkeys(r["form"] for r in rows))
  cells = {(r["scale"], r["dtype"], r["form"]): r for r in rows}
  header = "| max abs sum^L | " + " | ".join(f"{d} {f}" for d in dtypes for f in forms) + " |"
  lines = [header, "|---:|" + "---:|" * (len(dtypes) * len(forms))]
  for scale in dict.fromkeys(r["scale"] for r in rows):
    out = []
    for d in dtypes:
      for f in forms:
        r = cells[(scale, d, f)]
        out.append(f"{r['nonfinite']} inf/NaN" if r["nonfinite"] else f"{r['max_rel_err']:.1e}")
    lines.append(f"| {scale} | " + " | ".join(out) + " |")
  return "\n".join(lines)


def run(model_names: Sequence[str], *, seed: int = 0, batch: int = 32,
        saturation: bool = False, dtypes: Sequence[str] = ("float64", "float32"),
        timing: bool = True, echo: Callable[[str], None] = print) -> int:
  """Checks, prints the tables via `echo`, and returns the exit code (0: all rows ok)."""
  all_rows = []
  echo(describe_backend())
  skip64 = "float64" in dtypes and not has_float64()
  if skip64:
    echo(f"float64: skipped, the {jax.default_backend()} backend has no float64 (the float32 "
         "rows still compare against float64 finite differences, computed on the CPU)")
  for name in model_names:
    problem = build(name, seed=seed, batch=batch, dtype="float32" if skip64 else "float64")
    echo(f"{name}: {problem.description}")
    eps = ", ".join(f"{e:.0e}" for e in problem.fd_eps)
    for dtype in dtypes:
      if dtype == "float64" and skip64:
        continue
      tol = TOLERANCES[dtype]
      rows = check_model(name, dtype, seed=seed, batch=batch)
      echo(f"\n{dtype}: rel err <= {tol['rel']:.0e}, fd rel err <= {tol['fd']:.0e} "
           f"(float64 central differences, eps = {eps}, {NUM_DIRECTIONS} random "
           "directions per array)\n")
      echo(format_rows(rows))
      all_rows += rows
  if timing:
    timings = {name: time_model(name, seed=seed, batch=batch) for name in model_names}
    echo(f"\njitted gradient, float32, median of 20 runs ({jax.devices()[0].platform})\n")
    echo(format_timing(timings, batch))
  if saturation:
    study = backprop_mlp.saturation_study()
    echo("\nsaturation of the output delta^L (backprop.mlp.saturation_study): "
         "max|delta^L - ref| / max|ref| against float64, or the number of inf/NaN among the "
         "256 x 10 units, for sum^L = scale * U(-1, 1)\n")
    echo(format_saturation(study))
  failed = [r for r in all_rows if not r.ok]
  if failed:
    echo(f"\nFAILED: {len(failed)} of {len(all_rows)} arrays disagree beyond tolerance")
    return 1
  echo(f"\nall {len(all_rows)} arrays agree")
  return 0
