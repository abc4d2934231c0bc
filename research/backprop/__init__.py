"""Hand-written backward passes, one module per model family, in the lecture's symbols.

Each module computes dE/dparams without jax.grad, as the slides do it, and returns the same
pytree that `jax.grad` would, so research/gradcheck.py can hold every one of them against
autodiff and finite differences.

  mlp: the lecture's fully connected sigma(sum) network (research/models/mlp.py).
  sequence: LSTM (through time), attention, layer norm, embeddings; the lstm/transformer models.
  layers: dense, conv2d (stride, padding, groups), max/avg pooling, LRN, dropout, output deltas.
  lenet: LeNet-5 (faithful, classic, modern) composed from those layers.
  alexnet, inception: the AlexNet family and the small inception net, from the same layers.
"""
