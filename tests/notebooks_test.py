"""The Colab notebooks: stored without outputs, and every cell runs headless on CPU.

Execution uses nbclient with the python3 kernel, started in colab/ as Jupyter would be, so the
setup cell must find this checkout and skip the install. RESEARCH_NOTEBOOK_SMALL=1 makes each
notebook shrink its runs to a smoke test (20 steps); the notebooks assert their own results
(manual vs autodiff agreement, the gradient check), so a wrong number fails here too.
"""
import glob
import json
import os

import processes
import pytest

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")
NOTEBOOKS = sorted(glob.glob(os.path.join(COLAB, "*.ipynb")))
CELL_TIMEOUT_S = processes.GUARD_S
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
  # The setup cell itself (written by colab/setup_cell.py) is tested in colab_setup_test.py.
  cells = [_source(c) for c in _code_cells(path)]
  setup = cells[0]
  assert setup.startswith("#@title") and "runtime_setup.prepare" in setup
  body = "\n".join(cells[1:])
  assert "from research import" in body  # the library is imported, not copied
  assert all(c.startswith("#@title") for c in cells)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_top_to_bottom_on_cpu(path, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]'")
  nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
  # The kernel inherits this environment: small runs, the CPU, and every file it writes under
  # tmp_path: workdirs (TMPDIR), the MNIST-1D cache (RESEARCH_DATA_DIR, read by
  # research/data/download.py), and what IPython, Jupyter and matplotlib keep in the home
  # directory (HOME).
  monkeypatch.setenv("RESEARCH_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  monkeypatch.setenv("RESEARCH_DATA_DIR", str(tmp_path / "data"))
  (tmp_path / "home").mkdir()
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  for key in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "MPLCONFIGDIR",
              "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
    monkeypatch.delenv(key, raising=False)  # each would override HOME
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
  if "mnist1d" in "".join(_source(c) for c in _code_cells(path)):
    assert os.listdir(tmp_path / "data" / "mnist1d")  # the cache went where it was told
