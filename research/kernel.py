"""The training kernel every loop builds on: the run (research.train), the lecture's
procedure, each experiment, the benchmark and the launch scripts.

  init_state(model, optimizer, key)   the train state {"params", "opt_state", "step", "rng"}
  train_state(params, optimizer, rng) the same around given params
  make_train_chunk(loss_fn, optimizer, ...)   jitted chunk(state, x_all, y_all, idx_SxB): S
                                      steps in one lax.scan, batches gathered on the device
  make_eval_fn / evaluate / eval_batch_size   summed loss and accuracy over a split
  weight_norms(tree)                  ||w^l|| per weight leaf (the run's per-layer norms)
  precision(config)                   the matmul precision a run traces under

It imports nothing that runs or records a run (no workdir, checkpoint, metrics or config
bookkeeping), so any loop can use it.
"""
import contextlib
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research import config_lib
from research import data as data_lib
from research import losses
from research import models
from research import parallel

MATMUL_PRECISIONS = config_lib.CHOICES["matmul_precision"]
# How the seeds of one experiment cell run: a loop over one compiled chunk, or one vmapped
# program (research/experiments/harness.train_seeds).
SEED_MODES = ("vmap", "loop")


def init_state(model: models.Model, optimizer, key: jax.Array) -> dict:
  """The train state of one model from one key: the init and the per-step randomness (the
  chunk folds the step into "rng") each get half of it, so a run is a function of its key."""
  init_key, train_key = jax.random.split(key)
  return train_state(model.init(init_key), optimizer, train_key)


def train_state(params, optimizer, rng: jax.Array) -> dict:
  """The train state {"params", "opt_state", "step": 0, "rng"} around given params (under
  jax.vmap: a stack of R states, one per replica)."""
  return {"params": params, "opt_state": optimizer.init(params),
          "step": jnp.zeros((), jnp.int32), "rng": rng}


def precision(config):
  """The context the run traces under: jax.default_matmul_precision(config.matmul_precision),
  or none for "default" (the backend's own: full float32 on CPUs; bfloat16 passes on TPUs)."""
  if config.get("matmul_precision", "default") == "default":
    return contextlib.nullcontext()
  return jax.default_matmul_precision(config.matmul_precision)




def weight_norms(tree) -> dict[str, jax.Array]:
  """||w^l|| of every weight leaf (losses.is_weight), keyed "0/w", "conv/c1/w", ...: the
  per-layer norms a run logs for the params, dE/dw and the optimizer's update."""
  return {_leaf_name(path): jnp.sqrt(jnp.sum(jnp.square(v.astype(jnp.float32))))
          for path, v in jax.tree_util.tree_leaves_with_path(tree) if losses.is_weight(path)}


def _leaf_name(path) -> str:
  parts = []
  for k in path:
    parts.append(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))))
  return "/".join(parts)


def make_train_chunk(loss_fn: Callable, optimizer, augment_fn: Callable | None = None,
                     value_and_grad: Callable | None = None,
                     max_traces: int | None = None, norms: bool = False,
                     with_step: bool = False, batches_given: bool = False) -> Callable:
  """Returns jitted chunk(state, x_all, y_all, idx_SxB) -> (state, sums) running S steps;
  with batches_given (the streaming pipeline, research.data.streaming), chunk(state, x_SxB...,
  y_SxB) -> (state, sums) takes the S batches themselves instead of gathering them.

  sums holds E ("loss_sum") and every scalar of the loss's aux (e.g. "data_loss_sum",
  "accuracy_sum") summed over the chunk's steps (train records report E as "loss" and the data
  term, comparable with valid/test "loss", as "data_loss"); with norms=True (the run's loop,
  for its log records; the experiment runners do not read them) "norms", the per-layer norms
  {"grad", "param", "update"} of the chunk's last step (weight_norms; that step is written out
  after the scan, so it is traced and compiled a second time: a longer compile for no step
  cost); and the first step whose loss was not finite (or -1), so NaN detection costs no extra
  host sync.

  with_step=True calls the cost as loss_fn(params, x, labels, rng, step), for costs whose
  weights follow a schedule over the steps.

  max_traces guards compilation: a run traces the chunk once per distinct chunk length S,
  and a retrace (a changed dtype, shape or sharding) would silently recompile every chunk; with
  the guard it fails instead. (chex.assert_max_traces counts per function definition, so it
  would count the chunks of every run of a process together.)
  """
  if value_and_grad is None:
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  # with_step: the cost reads the step too (a weight ramped over training), as a 5th argument.
  extra = (lambda step: (step,)) if with_step else (lambda step: ())

  def train_step(state, x, y, with_norms=False):
    step = state["step"]
    # Per-step randomness is a function of (seed, step) alone, so resuming is exact.
    rng, aug_rng = jax.random.split(jax.random.fold_in(state["rng"], step))
    if augment_fn is not None:
      x = augment_fn(aug_rng, x)
    (E, aux), grads = value_and_grad(state["params"], x, y, rng, *extra(step))
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(jnp.add, state["params"], updates)
    new_state = dict(state, params=params, opt_state=opt_state, step=step + 1)
    layer_norms = {"grad": weight_norms(grads), "update": weight_norms(updates),
                   "param": weight_norms(params)} if with_norms else None
    return new_state, ({"loss": E, **aux}, step), layer_norms

  def run(state, xs_S, batch):
    """S steps over xs_S (a pytree with leading axis S); batch(xs) -> (x_B..., y_B)."""
    # The last step is written out after the scan, with the per-layer norms: computed inside
    # the scan they would cost every step a pass over the gradients and updates (~10-30% of
    # a small MLP's step, also behind a lax.cond); here they cost one step's worth.
    head = jax.tree.map(lambda a: a[:-1], xs_S) if norms else xs_S
    state, (values_S, step_S) = jax.lax.scan(
        lambda s, xs: train_step(s, *batch(xs))[:2], state, head)
    out = {}
    if norms:
      state, (values_last, step_last), out["norms"] = train_step(
          state, *batch(jax.tree.map(lambda a: a[-1], xs_S)), with_norms=True)
      values_S = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), values_S,
                              values_last)
      step_S = jnp.concatenate([step_S, step_last[None]])
    E_S = values_S["loss"]
    bad = jnp.where(jnp.isfinite(E_S), jnp.iinfo(jnp.int32).max, step_S).min()
    sums = {f"{key}_sum": v.sum() for key, v in values_S.items()}
    out.update(sums, first_bad_step=jnp.where(bad == jnp.iinfo(jnp.int32).max, -1, bad))
    return state, out

  if batches_given:
    def chunk(state, x_SxB, y_SxB):
      return run(state, (x_SxB, y_SxB), lambda xy: xy)
  else:
    def chunk(state, x_all, y_all, idx_SxB):
      return run(state, idx_SxB, lambda idx_B: (x_all[idx_B], y_all[idx_B]))

  if max_traces is not None:
    chunk = _count_traces(chunk, max_traces)
  return jax.jit(chunk, donate_argnums=0)


