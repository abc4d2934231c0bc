"""Hand-written backward passes, one module per model family, in the lecture's symbols.

Each module computes dE/dparams without jax.grad, as the slides do it, and returns the same
pytree that `jax.grad` would, so research/gradcheck.py can hold every one of them against
autodiff and finite differences.

  core: the registry by model name (register_manual, register_problem) and gradcheck's Problem.
  mlp: the lecture's fully connected sigma(sum) network (research/models/mlp.py).
  layers: dense, conv2d (stride, padding, groups), max/avg pooling, LRN, dropout, output deltas,
      and the training cost's wrapper (value_and_grad_from) the other families share.
  sequence: LSTM (through time), attention, layer norm, embeddings; the lstm/transformer models.
  lenet: LeNet-5 (faithful, classic, modern) composed from those layers.
  alexnet, inception: the AlexNet family and the small inception net, from the same layers.

Importing this package imports every family, so its registrations are in core.
"""
from research.backprop.core import (  # noqa: F401
    Problem, make_manual_value_and_grad, manual_builder, manual_names, problem_builder,
    problem_names)

# Families register their hand-written passes and gradient checks on import.
from research.backprop import alexnet  # noqa: E402,F401
from research.backprop import autoencoder  # noqa: E402,F401
from research.backprop import inception  # noqa: E402,F401
from research.backprop import layers  # noqa: E402,F401
from research.backprop import lenet  # noqa: E402,F401
from research.backprop import local_cnn  # noqa: E402,F401
from research.backprop import mlp  # noqa: E402,F401
from research.backprop import sequence  # noqa: E402,F401
from research.backprop import skipgram  # noqa: E402,F401
