"""LeNet-5 vs AlexNet: parameters, forward FLOPs per example, measured training throughput.

  python launch/lenet_vs_alexnet.py [--seconds=5]

FLOPs come from XLA's own cost analysis of the compiled forward pass (multiply-adds count 2),
so they include every layer the model really runs. Throughput is the project's real train
step (research.kernel.make_train_chunk: softmax cross-entropy, momentum SGD) on synthetic
data; the full-size AlexNet is measured at a small batch, since a CPU step is seconds.
"""
import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import alexnet_small  # noqa: E402
from configs import lenet_digits  # noqa: E402
from research import cli  # noqa: E402
from research import config_lib  # noqa: E402
from research import kernel
from research import models  # noqa: E402
from research import optim  # noqa: E402
from research import losses


def full_alexnet_config() -> ml_collections.ConfigDict:
  """The paper's network (two-GPU groups) for 227 x 227 x 3 ImageNet images."""
  cfg = alexnet_small.get_config().model
  cfg.update(dict(conv_channels=(96, 256, 384, 384, 256), kernel_sizes=(11, 5, 3, 3, 3),
                  groups=(1, 2, 1, 2, 2), conv1_stride=4, conv1_padding="VALID",
                  fc_sizes=(4096, 4096)))
  return cfg


ROWS = (  # name, model config, per-example input shape, classes, batch for timing
    ("LeNet-5 (classic, 32x32x1)", lenet_digits.get_config().model, (32, 32, 1), 10, 128),
    ("AlexNet-small (32x32x3)", alexnet_small.get_config().model, (32, 32, 3), 10, 32),
    ("AlexNet (paper, 227x227x3)", full_alexnet_config(), (227, 227, 3), 1000, 4),
)


def forward_flops(model: models.Model, input_shape, batch: int = 1) -> float:
  params = jax.eval_shape(model.init, jax.random.key(0))
  x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
  compiled = jax.jit(lambda p, x: model.apply(p, x)).lower(params, x).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / batch


def throughput(model: models.Model, input_shape, k: int, batch: int, seconds: float) -> float:
  """Training examples per second of the project's jitted step (median of 3 windows)."""
  loss_fn = losses.make_loss_fn(model, "softmax", 0.0, batch, k)
  optimizer = optim.make_optimizer(config_lib.optimizer(learning_rate=0.01), 1)
  chunk = kernel.make_train_chunk(loss_fn, optimizer)
  state = kernel.init_state(model, optimizer, jax.random.key(0))
  x = jax.random.normal(jax.random.key(2), (batch, *input_shape))
  y = jnp.arange(batch, dtype=jnp.int32) % k
  idx = jnp.arange(batch, dtype=jnp.int32)[None]
  state, sums = chunk(state, x, y, idx)  # Compile.
  jax.block_until_ready(sums)
  rates = []
  for _ in range(3):
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 3 or steps == 0:
      state, sums = chunk(state, x, y, idx)
      jax.block_until_ready(sums)
      steps += 1
    rates.append(steps * batch / (time.perf_counter() - start))
  return float(np.median(rates))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=5.0, help="timing per model")
  args = parser.parse_args()
  cli.quiet_library_logs()
  print(f"backend: {jax.default_backend()}, devices: {jax.devices()}\n")
  print("| model | params | forward MFLOPs / example | train examples/s (batch) |")
  print("|---|---:|---:|---:|")
  for name, cfg, shape, k, batch in ROWS:
    model = models.build(cfg, shape, k)
    params = jax.eval_shape(model.init, jax.random.key(0))
    n = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    flops = forward_flops(model, shape)
    rate = throughput(model, shape, k, batch, args.seconds)
    print(f"| {name} | {n:,} | {flops / 1e6:,.1f} | {rate:,.1f} ({batch}) |", flush=True)


if __name__ == "__main__":
  cli.guarded(main)()
