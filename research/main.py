"""Runs one experiment: python -m research.main --config=configs/<name>.py --workdir=DIR.

Any config field can be overridden, e.g. --config.optimizer.learning_rate=0.05; the config is
locked, so a misspelt field is an error. This is the only module that defines flags.
"""
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from research import errors
from research import train

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO, "configs", "default.py"),
    "Experiment config file (configs/*.py); fields overridable as --config.a.b=value.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for metrics.jsonl and config.json (default: a new "
    "runs/<config>-<time> directory).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  try:
    train.train_and_evaluate(_CONFIG.value, workdir)
  except (errors.ConfigError, errors.DataError, errors.NonFiniteLossError) as e:
    logging.flush()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2 if not isinstance(e, errors.NonFiniteLossError) else 3)


if __name__ == "__main__":
  app.run(main)
