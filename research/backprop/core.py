"""What every hand-written backward pass shares: one registry by model name, and the
gradient-check problem type.

A family's backprop module (research/backprop/<family>.py) registers, next to its code:

  @core.register_manual("lenet5")        fn(model_cfg, input_shape, *, num_outputs, output,
                                             lam, m, lam1) -> value_and_grad(params, x, labels,
                                             rng), a drop-in for jax.value_and_grad(
                                             losses.make_loss_fn(...), has_aux=True)
  @core.register_problem("lenet5_faithful")   fn(key, batch, dtype) -> Problem, a loss and its
                                             hand-written gradient at one point, for
                                             research.gradcheck

research.gradients (config.grad=manual) and research.gradcheck look them up here by name; the
research.backprop package imports every family module, so importing it fills both registries.
"""
import itertools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from research import errors
from research import losses
from research import models

FD_EPS = 1e-3


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


_MANUAL: dict[str, Callable] = {}
_PROBLEMS: dict[str, Callable] = {}


def register_manual(name: str):
  """Decorator: `fn(model_cfg, input_shape, *, num_outputs, output, lam, m, lam1)` is the
  hand-written value_and_grad builder of model `name` (config.grad=manual)."""
  def wrap(fn):
    _MANUAL[name] = fn
    return fn
  return wrap


def register_problem(name: str):
  """Decorator: makes `fn(key, batch, dtype) -> Problem` checkable as gradcheck --model=name."""
  def wrap(fn):
    _PROBLEMS[name] = fn
    return fn
  return wrap


def manual_names() -> list[str]:
  return sorted(_MANUAL)


def problem_names() -> list[str]:
  return sorted(_PROBLEMS)


def manual_builder(name: str) -> Callable:
  """The registered hand-written value_and_grad builder of model `name`; ConfigError if none."""
  if name not in _MANUAL:
    raise errors.ConfigError(
        f"config.grad='manual' has a hand-written backward pass only for models "
        f"{manual_names()}, not {name!r}; use config.grad='autodiff' (a family registers its "
        "pass with @core.register_manual(name) in research/backprop/<family>.py)")
  return _MANUAL[name]


def make_manual_value_and_grad(model_cfg, input_shape: tuple[int, ...], num_outputs: int, *,
                               output: str, lam: float, m: int, lam1: float = 0.0) -> Callable:
  """value_and_grad(params, x, labels, rng) by hand for model_cfg.name (see register_manual);
  a family switched by override gets its defaults, as in models.build."""
  model_cfg = models.resolve(model_cfg)
  return manual_builder(model_cfg.name)(model_cfg, tuple(input_shape), num_outputs=num_outputs,
                                        output=output, lam=lam, m=m, lam1=lam1)


def problem_builder(name: str) -> Callable:
  """The registered fn(key, batch, dtype) -> Problem; ConfigError naming the choices if none."""
  if name not in _PROBLEMS:
    raise errors.ConfigError(
        f"--model={name!r} has no gradient check; choose one of: " + ", ".join(problem_names())
        + " (a family registers one with @core.register_problem(name) in "
        "research/backprop/<family>.py)")
  return _PROBLEMS[name]


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
                       fd_eps: tuple[float, ...] = (1e-4, 1e-5, 1e-6), *,
                       num_outputs: int = 10, label_shape: tuple[int, ...] = (),
                       x_fn: Callable = lambda z: z, dropout_key: bool = True) -> Problem:
  """A Problem for a registered model with a softmax output: params = init + 0.1 N(0, 1) (no
  bias or gain exactly 0 or 1), x = x_fn(N(0, 1)), uniform random labels of label_shape per
  example, K = num_outputs, lambda = 1, m = 4B, and (dropout_key) dropout masks from one fixed
  key shared by the loss and the hand-written backward pass (else rng=None).

  make_value_and_grad(model_cfg, input_shape, *, num_outputs, output, lam, m) (a
  register_manual builder) -> the drop-in for jax.value_and_grad(losses.make_loss_fn(...)).
  The default fd steps are small because ReLU and max pooling are kinked: a step must
  straddle no kink.
  """
  k, lam, m = num_outputs, 1.0, 4 * batch
  model = models.build(model_cfg, input_shape, k)
  # An RBG key compiles its random bits ~10x faster than threefry on CPU; any key fixes a mask.
  key_drop = (jax.random.key(int(jax.random.key_data(key)[-1]), impl="rbg") if dropout_key
              else None)

  @jax.jit
  def make_arrays(key):
    init = jax.tree.map(lambda p: p.astype(dtype), model.init(key))
    shapes = {"params": init, "x": jax.ShapeDtypeStruct((batch, *input_shape), dtype),
              "z": jax.ShapeDtypeStruct((batch, *label_shape, k), dtype)}
    z = random_like(jax.random.fold_in(key, 1), shapes, dtype)
    params = jax.tree.map(lambda p, n: p + 0.1 * n, init, z["params"])
    return params, x_fn(z["x"]), jnp.argmax(z["z"], axis=-1)

  params, x, labels = make_arrays(key)
  loss_fn = losses.make_loss_fn(model, "softmax", lam, m, k)
  value_and_grad = make_value_and_grad(model_cfg, input_shape, num_outputs=k, output="softmax",
                                       lam=lam, m=m)
  return Problem(
      params=params, args=(x, labels),
      loss_fn=lambda p, x, labels: loss_fn(p, x, labels, key_drop)[0],
      grad_fn=lambda p, x, labels: value_and_grad(p, x, labels, key_drop)[1],
      fd_eps=fd_eps,
      description=f"{description}, {input_shape} -> {k}, softmax, B={batch}, lambda={lam}, m={m}")


def sequence_problem(key: jax.Array, batch: int, dtype, model_cfg: dict, input_shape: tuple,
                     num_outputs: int, label_shape: tuple[int, ...], x_fn: Callable,
                     description: str) -> Problem:
  """classifier_problem for a registered sequence model (model_cfg a dict), one fd step and
  no dropout: its mask depends on whether x64 is on, and the finite differences run in x64."""
  model_cfg = ml_collections.ConfigDict(model_cfg)
  return classifier_problem(
      key, batch, dtype, model_cfg, input_shape, manual_builder(model_cfg.name), description,
      (FD_EPS,), num_outputs=num_outputs, label_shape=label_shape, x_fn=x_fn, dropout_key=False)


def char_ids(vocab: int) -> Callable:
  """Ids from the normals: each row of the table is used by several positions (scatter-add)."""
  return lambda z: (jnp.abs(z) * 1e3).astype(jnp.int32) % vocab


def check_model(model_cfg, name: str, input_shape, num_outputs: int) -> None:
  """Raises ConfigError for a config the model builder or this backward pass cannot use."""
  if model_cfg.name != name:
    raise errors.ConfigError(
        f"config.model.name={model_cfg.name!r}: this is the hand-written backward pass of "
        f"{name!r}; use the make_*_value_and_grad of your model")
  models.build(model_cfg, input_shape, num_outputs)  # the builder's own config checks
