"""Sparse representations: L1 on the hidden units vs L1 on the weights.

Runner: research/experiments/sparsity.py.

The lecture's MLP with ReLU hidden units, 64 -> 256 -> 10 softmax, on all 719 digits training
examples (test: half of the 1,797 digits), trained with the hand-written backward pass
(config.grad=manual) once per strength of each penalty, step size and seed (5 seeds), under
the experiment harness: each strength at its step size chosen on validation, paired with no
penalty over the seeds, and each penalty's strength chosen on validation.

  python -m research.main --config=configs/exp_sparse_representations.py --workdir=/tmp/sparse

docs/experiments.md section 10 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(trainer="sparsity", batch_size=32, num_steps=2000, log_every=500,
                           eval_every=500, eval_batch_size=1024, checkpoint_every=0,
                           grad="manual")  # manual: research/backprop/mlp.py; or autodiff
  config.data = config_lib.sklearn_data("digits", valid_fraction=0.1, test_fraction=0.5)
  config.model = model_configs.mlp(
      hidden_sizes=(256,),     # the representation whose sparsity is measured
      activation="relu",       # relu: a unit is exactly 0 below threshold | sigmoid | tanh
      dropout=0.0,             # must stay 0 (the manual pass has no dropout)
  )
  config.loss = config_lib.loss("softmax")  # l1 stays 0: experiment.weight_l1 sets it
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      activation_l1=(0.001, 0.003, 0.01, 0.03, 0.1),  # lambda_h of (lambda_h/B) sum |sigma|
      weight_l1=(0.03, 0.1, 0.3, 1.0, 3.0),  # lambda_1 of (lambda_1/m) sum |w|, m = 719
                                        # (as many strengths as activation_l1: equal in kind)
      learning_rates=(3e-4, 1e-3, 3e-3),  # every arm's step sizes, chosen on validation
      max_extensions=2,        # steps the step-size grid may grow past an edge it is chosen at
      near_zero=0.01,          # |sigma| or |w| at most this counts as zero
      seeds=5,                 # config.seed, +1, ...: init and batch order (the whole split)
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
  )
  return config
