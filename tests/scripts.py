"""launch/ holds scripts, not a package: a test loads one as a fresh module (fresh, so a test
may monkeypatch it without touching another test's copy)."""
import importlib.util
import pathlib
import types

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"


def launch_script(name: str) -> types.ModuleType:
  """launch/<name>.py, executed as a new module named name."""
  spec = importlib.util.spec_from_file_location(name, LAUNCH / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
