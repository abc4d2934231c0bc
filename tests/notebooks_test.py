"""The Colab notebooks: stored without outputs, and every cell runs headless on CPU.

Execution uses nbclient with the python3 kernel, started in colab/ as Jupyter would be, so the
setup cell must find this checkout and skip the install. RESEARCH_NOTEBOOK_SMALL=1 makes each
notebook shrink its runs to a smoke test (20 steps); the notebooks assert their own results
(manual vs autodiff agreement, the gradient check), so a wrong number fails here too.
"""
import glob
import json
import os

import pytest

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")
NOTEBOOKS = sorted(glob.glob(os.path.join(COLAB, "*.ipynb")))
CELL_TIMEOUT_S = 600
IDS = [os.path.basename(p) for p in NOTEBOOKS]


def _code_cells(path: str) -> list[dict]:
  with open(path) as f:  # Plain JSON: these checks need no Jupyter packages.
    notebook = json.load(f)
  return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
  return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_notebooks_are_found():
  expected = {"01_backprop_by_hand.ipynb", "02_model_zoo.ipynb", "03_optimizer_sweep.ipynb"}
  assert expected <= set(IDS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_without_outputs(path):
  cells = _code_cells(path)
  assert cells
  dirty = [i for i, c in enumerate(cells) if c.get("outputs") or c.get("execution_count")]
  assert not dirty, (f"{os.path.basename(path)}: code cells {dirty} hold outputs; clear them "
                     "(Edit > Clear all outputs, or `jupyter nbconvert --clear-output --inplace`)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cell_installs_the_package_and_cells_import_it(path):
  cells = [_source(c) for c in _code_cells(path)]
  setup = cells[0]
  assert setup.startswith("#@title")
  assert 'REPO_URL = "https://github.com/<org>/research"' in setup
  assert "git clone" in setup and "pip install -q -e" in setup
  assert "sys.path.insert(0, ROOT)" in setup
  body = "\n".join(cells[1:])
  assert "from research import" in body  # the library is imported, not copied
  assert all(c.startswith("#@title") for c in cells)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_top_to_bottom_on_cpu(path, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]'")
  nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
  # The kernel inherits this environment: small runs, the CPU, workdirs under tmp_path.
  monkeypatch.setenv("RESEARCH_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                   resources={"metadata": {"path": COLAB}})
  client.execute()  # Raises CellExecutionError, naming the cell, on any error.

  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was drawn"
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  # The setup cell found this checkout, so it installed nothing.
  assert f"using the checkout at {os.path.realpath(os.path.dirname(COLAB))}" in text


# ----------------------------------------------------- the setup cell's logic, faked machines


def _runtime_setup():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("runtime_setup",
                                                os.path.join(COLAB, "runtime_setup.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_COLAB_GPU = {"jax": "0.12.0", "jaxlib": "0.12.0", "jax-cuda12-plugin": "0.12.0",
              "numpy": "2.3.1"}


def _version(table):
  def version(name):
    import importlib.metadata  # pylint: disable=g-import-not-at-top
    if name not in table:
      raise importlib.metadata.PackageNotFoundError(name)
    return table[name]
  return version


def test_setup_on_a_colab_gpu_pins_jax_and_stops_preallocation(tmp_path):
  setup = _runtime_setup()
  environ = {}
  runtime = setup.prepare(environ=environ, which=lambda cmd: "/usr/bin/nvidia-smi"
                          if cmd == "nvidia-smi" else None, exists=lambda pattern: [],
                          version=_version(_COLAB_GPU), modules={}, tmpdir=str(tmp_path))
  assert runtime.accelerator == "gpu" and runtime.install
  assert environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  pins = open(runtime.constraints).read().splitlines()
  assert pins == ["jax==0.12.0", "jax-cuda12-plugin==0.12.0", "jaxlib==0.12.0", "numpy==2.3.1"]
  assert not runtime.notes
  assert "accelerator: gpu; jax 0.12.0 (kept as installed)" in setup.describe(runtime)


def test_setup_detects_a_tpu_and_a_cpu_and_warns_when_jax_started_first(tmp_path):
  setup = _runtime_setup()
  common = dict(version=_version({"jax": "0.12.0"}), tmpdir=str(tmp_path))
  tpu = setup.prepare(environ={"COLAB_TPU_ADDR": "10.0.0.2:8470"}, which=lambda cmd: None,
                      exists=lambda pattern: [], modules={}, **common)
  assert tpu.accelerator == "tpu" and not tpu.environment
  vm = setup.prepare(environ={}, which=lambda cmd: None, modules={},
                     exists=lambda p: ["/dev/accel0"] if p.startswith("/dev/accel") else [],
                     **common)
  assert vm.accelerator == "tpu"
  cpu = setup.prepare(environ={}, which=lambda cmd: None, exists=lambda p: [], modules={},
                      install=False, **common)
  assert cpu.accelerator == "cpu" and cpu.constraints is None and not cpu.environment
  late = setup.prepare(environ={}, which=lambda cmd: "/usr/bin/" + cmd,
                       exists=lambda p: [], modules={"jax": object()}, **common)
  assert late.notes and "Restart session" in late.notes[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_installs_with_the_constraints_and_prints_the_devices(path):
  setup = _source(_code_cells(path)[0])
  assert "pip install -q -e {ROOT} -c {RUNTIME.constraints}" in setup
  assert setup.index("runtime_setup.prepare") < setup.index("import jax")
  assert "jax.devices()" in setup
