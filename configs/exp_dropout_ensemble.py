"""Dropout as an ensemble (research/experiments/dropout_ensemble.py).

A ReLU MLP (one hidden layer of 512, dropout 0.5 on the hidden units) trained on digits with
the standard trainer; then, on the test set, weight-scaling inference (apply with
train=False) against Monte Carlo averages of Pr(y|x,d) over N = 1, 2, ..., 256 dropout masks.

  python -m research.main --config=configs/exp_dropout_ensemble.py --workdir=/tmp/dropens

Measured (33 s on a shared 2-core CPU; table in docs/experiments.md section 2): weight scaling
98.05% test accuracy, mean log-likelihood -0.0580; Monte Carlo over N masks: N=1 97.52%,
-0.0808; N=8 98.07%, -0.0609; N=256 98.05%, -0.0584, the same predictions as weight scaling.
"""
from research import config_lib
from research.models import mlp


def get_config():
  config = config_lib.base(trainer="dropout_ensemble", batch_size=32, num_steps=2000,
                           log_every=250, eval_every=500, eval_batch_size=512)
  config.data = config_lib.sklearn_data("digits")
  config.model = mlp.config(
      hidden_sizes=(512,),     # widths of the hidden layers
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.5,             # p: probability of zeroing each hidden unit in training
  )
  # softmax: Pr(y|x,d) is a categorical, averaged over masks in probability space.
  config.loss = config_lib.loss("softmax")
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      max_masks=256,           # N = 1, 2, 4, ... up to this (a power of 2)
      mask_seed=0,             # the key the max_masks test-time masks are split from
      masks_per_call=32,       # masks vmapped at once (memory ~ this x batch x width)
  )
  return config
