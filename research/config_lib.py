"""Building blocks for configs/*.py, so every experiment has every field (configs are locked).

A field missing from a config would make `--config.optimizer.clip_value=1` fail as an unknown
key, so the groups below always carry all of their fields with their defaults.
"""
import math
import numbers
from typing import NamedTuple

import ml_collections

from research import errors


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


def augment(**overrides) -> ml_collections.ConfigDict:
  """config.augment: which ops run, in order, and their parameters (research/augment.py)."""
  cfg = ml_collections.ConfigDict()
  cfg.ops = ()                 # applied in order, from: crop, flip, translate, noise; () = none
  cfg.crop_pad = 4             # crop: pad each side by this, then take a random HxW window
  cfg.crop_mode = "constant"   # crop: padding constant (zeros) | edge | reflect
  cfg.flip_prob = 0.5          # flip: probability of mirroring an image left-right
  cfg.max_shift = 2            # translate: integer shifts in [-max_shift, max_shift] per axis
  cfg.noise_std = 0.1          # noise: standard deviation of additive Gaussian noise
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
  cfg.augment = augment()  # training-time augmentation; ops=() is none
  cfg.early_stopping_patience = 0  # > 0: stop after this many evals without a new best
                               # validation loss, and keep the best params (0 = off)
  # Platforms (README, "Where it runs"):
  cfg.matmul_precision = "default"  # default | high | highest: float32 matmul passes on
                               # TPUs/GPUs (default = bfloat16 passes on TPU); CPUs: full
  cfg.compute_dtype = "float32"  # float32 | bfloat16: the model's matmuls and convolutions
                               # (mixed precision: params, optimizer state and loss stay float32)
  cfg.deterministic = False    # GPU: deterministic XLA ops (exact resume; slower); CPU and
                               # TPU runs are deterministic already
  cfg.profile_steps = (0, 0)   # (start, stop): a jax.profiler trace of these steps into
                               # WORKDIR/profile (TensorBoard / Perfetto); (0, 0) = off
  cfg.update(overrides)
  return cfg


# Every top-level choice the standard run reads, by its path in the config: one table, which
# the modules that act on them read (optim, losses, gradients, kernel, models.core) and
# research.main checks before JAX starts.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer.name": ("sgd", "momentum", "nesterov", "adagrad", "adam", "rmsprop"),
    "optimizer.schedule": ("constant", "step", "cosine"),
    "loss.output": ("sigmoid", "softmax"),
    "grad": ("autodiff", "manual"),
    "matmul_precision": ("default", "high", "highest"),
    "compute_dtype": ("float32", "bfloat16"),
    "data.pipeline": ("memory", "streaming"),  # records sets (research/data/records.py)
}


def check_choices(config) -> None:
  """Raises ConfigError naming the first CHOICES field the config has with another value."""
  for path, allowed in CHOICES.items():
    node = config
    for key in path.split("."):
      node = node.get(key, _MISSING) if hasattr(node, "get") else _MISSING
      if node is _MISSING:
        break
    if node is not _MISSING:
      errors.check_choice(path, node, allowed)


