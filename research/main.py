"""Runs one experiment: python -m research.main --config=configs/<name>.py --workdir=DIR.

Any config field can be overridden, e.g. --config.optimizer.learning_rate=0.05; the config is
locked, so a misspelt field is an error. --print_config prints the resolved config and exits;
--help lists the configs. This is the only module that defines flags; the work is done by
research.experiments.run (research.train.train_and_evaluate for standard training), which a
notebook can call directly. Heavy modules (jax, the runners) are imported only once the
arguments are known to be good, so --help and bad flags answer at once.
"""
import ast
import glob
import importlib.util
import inspect
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from research import cli

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_REPO, "configs", "default.py")

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for metrics.jsonl, config.json, TensorBoard events and "
    "checkpoints (local, or gs:// and other paths orbax can write; default: a new "
    "runs/<config>-<time> directory). An existing run's workdir resumes it.")
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print the resolved config (after --config.* overrides) and exit.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0's coordinator, or 'auto' "
    "on Cloud TPU / SLURM. Unset: one process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def describe_configs() -> list[tuple[str, str]]:
  """(configs/<file>, first line of its docstring) for every config, read without running it."""
  rows = []
  for path in sorted(glob.glob(os.path.join(_REPO, "configs", "*.py"))):
    try:
      with open(path, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError, ValueError):
      doc = "(cannot be read)"
    rows.append((f"configs/{os.path.basename(path)}", doc.strip().splitlines()[0] if doc else ""))
  return rows


def help_text() -> str:
  lines = [
      "Runs one experiment of the lecture's codebase.", "",
      "  python -m research.main [--config=configs/<name>.py[:variant]] "
      "[--config.<field>=<value> ...] [--workdir=DIR]", "",
      "Configs (configs/*.py; default: configs/default.py):"]
  rows = describe_configs()
  width = max((len(name) for name, _ in rows), default=0)
  lines += [f"  {name:<{width}}  {doc}" for name, doc in rows]
  lines += [
      "", "A config's fields and their values, after any overrides, without running it:",
      "  python -m research.main --config=configs/lenet_digits.py --print_config", "",
      "Flags:"]
  for flag in (_WORKDIR, _PRINT_CONFIG, _COORDINATOR, _NUM_PROCESSES, _PROCESS_ID):
    lines.append(f"  --{flag.name}: {flags.FLAGS[flag.name].help}")
  lines += ["  --config: a config file, optionally file.py:variant; "
            "--config.<field>=<value> overrides one field",
            "", "Exit codes: 0 done, 2 bad input (one line names the field or path and the fix), "
            "3 NaN/inf loss, 4 a read or write failed mid-run (rerun to resume).",
            "--helpfull lists absl's own flags too."]
  return "\n".join(lines)


def _config_arg(argv: list[str]) -> str:
  value = _DEFAULT_CONFIG
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      value = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _config_path(argv: list[str]) -> str:
  return _config_arg(argv).split(":", 1)[0]  # big_vision style "file.py:arg" variants.


def _load_config_module(argv: list[str]):
  """Runs the config file's get_config([arg]) once, so that a broken file of any kind is one
  line: missing, unreadable, a syntax error, no get_config, or get_config raising."""
  path = _config_path(argv)
  if not os.path.isfile(path):
    known = ", ".join(name for name, _ in describe_configs())
    cli.fail(f"--config={path}: no such config file; available: {known}")
  arg = _config_arg(argv).split(":", 1)[1] if ":" in _config_arg(argv) else None
  try:
    spec = importlib.util.spec_from_file_location("_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except SyntaxError as e:
    cli.fail(f"--config={path}: line {e.lineno}: {e.msg}; fix the config file")
  except Exception as e:  # noqa: BLE001  Whatever a broken file raises, say so in one line.
    cli.fail(f"--config={path} failed to load ({type(e).__name__}: {e}); fix the config file")
  if not callable(getattr(module, "get_config", None)):
    cli.fail(f"--config={path} has no get_config() function; a config file defines "
             "get_config() -> ml_collections.ConfigDict (see configs/default.py)")
  if arg is not None and not inspect.signature(module.get_config).parameters:
    cli.fail(f"--config={_config_arg(argv)}: {path} has no variants (its get_config() takes "
             f"no argument); pass --config={path}")
  try:
    config = module.get_config(arg) if arg is not None else module.get_config()
  except Exception as e:  # noqa: BLE001
    cli.fail(f"--config={_config_arg(argv)}: get_config raised {type(e).__name__}: {e}")
  if not hasattr(config, "lock"):
    cli.fail(f"--config={path}: get_config() returned a {type(config).__name__}, not an "
             "ml_collections.ConfigDict")
  return config


def _unknown_field(argv: list[str], config) -> str | None:
  """The first --config.a.b=... override whose path the config lacks, and what exists there."""
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


def _parse_flags(argv: list[str]) -> list[str]:
  """cli.parse_flags, with config overrides that do not apply turned into one line too."""
  try:
    return cli.parse_flags(argv, "the configs and flags")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    cli.fail(_unknown_field(argv, _loaded) or
             f"could not apply the config overrides {argv[1:]}: {e!r}")


@cli.guarded(resumes=True)
def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value; "
             "pass --help for the configs and flags)")
  config = _CONFIG.value
  if _PRINT_CONFIG.value:
    print(config)
    return
  if config.get("deterministic"):
    # XLA reads its flags once, when JAX starts: set before the first import of jax.
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), cli.DETERMINISTIC_FLAG]).strip()
  cli.quiet_library_logs()
  from research import experiments  # pylint: disable=g-import-not-at-top  After the flags.
  from research import parallel  # pylint: disable=g-import-not-at-top
  parallel.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(_config_path(sys.argv)))[0]
    workdir = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  experiments.run(config, workdir)


if __name__ == "__main__":
  if any(a in ("--help", "-h", "--helpshort", "-?") for a in sys.argv[1:]):
    print(help_text())
    sys.exit(0)
  _loaded = _load_config_module(sys.argv)
  try:
    # ml_collections applies the --config.* overrides while the flag is defined.
    _CONFIG = config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG,
        "Experiment config file (configs/*.py); fields overridable as --config.a.b=value.",
        lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    cli.fail(_unknown_field(sys.argv, _loaded) or f"could not apply the config overrides: {e!r}")
  app.run(main, flags_parser=_parse_flags)
