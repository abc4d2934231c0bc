"""The shape of the house: imports run one way, every family is registered once, the
commands start fast and answer --help, and the train chunk compiles once per chunk length."""
import ast
import json
import os
import pathlib
import subprocess
import sys

import processes
import jax
import ml_collections
import pytest

from research import backprop
from research import config_lib
from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import model_configs
from research import models
from research import optim
from configs import default

REPO = pathlib.Path(__file__).resolve().parent.parent


def _module_graph() -> dict[str, set[str]]:
  """research.* module -> the research.* modules it imports, at any depth of the file
  (function-level imports too: a lazy import that closes a loop is still a loop)."""
  files = {}
  for path in (REPO / "research").rglob("*.py"):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    files[".".join(parts)] = path
  graph = {}
  for name, path in files.items():
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        edges |= {a.name for a in node.names if a.name in files}
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                          + ([base] if base else []))
        for a in node.names:
          full = f"{base}.{a.name}"
          edges.add(full if full in files else base)
    graph[name] = {e for e in edges if e in files and e != name}
  return graph


def test_no_import_cycles_in_research():
  graph = _module_graph()
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not cycles, cycles


def test_dependencies_run_one_way():
  graph = _module_graph()
  for name, edges in graph.items():
    if name.startswith("research.backprop"):
      assert not edges & {"research.train", "research.gradcheck", "research.gradients"}, name
    if name.startswith("research.models") or name.startswith("research.data"):
      assert not any(e.startswith(("research.backprop", "research.train")) for e in edges), name
  assert "research.train" not in graph["research.losses"]


def test_every_hand_written_backward_pass_is_a_registered_model_with_a_gradient_check():
  problems = " ".join(backprop.problem_names())
  for name in backprop.manual_names():
    assert name in models.names()
    stem = name.split("_")[0]
    assert stem in problems, f"{name} has a manual pass but no gradient check"


def _module_of(fn) -> str:
  return getattr(fn, "func", fn).__module__.rsplit(".", 1)[-1]


def test_every_family_module_registers_without_a_list():
  """research.models and research.backprop import their modules by discovery: each file is a
  registered model or gradient check, and each backprop file mirrors a models file."""
  shared = {"core", "layers"}
  builders = {_module_of(fn) for fn in models.core._BUILDERS.values()}
  problems = {_module_of(fn) for fn in backprop.core._PROBLEMS.values()}
  manuals = {_module_of(fn) for fn in backprop.core._MANUAL.values()}
  assert set(models.FAMILIES) - shared <= builders | problems
  assert set(backprop.FAMILIES) - {"core"} <= problems
  assert set(backprop.FAMILIES) <= set(models.FAMILIES) | {"core"}
  assert manuals <= problems  # a hand-written pass comes with its gradient check
  for name in models.names():
    assert models.default_config(name).name == name  # each family's config(), beside it
  for name in backprop.manual_names():
    assert _module_of(backprop.core._MANUAL[name]) in problems
  with pytest.raises(errors.ConfigError, match=r"@core.register\(name\) in research/models"):
    models.build(ml_collections.ConfigDict({"name": "mlpp"}), (4,), 2)


def _python(*args, **kwargs):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=processes.GUARD_S, **kwargs)


def test_main_help_exits_0_lists_every_config_and_imports_no_jax():
  result = _python("-m", "research.main", "--help")
  assert result.returncode == 0, result.stderr
  for path in sorted((REPO / "configs").glob("*.py")):
    assert f"configs/{path.name}" in result.stdout
  assert "--print_config" in result.stdout
  # --help answers before any heavy import.
  check = _python("-c", "import sys, runpy; sys.argv = ['m', '--help']\n"
                  "try:\n  runpy.run_module('research.main', run_name='__main__')\n"
                  "except SystemExit:\n  pass\nprint('jax' in sys.modules)")
  assert check.stdout.strip().endswith("False"), check.stdout


