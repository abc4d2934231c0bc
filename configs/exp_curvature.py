"""Optimizers on hard curvature (research/experiments/curvature.py).

SGD, momentum, Nesterov, Adagrad and Adam. The comparison: a deep sigmoid MLP on digits at
depths 2 and 8 (hidden layers of 32 units), each optimizer's step size chosen on the
validation split from its own grid of five, over 5 seeds, under the experiment harness
(deep_mlp.png: test accuracy with 95% CIs). Illustrations (deterministic, no seed): each
method with and without global-norm clipping on a rotated ill-conditioned quadratic (kappa =
100) and the Rosenbrock valley, at the eta of a grid chosen from a second start
(trajectories.png, curves.png).

  python -m research.main --config=configs/exp_curvature.py --workdir=/tmp/curvature

docs/experiments.md section 4 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs


def get_config():
  # The top-level fields describe the deep_mlp problem; the 2-D problems use experiment.*.
  config = config_lib.base(trainer="curvature", batch_size=64, num_steps=1500, log_every=500,
                           eval_every=1500, eval_batch_size=1024, checkpoint_every=0)
  config.data = config_lib.sklearn_data("digits")
  config.model = model_configs.mlp(
      hidden_sizes=(32,) * 8,  # unused: experiment.depths x experiment.deep_width set it
      activation="sigmoid",    # sigmoid | tanh | relu
      dropout=0.0,
  )
  config.loss = config_lib.loss("softmax")
  # Unused by this runner (each method builds its own chain); kept so the field exists.
  config.optimizer = config_lib.optimizer()
  config.experiment = dict(
      problems=("quadratic", "rosenbrock", "deep_mlp"),
      optimizers=("sgd", "momentum", "nesterov", "adagrad", "adam"),
      clip_global_norm=1.0,    # the "with clipping" runs: ||g|| is rescaled to at most this
      kappa=100.0,             # quadratic: condition number of H
      rotation=30.0,           # quadratic: degrees between H's eigenvectors and the axes
      quadratic_start=(-1.5, 1.0),
      rosenbrock_start=(-1.5, 2.5),
      quadratic_tuning_start=(1.0, 1.5),    # eta is chosen from these held-out starts (fewest
      rosenbrock_tuning_start=(-1.2, 1.0),  # steps to tolerance), then run from the ones above
      num_steps_2d=500,        # steps on the 2-D problems
      # The grid of eta tried on the 2-D problems (each method is shown at its best).
      learning_rates=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
      tolerance=1e-3,          # 2-D: steps_to_tol counts steps until f <= this
      # deep_mlp, under the harness: sizes are depths, arms the optimizers.
      depths=(2, 8),           # hidden layers of deep_width sigmoid units
      deep_width=32,
      seeds=5,                 # config.seed, +1, ...: the init and the batch order
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
      baseline="sgd",          # the arm every other is compared with, paired over seeds
      # Each optimizer's grid of step sizes, chosen on validation: the same number of
      # candidates for each, spanning where it trains (momentum's effective step is 10x).
      deep_learning_rates=dict(sgd=(0.1, 0.3, 1.0, 3.0, 10.0),
                               momentum=(0.01, 0.03, 0.1, 0.3, 1.0),
                               nesterov=(0.01, 0.03, 0.1, 0.3, 1.0),
                               adagrad=(0.01, 0.03, 0.1, 0.3, 1.0),
                               adam=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2)),
  )
  return config
