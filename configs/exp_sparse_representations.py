"""Sparse representations: L1 on the hidden units vs L1 on the weights.

Runner: research/experiments/sparsity.py.

The lecture's MLP with ReLU hidden units, 64 -> 256 -> 10 softmax, on all 719 digits training
examples (test: half of the 1,797 digits), trained with the hand-written backward pass
(config.grad=manual) once per strength of each penalty and per seed.

  python -m research.main --config=configs/exp_sparse_representations.py --workdir=/tmp/sparse

Measured (3 seeds, 49 s on a shared 2-core CPU; docs/experiments.md section 10): no penalty
97.0% test accuracy with 30% of the hidden units exactly 0 per example; L1 on the units,
lambda_h = 0.001 / 0.01 / 0.1: 97.3 / 97.5 / 96.0% with 88 / 97 / 99% zero; L1 on the weights,
lambda_1 = 0.1 / 3: 96.8 / 94.9% with 66 / 98% of the weights near 0 (units 28 / 16% zero).
"""
from research import config_lib
from research.models import mlp


def get_config():
  config = config_lib.base(trainer="sparsity", batch_size=32, num_steps=2000, log_every=500,
                           eval_every=500, eval_batch_size=1024, checkpoint_every=0,
                           grad="manual")  # manual: research/backprop/mlp.py; or autodiff
  config.data = config_lib.sklearn_data("digits", valid_fraction=0.1, test_fraction=0.5)
  config.model = mlp.config(
      hidden_sizes=(256,),     # the representation whose sparsity is measured
      activation="relu",       # relu: a unit is exactly 0 below threshold | sigmoid | tanh
      dropout=0.0,             # must stay 0 (the manual pass has no dropout)
  )
  config.loss = config_lib.loss("softmax")  # l1 stays 0: experiment.weight_l1 sets it
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      activation_l1=(0.001, 0.003, 0.01, 0.03, 0.1),  # lambda_h of (lambda_h/B) sum |sigma|
      weight_l1=(0.1, 0.3, 1.0, 3.0),   # lambda_1 of (lambda_1/m) sum |w|, m = 719
      near_zero=0.01,          # |sigma| or |w| at most this counts as zero
      train_examples=0,        # a seeded slice of the train split (0 = all of it)
      subset_seed=0,           # which examples form the slice
      repeats=3,               # training seeds config.seed, +1, ...: the table's mean ± std
  )
  return config
