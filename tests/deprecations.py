"""A pytest plugin (loaded by conftest.py): DeprecationWarnings that a dependency raises from
inside its own code are counted and listed at the end of the run, not failures.

pyproject.toml's filterwarnings makes a DeprecationWarning attributed to this package or a test
an error: one this project raises, or one a dependency raises (through stacklevel) at the line
of ours that called its deprecated API. A deprecation a dependency raises about its own code
(orbax touching a JAX class that JAX has just deprecated, say) is not ours to fix, and must not
break a new user's `pytest` the day the dependency is released; this plugin lists it instead.

RESEARCH_STRICT_DEPRECATIONS=1 (CI's newest-versions run) fails the run on any such deprecation
that KNOWN below does not list, naming the dependency and what to do, so we hear of it the day
it appears. An entry names the upstream fix to wait for; delete it when that fix is released.
"""
import collections
import functools
import importlib.metadata
import os
import pathlib
import re
import sys
from typing import NamedTuple

import pytest

STRICT_ENV = "RESEARCH_STRICT_DEPRECATIONS"
REPO = pathlib.Path(__file__).resolve().parent.parent


class Known(NamedTuple):
  """A dependency's own deprecation that strict mode tolerates until its fix is released."""
  dependency: str  # the distribution, as pip names it
  message: str     # a regular expression, searched in the warning's text
  wait_for: str    # the upstream release to wait for; then delete the entry


KNOWN = (
    Known("orbax-checkpoint", r"jax\.sharding\.SingleDeviceSharding is deprecated",
          "jax 0.12.1 deprecated jax.sharding.SingleDeviceSharding, which orbax-checkpoint "
          "0.12.8's _src/multihost/colocated_transport.py uses at import; wait for an "
          "orbax-checkpoint release after 0.12.8 that uses jax.sharding."
          "make_single_device_sharding / is_single_device_sharding"),
)


class Record(NamedTuple):
  dependency: str
  message: str   # the warning's first line
  where: str     # file:line, relative to the dependency's import root


@functools.cache
def _distributions() -> dict[str, list[str]]:
  return importlib.metadata.packages_distributions()


def origin(filename: str) -> tuple[str, str] | None:
  """(dependency, path inside it) of the file a warning is attributed to; None for this
  repository's own files (research/, tests/, configs/, ...)."""
  if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>: no file to place.
    return "python", filename
  path = pathlib.Path(filename).resolve()
  if path.is_relative_to(REPO) and not any(
      part.startswith((".venv", "venv", "site-packages")) for part in path.relative_to(REPO).parts):
    return None
  roots = sorted((pathlib.Path(p).resolve() for p in sys.path if p), key=lambda p: -len(p.parts))
  for root in roots:
    if root != REPO and path.is_relative_to(root):
      relative = path.relative_to(root)
      top = relative.parts[0].removesuffix(".py")
      return _distributions().get(top, [top])[0], str(relative)
  return path.parent.name, path.name


def known_entry(record: Record) -> Known | None:
  for entry in KNOWN:
    if entry.dependency == record.dependency and re.search(entry.message, record.message):
      return entry
  return None


class Plugin:
  """Collects the dependencies' deprecations (xdist relays the workers' warnings to the
  controller, which reports them once)."""

  def __init__(self, config):
    self.config = config
    self.strict = os.environ.get(STRICT_ENV, "") not in ("", "0")
    self.seen: collections.Counter[Record] = collections.Counter()

  @property
  def _is_worker(self) -> bool:
    return hasattr(self.config, "workerinput")

  def pytest_warning_recorded(self, warning_message, when, nodeid, location):
    del when, nodeid, location
    if not issubclass(warning_message.category, DeprecationWarning):
      return
    found = origin(warning_message.filename)
    if found is None:
      return
    dependency, path = found
    text = str(warning_message.message).strip().splitlines()
    self.seen[Record(dependency, text[0] if text else "",
                     f"{path}:{warning_message.lineno}")] += 1

  def unknown(self) -> list[Record]:
    return [r for r in self.seen if known_entry(r) is None]

  @pytest.hookimpl(trylast=True)
  def pytest_sessionfinish(self, session):
    if self.strict and not self._is_worker and self.unknown() and session.exitstatus == 0:
      session.exitstatus = pytest.ExitCode.TESTS_FAILED

  def pytest_terminal_summary(self, terminalreporter):
    if self._is_worker or not self.seen:
      return
    tr = terminalreporter
    tr.section("deprecations raised inside dependencies")
    for record, count in sorted(self.seen.items()):
      entry = known_entry(record)
      status = "known" if entry else ("UNKNOWN" if self.strict else "new")
      tr.line(f"{status}: {record.dependency} ({record.where}, {count}x): {record.message}")
      if entry:
        tr.line(f"    the upstream fix to wait for: {entry.wait_for}")
    unknown = self.unknown()
    if self.strict and unknown:
      names = ", ".join(sorted({r.dependency for r in unknown}))
      tr.line(
          f"error: {STRICT_ENV}=1 and {len(unknown)} deprecation(s) raised inside {names} "
          "are not in tests/deprecations.py's KNOWN: if a newer release of the dependency "
          "fixes it, raise its lower bound in pyproject.toml; if not, report it upstream and "
          "add a Known(dependency, message pattern, the upstream fix to wait for) entry",
          red=True, bold=True)
    elif not self.strict:
      tr.line(f"(reported, not failures: they are the dependencies' to fix; {STRICT_ENV}=1 "
              "fails on any not listed in tests/deprecations.py)")


def pytest_configure(config):
  config.pluginmanager.register(Plugin(config), "research-deprecations")
