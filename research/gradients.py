"""Where a training step's gradient comes from: config.grad = autodiff | manual.

  autodiff  jax.value_and_grad of the loss: works for every model.
  manual    the hand-written backward pass of research/backprop/ (the lecture's recursions
            for dE/dsigma and dE/dw); same signature, so the train step cannot tell them apart.
"""
from typing import Callable

import jax

from research import errors

GRADS = ("autodiff", "manual")
MANUAL_MODELS = ("mlp", "lenet5", "alexnet", "inception", "lstm_classifier", "char_lstm",
                 "transformer_classifier", "char_transformer")


def make_value_and_grad(config, loss_fn: Callable, num_outputs: int, m: int,
                        input_shape: tuple[int, ...] | None = None) -> Callable:
  """Returns f(params, x, labels, rng) -> ((E, aux), dE/dparams) for config.grad.

  input_shape is the per-example input shape (needed by the sequence models' manual pass).
  """
  errors.check_choice("grad", config.grad, GRADS)
  if config.grad == "autodiff":
    return jax.value_and_grad(loss_fn, has_aux=True)
  if config.model.name not in MANUAL_MODELS:
    raise errors.ConfigError(
        f"config.grad='manual' has a hand-written backward pass only for models "
        f"{list(MANUAL_MODELS)}, not {config.model.name!r}; use config.grad='autodiff'")
  if config.model.name == "lenet5":
    from research import models  # pylint: disable=g-import-not-at-top
    from research.backprop import lenet as lenet_backprop  # Only manual runs need it.
    return lenet_backprop.make_value_and_grad(config.model.variant, config.loss.output,
                                              config.loss.l2, m, num_outputs,
                                              lam1=config.loss.l1,
                                              conv_impl=models.conv_impl(config.model))
  if config.model.name in ("alexnet", "inception"):
    from research.backprop import alexnet as alexnet_backprop
    from research.backprop import inception as inception_backprop
    module = {"alexnet": alexnet_backprop, "inception": inception_backprop}[config.model.name]
    return module.make_value_and_grad(config.model, input_shape, config.loss.output,
                                      config.loss.l2, m, num_outputs, lam1=config.loss.l1)
  if config.model.name != "mlp":
    from research.backprop import sequence
    return sequence.VALUE_AND_GRADS[config.model.name](
        config.model, input_shape, num_outputs, config.loss.output, config.loss.l2, m,
        lam1=config.loss.l1)
  if config.model.get("dropout", 0.0) > 0:
    raise errors.ConfigError(
        "config.grad='manual' does not implement the MLP's dropout; set "
        "config.model.dropout=0 or config.grad='autodiff'")
  from research.backprop import mlp as mlp_backprop  # Only manual runs need it.
  return mlp_backprop.make_value_and_grad(
      config.model.activation, config.loss.output, config.loss.l2, m, num_outputs,
      lam1=config.loss.l1)
