"""Errors the experiment runner turns into one clear line and a non-zero exit."""


class ConfigError(ValueError):
  """A config field holds a value the code cannot use; the message names the field and the fix."""


class DataError(ValueError):
  """Data is missing or malformed; the message names the file/shape and the fix."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss; the message names the step."""


def check_choice(field: str, value, allowed) -> None:
  """Raises ConfigError unless `value` is one of `allowed`."""
  if value not in allowed:
    raise ConfigError(
        f"config.{field}={value!r} is not supported; choose one of: "
        + ", ".join(repr(a) for a in allowed))


def check_positive(field: str, value) -> None:
  """Raises ConfigError unless `value` is a positive number."""
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
    raise ConfigError(f"config.{field}={value!r} must be a positive number")