class Range(NamedTuple):
  """The values a numeric field may take: an int or a finite real number in [low, high], with
  an open end where low_open / high_open (None = unbounded)."""
  integer: bool
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False

  def describe(self) -> str:
    if not self.integer and self.low == 0 and self.low_open and self.high is None:
      return "a positive number"
    kind = "an integer" if self.integer else "a finite number"
    if self.low is not None and self.high is not None:
      return (f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
              f"{')' if self.high_open else ']'}")
    if self.low is not None:
      return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
    return kind

  def contains(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      return False
    if self.integer and not isinstance(value, numbers.Integral):
      return False
    if not math.isfinite(value):
      return False
    if self.low is not None and (value <= self.low if self.low_open else value < self.low):
      return False
    return self.high is None or (value < self.high if self.high_open else value <= self.high)


_INT_POS, _INT_NONNEG = Range(True, 1), Range(True, 0)
_NONNEG, _POS = Range(False, 0.0), Range(False, 0.0, low_open=True)
_FRACTION = Range(False, 0.0, 1.0, high_open=True)      # [0, 1)
_PROBABILITY = Range(False, 0.0, 1.0)                   # [0, 1]

# Every numeric field the library reads, by its path in the config, with its real range.
# Experiment-specific groups (config.experiment, config.lecture) are checked by their runners.
RANGES: dict[str, Range] = {
    "seed": _INT_NONNEG, "batch_size": _INT_POS, "num_steps": _INT_POS, "log_every": _INT_POS,
    "eval_every": _INT_POS, "eval_batch_size": _INT_POS, "checkpoint_every": _INT_NONNEG,
    "keep_checkpoints": _INT_POS, "early_stopping_patience": _INT_NONNEG,
    "optimizer.learning_rate": _POS, "optimizer.warmup_steps": _INT_NONNEG,
    "optimizer.decay_every": _INT_POS, "optimizer.decay_rate": _POS,
    "optimizer.momentum": _FRACTION, "optimizer.b1": _FRACTION, "optimizer.b2": _FRACTION,
    "optimizer.rms_decay": _FRACTION, "optimizer.adagrad_init": _NONNEG,
    "optimizer.eps": _NONNEG, "optimizer.clip_value": _NONNEG,
    "optimizer.clip_global_norm": _NONNEG, "optimizer.weight_decay": _NONNEG,
    "loss.l2": _NONNEG, "loss.l1": _NONNEG,
    "data.split_seed": _INT_NONNEG, "data.valid_fraction": _FRACTION,
    "data.test_fraction": _FRACTION, "data.seq_len": _INT_POS, "data.stride": _INT_NONNEG,
    "data.image_size": _INT_NONNEG,  # 0: the stored shape; each loader names its sizes
    # Records sets (research/data/records.py; data.pipeline is one of records.PIPELINES).
    "data.resize": _INT_NONNEG, "data.pca_jitter": _NONNEG, "data.num_workers": _INT_NONNEG,
    "data.prefetch": _INT_POS,
    "augment.crop_pad": _INT_NONNEG, "augment.flip_prob": _PROBABILITY,
    "augment.max_shift": _INT_NONNEG, "augment.noise_std": _NONNEG,
}
# A model or data family's fields are declared beside its default config (e.g. the RANGES of
# research/models/<family>.py) and contributed with add_family_ranges.
_FAMILY_RANGES: dict[tuple[str, str], dict[str, Range]] = {}


def add_family_ranges(group: str, name: str, ranges: dict[str, Range]) -> None:
  """Declares the ranges of config.<group>'s fields ({field: Range}) for the family whose
  config.<group>.name is `name`; check_ranges(config) checks them when that family is chosen."""
  _FAMILY_RANGES[(group, name)] = dict(ranges)


def check_ranges(config, ranges: dict[str, Range] | None = None, prefix: str = "config") -> None:
  """Raises ConfigError naming the first field of `ranges` (default: RANGES and the ranges
  the config's chosen families contributed) that the config has and whose value is outside its
  range (NaN, inf and wrong types included)."""
  if ranges is None:
    ranges = dict(RANGES)
    for (group, name), fields in _FAMILY_RANGES.items():
      node = config.get(group) if hasattr(config, "get") else None
      if hasattr(node, "get") and node.get("name") == name:
        ranges.update({f"{group}.{field}": r for field, r in fields.items()})
  for path, allowed in ranges.items():
    node = config
    for key in path.split("."):
      node = node.get(key, _MISSING) if hasattr(node, "get") else _MISSING
      if node is _MISSING:
        break
    if node is not _MISSING and not allowed.contains(node):
      raise errors.ConfigError(f"{prefix}.{path}={node!r} must be {allowed.describe()}")


def group_ranges(name: str) -> dict[str, Range]:
  """{field: Range} of the RANGES entries under `name.` (e.g. "optimizer")."""
  return {path[len(name) + 1:]: r for path, r in RANGES.items() if path.startswith(name + ".")}


def check_group(group, name: str, prefix: str | None = None) -> None:
  """check_ranges for one group on its own (e.g. an optimizer group a runner built, such as
  config.experiment.pretrain_optimizer: prefix names it): the RANGES entries under `name.`."""
  check_ranges(group, group_ranges(name), prefix=prefix or f"config.{name}")


_MISSING = object()


def missing_field(e: Exception, group) -> str | None:
  """The field a ConfigDict lookup failed on (AttributeError or KeyError), if `group` lacks it;
  None for any other error (a bug, to be raised as is)."""
  if not isinstance(e, (AttributeError, KeyError)) or not e.args:
    return None
  name = str(e.args[0]).strip("\"'")
  return name if name.isidentifier() and hasattr(group, "keys") and name not in group else None


def family_switch_error(group_name: str, group, field: str,
                        builder: str | None = None) -> errors.ConfigError:
  """The one line for a family switched by override (e.g. --config.data.name=mnist1d on a
  digits config) whose group lacks a field the new family reads. `builder` is the module (e.g.
  "research.data.mnist") whose config() builds a group for the family, if any."""
  name = group.get("name")
  hint = (f"build config.{group_name} with {builder}.config()" if builder
          else "one that sets all of its fields")
  return errors.ConfigError(
      f"config.{group_name}.name={name!r} needs config.{group_name}.{field}, which this config "
      f"does not have (its {group_name} group was written for another "
      f"{'data set' if group_name == 'data' else group_name}: fields "
      f"{', '.join(sorted(group.keys()))}); start from a config written for {name!r}, or {hint}")
