"""What every command-line entry point shares: quiet library logs, and one line (never a
traceback) with the right exit code for every error a user can cause or meet.

  cli.quiet_library_logs()     absl INFO lines from this package only; libraries (jax's
                               "Unable to initialize backend 'tpu'", orbax, gloo) at WARNING+
  cli.guarded(fn)(*args)       runs fn, turning research.errors (and OSError, Ctrl-C) into
                               "error: <message>" on stderr and sys.exit(code)
  app.run(main, flags_parser=cli.parse_flags)
                               absl's parser with a mistyped flag as one line, exit code 2

Exit codes: 2 for input the run cannot use (config, data, workdir), 3 for a NaN/inf loss, 4 for
a read or write that failed mid-run (disk full, permission lost), 130 for Ctrl-C.
"""
import argparse
import functools
import logging
import os
import re
import sys
from typing import Callable, NoReturn

from research import errors


# Libraries whose errors reach the user as this package's own one-line error (orbax's failed
# writes; asyncio's "Task exception was never retrieved" for the same write).
_REPORTED_BY_US = ("orbax", "asyncio")


class _OnlyOwnInfo(logging.Filter):
  """Keeps INFO lines from this package; libraries (orbax, jax) only at WARNING and above, as
  one line without their traceback: a failure that matters reaches the user as this
  package's own one-line error (e.g. a checkpoint write on a full disk, which orbax also logs
  with 300 lines of traceback)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if f"{os.sep}research{os.sep}" in record.pathname:
      return True
    if record.levelno < logging.WARNING or record.levelno >= logging.ERROR and any(
        f"{os.sep}{lib}{os.sep}" in record.pathname for lib in _REPORTED_BY_US):
      return False
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    record.msg, record.args = record.getMessage().splitlines()[0][:300], None
    return True


def _quiet_thread_exception(args) -> None:
  """Library threads that die (orbax's writers when the disk fills) print nothing: the main
  thread reports the failure in one line. A thread of this package's own gets one line."""
  frames = []
  tb = args.exc_traceback
  while tb is not None:
    frames.append(tb.tb_frame.f_code.co_filename)
    tb = tb.tb_next
  if any(f"{os.sep}research{os.sep}" in f for f in frames):
    print(f"warning: thread {getattr(args.thread, 'name', '?')} stopped: "
          f"{args.exc_type.__name__}: {args.exc_value}", file=sys.stderr)


def _quiet_unraisable(args) -> None:
  """Errors raised in library callbacks (tensorstore's, into a closed asyncio loop, once a
  checkpoint write has failed) print nothing; this package's own get one line."""
  _quiet_thread_exception(argparse.Namespace(
      thread=None, exc_type=args.exc_type, exc_value=args.exc_value,
      exc_traceback=args.exc_traceback))


def quiet_library_logs() -> None:
  """Filters library INFO lines and tracebacks out of absl's handler, and library threads'
  and callbacks' deaths out of stderr (idempotent)."""
  import threading  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _OnlyOwnInfo) for f in handler.filters):
    handler.addFilter(_OnlyOwnInfo())
  threading.excepthook = _quiet_thread_exception
  sys.unraisablehook = _quiet_unraisable
  # Before absl's handler is installed, jax logs through the root logger: same rule there.
  for name in ("jax._src.xla_bridge", "jax._src.distributed", "orbax", "absl.testing"):
    logging.getLogger(name).setLevel(logging.WARNING)


# config.deterministic's XLA flag: XLA reads XLA_FLAGS once, when JAX starts, so research.main
# sets it before importing JAX and the run checks it is there (train._check_deterministic).
DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


def fail(message: str, code: int = 2) -> NoReturn:
  """Prints `error: message` (one line) to stderr and exits with `code`."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


def exit_code(e: BaseException) -> int | None:
  """The exit code for an error this project reports in one line, else None."""
  for kind, code in errors.EXIT_CODES:
    if isinstance(e, kind):
      return code
  return None


def guarded(fn: Callable | None = None, *, resumes: bool = False) -> Callable:
  """fn, with every error a user can cause or meet reported in one line (see module doc).
  resumes: the command resumes from its last checkpoint when rerun (say so in the line)."""
  if fn is None:
    return functools.partial(guarded, resumes=resumes)
  rerun = ("rerun the same command to resume from the last checkpoint" if resumes else
           "rerun the same command")

  @functools.wraps(fn)
  def run(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except KeyboardInterrupt:
      fail(f"interrupted; {rerun}", 130)
    except Exception as e:  # noqa: BLE001  Sorted below; anything else is a bug: re-raised.
      code = exit_code(e)
      if code is not None:
        fail(str(e), code)
      lost = peer_lost(e)
      if lost:
        # Not sys.exit: at exit jax.distributed's shutdown would wait for the dead peer's
        # heartbeat timeout, then abort with a page of C++ logs.
        print(f"error: {lost}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(4)  # pylint: disable=protected-access
      if isinstance(e, OSError):  # From a library, e.g. a full disk under a writer.
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        fail(f"a read or write failed{where}: {errors.describe_os_error(e)}; "
             f"{errors.os_error_fix(e.errno)}, then {rerun}", 4)
      raise
  return run


# What JAX's CPU collectives (Gloo) and its coordination service say when a peer is gone.
_PEER_GONE = ("Gloo ", "Connection reset by peer", "Connection refused", "heartbeat timeout",
              "tasks are unhealthy", "Broken pipe")


def peer_lost(e: BaseException) -> str | None:
  """For a collective that failed because another process of a multi-process run died: the
  one line naming it and how to resume; else None."""
  jax = sys.modules.get("jax")
  if jax is None or type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError"):
    return None
  text = str(e)
  try:
    me, count = jax.process_index(), jax.process_count()
  except Exception:  # noqa: BLE001  The backend itself is gone.
    return None
  if count < 2 or not any(s in text for s in _PEER_GONE):
    return None
  who = f"process {1 - me}" if count == 2 else f"another of the {count} processes"
  cause = re.sub(r"\[[^\]]*/[^\]]*\]\s*", "", " ".join(text.split(": ", 1)[-1].split()))[:120]
  return (f"{who} of this {count}-process run stopped, so process {me} stops too ({cause}); "
          "see the stopped process's log for why, then start every process again with the "
          "same command: the run resumes from its last checkpoint")


def parse_flags(argv: list[str], help_for: str = "the flags") -> list[str]:
  """absl's flag parser for app.run, with a mistyped or malformed flag as one line (exit 2)
  instead of absl's two lines and exit code 1."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
      lines = [lines[0], lines[-1]]  # A flag's parser raised: its own message is the last line.
    fail(" ".join(lines) + f" (pass --help for {help_for})")
