"""Runs one experiment: python -m research.main --config=configs/<name>.py --workdir=DIR.

Any config field can be overridden, e.g. --config.optimizer.learning_rate=0.05; the config is
locked, so a misspelt field is an error. --print_config prints the resolved config and exits;
--help lists the configs. This is the only module that defines flags; the work is done by
research.experiments.run (research.train.train_and_evaluate for standard training), which a
notebook can call directly. Heavy modules (jax, the runners) are imported only once the
arguments are known to be good: config files and their defaults (research.config_lib,
research.model_configs) are JAX-free, so --help, bad flags, misspelt or out-of-range fields and
an unknown model answer at once.
"""
import ast
import glob
import importlib.util
import inspect
import os
import sys
import time

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from research import cli
from research import config_lib
from research import errors
from research import model_configs

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_REPO, "configs", "default.py")

# name -> (kind, default, help): defined afresh, with the config's flag, by each main() call.
FLAGS_SPEC = {
    "workdir": ("string", None, "Directory for metrics.jsonl, config.json, TensorBoard events "
                "and checkpoints (local, or gs:// and other paths orbax can write; default: a "
                "new runs/<config>-<time> directory). An existing run's workdir resumes it."),
    "print_config": ("bool", False, "Print the resolved config (after --config.* overrides) "
                     "and exit."),
    "coordinator_address": ("string", None, "Multi-host: host:port of process 0's "
                            "coordinator, or 'auto' on Cloud TPU / SLURM. Unset: one process."),
    "num_processes": ("integer", None, "Multi-host: number of processes."),
    "process_id": ("integer", None, "Multi-host: this process's index."),
    "ray_address": ("string", None, "With config.experiment.executor='ray': host:port of a "
                    "Ray cluster's head to run the cells on (as RAY_ADDRESS does). Unset: a "
                    "local cluster on this machine's CPUs."),
}
HELP_FLAGS = ("--help", "-h", "--helpshort", "--helpfull", "-?")  # all print help_text()


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
  for name, (_, _, text) in FLAGS_SPEC.items():
    lines.append(f"  --{name}: {text}")
  lines += ["  --config: a config file, optionally file.py:variant; "
            "--config.<field>=<value> overrides one field",
            "", "Exit codes: 0 done, 2 bad input (one line names the field or path and the fix), "
            "3 NaN/inf loss, 4 a read or write failed mid-run (rerun to resume)."]
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


def _unknown_field(argv: list[str], config, switched: str | None = None) -> str | None:
  """The first --config.a.b=... override whose path the config lacks, and what exists there.
  switched: the config file's model name, when --config.model.name replaced its group."""
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node = config
    for i, key in enumerate(path):
      if not hasattr(node, "keys") or key not in node:
        where = ".".join(["config", *path[:i]])
        valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(none)"
        line = f"{arg.split('=', 1)[0]}: {where} has no field {key!r}; its fields are: {valid}"
        if switched is not None and path[0] == "model" and i == 1:
          line += (f" (--config.model.name={config.model.name} replaced the config's "
                   f"{switched} group with {config.model.name}'s defaults; drop this "
                   f"override: {key} belongs to {switched})")
        return line
      node = node[key]
  return None


def _switch_model_family(config, argv: list[str]) -> str | None:
  """--config.model.name=X naming another model than the config file's: config.model becomes
  X's default group (research.model_configs) before the overrides apply, so that the run, its
  config.json and --print_config all have X's fields, an override of one of them applies, and
  an override of a field of the file's family is refused like a misspelt one. Returns the
  file's model name when it switched, else None."""
  name = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config.model.name="):
      name = arg.split("=", 1)[1]
    elif arg == "--config.model.name" and i + 1 < len(argv):
      name = argv[i + 1]
  model = config.get("model")
  if name is None or not hasattr(model, "get") or model.get("name") in (None, name):
    return None
  try:
    config.model = model_configs.default(name)
  except errors.ConfigError as e:
    cli.fail(str(e))
  return model.name


