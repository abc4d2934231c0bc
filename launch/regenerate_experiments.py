"""Regenerates docs/experiments.md's tables from the experiments' own results, so the doc cannot
drift from them.

  python launch/regenerate_experiments.py --workdir=/tmp/experiments [--sections=multitask,...]
  python launch/regenerate_experiments.py --workdir=/tmp/experiments --check
  python launch/regenerate_experiments.py --workdir=/tmp/experiments --executor=ray \
      [--ray_address=HOST:PORT] [--jobs=3]

Each section runs under the experiment harness as a user runs it: a fresh
`python -m research.main --config=configs/<config> --workdir=WORKDIR/<section>` process (a
finished workdir is reused, an interrupted one resumes its finished cells); --jobs runs that
many at once (on one Ray cluster, their cells share its workers). Its results.md
(the protocol note and the tables, rendered from results.json) then replaces the block between
`<!-- results:<section> -->` and `<!-- /results:<section> -->` in docs/experiments.md. Prints
each section's wall time and the total, and the count of comparisons and survivors (the
doc's `<!-- comparisons -->` line, and its `<!-- edges -->` list of the choices still at a grid
edge, both rewritten when every section runs). --check changes nothing
and exits 1 when a block differs from its results.md beyond reproduction: choices must match
exactly, numbers within research/experiments/stats.py's tolerance, and a conclusion may flip
only where the doc or the results mark it borderline (†).
"""
import argparse
import concurrent.futures
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `python launch/regenerate_experiments.py` puts only launch/ on it
DOC = os.path.join(REPO, "docs", "experiments.md")

# section -> config; the sections whose runners run under research.experiments.harness.
SECTIONS = {
    "regularization": "exp_regularization.py",
    "dropout_ensemble": "exp_dropout_ensemble.py",
    "weight_sharing": "exp_weight_sharing.py",
    "weight_sharing_mnist": "exp_weight_sharing.py:mnist_subset",
    "sparsity": "exp_sparse_representations.py",
    "tangent_prop": "exp_tangent_prop.py",
    "adversarial": "exp_adversarial.py",
    "approximation": "exp_approximation.py",
    "batch_size": "exp_batch_size.py",
    "curvature": "exp_curvature.py",
    "multitask": "exp_multitask.py",
    "pretraining": "exp_pretraining.py",
    "pretraining_adam": "exp_pretraining.py:digits_adam",
    "pretraining_mnist": "exp_pretraining.py:mnist_subset",
    "semi_supervised": "exp_semi_supervised.py",
    "lecture_procedure": "exp_lecture_procedure.py",
    "lecture_procedure_cancer": "exp_lecture_procedure.py:breast_cancer",
    "skipgram": "exp_skipgram.py",
    "surrogate": "exp_surrogate.py:macro_f1",
    "surrogate_binary_f1": "exp_surrogate.py:binary_f1",
    "surrogate_binary_f1_cancer": "exp_surrogate.py:binary_f1_cancer",
    "surrogate_mae": "exp_surrogate.py:mae",
    "surrogate_bleu": "exp_surrogate.py:bleu",
}

# The longest sections (minutes each), started first when sections run at once.
LONG = ("tangent_prop", "semi_supervised", "regularization", "weight_sharing_mnist",
        "skipgram", "adversarial", "pretraining_mnist")

# The doc's line counting every comparison (rewritten when every section runs).
COUNT = re.compile(r"(<!-- comparisons -->\n)(.*?)(<!-- /comparisons -->)", re.DOTALL)


def block(section: str) -> re.Pattern:
  return re.compile(rf"(<!-- results:{section} -->\n)(.*?)(<!-- /results:{section} -->)",
                    re.DOTALL)


class Unreadable(Exception):
  """A section's results file that cannot be read (the message names it and the fix)."""


def _read(path: str, parse=None):
  """path's text (or parse(file)); Unreadable, one line, for a directory, an unreadable file,
  bytes that are not UTF-8 or (with parse) a parse error."""
  try:
    with open(path, encoding="utf-8") as f:
      return parse(f) if parse else f.read()
  except (OSError, UnicodeDecodeError, ValueError) as e:
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
    raise Unreadable(f"{path} cannot be read ({why}); remove it and rerun without --check: "
                     "the section writes it again from its stored cells") from None


def results_block(workdir: str) -> str:
  """results.md without its title: the notes, the protocol note and the tables."""
  lines = _read(os.path.join(workdir, "results.md")).splitlines()
  if lines and lines[0].startswith("# "):
    lines = lines[1:]
  return "\n".join(lines).strip() + "\n"


