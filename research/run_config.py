"""A run's identity in its workdir (beside research.workdir, which claims the workdir):

  config_dict(config)                  the config as JSON data: the run's identity
  write_config(config, workdir)        workdir/config.json, with what the machine resolved
  saved_config(workdir)                that file back (None if absent)
  check_same_config(config, saved, workdir)   refuses to mix another config's records in
"""
import json

import jax

from research import config_lib
from research import errors
from research import models
from research import workdir as workdir_lib


def resolved(config) -> dict:
  """What the config leaves to the machine, as this run resolved it (config.json records it
  beside the config; it is not part of the run's identity)."""
  out = {"backend": jax.default_backend(), "devices": jax.device_count(),
         "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__}
  if "conv_impl" in config.model:
    out["model.conv_impl"] = models.conv_impl(config.model)
  return out



def config_dict(config) -> dict:
  """The config as plain JSON data: what identifies a run."""
  return json.loads(config.to_json_best_effort())


def write_config(config, workdir) -> None:
  """workdir/config.json (process 0), written whole or not at all: the config, and under
  "resolved" what it left to the machine (backend, conv_impl "auto", ...)."""
  if jax.process_index() == 0:
    record = dict(config_dict(config), resolved=resolved(config))
    workdir_lib.write_text(workdir_lib.as_path(workdir) / "config.json",
                           json.dumps(record, indent=2, sort_keys=True) + "\n")


def saved_config(workdir) -> dict | None:
  """workdir/config.json as a dict, None if absent; WorkdirError if it is not valid JSON."""
  path = workdir_lib.as_path(workdir) / "config.json"
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    raise errors.WorkdirError(f"{path} is not valid JSON ({e}); restore it, or delete it to "
                              "resume from the config kept with the checkpoints") from None


# Fields a resumed run may change: where its work runs, not what it computes.
RUN_ONLY_FIELDS = ("config.experiment.executor",)


def check_same_config(config, saved: dict | None, workdir) -> None:
  """Resuming with a different config would silently mix two experiments: refuse."""
  if saved is None:
    return
  # A top-level field missing on either side (a run saved before config_lib.base had it, or a
  # config that leaves an optional field out) counts as its base default, on both sides alike.
  base = config_dict(config_lib.base())
  saved = {**base, **{k: v for k, v in saved.items() if k != "resolved"}}
  diffs = sorted(d for d in _diff(saved, {**base, **config_dict(config)})
                 if d.split(":")[0] not in RUN_ONLY_FIELDS)
  if diffs:
    raise errors.ConfigError(
        f"--workdir={workdir} holds a run with a different config ({', '.join(diffs[:5])}); "
        "resume it with the same config, or pass a new --workdir")


def _diff(a, b, prefix="config") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in sorted(set(a) | set(b)):
      out += _diff(a.get(key), b.get(key), f"{prefix}.{key}")
    return out
  return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]
