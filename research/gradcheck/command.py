"""The command line of research.gradcheck: flags, tables, exit code.

  python -m research.gradcheck [--model=NAME[,NAME...]|all] [--batch=32] [--seed=0]
                               [--saturation] [--list]

No --model (or --model=all) checks every registered gradient check; --list prints them.
Exit codes: 0 every array agrees, 1 some array disagrees, 2 bad input.
"""
import sys

from absl import app
from absl import flags

from research import backprop
from research import cli
from research import gradcheck

_MODEL = flags.DEFINE_string(
    "model", "all", "Registered gradient check(s), comma separated; all: every one.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for params, inputs and fd directions.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size B of the checked loss.")
_SATURATION = flags.DEFINE_bool("saturation", False,
                                "Also print the literal vs simplified output-delta table.")
_LIST = flags.DEFINE_bool("list", False, "Print the registered gradient checks and exit.")


def model_names(value: str) -> list[str]:
  """--model's value as names: "all" (or "") is every registered check."""
  names = [n.strip() for n in value.split(",") if n.strip()]
  return gradcheck.names() if names in ([], ["all"]) else names


def _summary(fn, width: int = 90) -> str:
  """A problem builder's docstring as one line (a partial's keywords appended)."""
  base = getattr(fn, "func", fn)
  text = " ".join((base.__doc__ or "").split("\n\n")[0].split())
  text = text.removeprefix("gradcheck.Problem: ")
  if getattr(fn, "keywords", None):
    text += " (" + ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items()) + ")"
  return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def list_text() -> str:
  """Every registered gradient check, one per line with its summary."""
  return "\n".join(f"  {name:<30} {_summary(backprop.problem_builder(name))}".rstrip()
                   for name in gradcheck.names())


def help_text() -> str:
  """--help: the usage, every registered gradient check and the flags."""
  lines = [gradcheck.__doc__.split("\n\n")[0].strip(), "", *__doc__.split("\n\n")[1].splitlines(),
           "", "Models (--model):", list_text(), "", "Flags:"]
  lines += [f"  --{flag.name}: {flags.FLAGS[flag.name].help}"
            for flag in (_MODEL, _BATCH, _SEED, _SATURATION, _LIST)]
  return "\n".join(lines)


@cli.guarded
def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (pass --help for the flags)")
  if _LIST.value:
    print(list_text())
    sys.exit(0)
  names = model_names(_MODEL.value)
  for name in names:
    backprop.problem_builder(name)  # an unknown name: one line naming the choices, exit 2
  sys.exit(gradcheck.run(names, seed=_SEED.value, batch=_BATCH.value,
                         saturation=_SATURATION.value))


def run_main() -> None:
  if any(a in ("--help", "-h", "--helpshort") for a in sys.argv[1:]):
    print(help_text())
    sys.exit(0)
  cli.quiet_library_logs()
  app.run(main, flags_parser=cli.parse_flags)
