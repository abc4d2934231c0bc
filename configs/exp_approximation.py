"""Universal approximation with one hidden layer (research/experiments/approximation.py).

One hidden layer of H = 1, 2, 4, ..., 256 sigmoid units fitted to a smooth 1-D target and a
2-D one; the approximation error (RMS and max on a dense grid) against H goes in results.md
and approximation.png. Each width trains num_seeds networks in one jax.vmap.

  python -m research.main --config=configs/exp_approximation.py --workdir=/tmp/approx

Measured on the shared 2-core CPU in 61 s (seed 0; details in docs/experiments.md, section 5):
median RMS error on the grid from H = 1 to 128: 0.646 -> 0.019 (1-D), 0.563 -> 0.017 (2-D);
H = 256 no better within 2000 steps.
"""
from research import config_lib
from research.models import mlp


def get_config():
  # batch_size / log_every / eval_every are unused (full-batch fits) but kept: configs are locked.
  config = config_lib.base(trainer="approximation", num_steps=2000, log_every=2000,
                           eval_every=2000)
  config.data = config_lib.sklearn_data("digits")  # unused: the targets are functions
  config.model = mlp.config(
      hidden_sizes=(1,),       # one hidden layer; its width is set from experiment.widths
      activation="sigmoid",    # sigmoid | tanh | relu
      dropout=0.0,
  )
  config.loss = config_lib.loss("softmax")  # unused: the fits minimise the mean squared error
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-2, schedule="cosine")
  config.experiment = dict(
      targets=("sines_1d", "bumps_2d"),  # see research/experiments/approximation.py
      widths=(1, 2, 4, 8, 16, 32, 64, 128, 256),  # H, the hidden units
      init="spread",           # spread: unit j's transition through a random c_j | lecun (mlp.init)
      init_scale=10.0,         # spread: std of w^1 (steepness of the transitions on [-1, 1])
      num_seeds=3,             # networks per width, trained together in one vmap
      train_points=1024,       # uniform random points in [-1, 1]^D the MSE is taken over
      grid_points_1d=2001,     # dense evaluation grid, 1-D
      grid_points_2d=101,      # dense evaluation grid, points per axis in 2-D
  )
  return config