def results_blocks(workdir: str) -> list[dict]:
  """The harness results blocks in workdir/results.json (a block, or blocks nested in it)."""
  from research.experiments import stats  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):  # A section that writes results.md alone counts nothing.
    return []
  return stats.blocks_in(_read(path, json.load))


def comparisons_line(workdirs) -> str:
  """'This document makes N comparisons; M survive Holm correction ...' over the sections'
  results.json files."""
  from research.experiments import stats  # pylint: disable=g-import-not-at-top
  n, m = stats.count(b for w in workdirs for b in results_blocks(w))
  return (f"This document makes {n} comparisons (each method against its section's baseline, "
          f"field by field); {m} survive Holm correction within their results block and the "
          "wider of the two intervals.\n")


# The doc's list of choices still at a grid edge (rewritten when every section runs).
EDGES = re.compile(r"(<!-- edges -->\n)(.*?)(<!-- /edges -->)", re.DOTALL)


def edges_text(workdirs) -> str:
  """The choices that remain at a grid edge over the sections' results.json files
  (stats.edges), as the doc's list."""
  from research.experiments import stats  # pylint: disable=g-import-not-at-top
  lines = stats.edges(b for w in workdirs for b in results_blocks(w))
  head = (f"{len(lines)} choice(s) remain at a grid edge after extension (budget: the "
          "extensions ran out; bound: the axis's bound; sweep: a swept strength):\n")
  return head + "".join(f"- {line}\n" for line in lines) if lines else (
      "No choice remains at a grid edge.\n")


def differences(doc: str, section: str, text: str) -> list[str]:
  """--check: how the doc's block differs from text beyond reproduction (stats.compare_blocks);
  [] when it matches."""
  from research.experiments import stats  # pylint: disable=g-import-not-at-top
  m = block(section).search(doc)
  if not m:
    raise ValueError(f"docs/experiments.md has no <!-- results:{section} --> block")
  return stats.compare_blocks(m.group(2), text)


def splice(doc: str, section: str, text: str) -> str:
  """doc with the section's results block replaced by text; ValueError if it has no block."""
  pattern = block(section)
  if not pattern.search(doc):
    raise ValueError(f"docs/experiments.md has no <!-- results:{section} --> block")
  return pattern.sub(lambda m: m.group(1) + text + m.group(3), doc, count=1)


class SectionFailed(Exception):
  """A section's process failed (or could not start); the message names it and its output."""


# The sections' live processes, so that an interrupted regeneration stops every one of them.
_children: set = set()
_children_lock = threading.Lock()
_stopping = threading.Event()


def _spawn(cmd: list[str], out) -> int:
  """Runs cmd (stdout and stderr into the file out, or the terminal's); its exit code."""
  with _children_lock:
    if _stopping.is_set():
      return -signal.SIGTERM
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out,
                            stderr=None if out is None else subprocess.STDOUT)
    _children.add(proc)
  try:
    return proc.wait()
  except BaseException:  # Interrupted: the section must not outlive the regeneration.
    proc.terminate()
    proc.wait()
    raise
  finally:
    with _children_lock:
      _children.discard(proc)


def _stop_children() -> None:
  """SIGTERM to every live section (each resumes its finished cells on the next run)."""
  with _children_lock:
    _stopping.set()
    for proc in _children:
      proc.terminate()


