"""Adversarial examples (FGSM, PGD) and adversarial training (research/experiments/adversarial.py).

The lecture's MLP with ReLU hidden units, 64 -> 256 -> 10 softmax, on all 719 digits training
examples (test: half of the 1,797 digits), for 5 seeds. At each threat eps (0.1 and 0.2 of the
pixel range): standard training (the baseline), FGSM adversarial training, PGD-7 adversarial
training and TRADES (Zhang et al. 2019) at that eps. Every method tunes the step size and its
own strength (the adversarial trainings' clean weight w, TRADES' beta) over grids of the same
size, extended at their edges, by validation accuracy under PGD-20 with 5 random restarts at
that eps. Test: clean accuracy and accuracy under FGSM and under PGD-20 (5 random starts, step
2.5 eps / 20; robust = survives every start) at the threat eps and at every eval eps; FGSM's
gradient from jax.grad and from the hand-written backward pass, checked to agree.

  python -m research.main --config=configs/exp_adversarial.py --workdir=/tmp/adversarial

docs/experiments.md section 12 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(trainer="adversarial", batch_size=32, num_steps=2000, log_every=500,
                           eval_every=500, eval_batch_size=1024, checkpoint_every=0)
  config.data = config_lib.sklearn_data("digits", valid_fraction=0.1, test_fraction=0.5)
  config.model = model_configs.mlp(
      hidden_sizes=(256,),
      activation="relu",       # relu | sigmoid | tanh (the manual dE/dx supports all three)
      dropout=0.0,             # must stay 0
  )
  config.loss = config_lib.loss("softmax")  # no penalties
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      methods=("standard", "fgsm_training", "pgd_training", "trades"),
      baseline="standard",     # the arm every other is compared with, paired over seeds
      threat_epsilons=(0.1, 0.2),  # the sizes: the eps trained for and selected at
      eval_epsilons=(0.05, 0.1, 0.2, 0.3),  # test attacks at each (fractions of the range)
      seeds=5,                 # config.seed, +1, ...: init, batch order and random starts
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      learning_rates=(3e-4, 1e-3, 3e-3),  # every method's step sizes (a tie picks the first)
      clean_weights=(0.5, 0.25, 0.0),     # w in E = w E(x) + (1 - w) E(x_adv): the FGSM and
                                          # PGD trainings' strength (as many as TRADES')
      trades_betas=(1.0, 3.0, 6.0),       # TRADES' grid: beta of E(x) + beta KL(p(x) || p(x_adv))
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
      attack_steps=20,         # PGD-k for evaluation and selection
      attack_restarts=5,       # ...from this many random starts; robust = survives every one
      train_attack_steps=7,    # PGD-k inside pgd_training
      step_factor=2.5,         # PGD's step: step_factor eps / k (Madry et al. 2018)
  )
  return config