def _count_traces(fn: Callable, max_traces: int) -> Callable:
  """fn, raising AssertionError when traced more than max_traces times (a trace runs the
  Python body; a compiled call does not)."""
  traces = [0]

  @functools.wraps(fn)
  def counted(*args):
    traces[0] += 1
    if traces[0] > max_traces:
      raise AssertionError(
          f"the train chunk was traced {traces[0]} times, more than its {max_traces} chunk "
          "length(s): an argument's shape, dtype or sharding changed between chunks")
    return fn(*args)

  return counted


def make_eval_fn(model: models.Model, output: str, k: int) -> Callable:
  """Returns jitted eval(params, x_B..., labels_B..., mask_B) -> loss and accuracy summed over
  the unmasked examples, and each example's hit_B (1 right, 0 wrong or masked) for
  evaluate(per_example=True). Labels may carry trailing axes (e.g. one per time step): those
  are averaged within each example."""
  data_loss = losses.DATA_LOSSES[output]

  def eval_batch(params, x, labels, mask):
    logits_BxK = model.apply(params, x, train=False)
    per_label = data_loss(logits_BxK, losses.one_hot_targets(labels, k, logits_BxK.dtype))
    hit = (losses.predictions(logits_BxK) == labels).astype(per_label.dtype)
    per_example = lambda v: v.reshape(v.shape[0], -1).mean(axis=1)
    hit_B = jnp.where(mask, per_example(hit), 0)
    return {"loss_sum": jnp.where(mask, per_example(per_label), 0).sum(),
            "correct": hit_B.sum(), "hit_B": hit_B}

  return jax.jit(eval_batch)


def eval_batch_size(config, dataset: data_lib.Dataset) -> int:
  """One evaluation batch size for valid and test (one compilation), no larger than needed."""
  return max(1, min(config.eval_batch_size, max(len(dataset.valid), len(dataset.test))))


def evaluate(eval_fn: Callable, params, split: data_lib.Split, batch_size: int,
             mesh=None, per_example: bool = False) -> dict:
  """Mean data loss and accuracy over a split; the last batch is padded and masked so every
  call has one shape: pass one batch_size for every split to compile once (see
  eval_batch_size). With a mesh, every batch is placed replicated (each host passes the same
  data). per_example (an eval_fn returning hit_B, as make_eval_fn's does): also
  "per_example": {"accuracy": hit_N}, each example's correctness in the split's order (the
  harness's test-sampling interval reads it)."""
  n = len(split)
  if n == 0:
    return {}
  totals = {"loss_sum": 0.0, "correct": 0}
  hits = []
  for start in range(0, n, batch_size):
    x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
    pad = batch_size - len(y)
    mask = np.arange(batch_size) < len(y)
    if pad:
      x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
      y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    batch = (x, y, mask) if mesh is None else parallel.replicate((x, y, mask), mesh)
    out = eval_fn(params, *batch)
    totals = {key: totals[key] + out[key] for key in totals}
    if per_example:
      hits.append(np.asarray(out["hit_B"])[:len(y) - pad])
  result = {"loss": float(totals["loss_sum"]) / n, "accuracy": float(totals["correct"]) / n}
  if per_example:
    result["per_example"] = {"accuracy": np.concatenate(hits)}
  return result
