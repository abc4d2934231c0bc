"""Errors the runner turns into one clear line and a non-zero exit (research/main.py).

  ConfigError, DataError, WorkdirError   exit 2: the input cannot be used; fix it and rerun
  NonFiniteLossError                     exit 3: training diverged (the message names the step)
  StorageError                           exit 4: reading or writing the workdir failed mid-run
                                         (disk full, permission lost); what was saved is intact
  LostWorkerError                        exit 4: a Ray worker or node died on every retry of a
                                         task; what was saved is intact
"""
import errno
import math
import numbers


class ConfigError(ValueError):
  """A config field holds a value the code cannot use; the message names the field and the fix."""


class DataError(ValueError):
  """Data is missing or malformed; the message names the file/shape and the fix."""


class WorkdirError(ValueError):
  """The workdir cannot be used (not creatable, not a directory, read-only, held by another
  run, or holding another experiment); the message names the path, the cause and the fix."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss; the message names the step."""


class StorageError(OSError):
  """Writing or reading the workdir failed during a run; the message names the path, the
  cause, the fix and what is still intact."""


class LostWorkerError(RuntimeError):
  """A task's worker or node died on every try (research/executor.py); the message names the
  cause and the fix (rerun: finished work is kept)."""


EXIT_CODES = ((ConfigError, 2), (DataError, 2), (WorkdirError, 2), (NonFiniteLossError, 3),
              (StorageError, 4), (LostWorkerError, 4))


def check_choice(field: str, value, allowed) -> None:
  """Raises ConfigError unless `value` is one of `allowed`."""
  if value not in allowed:
    raise ConfigError(
        f"config.{field}={value!r} is not supported; choose one of: "
        + ", ".join(repr(a) for a in allowed))


def check_positive(field: str, value) -> None:
  """Raises ConfigError unless `value` is a positive, finite number."""
  if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0
      or not math.isfinite(value)):
    raise ConfigError(f"config.{field}={value!r} must be a positive number")


def check_ints(field: str, values, hint: str = "", minimum: int = 1) -> tuple[int, ...]:
  """Returns `values` as a tuple; raises ConfigError unless it is a non-empty sequence of
  integers (not bools) >= minimum. `hint` ends the message (an example, or what they count)."""
  values = tuple(values)
  if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < minimum
                       for v in values):
    kind = "positive integers" if minimum == 1 else f"integers >= {minimum}"
    raise ConfigError(f"config.{field}={values!r} must be a non-empty tuple of {kind}{hint}")
  return values


def check_batch_size(batch_size: int, n: int, examples: str, field: str = "batch_size") -> None:
  """Raises ConfigError when a batch (config.`field`) needs more than the n `examples`."""
  if batch_size > n:
    raise ConfigError(f"config.{field}={batch_size} is larger than the {n} {examples}; "
                      f"use at most {n}")


def describe_os_error(e: OSError) -> str:
  """'No space left on device' etc.: the OS's words for an OSError, without the errno noise."""
  return e.strerror or str(e) or type(e).__name__


def os_error_fix(code: int | None) -> str:
  """What to do about a failed read or write, by its errno."""
  if code in (errno.ENOSPC, errno.EDQUOT):
    return "free space"
  if code in (errno.EACCES, errno.EPERM, errno.EROFS):
    return "restore write access or choose a path you can write to"
  if code in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
    return "check the path"
  return "check the path and the storage"
