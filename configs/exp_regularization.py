"""Regularization on a setting that overfits (research/experiments/regularization.py).

A wide ReLU MLP (one hidden layer of 512) on a seeded slice of 200 digits training examples
(8x8 images, flattened by the MLP) fits the slice perfectly; each method adds one regularizer
to that base: L2, L1, dropout, early stopping, augmentation (translate + noise) or bagging
(k = 8 bootstrap members trained as one jax.vmap). Test set: half of the 1,797 digits.

  python -m research.main --config=configs/exp_regularization.py --workdir=/tmp/reg

Measured (3 seeds, 104 s on a shared 2-core CPU; table in docs/experiments.md section 1):
train accuracy 100% for all but bagging (99.5%); test accuracy / test loss
  none 93.2% / 0.298, l2 92.8% / 0.259 (sum w^2 623 -> 94), l1 91.8% / 0.284,
  dropout 93.3% / 0.287, early stopping 93.1% / 0.255, augment 94.8% / 0.146,
  bagging 93.1% / 0.268 (its mean member 90.8% / 0.390).
The strengths were picked on the validation split (see the docs).
"""
from research import augment
from research import config_lib
from research.models import mlp


def get_config():
  config = config_lib.base(trainer="regularization", batch_size=32, num_steps=2000,
                           log_every=100, eval_every=100, eval_batch_size=1024)
  # A bigger test split than the default (20%) so one test example is 0.1 points, not 0.3.
  config.data = config_lib.sklearn_data("digits", image_size=8, valid_fraction=0.1,
                                        test_fraction=0.5)
  config.model = mlp.config(
      hidden_sizes=(512,),     # wide: 33k weights for 200 examples
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.0,             # off in the base; the "dropout" method sets experiment.dropout
  )
  # softmax: bagging and the dropout ensemble average class probabilities.
  config.loss = config_lib.loss("softmax")
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  # Parameters of the augment method's ops (ops stays () in the base: "none" means none).
  config.augment = augment.config(max_shift=1, noise_std=0.3)
  config.experiment = dict(
      methods=("none", "l2", "l1", "dropout", "early_stopping", "augment", "bagging"),
      train_examples=200,      # every method trains on this seeded slice of the train split
      subset_seed=0,           # which examples form the slice (fixed across training seeds)
      repeats=3,               # training seeds config.seed, +1, ...: table shows mean ± std
      l2=0.1,                  # lambda of the l2 method: config.loss.l2 (lambda/2m sum w^2)
      l1=0.03,                 # lambda_1 of the l1 method: config.loss.l1 (lambda_1/m sum |w|)
      dropout=0.5,             # p of the dropout method: config.model.dropout
      patience=3,              # early_stopping: config.early_stopping_patience, in evals
      augment_ops=("translate", "noise"),  # augment method: config.augment.ops
      bagging_members=8,       # k bootstrap members of the bagging method
  )
  return config
