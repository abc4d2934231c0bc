"""Shared test setup: tests run on the CPU backend with one device unless they say otherwise.

JAX compilation dominates test time, and many tests compile the same programs (the default
config's train chunk in a dozen subprocess runs, for one): a persistent compilation cache,
fresh for each session (so every session, CI's included, starts cold), lets the second
compilation of a program be a file read. Subprocesses inherit it through the environment.
"""
import atexit
import os
import shutil
import sys
import tempfile

# Tests import `configs.*` as modules, like a notebook at the repository root would.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="research-tests-jax-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
