"""Hand-written gradients vs jax.grad vs finite differences, one row per parameter array.

  python -m research.gradcheck --model=mlp [--seed=0] [--batch=32] [--saturation]

For each registered model it builds params, a batch and the training loss E, then compares
the manual gradient (research/backprop/) with jax.grad(E), per parameter array, in float64
(with x64 enabled only inside the check) and float32:

  max|manual - autodiff|, ||manual - autodiff|| / ||autodiff||, and finite differences:
  a float64 central difference of E along random unit directions v that move one array at
  a time, against the manual directional derivative <manual, v>.

It prints a table for each dtype and the jitted gradient time of both, and exits 1 when any
array disagrees beyond TOLERANCES. Expected: every row "ok", float64 relative errors near
1e-16. The computation is library code (check_model, time_model, run) for notebooks/tests.

A model joins with @register(name): fn(key, batch, dtype) -> Problem.
"""
import functools
import itertools
import math
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from absl import flags

from research import errors
from research import models
from research import train
from research.backprop import alexnet as backprop_alexnet
from research.backprop import inception as backprop_inception
from research.backprop import layers as backprop_layers
from research.backprop import lenet as backprop_lenet
from research.backprop import mlp as backprop_mlp
from research.backprop import sequence as backprop_sequence


# rel: manual vs autodiff. fd: manual vs float64 central differences, whose own error
# (truncation ~eps^4, rounding ~1e-16 |E| / eps) is 1e-11..1e-8 relative to <g, v>; in float32
# the manual gradient's own rounding (~1e-7 ||g||) sets the fd error.
TOLERANCES = {"float64": {"rel": 1e-10, "fd": 1e-6}, "float32": {"rel": 1e-4, "fd": 1e-3}}
FD_EPS = 1e-3
# A leaf whose autodiff gradient is below ZERO_GRAD x the whole gradient's norm is identically
# 0 (attention's key bias b_k shifts a softmax row by a constant): manual, autodiff and fd all
# hold rounding noise there, so its errors are measured against the whole gradient's norm.
ZERO_GRAD = 1e-8
NUM_DIRECTIONS = 2


class Problem(NamedTuple):
  """A loss and its hand-written gradient at one point."""
  params: Any            # pytree of arrays
  args: tuple            # the remaining positional arguments of loss_fn and grad_fn
  loss_fn: Callable      # (params, *args) -> E, a scalar
  grad_fn: Callable      # (params, *args) -> dE/dparams by hand, the same pytree as params
  description: str       # one line: architecture, batch, lambda, m
  # Central-difference steps; each direction's fd error is the smallest over them. A kinked
  # loss (ReLU, max pooling) needs steps small enough to straddle no kink, and more than one:
  # the smallest lose digits to rounding where <g, v> is small.
  fd_eps: tuple[float, ...] = (FD_EPS,)


class Row(NamedTuple):
  model: str
  dtype: str
  path: str              # the array's place in the params pytree, e.g. "[0]['w']"
  shape: tuple
  max_abs_err: float     # max |manual - autodiff|
  rel_err: float         # ||manual - autodiff|| / ||autodiff||
  fd_rel_err: float      # worst |fd - <manual, v>| / (|fd| + |<manual, v>|) over directions
  ok: bool



_PROBLEMS: dict[str, Callable] = {}


def register(name: str):
  """Decorator: makes `fn(key, batch, dtype) -> Problem` checkable as --model=name."""
  def wrap(fn):
    _PROBLEMS[name] = fn
    return fn
  return wrap


def names() -> list[str]:
  return sorted(_PROBLEMS)


def build(name: str, *, seed: int = 0, batch: int = 32, dtype: str = "float32") -> Problem:
  """The named problem, its params and inputs in `dtype`.

  Cached, so that repeated checks reuse the same functions and hit JAX's compilation cache.
  Float64 arrays are made with x64 enabled; call the problem's functions inside
  `jax.enable_x64(True)` too, or they compute in float32.
  """
  if name not in _PROBLEMS:
    raise errors.ConfigError(
        f"--model={name!r} has no gradient check; choose one of: " + ", ".join(names()))
  if not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0:
    raise errors.ConfigError(f"--batch={batch!r} must be a positive integer")
  dtype = str(jnp.dtype(dtype))
  with jax.enable_x64(dtype == "float64"):
    return _build(name, seed, batch, dtype)


