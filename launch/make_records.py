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
Only --src is read (never the download cache).

Hidden entries (names starting with '.': .DS_Store, ._x.JPEG, .ipynb_checkpoints/) in the
split and class folders are left out, never refused, and listed in one line per split.

--src and --out are local directories (convert locally, then copy OUT to a bucket). --out
must be new or hold no records files, and lie outside --src. The manifest is written last:
an interrupted conversion leaves no records set to read, and a refused or failed one removes
only the files it wrote (and the folders it made).
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
from research import workdir  # noqa: E402
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


def _image_files(split_dir: str, classes: list[str]) -> tuple[list, list, list]:
  """([(path, label)] of the class folders' files, [(path, problem)] of what is there but
  cannot be an image: sub-folders, dangling links, link loops, [class/name] of the hidden
  entries left out), each sorted by name."""
  out, odd, hidden = [], [], []
  for label, name in enumerate(classes):
    folder = os.path.join(split_dir, name)
    if not os.path.isdir(folder):
      continue
    for f in sorted(os.listdir(folder)):
      path = os.path.join(folder, f)
      if f.startswith("."):  # OS/tool metadata (.DS_Store, ._x.JPEG): left out, but listed.
        hidden.append(f"{name}/{f}" + ("/" if os.path.isdir(path) else ""))
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
  return out, odd, hidden


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
  entries, skipped, bad_total, hidden_total = {}, [], 0, 0
  stats = records.Stats(channels)
  pool = multiprocessing.Pool(workers) if workers > 1 else None
  try:
    for split in splits:
      split_dir = os.path.join(src, split)
      if not os.path.isdir(split_dir):
        raise errors.DataError(f"--src={src} has no {split}/ folder; create it or drop "
                               f"{split} from --splits")
      names = sorted(os.listdir(split_dir))
      hidden = [n + ("/" if os.path.isdir(os.path.join(split_dir, n)) else "")
                for n in names if n.startswith(".")]
      unknown = [n for n in names if not n.startswith(".") and n not in classes]
      folders = [n for n in unknown if os.path.isdir(os.path.join(split_dir, n))]
      strays = [n for n in unknown if n not in folders]
      problems = []
      if strays:
        problems.append(f"{split_dir} has files directly in it (not in a class folder): "
                        f"{_some(strays)}; move them into their class folder or remove them")
      if folders:
        problems.append(f"{split_dir} has class folders not in {splits[0]}/: "
                        f"{_some(folders)}; remove them or add them to {splits[0]}/")
      if problems:
        raise errors.DataError("; and ".join(problems))
      found, odd, hidden_in_classes = _image_files(split_dir, classes)
      hidden += hidden_in_classes
      if hidden:  # Never left out unlisted.
        print(f"left out {len(hidden)} hidden entr{'y' if len(hidden) == 1 else 'ies'} in "
              f"{split_dir} (names starting with '.'; rename one to include it): "
              f"{', '.join(hidden)}", file=sys.stderr, flush=True)
        hidden_total += len(hidden)
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
  manifest = records.write_manifest(out, source=os.path.abspath(src), classes=classes,
                                    encoding="image", channels=channels, shape=None,
                                    splits=entries, stats=stats.result(), skipped=skipped)
  return manifest, hidden_total


def _some(names: list[str], shown: int = 5) -> str:
  return ", ".join(names[:shown]) + (f" (and {len(names) - shown} more)"
                                     if len(names) > shown else "")


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


# What a conversion writes into --out: shards, their temporaries, the manifest and its
# temporary (research.workdir.write_bytes).
_OURS = re.compile(r"^(\w[\w.-]*-\d{5}-of-\d{5}\.array_record|\.[\w.-]+-\d{5}\.tmp"
                   r"|manifest\.json|\.manifest\.json\.tmp-\d+)$")
_SPLIT = re.compile(r"^\w[\w.-]*$")  # A plain folder name; shard names are built from it.
# gs://b/x, gs:/b/x (one slash) and gs:b/x (none): URLs, never local folder names.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")  # Two letters or more: C:/x is a folder.
_NO_SLASH = re.compile(r"^(gs|gcs|s3|file|https?|hdfs|az|abfs):(?!/)", re.IGNORECASE)