def _flag_values(config, argv: list[str], switched: str | None = None) -> flags.FlagValues:
  """This call's flags: FLAGS_SPEC and the --config.<field> overrides in argv of the loaded
  config (locked, so a misspelt field is an error). A fresh FlagValues, so main() can run more
  than once in a process (tests, notebooks)."""
  fv = flags.FlagValues()
  for name, (kind, default, text) in FLAGS_SPEC.items():
    getattr(flags, f"DEFINE_{kind}")(name, default, text, flag_values=fv)
  try:
    # ml_collections registers a flag per override it finds in sys_argv, here.
    config_flags.DEFINE_config_dict(
        "config", config, "Experiment config file (configs/*.py); fields overridable as "
        "--config.a.b=value.", flag_values=fv, lock_config=True, sys_argv=argv)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    cli.fail(_unknown_field(argv, config, switched) or
             f"could not apply the config overrides {argv[1:]}: {e!r}")
  return fv


def _without_config_file(argv: list[str]) -> list[str]:
  """argv less --config=FILE (read by _load_config_module); --config.<field> overrides stay."""
  out, skip = [], False
  for arg in argv:
    if skip:
      skip = False
    elif arg == "--config":
      skip = True
    elif not arg.startswith("--config="):
      out.append(arg)
  return out


def _parse(fv: flags.FlagValues, argv: list[str], config,
           switched: str | None = None) -> list[str]:
  """Parses argv into fv: a mistyped flag or an override that does not apply is one line."""
  try:
    return fv(_without_config_file(argv))
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
      lines = [lines[0], lines[-1]]  # A flag's parser raised: its own message is the last line.
    cli.fail(_unknown_field(argv, config, switched) or
             " ".join(lines) + " (pass --help for the configs and flags)")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    cli.fail(_unknown_field(argv, config, switched) or
             f"could not apply the config overrides {argv[1:]}: {e!r}")


def main(argv: list[str] | None = None) -> None:
  """`python -m research.main ARGS` as a function (argv[0] is the program's name; default
  sys.argv): --help, --print_config, or the run. Errors are one line on stderr and SystemExit
  with the exit code, as on the command line. The config file is run once."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(help_text())
    return
  config = _load_config_module(argv)
  switched = _switch_model_family(config, argv)
  fv = _flag_values(config, _without_config_file(argv), switched)
  rest = _parse(fv, argv, config, switched)
  if len(rest) > 1:
    cli.fail(f"unexpected arguments: {' '.join(rest[1:])} (flags are written --name=value; "
             "pass --help for the configs and flags)")
  config = fv.config
  if "name" in config.get("model", {}) and config.model.name in model_configs.DEFAULTS:
    config.model = model_configs.resolve(config.model)  # A partial group gets its defaults.
  if fv.print_config:
    print(config)
    return
  if config.get("trainer") == "standard":  # train.validate's checks, before JAX starts.
    try:
      config_lib.check_ranges(config)
      config_lib.check_choices(config)
    except errors.ConfigError as e:
      cli.fail(str(e))
  _run(config, fv, argv)


@cli.guarded(resumes=True)
def _run(config, fv: flags.FlagValues, argv: list[str]) -> None:
  if config.get("deterministic"):
    # XLA reads its flags once, when JAX starts: set before the first import of jax.
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), cli.DETERMINISTIC_FLAG]).strip()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # absl's own flags (logging) at their defaults.
  absl_logging.use_absl_handler()
  absl_logging.set_verbosity(absl_logging.INFO)
  cli.quiet_library_logs()
  from research import experiments  # pylint: disable=g-import-not-at-top  After the flags.
  from research import parallel  # pylint: disable=g-import-not-at-top
  parallel.maybe_initialize_distributed(fv.coordinator_address, fv.num_processes,
                                        fv.process_id)
  if fv.ray_address:
    os.environ["RAY_ADDRESS"] = fv.ray_address  # research/executor.py's ray.init joins it.
  workdir = fv.workdir
  if workdir is None:
    name = os.path.splitext(os.path.basename(_config_path(argv)))[0]
    workdir = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  experiments.run(config, workdir)


if __name__ == "__main__":
  main()
