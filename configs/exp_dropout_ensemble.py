"""Dropout as an ensemble (research/experiments/dropout_ensemble.py), under the harness.

A ReLU MLP (one hidden layer of 512) trained on digits with dropout p = 0.2, 0.5 and 0.8 on the
hidden units, one network per seed (5 seeds); then, on the test set, weight-scaling inference
(apply with train=False) against Monte Carlo averages of Pr(y|x,d) over N = 1, 4, 16, 64 and
256 dropout masks of the same networks, paired over the seeds.

  python -m research.main --config=configs/exp_dropout_ensemble.py --workdir=/tmp/dropens

docs/experiments.md section 2 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(trainer="dropout_ensemble", batch_size=32, num_steps=2000,
                           log_every=500, eval_every=500, eval_batch_size=512,
                           checkpoint_every=0)
  config.data = config_lib.sklearn_data("digits")
  config.model = model_configs.mlp(
      hidden_sizes=(512,),     # widths of the hidden layers
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.0,             # stays 0: experiment.dropout_rates sets p per size
  )
  # softmax: Pr(y|x,d) is a categorical, averaged over masks in probability space.
  config.loss = config_lib.loss("softmax")
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      dropout_rates=(0.2, 0.5, 0.8),  # the sizes: p, the probability of zeroing a hidden unit
      mask_counts=(1, 4, 16, 64, 256),  # mc_N arms: the first N of each seed's masks
      seeds=5,                 # config.seed, +1, ...: one network per seed
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      mask_seed=0,             # folded with the seed and the split into the masks' key
      masks_per_call=32,       # masks vmapped at once (memory ~ this x batch x width)
  )
  return config
