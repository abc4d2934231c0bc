"""Adversarial examples (FGSM) and adversarial training (research/experiments/adversarial.py).

The lecture's MLP with ReLU hidden units, 64 -> 256 -> 10 softmax, on all 719 digits training
examples (test: half of the 1,797 digits), trained normally and with FGSM examples at eps = 0.1
of the pixel range; each attacked by FGSM at eps from 0 to 0.3 (the gradient from jax.grad and
from the hand-written backward pass, checked to agree).

  python -m research.main --config=configs/exp_adversarial.py --workdir=/tmp/adversarial

Measured (3 seeds, 10 s on a shared 2-core CPU; docs/experiments.md section 12): test accuracy
at eps = 0 / 0.05 / 0.1 / 0.2: standard 97.0 / 86.8 / 57.8 / 3.2%, adversarial 97.9 / 93.9 /
82.4 / 29.8%; manual and jax.grad dE/dx agree to 1.8e-7 relative.
"""
from research import config_lib
from research.models import mlp


def get_config():
  config = config_lib.base(trainer="adversarial", batch_size=32, num_steps=2000, log_every=500,
                           eval_every=500, eval_batch_size=1024, checkpoint_every=0)
  config.data = config_lib.sklearn_data("digits", valid_fraction=0.1, test_fraction=0.5)
  config.model = mlp.config(
      hidden_sizes=(256,),
      activation="relu",       # relu | sigmoid | tanh (the manual dE/dx supports all three)
      dropout=0.0,             # must stay 0
  )
  config.loss = config_lib.loss("softmax")  # no penalties
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      methods=("standard", "adversarial"),
      epsilons=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3),  # attack sizes, fractions of the pixel range
      train_epsilon=0.1,       # adversarial training's eps (fraction of the pixel range)
      alpha=0.5,               # E = alpha E(x) + (1 - alpha) E(x_adv)
      train_examples=0,        # a seeded slice of the train split (0 = all of it)
      subset_seed=0,           # which examples form the slice
      repeats=3,               # training seeds config.seed, +1, ...: the table's mean ± std
  )
  return config