@functools.lru_cache(maxsize=32)
def _build(name, seed, batch, dtype):
  return _PROBLEMS[name](jax.random.key(seed), batch, jnp.dtype(dtype))


@functools.lru_cache(maxsize=32)
def _autodiff(loss_fn: Callable) -> Callable:
  return jax.grad(loss_fn)


def random_like(key: jax.Array, tree, dtype) -> Any:
  """Standard normals shaped like `tree` (a pytree of ShapeDtypeStructs), in `dtype`.

  One draw split into leaves: each jax.random call costs its own compile time, and a
  check has no use for independent streams per leaf.
  """
  leaves, treedef = jax.tree.flatten(tree)
  sizes = [math.prod(leaf.shape) for leaf in leaves]
  z = jax.random.normal(key, (sum(sizes),), jnp.float32).astype(dtype)
  parts = jnp.split(z, list(itertools.accumulate(sizes))[:-1])
  return jax.tree.unflatten(treedef, [p.reshape(leaf.shape) for p, leaf in zip(parts, leaves)])


def classifier_problem(key: jax.Array, batch: int, dtype, model_cfg, input_shape: tuple,
                       make_value_and_grad: Callable, description: str,
                       fd_eps: tuple[float, ...] = (1e-4, 1e-5, 1e-6)) -> Problem:
  """A Problem for a registered model with a softmax output: params = init + 0.1 N(0, 1) (no
  bias exactly 0), random inputs and labels, K = 10, lambda = 1, m = 4B, and dropout masks from
  one fixed key shared by the loss and the hand-written backward pass.

  make_value_and_grad(model_cfg, input_shape, output, lam, m, k) -> the manual drop-in for
  jax.value_and_grad(train.make_loss_fn(...)). The default fd steps are small because ReLU
  and max pooling are kinked: a step must straddle no kink.
  """
  k, lam, m = 10, 1.0, 4 * batch
  model = models.build(model_cfg, input_shape, k)
  # An RBG key compiles its random bits ~10x faster than threefry on CPU; any key fixes a mask.
  key_drop = jax.random.key(int(jax.random.key_data(key)[-1]), impl="rbg")

  @jax.jit
  def make_arrays(key):
    init = jax.tree.map(lambda p: p.astype(dtype), model.init(key))
    shapes = {"params": init, "x": jax.ShapeDtypeStruct((batch, *input_shape), dtype),
              "z": jax.ShapeDtypeStruct((batch, k), dtype)}
    z = random_like(jax.random.fold_in(key, 1), shapes, dtype)
    params = jax.tree.map(lambda p, n: p + 0.1 * n, init, z["params"])
    return params, z["x"], jnp.argmax(z["z"], axis=-1)

  params, x, labels = make_arrays(key)
  loss_fn = train.make_loss_fn(model, "softmax", lam, m, k)
  value_and_grad = make_value_and_grad(model_cfg, input_shape, "softmax", lam, m, k)
  return Problem(
      params=params, args=(x, labels),
      loss_fn=lambda p, x, labels: loss_fn(p, x, labels, key_drop)[0],
      grad_fn=lambda p, x, labels: value_and_grad(p, x, labels, key_drop)[1],
      fd_eps=fd_eps,
      description=f"{description}, {input_shape} -> {k}, softmax, B={batch}, lambda={lam}, m={m}")


