"""Universal approximation with one hidden layer (research/experiments/approximation.py).

One hidden layer of H = 4, 16, 64 and 256 sigmoid units fitted to a smooth 1-D target and a
2-D one, from two inits (lecun, the library's, the baseline; spread, each unit's transition at
a random point of the domain), each init's learning rate chosen from three by the RMS error at
fresh random validation points, over 5 seeds (each draws its own training points and init).
The error on a dense grid (RMS and max) against H, with paired 95% intervals, goes in
results.md and approximation.png.

  python -m research.main --config=configs/exp_approximation.py --workdir=/tmp/approx

docs/experiments.md section 5 holds the measured tables and what they show.
"""
from research import config_lib
from research import model_configs


def get_config():
  # batch_size / log_every / eval_every are unused (full-batch fits) but kept: configs are locked.
  config = config_lib.base(trainer="approximation", num_steps=2000, log_every=2000,
                           eval_every=2000)
  config.data = config_lib.sklearn_data("digits")  # unused: the targets are functions
  config.model = model_configs.mlp(
      hidden_sizes=(1,),       # one hidden layer; its width is set from experiment.widths
      activation="sigmoid",    # sigmoid | tanh | relu
      dropout=0.0,
  )
  config.loss = config_lib.loss("softmax")  # unused: the fits minimise the mean squared error
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-2, schedule="cosine")
  config.experiment = dict(
      targets=("sines_1d", "bumps_2d"),  # see research/experiments/approximation.py
      widths=(4, 16, 64, 256),  # the sizes: H, the hidden units
      inits=("lecun", "spread"),  # the arms: lecun (mlp.init) | spread (transitions at random
                                  # points of the domain)
      baseline="lecun",        # the arm every other is compared with, paired over seeds
      learning_rates=(1e-2, 3e-2, 1e-1),  # every init's grid (the same budget), peak of the
                                          # schedule; config.optimizer.learning_rate is unused
      init_scale=10.0,         # spread: std of w^1 (steepness of the transitions on [-1, 1])
      seeds=5,                 # config.seed, +1, ...: training points, validation points, init
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
      train_points=1024,       # uniform random points in [-1, 1]^D the MSE is taken over
      valid_points=1024,       # fresh uniform random points per seed the learning rate is
                               # chosen on
      grid_points_1d=2001,     # dense test grid, 1-D
      grid_points_2d=101,      # dense test grid, points per axis in 2-D
  )
  return config
