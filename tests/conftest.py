"""Shared test setup: tests run on the CPU backend with one device unless they say otherwise."""
import os
import sys

# Tests import `configs.*` as modules, like a notebook at the repository root would.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
