"""Optimizers on hard curvature (issue 7, item 4; research/experiments/curvature.py).

SGD, momentum, Nesterov, Adagrad and Adam, each with and without global-norm clipping, on a
rotated ill-conditioned quadratic (kappa = 100), the Rosenbrock valley (2-D, trajectories
drawn in trajectories.png) and a deep sigmoid MLP on digits (loss curves and the gradient norm
of every layer in curves.png).

  python -m research.main --config=configs/exp_curvature.py --workdir=/tmp/curvature

Measured on the shared 2-core CPU in 34 s (seed 0; details in docs/experiments.md, section 4):
steps to f <= 1e-3 on the quadratic at each method's best eta: sgd 287, momentum 111, nesterov
49, adagrad 205, adam 109; clipping cuts the diverging etas from 3-4/9 to 0/9 (Rosenbrock: 6/9
to 1-2/9). Deep MLP: only Adam leaves the ln 10 plateau (train E 1.39 after 1500 steps; the
first layer's gradient is 3e-5 of the last one's at init).
"""
from research import config_lib
from research.models import mlp


def get_config():
  # The top-level fields describe the deep_mlp problem; the 2-D problems use experiment.*.
  config = config_lib.base(trainer="curvature", batch_size=64, num_steps=1500, log_every=100,
                           eval_every=1500)
  config.data = config_lib.sklearn_data("digits")
  config.model = mlp.config(
      hidden_sizes=(32,) * 8,  # 8 sigmoid layers: dE/dw^l shrinks towards the input
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
      num_steps_2d=500,        # steps on the 2-D problems
      # The grid of eta tried on the 2-D problems (each method is shown at its best).
      learning_rates=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
      tolerance=1e-3,          # 2-D: steps_to_tol counts steps until f <= this
      # deep_mlp: one common eta per method.
      deep_learning_rates=dict(sgd=0.5, momentum=0.05, nesterov=0.05, adagrad=0.05, adam=1e-3),
  )
  return config
