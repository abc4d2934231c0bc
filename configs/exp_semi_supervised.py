"""Semi-supervised learning: few labels plus every unlabelled input.

Runner: research/experiments/semi_supervised.py.

An MLP 64 -> 256 ReLU -> 10 softmax on digits (8x8 images, flattened) with 2, 5 and 10 labels
per class, stratified and redrawn for each of 5 seeds, plus all 719 training inputs without
their labels (test: half of the 1,797 digits). Augmentation: shifts of up to 1 pixel, then
Gaussian noise of std 0.3 (the ops of configs/exp_regularization.py's augment method; its
validation chose std 0.6). The baseline is labels_augment; every method's step size (three
candidates) is chosen on the validation split, jointly with lambda_u (three candidates) for the
methods with unlabelled inputs; a choice at a grid's edge extends that grid by up to two steps.

  python -m research.main --config=configs/exp_semi_supervised.py --workdir=/tmp/semi

docs/experiments.md section 14 holds the measured table and what it shows.
"""
from research import config_lib
from research import model_configs


def get_config():
  config = config_lib.base(trainer="semi_supervised", batch_size=16, num_steps=2000,
                           log_every=500, eval_every=500, eval_batch_size=1024,
                           checkpoint_every=0)
  config.data = config_lib.sklearn_data("digits", image_size=8, valid_fraction=0.1,
                                        test_fraction=0.5)
  config.model = model_configs.mlp(
      hidden_sizes=(256,),
      activation="relu",       # sigmoid | tanh | relu
      dropout=0.0,             # off: the methods differ only in what they do with x_u
  )
  config.loss = config_lib.loss("softmax")  # no penalties
  config.optimizer = config_lib.optimizer(name="adam", learning_rate=1e-3)
  # The augmenting methods' ops (applied inside their cost, to labelled and unlabelled rows).
  config.augment = config_lib.augment(ops=("translate", "noise"), max_shift=1, noise_std=0.3)
  config.experiment = dict(
      methods=("labels_only", "labels_augment", "pseudo_label", "fixmatch_style",
               "consistency", "mean_teacher"),
      baseline="labels_augment",  # the arm every other is compared with, paired over seeds
      labels_per_class=(2, 5, 10),  # labelled examples per class (stratified, per seed)
      seeds=5,                 # config.seed, +1, ...: each redraws the labelled subset
      seed_mode="loop",        # one compiled chunk run per seed (docs/performance.md), or "vmap"
      executor="local",        # local: cells one after another here; ray: Ray tasks (README)
      unlabelled_batch_size=64,  # unlabelled rows per step (next to batch_size labelled)
      unlabelled_weights=(0.3, 1.0, 3.0),  # lambda_u candidates of the unlabelled methods
      learning_rates=(3e-4, 1e-3, 3e-3),   # every method's step sizes (with lambda_u: jointly)
      max_extensions=2,        # steps a grid may grow past an edge its choice sits at
      threshold=0.95,          # fixmatch_style: tau, the confidence a target needs
      ramp_start=0.1,          # pseudo_label's linear ramp of lambda_u starts here...
      ramp_end=0.4,            # ...and ends here (fractions of num_steps); consistency's
                               # Gaussian ramp-up ends here too (and mean teacher's)
      ema_decay=0.99,          # mean_teacher: alpha of the teacher's moving average
  )
  return config