@pytest.mark.parametrize("args, says", [
    (["--config.num_stepz=3"], "num_stepz"),
    (["--config=configs/alexnet_imagenet.py:cpu", "--config.data.pipeline=stream"],
     "config.data.pipeline='stream' is not supported"),
    (["--config.optimizer.b1=1.5"], "optimizer.b1"),
])
def test_a_bad_config_value_is_refused_before_jax_is_imported(tmp_path, args, says):
  # A typo is reported at once, not after JAX and every model are imported.
  check = _python("-c", "import sys, runpy\n"
                  f"sys.argv = ['m', '--workdir={tmp_path / 'run'}', *{args!r}]\n"
                  "try:\n  runpy.run_module('research.main', run_name='__main__')\n"
                  "except SystemExit as e:\n  print('exit', e.code)\n"
                  "print('jax' in sys.modules)")
  assert check.stdout.split()[-3:] == ["exit", "2", "False"], (check.stdout, check.stderr)
  assert says in check.stderr and check.stderr.count("\n") == 1, check.stderr
  assert not (tmp_path / "run").exists()


def test_print_config_prints_the_overridden_config_and_touches_nothing(tmp_path):
  result = _python("-m", "research.main", "--config=configs/lenet_digits.py", "--print_config",
                   "--config.seed=7", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 0, result.stderr
  assert "variant: faithful" in result.stdout and "seed: 7" in result.stdout
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_gradcheck_help_lists_every_registered_check():
  result = _python("-m", "research.gradcheck", "--help")
  assert result.returncode == 0, result.stderr
  for name in backprop.problem_names():
    assert f"  {name} " in result.stdout


@pytest.mark.slow
def test_a_default_run_imports_neither_sklearn_nor_matplotlib_nor_the_runners():
  result = _python("-c", "import sys; from research import experiments, train\n"
                   "from configs import default; from research import data\n"
                   "data.load(default.get_config().data)\n"
                   "print(sorted(m for m in ('sklearn', 'matplotlib', 'research.experiments."
                   "regularization', 'sacrebleu') if m in sys.modules))")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"


def test_bundled_csv_digits_are_sklearns_digits():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from research.data import sklearn_data  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  for ours, theirs in ((sklearn_data.load_digits_arrays(), datasets.load_digits(return_X_y=True)),
                       (sklearn_data.load_breast_cancer_arrays(),
                        datasets.load_breast_cancer(return_X_y=True))):
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])


def test_the_train_chunk_guard_fails_on_a_retrace():
  config = default.get_config()
  dataset = data_lib.load(config.data)
  model = models.build(config.model, dataset.input_shape, 10)
  optimizer = optim.make_optimizer(config.optimizer, 10)
  loss_fn = losses.make_loss_fn(model, "sigmoid", 0.0, len(dataset.train), 10)
  chunk = kernel.make_train_chunk(loss_fn, optimizer, max_traces=1)

  def state():
    params = model.init(jax.random.key(0))
    return {"params": params, "opt_state": optimizer.init(params),
            "step": jax.numpy.zeros((), "int32"), "rng": jax.random.key(1)}

  idx = data_lib.batch_indices(0, len(dataset.train), 32, 0, 3)
  chunk(state(), dataset.train.x, dataset.train.y, idx)
  chunk(state(), dataset.train.x, dataset.train.y, idx)  # Same shapes: no retrace.
  with pytest.raises(AssertionError, match="traced 2 times"):
    chunk(state(), dataset.train.x, dataset.train.y, idx[:2])  # Another chunk length.


def test_a_deprecation_warning_fails_the_suite():
  """pyproject's filterwarnings: a DeprecationWarning attributed to this package or a test
  (where a deprecated call's stacklevel points) is an error."""
  import warnings  # pylint: disable=g-import-not-at-top
  with pytest.raises(DeprecationWarning):
    warnings.warn("a deprecated call", DeprecationWarning, stacklevel=1)


_FAKE_DEPENDENCY = """
import warnings

def uses_a_deprecated_api():
  # As orbax does with a class jax has deprecated: the warning points into this package.
  warnings.warn("fakedep.Thing is deprecated", DeprecationWarning, stacklevel=1)

def deprecated_api():
  # As jax does for its own deprecated functions: the warning points at the caller.
  warnings.warn("fakedep.deprecated_api is deprecated", DeprecationWarning, stacklevel=2)
"""

_FAKE_TESTS = """
import fakedep

def test_a_dependency_uses_a_deprecated_api():
  fakedep.uses_a_deprecated_api()

def test_we_call_a_deprecated_api():
  fakedep.deprecated_api()

def test_orbax_imports():
  import orbax.checkpoint  # jax 0.12.1: orbax-checkpoint 0.12.8 raises a known deprecation.
"""