def _why(returncode: int, log: str | None) -> str:
  """'exit 3' or 'killed by SIGKILL', plus the log's last `error:` line (else its last line)."""
  why = (f"killed by {signal.Signals(-returncode).name}" if returncode < 0
         else f"exit {returncode}")
  if log is None:  # The terminal has the output.
    return why
  try:
    with open(log, "rb") as f:
      f.seek(max(0, os.path.getsize(log) - 65536))
      lines = [x.strip() for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
  except OSError:  # The log is gone: the exit code is all there is.
    return why
  errors = [x for x in lines if x.startswith("error:")]
  last = (errors or lines or [""])[-1]
  return f"{why}; its output: {log}" + (f", ending: {last}" if last else "")


def run_section(section: str, workdir: str, executor: str = "local",
                ray_address: str | None = None, log: str | None = None) -> float:
  """Runs (or reuses) the section's experiment; returns the wall time in seconds. Its output
  goes to the terminal, or is appended to the file `log` (after a line naming the command)
  when sections run at once; SectionFailed when the process fails or cannot start."""
  cmd = [sys.executable, "-m", "research.main", f"--config=configs/{SECTIONS[section]}",
         f"--workdir={workdir}", f"--config.experiment.executor={executor}"]
  if ray_address:
    cmd.append(f"--ray_address={ray_address}")
  t0 = time.time()
  try:
    if log is None:
      returncode = _spawn(cmd, None)
    else:
      with open(log, "a", encoding="utf-8") as out:
        out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        out.flush()
        returncode = _spawn(cmd, out)
  except OSError as e:
    raise SectionFailed(f"{section} could not start ({e.strerror}: {e.filename or cmd[0]})")
  if returncode:
    raise SectionFailed(f"{section} failed ({_why(returncode, log)}): {shlex.join(cmd)}")
  return time.time() - t0


def run_sections(sections: list[str], root: str, jobs: int, executor: str,
                 ray_address: str | None) -> dict[str, float]:
  """Runs the sections, `jobs` at a time, printing each one's wall time (or failure) as it
  finishes; section -> seconds. After a failure no further section starts and the running
  ones finish (their cells are kept either way); then SectionFailed naming every failed
  section and every one not started."""
  seconds, failed, lock = {}, [], threading.Lock()

  def one(section, log=None):
    if failed or _stopping.is_set():
      return
    try:
      t = run_section(section, os.path.join(root, section), executor, ray_address, log)
    except SectionFailed as e:
      with lock:
        failed.append((section, e))
        print(f"{section}: failed", flush=True)
      return
    with lock:
      seconds[section] = t
      print(f"{section}: {t:.0f} s", flush=True)

  if jobs == 1:
    for section in sections:
      one(section)
  else:
    try:
      os.makedirs(root, exist_ok=True)
    except OSError as e:
      raise SectionFailed(f"--workdir={root} cannot be created ({e.strerror})") from e
    # Longest first, so that no long section starts last and runs alone (order only: each
    # section's results do not depend on what runs beside it).
    order = sorted(sections, key=lambda s: s not in LONG)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
      for future in [pool.submit(one, s, os.path.join(root, f"{s}.log")) for s in order]:
        future.result()
    except BaseException:  # Interrupted: stop the running sections before waiting for them.
      _stop_children()
      raise
    finally:
      pool.shutdown(wait=True, cancel_futures=True)
  if failed:
    left = [s for s in sections if s not in seconds and s not in dict(failed)]
    raise SectionFailed("; ".join(str(e) for _, e in failed) + (
        f"; not started: {', '.join(left)}" if left else ""))
  return {s: seconds[s] for s in sections}


def _interrupted(signum, frame):
  del frame
  raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", help="one subdirectory per section")
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help=f"comma-separated, of: {', '.join(SECTIONS)}")
  parser.add_argument("--check", action="store_true",
                      help="only compare the doc with the results; exit 1 on a difference")
  parser.add_argument("--executor", default="local", choices=("local", "ray"),
                      help="config.experiment.executor for every section (the tables are the "
                      "same either way)")
  parser.add_argument("--ray_address", default=None,
                      help="with --executor=ray: join this cluster (host:port, or RAY_ADDRESS) "
                      "instead of starting one per section")
  parser.add_argument("--jobs", type=int, default=1,
                      help="sections run at once, each its own process (with --executor=ray "
                      "all joining the cluster at --ray_address); each one's output goes to "
                      "WORKDIR/<section>.log")
  args = parser.parse_args(argv)
  if args.jobs < 1:
    return _fail(f"--jobs={args.jobs}: give 1 or more sections to run at once")
  if args.jobs > 1 and args.executor == "ray" and (
      args.ray_address or os.environ.get("RAY_ADDRESS") or "local") == "local":
    return _fail(f"--jobs={args.jobs} with --executor=ray needs one cluster for every section: "
                 "start it (ray start --head --num-cpus=N) and pass --ray_address=HOST:PORT, "
                 "else each section would start a cluster of its own")
  sections = [s for s in args.sections.split(",") if s]
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown or not sections:
    print(f"error: --sections={args.sections}: unknown {', '.join(unknown) or '(none given)'}; "
          f"choose from {', '.join(SECTIONS)}", file=sys.stderr)
    return 2
  if not args.workdir:
    return _fail("--workdir=DIR is required" + (
        "; --check compares the doc with a regeneration's results, so it needs one first: "
        "python launch/regenerate_experiments.py --workdir=DIR, then --check --workdir=DIR"
        if args.check else ", e.g. --workdir=/tmp/experiments (one subdirectory per section)"))
  doc = _read_doc(args.check)
  if not isinstance(doc, str):
    return doc
  missing = [s for s in sections if not block(s).search(doc)]
  if missing:
    return _fail(f"docs/experiments.md has no <!-- results:{missing[0]} --> block; add the "
                 "markers around the section's tables")
  if args.check:
    for section in sections:
      if not os.path.exists(os.path.join(args.workdir, section, "results.md")):
        return _fail(f"{os.path.join(args.workdir, section)}/results.md is missing; --check "
                     "needs a regeneration first: run the same command without --check")
  else:
    t0 = time.time()
    _stopping.clear()
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
      seconds = run_sections(sections, args.workdir, args.jobs, args.executor,
                             args.ray_address)
    except SectionFailed as e:
      return _fail(f"{e}. The finished sections and cells are kept in {args.workdir}: fix "
                   "the cause and rerun the same command (they are reused)", 1)
    except KeyboardInterrupt:
      _stop_children()
      return _fail(f"interrupted; the finished sections and cells are kept in {args.workdir}: "
                   "rerun the same command to go on (they are reused)", 130)
    finally:
      signal.signal(signal.SIGTERM, previous)
    wall = time.time() - t0
  try:
    doc, stale, problems = _splice_all(doc, sections, args.workdir, args.check)
    workdirs = [os.path.join(args.workdir, s) for s in sections]
    line = "" if args.check else comparisons_line(workdirs)
    edges = "" if args.check else edges_text(workdirs)
  except Unreadable as e:
    return _fail(str(e))
  if args.check:
    bad = [s for s in sections if problems[s]]
    for section in bad:
      for line in problems[section]:
        print(f"{section}: {line}")
    if bad:
      print(f"docs/experiments.md differs from the results of: {', '.join(bad)}")
      return 1
    moved = [s for s in stale if s not in bad]
    print("docs/experiments.md matches the results" + (
        f" (within the tolerance in: {', '.join(moved)})" if moved else ""))
    return 0
  print(line.strip())
  if set(sections) == set(SECTIONS) and COUNT.search(doc):
    doc = COUNT.sub(lambda m: m.group(1) + line + m.group(3), doc, count=1)
    doc = EDGES.sub(lambda m: m.group(1) + edges + m.group(3), doc, count=1)
  try:
    with open(DOC, "r+", encoding="utf-8") as f:  # Checked writable before the sections ran.
      f.write(doc)
      f.truncate()
  except OSError as e:
    fix = ("restore it (git checkout -- docs/experiments.md)" if isinstance(
        e, IsADirectoryError) else "make the doc writable")
    return _fail(f"{DOC} cannot be written ({e.strerror}); the sections' results are kept in "
                 f"{args.workdir}: {fix} and rerun the same command (finished sections are "
                 "reused)", 4)
  at_once = f", {args.jobs} at once, {sum(seconds.values()):.0f} s of section time" if (
      args.jobs > 1) else ""
  print(f"total: {wall:.0f} s for {len(sections)} section(s){at_once}; updated: "
        f"{', '.join(stale) or 'nothing'}")
  return 0


