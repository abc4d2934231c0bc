"""Building blocks for configs/*.py, so every experiment has every field (configs are locked).

A field missing from a config would make `--config.optimizer.clip_value=1` fail as an unknown
key, so the groups below always carry all of their fields with their defaults.
"""
import ml_collections

from research import augment


def optimizer(**overrides) -> ml_collections.ConfigDict:
  """config.optimizer: see research/optim.py for the order of the chain."""
  cfg = ml_collections.ConfigDict()
  cfg.name = "momentum"        # sgd | momentum | nesterov | adagrad | adam | rmsprop
  cfg.learning_rate = 0.1      # eta, the peak of the schedule
  cfg.schedule = "constant"    # constant | step | cosine (cosine decays to 0 at num_steps)
  cfg.warmup_steps = 0         # linear warmup from 0 to eta before the schedule
  cfg.decay_every = 1000       # step schedule: multiply eta by decay_rate every this many steps
  cfg.decay_rate = 0.1
  cfg.momentum = 0.9           # momentum / nesterov: the decay of the velocity
  cfg.b1 = 0.9                 # adam
  cfg.b2 = 0.999               # adam
  cfg.rms_decay = 0.9          # rmsprop
  cfg.adagrad_init = 0.1       # adagrad: initial sum of squared gradients
  cfg.eps = 1e-8               # adam / rmsprop / adagrad denominator guard
  cfg.clip_value = 0.0         # > 0: clip each gradient element to [-v, v]
  cfg.clip_global_norm = 0.0   # > 0: rescale the gradient so its global L2 norm <= this
  cfg.weight_decay = 0.0       # > 0: decoupled weight decay (not the loss's lambda, see optim.py)
  cfg.update(overrides)
  return cfg


def sklearn_data(name: str, **overrides) -> ml_collections.ConfigDict:
  """config.data for the data sets bundled with scikit-learn."""
  cfg = ml_collections.ConfigDict()
  cfg.name = name              # digits | breast_cancer
  cfg.split_seed = 0           # the train/valid/test split depends on this alone
  cfg.valid_fraction = 0.1
  cfg.test_fraction = 0.2
  # Fitted on the train split only. feature: per input feature; global: one mean/std for
  # all pixels (digits: per-pixel scaling amplifies the near-blank border pixels); none.
  cfg.standardize = "global" if name == "digits" else "feature"
  cfg.image_size = 0           # digits only: 0 = flat 64-vector; 8, 28 or 32 = NHWC image
  cfg.update(overrides)
  return cfg


def loss(output: str, **overrides) -> ml_collections.ConfigDict:
  """config.loss: the data term and the norm penalties of E (see research/losses.py)."""
  cfg = ml_collections.ConfigDict()
  cfg.output = output          # sigmoid: K independent sigma units + cross-entropy; softmax
  cfg.l2 = 0.0                 # lambda in (lambda/2m) sum w^2, m = number of training examples
  cfg.l1 = 0.0                 # lambda_1 in (lambda_1/m) sum |w| (sparsity; weights only)
  cfg.update(overrides)
  return cfg


def base(**overrides) -> ml_collections.ConfigDict:
  """Top-level run fields shared by every experiment."""
  cfg = ml_collections.ConfigDict()
  cfg.trainer = "standard"     # standard | lecture | an experiment (research/experiments/)
  cfg.seed = 0                 # parameter init, dropout masks and batch order
  cfg.batch_size = 32
  cfg.num_steps = 2000
  cfg.log_every = 200          # steps between train log lines (the only host syncs)
  cfg.eval_every = 1000        # steps between validation evaluations
  cfg.eval_batch_size = 1024
  cfg.grad = "autodiff"        # autodiff: jax.value_and_grad; manual: research/backprop (MLP)
  cfg.checkpoint_every = 1000  # steps between checkpoints (and one at the end); 0 = end only
  cfg.keep_checkpoints = 3     # how many of the newest checkpoints to keep
  cfg.augment = augment.config()  # training-time augmentation; ops=() is none
  cfg.early_stopping_patience = 0  # > 0: stop after this many evals without a new best
                               # validation loss, and keep the best params (0 = off)
  cfg.update(overrides)
  return cfg
