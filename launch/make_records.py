"""Converts a data set into ArrayRecord shards + manifest.json (research/data/records.py).

  python launch/make_records.py --format=imagefolder --src=/data/imagenet --out=/data/inet_rec
  python launch/make_records.py --format=idx --src=/data/mnist --out=/data/mnist_rec
  python launch/make_records.py --format=cifar10 --src=/data/cifar --out=/data/cifar_rec
  python launch/make_records.py --verify=/data/inet_rec      # every shard against its CRC-32

imagefolder: SRC/<split>/<class>/<image> for each split in --splits (default train,val):
ImageNet's layout once val/ is sorted into class folders. Classes are train's folder names,
sorted; images keep their own bytes (JPEG stays JPEG) and are decoded once here to check
them. An image Pillow cannot read is reported by path, one line each; --on_bad=fail (the
default) then refuses the conversion, --on_bad=skip leaves them out (the manifest lists
them). idx: the four MNIST-format files (gzipped or not) in SRC, as research.data.mnist
reads them; cifar10: the binary batches in SRC (or SRC/cifar-10-batches-bin), as
research.data.cifar10 reads them; both stored as raw uint8 pixels, splits train and test.

The manifest is written last: an interrupted conversion leaves no records set to read.
Exit codes: 2 for bad input (one line naming the file and the fix), 4 for a failed write.
"""
import argparse
import contextlib
import errno
import multiprocessing
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research import cli  # noqa: E402
from research import errors  # noqa: E402
from research.data import records  # noqa: E402

FORMATS = ("imagefolder", "idx", "cifar10")
ON_BAD = ("fail", "skip")


def _check_image(item):
  """(path, label, channels) -> (path, label, bytes, pixels, problem or None); in a worker."""
  path, label, channels = item
  try:
    with open(path, "rb") as f:
      payload = f.read()
    pixels = np.asarray(records.decode_image(payload, channels, path), np.uint8)
    return path, label, payload, pixels.reshape(*pixels.shape[:2], channels), None
  except errors.DataError as e:
    return path, label, None, None, str(e).split("; ")[0]  # "PATH is not a readable image (...)"
  except OSError as e:
    return path, label, None, None, f"{path} cannot be read ({errors.describe_os_error(e)})"


def _image_files(split_dir: str, classes: list[str]) -> tuple[list, list]:
  """([(path, label)] of the class folders' files, [(path, problem)] of what is there but
  cannot be an image: sub-folders, dangling links, link loops), each sorted by name."""
  out, odd = [], []
  for label, name in enumerate(classes):
    folder = os.path.join(split_dir, name)
    if not os.path.isdir(folder):
      continue
    for f in sorted(os.listdir(folder)):
      path = os.path.join(folder, f)
      if f.startswith("."):
        continue
      if os.path.isfile(path):
        out.append((path, label))
      elif os.path.isdir(path):
        odd.append((path, f"{path} is a folder (images in sub-folders are not read: move "
                          "them into the class folder)"))
      elif os.path.islink(path):
        try:
          os.stat(path)
          what = "a link to something that is not a file"
        except OSError as e:
          what = ("a symbolic link loop" if e.errno == errno.ELOOP else
                  f"a dangling symbolic link (to {os.readlink(path)})")
        odd.append((path, f"{path} is {what}"))
      else:
        odd.append((path, f"{path} is not a file (a socket, FIFO or device)"))
  return out, odd


def convert_imagefolder(src: str, out: str, splits: list[str], on_bad: str, channels: int,
                        examples_per_shard: int, workers: int) -> dict:
  train_dir = os.path.join(src, splits[0])
  if not os.path.isdir(train_dir):
    raise errors.DataError(f"--src={src} has no {splits[0]}/ folder; pass the folder holding "
                           f"{'/, '.join(splits)}/ (each with one folder per class)")
  classes = sorted(d for d in os.listdir(train_dir)
                   if os.path.isdir(os.path.join(train_dir, d)) and not d.startswith("."))
  if not classes:
    raise errors.DataError(f"{train_dir} has no class folders; expected "
                           f"{train_dir}/<class>/<image>")
  entries, skipped, bad_total = {}, [], 0
  stats = records.Stats(channels)
  pool = multiprocessing.Pool(workers) if workers > 1 else None
  try:
    for split in splits:
      split_dir = os.path.join(src, split)
      if not os.path.isdir(split_dir):
        raise errors.DataError(f"--src={src} has no {split}/ folder; create it or drop "
                               f"{split} from --splits")
      unknown = sorted(set(os.listdir(split_dir)) - set(classes) - {".DS_Store"})
      if unknown:
        raise errors.DataError(f"{split_dir} has class folders not in {splits[0]}/: "
                               f"{', '.join(unknown[:5])}; remove them or add them to "
                               f"{splits[0]}/")
      found, odd = _image_files(split_dir, classes)
      files = [(p, label, channels) for p, label in found]
      checked = (pool.imap(_check_image, files, chunksize=16) if pool else
                 map(_check_image, files))
      bad = []
      for path, problem in odd:  # Listed like an unreadable image: never left out silently.
        print(f"{'skipped' if on_bad == 'skip' else 'unreadable'}: {problem}", file=sys.stderr,
              flush=True)
        bad.append(path)

      def good(checked=checked, bad=bad):
        for path, label, payload, pixels, problem in checked:
          if problem is not None:
            print(f"{'skipped' if on_bad == 'skip' else 'unreadable'}: {problem}",
                  file=sys.stderr, flush=True)
            bad.append(path)
            continue
          if not bad or on_bad == "skip":
            yield label, payload, pixels

      entries[split] = records.write_split(out, split, good(), examples_per_shard,
                                           stats if split == splits[0] else None)
      bad_total += len(bad)
      skipped += bad
  finally:
    if pool:
      pool.terminate()
  if bad_total and on_bad == "fail":
    raise errors.DataError(f"{bad_total} unreadable image(s) or entries in {src} (listed "
                           "above); remove or replace them, or rerun with --on_bad=skip to "
                           "leave them out")
  return records.write_manifest(out, source=os.path.abspath(src), classes=classes,
                                encoding="image", channels=channels, shape=None,
                                splits=entries, stats=stats.result(), skipped=skipped)


