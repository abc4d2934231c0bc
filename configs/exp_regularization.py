"""Regularization on a setting that overfits (research/experiments/regularization.py).

A wide ReLU MLP (one hidden layer of 512) on 20 labels per class of digits (8x8 images,
flattened by the MLP; stratified, redrawn for each of 5 seeds) fits its subset perfectly; each
method adds one regularizer to that base: L2, L1, dropout, early stopping, augmentation
(translate + noise) or bagging (bootstrap members, each trained like a seed). Each method's
learning rate (three candidates, the same for all) and knob (three candidates; none has no
knob) are chosen jointly on the validation split; a choice at a grid's edge extends that grid
by up to two steps.
Test set: half of the 1,797 digits.

  python -m research.main --config=configs/exp_regularization.py --workdir=/tmp/reg

docs/experiments.md section 1 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(trainer="regularization", batch_size=32, num_steps=2000,
                           log_every=100, eval_every=100, eval_batch_size=1024)
  # A bigger test split than the default (20%) so one test example is 0.1 points, not 0.3.
  config.data = config_lib.sklearn_data("digits", image_size=8, valid_fraction=0.1,
                                        test_fraction=0.5)
  config.model = model_configs.mlp(
      hidden_sizes=(512,),     # wide: 33k weights for 200 examples
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.0,             # off in the base; the "dropout" method sets it
  )
  # softmax: bagging averages class probabilities.
  config.loss = config_lib.loss("softmax")
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  # Parameters of the augment method's ops (ops stays () in the base: "none" means none).
  config.augment = config_lib.augment(max_shift=1, noise_std=0.3)
  config.experiment = dict(
      methods=("none", "l2", "l1", "dropout", "early_stopping", "augment", "bagging"),
      baseline="none",         # the arm every other is compared with, paired over seeds
      labels_per_class=(5, 20),  # the sizes: labelled training examples per class
      seeds=5,                 # config.seed, +1, ...: each redraws the labelled subset
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      # Every method's step size, and each method's one knob, chosen jointly on validation
      # accuracy (equal in kind: the same step sizes, 3 candidates for every knob).
      learning_rates=(3e-4, 1e-3, 3e-3),  # every method's (optimizer.learning_rate unused)
      l2_strengths=(0.03, 0.1, 0.3),      # l2: lambda of (lambda/2m) sum w^2
      l1_strengths=(0.01, 0.03, 0.1),     # l1: lambda_1 of (lambda_1/m) sum |w|
      dropout_rates=(0.2, 0.5, 0.8),      # dropout: p on every hidden unit
      patiences=(1, 3, 10),               # early_stopping: evals (of eval_every steps)
                                          # without a better validation loss
      noise_stds=(0.15, 0.3, 0.6),        # augment: the noise op's std after augment_ops'
                                          # translation
      augment_ops=("translate", "noise"),  # augment: config.augment.ops for that method
      bagging_members=(4, 8, 16),         # bagging: k bootstrap members
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
  )
  return config
