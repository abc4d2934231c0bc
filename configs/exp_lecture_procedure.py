"""The slide's training procedure vs plain mini-batch training, at equal examples seen.

Runner: research/experiments/lecture.py (run_procedure), under the experiment harness.

The lecture's network on scikit-learn's digits (64 standardised pixels -> 64 sigmoid units ->
10 sigmoid outputs, cross-entropy + (lambda/2m) sum w^2, lambda = 1e-3), for 5 seeds, each
arm from the same init: uniform mini-batches of 16 (the baseline), steps on 16 misclassified
examples only, and the slide's whole procedure (misclassified steps + random-perturbation
restarts when E(w) stalls). Budgets of 300 and 3,000 gradient steps; every arm chooses its
step size eta on validation accuracy from the same five candidates (extended at an edge).
Variant `:breast_cancer` does the same with one sigmoid output on the binary breast-cancer
data, where a few training examples can stay misclassified, so E(w) may stall and restart.

  python -m research.main --config=configs/exp_lecture_procedure.py --workdir=/tmp/procedure
  python -m research.main --config=configs/exp_lecture_procedure.py:breast_cancer \
      --workdir=/tmp/procedure_cancer

docs/experiments.md section 15 holds the measured table and what it shows.
"""
from research import config_lib


def get_config(arg: str = "digits"):
  """arg: digits (default) | breast_cancer."""
  config = config_lib.base(trainer="lecture_procedure", batch_size=16, num_steps=3000,
                           log_every=100, eval_every=100, checkpoint_every=0)
  config.data = config_lib.sklearn_data(arg)
  config.model = dict(
      name="mlp",
      hidden_sizes=(64,),      # the lecture's network: one layer of sigmoid units
      activation="sigmoid",
  )
  config.loss = config_lib.loss("sigmoid", l2=1e-3)  # the lecture's E
  config.optimizer = config_lib.optimizer(name="sgd", learning_rate=0.5)  # eta: tuned below
  config.lecture = dict(
      rounds_per_check=100,        # steps between checks of E(w) on the training set
      min_relative_decrease=0.01,  # a stall: E fell by less than this fraction since the check
      perturbation_scale=0.1,      # std of the N(0, s^2) noise on every weight and bias
      max_restarts=3,              # perturb and restart at most this often
      batch_size=16,               # examples per gradient step, for every arm
  )
  config.experiment = dict(
      methods=("minibatch", "misclassified", "lecture"),
      baseline="minibatch",    # the arm every other is compared with, paired over seeds
      budgets=(300, 3000),     # the sizes: gradient steps of lecture.batch_size examples
      seeds=5,                 # config.seed, +1, ...: init, batch order, draws, restarts
      seed_mode="loop",        # minibatch's seeds: a loop over one compiled chunk, or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      # eta candidates, the same for every arm within a data set (extended at an edge)
      learning_rates=((0.1, 0.2, 0.5, 1.0, 2.0) if arg == "digits"
                      else (0.005, 0.01, 0.02, 0.05, 0.1)),
      max_extensions=2,        # steps the eta grid may grow past an edge its choice sits at
  )
  return config