@register("mlp")
def _mlp_problem(key, batch, dtype) -> Problem:
  """The lecture's network and cost: sigmoid hidden and output units, lambda > 0, B < m."""
  d_in, hidden, k = 20, (32, 16), 10
  lam, m = 1.0, 4 * batch  # a mini-batch of B out of m = 4B training examples
  model_cfg = ml_collections.ConfigDict(
      {"name": "mlp", "hidden_sizes": hidden, "activation": "sigmoid"})
  model = models.build(model_cfg, (d_in,), k)

  @jax.jit
  def make_arrays(key):
    shapes = {"params": jax.eval_shape(model.init, key),
              "x": jax.ShapeDtypeStruct((batch, d_in), dtype),
              "z": jax.ShapeDtypeStruct((batch, k), dtype)}
    z = random_like(key, shapes, dtype)
    # w ~ N(0, 1/fan_in) as model.init draws them; non-zero biases, so that a bias read
    # wrongly shows up.
    params = [{"w": layer["w"] / jnp.sqrt(layer["w"].shape[0]).astype(dtype),
               "b": 0.1 * layer["b"]} for layer in z["params"]]
    return params, z["x"], jnp.argmax(z["z"], axis=-1)  # argmax: uniform random labels

  params, x_BxD, labels_B = make_arrays(key)
  loss_fn = train.make_loss_fn(model, "sigmoid", lam, m, k)
  value_and_grad = backprop_mlp.make_value_and_grad("sigmoid", "sigmoid", lam, m, k)
  return Problem(
      params=params, args=(x_BxD, labels_B),
      loss_fn=lambda p, x, labels: loss_fn(p, x, labels, None)[0],
      grad_fn=lambda p, x, labels: value_and_grad(p, x, labels, None)[1],
      description=(f"mlp {(d_in, *hidden, k)}, sigmoid hidden and output units, B={batch}, "
                   f"lambda={lam}, m={m}"))


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
  scales = [norm_all if np.linalg.norm(g) <= ZERO_GRAD * norm_all else None for g in autodiff]
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
  cannot tell a right gradient from a wrong one there.
  """
  to64 = lambda a: a.astype(np.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a
  with jax.enable_x64(True):
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
      (NUM_DIRECTIONS,) + (1,) * (v.ndim - 1)) for v in random_like(key, shapes, dtype)]


def check_model(name: str, dtype: str = "float64", *, seed: int = 0, batch: int = 32,
                grad_fn: Callable | None = None) -> list[Row]:
  """Checks the named model's manual gradient in `dtype` (float64 | float32).

  grad_fn replaces the registered manual gradient (e.g. to show that a wrong one fails).
  """
  if dtype not in TOLERANCES:
    raise errors.ConfigError(f"dtype={dtype!r}: choose one of {sorted(TOLERANCES)}")
  with jax.enable_x64(dtype == "float64"):
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
  for name in model_names:
    problem = build(name, seed=seed, batch=batch, dtype="float64")
    echo(f"{name}: {problem.description}")
    eps = ", ".join(f"{e:.0e}" for e in problem.fd_eps)
    for dtype in dtypes:
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


register("lenet5_faithful")(backprop_lenet.problem_lenet5_faithful)
register("lenet5_classic")(backprop_lenet.problem_lenet5_classic)
register("lenet5_modern")(backprop_lenet.problem_lenet5_modern)
register("conv_layers")(backprop_layers.problem_conv_layers)
register("alexnet_small")(backprop_alexnet.problem_alexnet_small)
register("inception")(backprop_inception.problem_inception)
register("lstm_classifier")(backprop_sequence.problem_lstm)
register("lstm_classifier_bidirectional")(functools.partial(
    backprop_sequence.problem_lstm, num_layers=2, bidirectional=True, readout="mean"))
register("transformer_block")(backprop_sequence.problem_transformer_block)
register("transformer_classifier")(backprop_sequence.problem_transformer_classifier)
register("char_transformer")(backprop_sequence.problem_char_transformer)


def define_flags() -> None:
  """The CLI's flags, defined on demand: importing this module (as problem builders and
  notebooks do) defines none, so `python -m research.gradcheck` never defines them twice."""
  if "saturation" in flags.FLAGS:
    return
  flags.DEFINE_string("model", "mlp", "Registered gradient check(s), comma separated.")
  flags.DEFINE_integer("seed", 0, "Seed for params, inputs and fd directions.")
  flags.DEFINE_integer("batch", 32, "Batch size B of the checked loss.")
  flags.DEFINE_bool("saturation", False,
                    "Also print the literal vs simplified output-delta table.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  try:
    code = run(f.model.split(","), seed=f.seed, batch=f.batch, saturation=f.saturation)
  except errors.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    code = 2
  sys.exit(code)


if __name__ == "__main__":
  define_flags()
  app.run(main)