def _check_local(flag: str, text: str) -> None:
  """The converter reads and writes local folders (os.path): a URL is refused by name."""
  url = _URL.match(text) or _NO_SLASH.match(text)
  if not url:
    return
  scheme = url.group(1).lower()
  if scheme == "file":
    raise errors.ConfigError(f"{flag}={text} is a file: URL; pass the local path itself, "
                             f"e.g. {flag}=/data/dir")
  if flag == "--out":
    raise errors.ConfigError(
        f"--out={text}: the converter writes local directories only; convert into a local "
        f"--out, then copy the folder to the bucket (e.g. gsutil -m cp -r OUT {scheme}://...)")
  raise errors.ConfigError(
      f"{flag}={text}: the converter reads local directories only; copy the data set to a "
      f"local folder (e.g. gsutil -m cp -r {scheme}://... SRC) and pass that as {flag}")


def _parse_splits(text: str) -> list[str]:
  splits = [s.strip() for s in text.split(",") if s.strip()]
  if not splits:
    raise errors.ConfigError(f"--splits={text} names no split; pass the split folders, "
                             "train's first, e.g. --splits=train,val")
  dups = sorted({s for s in splits if splits.count(s) > 1})
  if dups:
    raise errors.ConfigError(f"--splits={text} names {', '.join(dups)} twice; name each split "
                             "once, e.g. --splits=train,val")
  odd = [s for s in splits if not _SPLIT.match(s)]
  if odd:
    raise errors.ConfigError(f"--splits={text}: {', '.join(odd)} is not a plain folder name "
                             "(letters, digits, _ . -; no '/', not starting with '.'); name "
                             "the split folders directly in --src")
  return splits


def _check_src(fmt: str, src: str, idx_name: str) -> None:
  """--src holds what `fmt` reads; only --src is searched (the loaders would also fall back
  to the download cache, converting other data than the user named)."""
  if not os.path.isdir(src):
    what = {"imagefolder": "the split folders (train/, val/, each with one folder per class)",
            "idx": "the four MNIST-format IDX files",
            "cifar10": "the CIFAR-10 binary batches"}[fmt]
    raise errors.DataError(f"--src={src} is not a directory; pass the folder holding {what}")
  if fmt == "idx":
    from research.data import mnist  # pylint: disable=g-import-not-at-top
    missing = [f for f, _ in mnist.FILES.values()
               if not any(os.path.isfile(os.path.join(src, n)) for n in (f, f.removesuffix(".gz")))]
    if missing:
      raise errors.DataError(
          f"--src={src} lacks {', '.join(missing)} (gzipped or not); put the {idx_name} files "
          f"from {mnist.SOURCES[idx_name]['urls'][0]} there, or pass the folder that holds "
          "them as --src")
  elif fmt == "cifar10":
    from research.data import cifar10  # pylint: disable=g-import-not-at-top
    names = (*cifar10.TRAIN_FILES, cifar10.TEST_FILE)
    if not any(all(os.path.isfile(os.path.join(d, n)) for n in names)
               for d in (os.path.join(src, cifar10.DIRNAME), src)):
      raise errors.DataError(
          f"--src={src} lacks the six CIFAR-10 binary batches ({', '.join(names)}), in it or "
          f"in {cifar10.DIRNAME}/; unpack {cifar10.ARCHIVE_URLS[0]} there, or pass the folder "
          f"holding {cifar10.DIRNAME}/ as --src")


