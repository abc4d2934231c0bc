"""The optimizer as one optax chain built from config.optimizer.

Order of the chain (written down once, here):
  1. clip each gradient element to [-clip_value, clip_value]            (optax.clip)
  2. clip the global norm of the whole gradient to clip_global_norm    (optax.clip_by_global_norm)
  3. the method's own transform: momentum / Nesterov / Adagrad / Adam / RMSProp
  4. decoupled weight decay: add weight_decay * w to the *update*      (optax.add_decayed_weights)
  5. scale by -eta(t), the learning-rate schedule

Step 4 comes after the moment accumulators, so it is decoupled (AdamW-style): it never enters
Adagrad's or Adam's denominators. That is different from the lecture's lambda/2m L2 term in the
loss (config.loss.l2), whose gradient (lambda/m) w flows through steps 1-3 like any gradient. For
plain SGD the two coincide when weight_decay = lambda/m.
"""
import optax

from research import config_lib
from research import errors

OPTIMIZERS = config_lib.CHOICES["optimizer.name"]
SCHEDULES = config_lib.CHOICES["optimizer.schedule"]


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
  """eta(t): `cfg.schedule` after `cfg.warmup_steps` of linear warmup from 0."""
  errors.check_choice("optimizer.schedule", cfg.schedule, SCHEDULES)
  config_lib.check_group(cfg, "optimizer")
  eta = cfg.learning_rate
  warmup = int(cfg.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(eta)
  elif cfg.schedule == "step":
    main = optax.exponential_decay(eta, transition_steps=int(cfg.decay_every),
                                   decay_rate=cfg.decay_rate, staircase=True)
  else:
    main = optax.cosine_decay_schedule(eta, decay_steps=decay_steps)
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, eta, warmup), main], [warmup])


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
  """Builds the chain documented at the top of this module from config.optimizer."""
  errors.check_choice("optimizer.name", cfg.name, OPTIMIZERS)
  config_lib.check_group(cfg, "optimizer")  # Runners build groups outside train.validate.
  parts = []
  if cfg.clip_value > 0:
    parts.append(optax.clip(cfg.clip_value))
  if cfg.clip_global_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.clip_global_norm))
  parts.append(_method(cfg))
  if cfg.weight_decay > 0:
    parts.append(optax.add_decayed_weights(cfg.weight_decay))
  parts.append(optax.scale_by_learning_rate(make_schedule(cfg, total_steps)))
  return optax.chain(*parts)


def _method(cfg) -> optax.GradientTransformation:
  if cfg.name == "sgd":
    return optax.identity()
  if cfg.name in ("momentum", "nesterov"):
    return optax.trace(decay=cfg.momentum, nesterov=cfg.name == "nesterov")
  if cfg.name == "adagrad":
    return optax.scale_by_rss(initial_accumulator_value=cfg.adagrad_init, eps=cfg.eps)
  if cfg.name == "adam":
    return optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  return optax.scale_by_rms(decay=cfg.rms_decay, eps=cfg.eps)
