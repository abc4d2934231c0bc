"""Runs one experiment: python -m research.main --config=configs/<name>.py --workdir=DIR.

Any config field can be overridden, e.g. --config.optimizer.learning_rate=0.05; the config is
locked, so a misspelt field is an error. This is the only module that defines flags; the work
is done by research.experiments.run (research.train.train_and_evaluate for standard
training), which a notebook can call directly.
"""
import glob
import importlib.util
import logging as py_logging
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from research import errors
from research import experiments
from research import parallel

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_REPO, "configs", "default.py")

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for metrics.jsonl, config.json, TensorBoard events and "
    "checkpoints (default: a new runs/<config>-<time> directory). An existing run's workdir "
    "resumes it.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0's coordinator, or 'auto' "
    "on Cloud TPU / SLURM. Unset: one process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


class _OnlyOwnInfo(py_logging.Filter):
  """Keeps INFO lines from this package; libraries (orbax, jax) only at WARNING and above."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or f"{os.sep}research{os.sep}" in record.pathname


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _config_path(argv: list[str]) -> str:
  path = _DEFAULT_CONFIG
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  return path.split(":", 1)[0]  # big_vision style "file.py:arg" variants.


def _check_config_file(path: str) -> None:
  if not os.path.isfile(path):
    known = sorted(glob.glob(os.path.join(_REPO, "configs", "*.py")))
    _fail(f"--config={path}: no such config file; available: "
          + ", ".join(os.path.relpath(p) for p in known))


def _unknown_field(argv: list[str]) -> str | None:
  """The first --config.a.b=... override whose path the config lacks, and what exists there."""
  spec = importlib.util.spec_from_file_location("_config", _config_path(argv))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node = config
    for i, key in enumerate(path):
      if not hasattr(node, "keys") or key not in node:
        where = ".".join(["config", *path[:i]])
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(none)"
        return f"{arg.split('=', 1)[0]}: {where} has no field {key!r}; its fields are: {valid}"
      node = node[key]
  return None


def _explain_override_error(argv: list[str], e: Exception) -> str:
  try:
    message = _unknown_field(argv)
  except Exception:  # The config file itself is broken: report the original problem.
    message = None
  return message or f"could not apply the config overrides {argv[1:]}: {e!r}"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with config mistakes turned into one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
      # A config file's get_config raised: its own message is the last line.
      lines = [lines[0], lines[-1]]
    _fail(" ".join(lines) + " (pass --helpfull to list the flags)")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(_explain_override_error(argv, e))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  absl_logging.get_absl_handler().addFilter(_OnlyOwnInfo())
  try:
    parallel.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                          _PROCESS_ID.value)
  except errors.ConfigError as e:
    _fail(str(e))
  config = _CONFIG.value
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(_config_path(sys.argv)))[0]
    workdir = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  try:
    experiments.run(config, workdir)
  except errors.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except (errors.ConfigError, errors.DataError) as e:
    _fail(str(e))


if __name__ == "__main__":
  _check_config_file(_config_path(sys.argv))
  try:
    # ml_collections applies the --config.* overrides while the flag is defined.
    _CONFIG = config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG,
        "Experiment config file (configs/*.py); fields overridable as --config.a.b=value.",
        lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(_explain_override_error(sys.argv, e))
  app.run(main, flags_parser=_parse_flags)
