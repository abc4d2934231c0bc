"""Stochasticity vs redundancy: mini-batch size (research/experiments/batch_size.py).

The lecture's sigmoid MLP on digits trained with plain SGD at B = 1, 8, 64 and the full
training set (0), eta scaled by the linear rule and capped (the cap chosen from max_lr_grid on a
held-out seed), over 5 seeds under the experiment
harness: the examples, steps and epochs until the training-set E is at or below each target
(E computed after every step, so the count is exact to one step), paired against B = 1 with
95% CIs; and the variance of the mini-batch gradient against sigma^2 / B (m - B) / (m - 1)
from per-example gradients (jax.vmap(jax.grad)), for the first seed.

  python -m research.main --config=configs/exp_batch_size.py --workdir=/tmp/batch

docs/experiments.md section 6 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs


def get_config():
  # batch_size / num_steps / log_every / eval_every are set per run by the runner; kept so
  # the locked config has every field.
  config = config_lib.base(trainer="batch_size", batch_size=1, num_steps=1, log_every=1,
                           eval_every=1)
  config.data = config_lib.sklearn_data("digits")
  config.model = model_configs.mlp(
      hidden_sizes=(64,),      # the lecture's network: 64 -> 64 -> 10 sigmoid units
      activation="sigmoid",
      dropout=0.0,
  )
  config.loss = config_lib.loss("sigmoid")  # no penalty: the target is the data term itself
  config.optimizer = config_lib.optimizer(name="sgd")  # eta is set per batch size
  config.experiment = dict(
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      batch_sizes=(1, 8, 64, 0),  # the arms; 0 = the full training set; the first is the
                               # baseline every other is compared with, paired over seeds
      lr_rule="linear",        # linear | sqrt | constant (see the runner's doc)
      base_lr=0.05,            # eta at B = 1
      max_lr_grid=(1.0, 2.0, 4.0, 8.0, 16.0),  # the cap on eta_B: the fastest full-batch
      cap_seed=1000,           # descent to the smallest target from this held-out seed
      target_losses=(0.3, 0.1),  # the sizes: examples until the training-set E is at or
                               # below each (E is computed after every step)
      max_epochs=500,          # budget per batch size, in passes over the training set
      seeds=5,                 # config.seed, +1, ...: the init and the batch order
      variance_batches=1000,   # random batches averaged per B for the measured variance
  )
  return config
