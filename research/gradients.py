"""Where a training step's gradient comes from: config.grad = autodiff | manual.

  autodiff  jax.value_and_grad of the loss: works for every model.
  manual    the hand-written backward pass of research/backprop/ (the lecture's recursions
            for dE/dsigma and dE/dw) registered for config.model.name; same signature, so the
            train step cannot tell them apart.
"""
from typing import Callable

import jax

from research import config_lib
from research import errors

GRADS = config_lib.CHOICES["grad"]


def make_value_and_grad(config, loss_fn: Callable, num_outputs: int, m: int,
                        input_shape: tuple[int, ...] | None = None) -> Callable:
  """Returns f(params, x, labels, rng) -> ((E, aux), dE/dparams) for config.grad.

  input_shape is the per-example input shape (needed by the sequence models' manual pass).
  """
  errors.check_choice("grad", config.grad, GRADS)
  if config.grad == "autodiff":
    return jax.value_and_grad(loss_fn, has_aux=True)
  if config.get("compute_dtype", "float32") != "float32":
    raise errors.ConfigError(
        f"config.grad='manual' computes in the params' dtype (float32), not "
        f"config.compute_dtype={config.compute_dtype!r}; use config.grad='autodiff' for mixed "
        "precision, or config.compute_dtype='float32'")
  from research import backprop  # pylint: disable=g-import-not-at-top  Only manual runs need it.
  return backprop.make_manual_value_and_grad(
      config.model, input_shape, num_outputs, output=config.loss.output, lam=config.loss.l2,
      m=m, lam1=config.loss.l1)


def manual_models() -> list[str]:
  """The model names that have a hand-written backward pass (config.grad=manual)."""
  from research import backprop  # pylint: disable=g-import-not-at-top
  return backprop.manual_names()
