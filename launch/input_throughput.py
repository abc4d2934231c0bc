"""Is a run input-bound? Images/s of the streaming pipeline's decode + augment against the
images/s the train step consumes, and host memory as the data set grows.

  python launch/input_throughput.py --sizes=1000,10000 --json=/tmp/input.json

Writes synthetic JPEGs (--image_side, default 320x240, ImageNet's typical size class) into an
ImageFolder tree, converts them with launch/make_records.py, then
  1. decode + augment: the paper's pipeline (shorter side to 256, random 224 crop, flip, PCA
     jitter) through research.data.streaming.batches, in-process threads and with
     --workers grain worker processes: images/s;
  2. the train step: steps/s of configs/alexnet_imagenet.py at --step_batch images (full
     size, 224x224) and of its :cpu variant (64x64, a quarter of the width), as images/s;
  3. host memory: the peak RSS of this process and its grain workers while streaming the same
     number of batches from each --sizes set (a pipeline that holds the data grows with it).
The machine's load (os.getloadavg) is printed with the figures: on a shared machine only
figures from one sitting compare.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research import cli  # noqa: E402
from research.data import records  # noqa: E402
from research.data import streaming  # noqa: E402


def make_tree(root: str, n: int, width: int, height: int, classes: int = 10) -> None:
  """n JPEGs of smooth random colour fields (JPEG-compressible like photos), classes folders."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c in range(classes):
    os.makedirs(os.path.join(root, "train", f"c{c:03d}"), exist_ok=True)
  small = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  for i in range(n):
    img = Image.fromarray(small[i]).resize((width, height), Image.BILINEAR)
    img.save(os.path.join(root, "train", f"c{i % classes:03d}", f"{i:06d}.JPEG"), quality=90)


def convert(tree: str, out: str) -> None:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import make_records  # pylint: disable=g-import-not-at-top
  make_records.main(["--format=imagefolder", f"--src={tree}", f"--out={out}",
                     "--splits=train", "--workers=2", "--examples_per_shard=1000"])


def data_config(data_dir: str, workers: int):
  return records.config(data_dir, pipeline="streaming", test_split="", image_size=224,
                        resize=256, random_crop=True, flip=True, pca_jitter=0.1,
                        num_workers=workers)


class PeakRSS:
  """Samples the RSS of this process and its children (grain workers) every 50 ms."""

  def __init__(self):
    import psutil  # pylint: disable=g-import-not-at-top
    self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _total(self) -> int:
    total = self.proc.memory_info().rss
    for child in self.proc.children(recursive=True):
      try:
        total += child.memory_info().rss
      except Exception:  # noqa: BLE001  A worker that just exited.
        pass
    return total

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, self._total())
      self._stop.wait(0.05)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def stream_rate(data_dir: str, workers: int, batch: int, num_batches: int) -> dict:
  """Images/s of read + decode + augment, after one warm-up batch; peak RSS (MiB)."""
  examples = streaming.Examples(data_config(data_dir, workers), seed=0, batch_size=batch)
  with PeakRSS() as rss:
    it = streaming.batches(examples, 0, num_batches + 1, num_workers=workers)
    next(it)  # Workers started, first batch out.
    t0 = time.perf_counter()
    for _ in range(num_batches):
      x, _ = next(it)
    seconds = time.perf_counter() - t0
    streaming.close_batches(it)
  assert x.shape == (batch, 224, 224, 3)
  return {"images_per_sec": batch * num_batches / seconds, "peak_rss_mib": rss.peak / 2**20,
          "n": examples.n, "workers": workers, "batch": batch, "batches": num_batches}


def step_rate(variant: str | None, batch: int, steps: int) -> dict:
  """Images/s one train step consumes: the jitted chunk of the config, on random inputs."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from configs import alexnet_imagenet  # pylint: disable=g-import-not-at-top
  from research import kernel, losses, models, optim  # pylint: disable=g-import-not-at-top
  config = alexnet_imagenet.get_config(variant)
  side, k = config.data.image_size, 1000
  model = models.build(config.model, (side, side, 3), k)
  optimizer = optim.make_optimizer(config.optimizer, config.num_steps)
  loss_fn = losses.make_loss_fn(model, "softmax", 0.0, 1000, k)
  chunk = kernel.make_train_chunk(loss_fn, optimizer, batches_given=True)
  state = kernel.init_state(model, optimizer, jax.random.key(0))
  x = jax.random.normal(jax.random.key(2), (1, batch, side, side, 3))
  y = jnp.zeros((1, batch), jnp.int32)
  t0 = time.perf_counter()
  compiled = chunk.lower(state, x, y).compile()
  compile_s = time.perf_counter() - t0
  state, _ = compiled(state, x, y)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, _ = compiled(state, x, y)
  jax.block_until_ready(state)
  seconds = (time.perf_counter() - t0) / steps
  return {"config": f"alexnet_imagenet{':' + variant if variant else ''}", "side": side,
          "batch": batch, "sec_per_step": seconds, "images_per_sec": batch / seconds,
          "compile_sec": compile_s, "backend": jax.default_backend()}


@cli.guarded
def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="1000,10000", help="data set sizes (images)")
  parser.add_argument("--image_side", default="320x240", help="synthetic JPEG WxH")
  parser.add_argument("--batch", type=int, default=32, help="batch for the input rates")
  parser.add_argument("--batches", type=int, default=20, help="batches timed per rate")
  parser.add_argument("--workers", type=int, default=2, help="grain worker processes")
  parser.add_argument("--step_batch", type=int, default=8,
                      help="batch of the full-size train step (0: skip it)")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--dir", default="", help="scratch directory (default: a new temp one)")
  parser.add_argument("--json", default="", help="write the figures here too")
  args = parser.parse_args(argv)
  width, height = map(int, args.image_side.split("x"))
  sizes = [int(s) for s in args.sizes.split(",")]
  scratch = args.dir or tempfile.mkdtemp(prefix="input_throughput.")
  out = {"load_before": os.getloadavg(), "cpus": os.cpu_count(),
         "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
         "image": args.image_side, "input": [], "step": []}
  for n in sizes:
    tree, rec = os.path.join(scratch, f"tree{n}"), os.path.join(scratch, f"rec{n}")
    if not os.path.exists(os.path.join(rec, records.MANIFEST)):
      t0 = time.perf_counter()
      make_tree(tree, n, width, height)
      convert(tree, rec)
      print(f"{n} images written and converted in {time.perf_counter() - t0:.0f} s",
            flush=True)
    for workers in (0, args.workers):
      r = stream_rate(rec, workers, args.batch, args.batches)
      out["input"].append(r)
      print(f"decode+augment n={n:6d} workers={workers}: {r['images_per_sec']:7.1f} images/s, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
  for variant, batch in (("cpu", 8), (None, args.step_batch)):
    if batch:
      r = step_rate(variant, batch, args.steps)
      out["step"].append(r)
      print(f"train step {r['config']} ({r['side']}x{r['side']}, batch {batch}): "
            f"{r['images_per_sec']:.1f} images/s ({r['sec_per_step']:.2f} s/step, compile "
            f"{r['compile_sec']:.0f} s)", flush=True)
  out["load_after"] = os.getloadavg()
  print(f"load average before {out['load_before']}, after {out['load_after']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