def _check_out(out: str, src: str, splits: list[str] | None) -> None:
  """Refuses an --out that would overwrite records files, or that lies in a split folder of
  an imagefolder --src (it would be read as a class)."""
  real_out = os.path.realpath(out)
  for split in splits or ():
    real_split = os.path.realpath(os.path.join(src, split))
    if os.path.commonpath([real_out, real_split]) == real_split:
      raise errors.WorkdirError(f"--out={out} is inside --src's {split}/ folder, where it "
                                "would be read as a class; pass an --out outside it")
  if os.path.lexists(out) and not os.path.isdir(out):
    raise errors.WorkdirError(f"--out={out} exists and is not a directory; pass a new directory")
  if not os.path.isdir(out):
    return
  names = os.listdir(out)
  if records.MANIFEST in names:
    raise errors.WorkdirError(f"--out={out} already holds a records set ({records.MANIFEST}); "
                              "pass a new directory so it is kept")
  held = sorted(n for n in names if n.endswith(".array_record") or _OURS.match(n))
  if held and all(n.startswith(".") for n in held):
    raise errors.WorkdirError(f"--out={out} holds the temporary files of a conversion that "
                              f"stopped ({_some(held)}); delete them, or pass a new directory")
  if held:
    raise errors.WorkdirError(f"--out={out} already holds records files ({_some(held)}); pass "
                              "a new or empty directory so they are kept")


def _prepare_out(out: str) -> tuple[set, list]:
  """Creates --out; returns (the names it held before, the folders made, deepest first)."""
  made = workdir.missing_dirs(out)  # --out is absolute here
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:
    _remove_partial(out, set(), made)
    raise errors.WorkdirError(f"--out={out} cannot be created ({errors.describe_os_error(e)}); "
                              "pass a directory you can write to") from None
  return set(os.listdir(out)), made


def _remove_partial(out: str, before: set, made: list) -> None:
  """A refused or failed conversion removes what it wrote, and only that: the records
  files new since `before`, then the folders it made (each only when empty)."""
  if os.path.isdir(out):
    for name in os.listdir(out):
      if name not in before and _OURS.match(name):
        with contextlib.suppress(OSError):
          os.remove(os.path.join(out, name))
  workdir.remove_unused(made)  # The folders it made, each only when empty.


@cli.guarded
def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--format", choices=FORMATS)
  parser.add_argument("--src", help="the data set's local folder")
  parser.add_argument("--out", help="a new local directory for the records (or an empty one)")
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
  # "--src=~/x" reaches us unexpanded (the shell expands ~ only at a word's start).
  args.src, args.out, args.verify = (a and os.path.expanduser(a)
                                     for a in (args.src, args.out, args.verify))
  if args.verify:
    # One line for a URL whose fsspec package is missing, an unknown scheme or a typo.
    counts = records.verify_files(workdir.as_path(args.verify, flag="--verify"),
                                  flag="--verify")
    print(f"{args.verify}: ok ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return
  if not (args.format and args.src and args.out):
    raise errors.ConfigError("pass --format, --src and --out (or --verify=DIR); see --help")
  if args.examples_per_shard < 1:
    raise errors.ConfigError(f"--examples_per_shard={args.examples_per_shard} must be >= 1")
  # Every refusal comes before --out is made: a refused command leaves nothing behind.
  _check_local("--src", args.src)
  _check_local("--out", args.out)
  args.out = os.path.abspath(args.out)  # "new/../x" is x: the writer never needs new/.
  workdir.as_path(args.out, flag="--out")  # A folder named "gs:" is fine for records.
  splits = _parse_splits(args.splits) if args.format == "imagefolder" else None
  _check_src(args.format, args.src, args.idx_name)
  _check_out(args.out, args.src, splits)
  before, made = _prepare_out(args.out)
  hidden = 0
  try:
    if args.format == "imagefolder":
      manifest, hidden = convert_imagefolder(args.src, args.out, splits, args.on_bad,
                                             args.channels, args.examples_per_shard,
                                             max(1, args.workers))
    elif args.format == "idx":
      manifest = convert_idx(args.src, args.out, args.examples_per_shard, args.idx_name)
    else:
      manifest = convert_cifar10(args.src, args.out, args.examples_per_shard)
  except BaseException:
    _remove_partial(args.out, before, made)
    raise
  counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
  print(f"wrote {args.out}: {len(manifest['classes'])} classes; {counts}"
        + (f"; skipped {len(manifest['skipped'])} unreadable" if manifest["skipped"] else "")
        + (f"; left out {hidden} hidden" if hidden else ""))


if __name__ == "__main__":
  main()