def convert_arrays(out: str, source: str, classes, arrays: dict, examples_per_shard: int) -> dict:
  """arrays: split -> (x_NxHxWxC uint8, y_N): raw records."""
  stats = records.Stats(arrays["train"][0].shape[-1])
  entries = {}
  for split, (x, y) in arrays.items():
    examples = ((int(label), np.ascontiguousarray(img).tobytes(), img)
                for img, label in zip(x, y))
    entries[split] = records.write_split(out, split, examples, examples_per_shard,
                                         stats if split == "train" else None)
  shape = arrays["train"][0].shape[1:]
  return records.write_manifest(out, source=source, classes=classes, encoding="raw",
                                channels=shape[-1], shape=shape, splits=entries,
                                stats=stats.result(), skipped=[])


def convert_idx(src: str, out: str, examples_per_shard: int, name: str = "mnist") -> dict:
  from research.data import mnist  # pylint: disable=g-import-not-at-top
  x_train, y_train, x_test, y_test = mnist.load_idx_arrays(name, src, download_missing=False)
  arrays = {"train": (x_train[..., None].astype(np.uint8), y_train),
            "test": (x_test[..., None].astype(np.uint8), y_test)}
  return convert_arrays(out, os.path.abspath(src), [str(i) for i in range(10)], arrays,
                        examples_per_shard)


def convert_cifar10(src: str, out: str, examples_per_shard: int) -> dict:
  from research.data import cifar10  # pylint: disable=g-import-not-at-top
  d = cifar10.batch_dir(src, download_missing=False)
  train = [cifar10.read_batch(d / f) for f in cifar10.TRAIN_FILES]
  arrays = {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "test": cifar10.read_batch(d / cifar10.TEST_FILE)}
  return convert_arrays(out, os.path.abspath(src), list(cifar10.CLASSES), arrays,
                        examples_per_shard)


_SHARD = re.compile(r"^(\w[\w.-]*-\d{5}-of-\d{5}\.array_record|\.[\w.-]+-\d{5}\.tmp)$")


def _remove_partial(out: str, created: bool) -> None:
  """A refused or failed conversion leaves no shards in --out (nor --out, if it made it)."""
  if not os.path.isdir(out):
    return
  for name in os.listdir(out):
    if _SHARD.match(name):
      with contextlib.suppress(OSError):
        os.remove(os.path.join(out, name))
  if created:
    with contextlib.suppress(OSError):
      os.rmdir(out)  # Only when empty.


def _prepare_out(out: str) -> None:
  if os.path.exists(os.path.join(out, records.MANIFEST)):
    raise errors.WorkdirError(f"--out={out} already holds a records set ({records.MANIFEST}); "
                              "pass a new directory so it is kept")
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:
    raise errors.WorkdirError(f"--out={out} cannot be created ({errors.describe_os_error(e)}); "
                              "pass a directory you can write to") from None


@cli.guarded
def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--format", choices=FORMATS)
  parser.add_argument("--src", help="the data set's folder")
  parser.add_argument("--out", help="a new directory for the records")
  parser.add_argument("--splits", default="train,val",
                      help="imagefolder: the split folders, train's first (default train,val)")
  parser.add_argument("--on_bad", choices=ON_BAD, default="fail",
                      help="imagefolder: refuse (fail) or leave out (skip) unreadable images")
  parser.add_argument("--channels", type=int, choices=(1, 3), default=3,
                      help="imagefolder: 3 = RGB, 1 = grayscale")
  parser.add_argument("--idx_name", default="mnist", choices=("mnist", "fashion_mnist"))
  parser.add_argument("--examples_per_shard", type=int, default=1000)
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="imagefolder: processes decoding images to check them")
  parser.add_argument("--verify", metavar="DIR",
                      help="check a records directory against its manifest and CRC-32s")
  args = parser.parse_args(argv)
  if args.verify:
    counts = records.verify_files(args.verify)
    print(f"{args.verify}: ok ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return
  if not (args.format and args.src and args.out):
    raise errors.ConfigError("pass --format, --src and --out (or --verify=DIR); see --help")
  if args.examples_per_shard < 1:
    raise errors.ConfigError(f"--examples_per_shard={args.examples_per_shard} must be >= 1")
  created = not os.path.exists(args.out)
  _prepare_out(args.out)
  try:
    if args.format == "imagefolder":
      splits = [s for s in args.splits.split(",") if s]
      manifest = convert_imagefolder(args.src, args.out, splits, args.on_bad, args.channels,
                                     args.examples_per_shard, max(1, args.workers))
    elif args.format == "idx":
      manifest = convert_idx(args.src, args.out, args.examples_per_shard, args.idx_name)
    else:
      manifest = convert_cifar10(args.src, args.out, args.examples_per_shard)
  except BaseException:
    _remove_partial(args.out, created)
    raise
  counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
  print(f"wrote {args.out}: {len(manifest['classes'])} classes; {counts}"
        + (f"; skipped {len(manifest['skipped'])} unreadable" if manifest["skipped"] else ""))


if __name__ == "__main__":
  main()
