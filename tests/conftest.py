"""Shared test setup: tests run on the CPU backend with one device unless they say otherwise.

JAX compilation dominates test time, and many tests compile the same programs (the default
config's train chunk in a dozen subprocess runs, for one): a persistent compilation cache,
fresh for each session (so every session, CI's included, starts cold), lets the second
compilation of a program be a file read. Subprocesses inherit it through the environment.

Tests compile at XLA's backend optimization level 0 (LLVM's -O0): the shapes are tiny, so
compile time is nearly all of a test's time (the suite runs 40% faster), and the programs
XLA builds (its HLO passes: fusion, layouts, the order of every float operation) are the usual
ones; only the machine code is left unoptimized. Tests check results, never speed: speed is
measured by research.benchmark, which compiles as users do. Set XLA_FLAGS yourself to
override it.

The fast tier (`-m "not slow"`, the developer's loop) runs the first case of each
parametrized test (every case of one marked `every_case`); the other cases are marked slow,
so `-m slow` and `-m "not slow"` partition the suite.

A DeprecationWarning that a dependency raises from inside its own code is listed at the end of
the run, not a failure (tests/deprecations.py; RESEARCH_STRICT_DEPRECATIONS=1 fails on one it
does not know); pyproject.toml's filterwarnings fails one attributed to this package or a test.
"""
import atexit
import os
import shutil
import sys
import tempfile

import pytest

import deprecations  # tests/ is on sys.path: pytest imports this conftest from there.

# Tests import `configs.*` as modules, like a notebook at the repository root would.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="research-tests-jax-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()


def pytest_configure(config):
  deprecations.pytest_configure(config)


@pytest.hookimpl(tryfirst=True)  # Before -m deselects the slow tests.
def pytest_collection_modifyitems(config, items):
  """Marks every parametrized case after a function's first `slow`, whatever -m says, so
  `-m slow` and `-m "not slow"` split the suite in two. A test marked `every_case` keeps all
  its cases in the fast tier (each case is a promise of its own, and cheap)."""
  del config
  seen = set()
  for item in items:
    if getattr(item, "callspec", None) is None or item.get_closest_marker("every_case"):
      continue
    function = (item.nodeid.split("::")[0], item.originalname)
    if function in seen:
      item.add_marker(pytest.mark.slow)
    seen.add(function)
