"""Semi-supervised learning: few labels + every unlabelled input
(research/experiments/semi_supervised.py).

An MLP 64 -> 256 ReLU -> 10 softmax on digits (8x8 images, flattened) from seeded slices of
20, 50 and 100 labelled training examples, plus all 719 training inputs without their labels
(test: half of the 1,797 digits). Augmentation: shifts of up to 1 pixel, then Gaussian noise
of std 0.3 (configs/exp_regularization.py's best).

  python -m research.main --config=configs/exp_semi_supervised.py --workdir=/tmp/semi

Measured (3 seeds, 138 s on a shared 2-core CPU; docs/experiments.md section 14), test
accuracy labels_only / labels_augment / pseudo_label / consistency: 20 labels 58.2 / 63.6 /
64.1 / 64.8%, 50 labels 78.1 / 85.5 / 87.2 / 91.7%, 100 labels 91.7 / 91.1 / 91.5 / 93.6%.
"""
from research import augment
from research import config_lib
from research.models import mlp


def get_config():
  config = config_lib.base(trainer="semi_supervised", batch_size=16, num_steps=2000,
                           log_every=500, eval_every=500, eval_batch_size=1024,
                           checkpoint_every=0)
  config.data = config_lib.sklearn_data("digits", image_size=8, valid_fraction=0.1,
                                        test_fraction=0.5)
  config.model = mlp.config(
      hidden_sizes=(256,),
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.0,             # off: the methods differ only in what they do with x_u
  )
  config.loss = config_lib.loss("softmax")  # no penalties
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  # The augmenting methods' ops (applied inside their cost, to labelled and unlabelled rows).
  config.augment = augment.config(ops=("translate", "noise"), max_shift=1, noise_std=0.3)
  config.experiment = dict(
      methods=("labels_only", "labels_augment", "pseudo_label", "consistency"),
      train_examples=(20, 50, 100),  # labelled examples (a seeded slice of the train split)
      subset_seed=0,           # which examples are labelled
      repeats=3,               # training seeds config.seed, +1, ...: the table's mean ± std
      unlabelled_batch_size=64,  # unlabelled rows per step (next to batch_size labelled)
      unlabelled_weight=1.0,   # lambda_u of the unlabelled term
      threshold=0.95,          # pseudo_label: tau, the confidence a prediction needs to count
  )
  return config