def test_a_dependencys_own_deprecation_is_listed_and_fails_only_strict_mode(tmp_path):
  """A real pytest run under this project's filterwarnings and tests/deprecations.py, on a
  generated test module and a stand-in dependency `fakedep`: our call to a deprecated API
  fails; a deprecation raised inside the dependency is listed and passes, unless
  RESEARCH_STRICT_DEPRECATIONS=1, which fails on it (not on the known orbax one) naming it."""
  import tomllib  # pylint: disable=g-import-not-at-top
  ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
  (tmp_path / "pyproject.toml").write_text(
      "[tool.pytest.ini_options]\nfilterwarnings = " + json.dumps(ini["filterwarnings"]) + "\n")
  (tmp_path / "fakedep").mkdir()
  (tmp_path / "fakedep" / "__init__.py").write_text(_FAKE_DEPENDENCY)
  (tmp_path / "deps_test.py").write_text(_FAKE_TESTS)

  def pytest_run(select, strict):
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"), JAX_PLATFORMS="cpu")
    env.pop("RESEARCH_STRICT_DEPRECATIONS", None)
    if strict:
      env["RESEARCH_STRICT_DEPRECATIONS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "deprecations", "-p", "no:cacheprovider",
         "-p", "no:xdist", "-k", select, "deps_test.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr

  rc, out = pytest_run("not orbax", strict=False)
  assert rc == 1 and "1 failed, 1 passed" in out, out
  assert "FAILED deps_test.py::test_we_call_a_deprecated_api" in out, out
  assert "new: fakedep (fakedep/__init__.py:6, 1x): fakedep.Thing is deprecated" in out, out

  rc, out = pytest_run("dependency or orbax", strict=True)
  assert rc == 1 and "2 passed" in out, out
  assert "UNKNOWN: fakedep" in out and "UNKNOWN: orbax" not in out, out
  assert "deprecation(s) raised inside fakedep are not in tests/deprecations.py's KNOWN" in out, out

  rc, out = pytest_run("orbax", strict=True)
  assert rc == 0 and "1 passed" in out, out
  assert "UNKNOWN" not in out, out


_COLLECT = """
import json, sys, pytest
class Ids:
  def __init__(self):
    self.ids = []
  def pytest_collection_finish(self, session):
    self.ids = [item.nodeid for item in session.items]
out = {}
for name, args in (("all", []), ("slow", ["-m", "slow"]), ("fast", ["-m", "not slow"])):
  ids = Ids()
  assert pytest.main(["-q", "--collect-only", "-p", "no:xdist", "-o", "addopts=",
                      "-p", "no:cacheprovider", *args, "tests"], plugins=[ids]) == 0, name
  out[name] = ids.ids
print("IDS " + json.dumps(out))
"""


def test_the_fast_and_slow_tiers_partition_the_suite():
  """Every test is in exactly one of `-m slow` and `-m "not slow"`: conftest marks the later
  parametrized cases slow whatever -m says."""
  result = _python("-c", _COLLECT)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  ids = json.loads(result.stdout.split("IDS ", 1)[1])
  everything, slow, fast = (set(ids[k]) for k in ("all", "slow", "fast"))
  assert len(everything) == len(ids["all"]) > 600
  assert not slow & fast, sorted(slow & fast)[:5]
  assert slow | fast == everything, sorted(everything - slow - fast)[:5]


def test_every_registered_model_has_its_jax_free_defaults():
  """research.model_configs (what config files and research.main read before JAX starts)
  covers exactly the registry, and each family module's `config` is that function."""
  assert set(model_configs.DEFAULTS) == set(models.names())
  for name in models.names():
    assert models.default_config(name).to_dict() == model_configs.default(name).to_dict()
    assert models.family_ranges(name) == model_configs.ranges(name)


def test_the_choices_research_main_checks_are_the_ones_the_library_acts_on():
  assert sorted(losses.DATA_LOSSES) == sorted(config_lib.CHOICES["loss.output"])
  assert optim.OPTIMIZERS == config_lib.CHOICES["optimizer.name"]
  assert kernel.MATMUL_PRECISIONS == config_lib.CHOICES["matmul_precision"]