def _splice_all(doc: str, sections, root: str, check: bool):
  """(doc with every section's block replaced, the sections whose block changed, and with
  check each section's differences beyond reproduction); Unreadable for a damaged file."""
  stale, problems = [], {}
  for section in sections:
    text = results_block(os.path.join(root, section))
    new = splice(doc, section, text)
    if check:
      problems[section] = differences(doc, section, text)
    if new != doc:
      stale.append(section)
    doc = new
  return doc, stale, problems


def _fail(message: str, code: int = 2) -> int:
  print(f"error: {message}", file=sys.stderr)
  return code


def _read_doc(check: bool):
  """The doc's text, checked writable unless --check, before any section runs (so no work
  is done for a doc that cannot take it); else the exit code, after one line."""
  try:
    with open(DOC, "r" if check else "r+", encoding="utf-8") as f:
      return f.read()
  except FileNotFoundError:
    return _fail(f"{DOC} is missing; restore it (git checkout -- docs/experiments.md): its "
                 "<!-- results:<section> --> markers say where each section's tables go")
  except (IsADirectoryError, UnicodeDecodeError) as e:
    why = "a directory" if isinstance(e, IsADirectoryError) else "not UTF-8 text"
    return _fail(f"{DOC} is {why}; restore it (git checkout -- docs/experiments.md) and "
                 "rerun: no section was run")
  except OSError as e:
    how, able, mode = ("read", "readable", "r") if check else ("written", "writable", "rw")
    return _fail(f"{DOC} cannot be {how} ({e.strerror}); make it {able} "
                 f"(chmod u+{mode} {DOC}) and rerun: no section was run")


if __name__ == "__main__":
  sys.exit(main())
