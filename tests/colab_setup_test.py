"""The notebooks' setup cell and colab/runtime_setup.py, on faked Colab machines.

The cell is executed as it is stored, in a temporary /content, with `google.colab` a fake
module, git and pip recorded instead of run, and the machine's accelerator, installed packages
and devices faked: the repository URL set or unset, a copy of the project cloned, found,
uploaded or absent, GPU and TPU runtimes with and without JAX's plugin.
"""
import glob
import importlib.metadata
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import types
import zipfile

import jax  # The cell imports it last; imported here, before any of the machine is faked.
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(REPO, "colab")
NOTEBOOKS = sorted(glob.glob(os.path.join(COLAB, "*.ipynb")))
IDS = [os.path.basename(p) for p in NOTEBOOKS]
URL = "https://github.com/someone/research"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(COLAB, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


setup_cell = _load("setup_cell")
runtime_setup = _load("runtime_setup")


def _cells(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)["cells"]


def _source(cell):
  return "".join(cell["source"])


# ------------------------------------------------------------ the URL, set in one place


def test_every_notebook_starts_with_the_cell_written_from_repo_url():
  assert setup_cell.main(["--check"]) == 0
  for path in NOTEBOOKS:
    cells = _cells(path)
    setup = next(c for c in cells if c["cell_type"] == "code")
    assert _source(setup) == setup_cell.render(setup_cell.REPO_URL), path
    has_badge = "colab.research.google.com/github/" in _source(cells[0])
    assert has_badge == bool(setup_cell.github(setup_cell.REPO_URL)), path


def test_setting_the_url_rewrites_the_cells_and_badges_and_unsetting_restores_them(tmp_path):
  names = [os.path.basename(p) for p in NOTEBOOKS] + ["README.md", "setup_cell.py"]
  for name in names:
    shutil.copy(os.path.join(COLAB, name), tmp_path)
  shipped = {n: (tmp_path / n).read_text() for n in names}

  setup_cell.set_url(URL, str(tmp_path / "setup_cell.py"))
  assert sorted(map(os.path.basename, setup_cell.write(URL, str(tmp_path)))) == sorted(names[:-1])
  spec = importlib.util.spec_from_file_location("edited", tmp_path / "setup_cell.py")
  edited = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(edited)
  assert edited.REPO_URL == URL
  for name in names[:3]:
    cells = _cells(tmp_path / name)
    assert f'REPO_URL = "{URL}"  #@param' in _source(cells[1])
    assert (f"(https://colab.research.google.com/github/someone/research/blob/main/colab/{name})"
            in _source(cells[0]))
  readme = (tmp_path / "README.md").read_text()
  assert readme.count("colab.research.google.com/github/someone/research/blob/main/") == 3

  # A URL Colab cannot open (not github.com) is cloned by the cell but gets no badge.
  setup_cell.write("https://gitlab.com/someone/research.git", str(tmp_path))
  assert "colab.research.google.com/github" not in (tmp_path / "README.md").read_text()
  setup_cell.set_url("", str(tmp_path / "setup_cell.py"))
  setup_cell.write("", str(tmp_path))
  assert {n: (tmp_path / n).read_text() for n in names} == shipped


def test_a_bad_url_is_one_line_and_exit_2(capsys):
  assert setup_cell.main(["--repo-url=github.com/someone", "--check"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "https://github.com/OWNER/NAME" in err


def test_github_urls_give_owner_and_name():
  assert setup_cell.github("https://github.com/a-b/c.d.git") == ("a-b", "c.d")
  assert setup_cell.github("git@github.com:a/b") == ("a", "b")
  assert setup_cell.github("https://example.com/a/b") is None
  assert setup_cell.github("") is None


def _tracked_files():
  try:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [os.path.join(REPO, p) for p in out.stdout.decode().split("\0") if p]
  except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file
    paths = []
    for d, dirs, files in os.walk(REPO):
      dirs[:] = [x for x in dirs if not x.startswith(".") and x != "__pycache__"]
      paths += [os.path.join(d, f) for f in files]
    return paths


# Placeholders a user would have to replace before something works (spelt in pieces, so this
# file does not match itself).
PLACEHOLDERS = [s.replace("|", "") for s in ("<|org>", "<|owner>", "<|user>", "<|username>",
                                             "<|your", "<|fork>", "YOUR|_ORG", "EDIT| ME")]


def test_no_shipped_file_holds_a_placeholder():
  files = _tracked_files()
  assert os.path.join(REPO, "README.md") in files
  hits = []
  for path in files:
    if not os.path.isfile(path):
      continue  # deleted in the working tree
    with open(path, "rb") as f:
      data = f.read()
    hits += [f"{os.path.relpath(path, REPO)}: {p}" for p in PLACEHOLDERS if p.encode() in data]
  assert not hits


def cell_parts():
  namespace = {}
  line = next(l for l in setup_cell.CELL.splitlines() if l.startswith("PARTS = "))
  exec(line, namespace)  # pylint: disable=exec-used
  return namespace["PARTS"]


def test_the_sdist_carries_what_the_setup_cell_needs():
  with open(os.path.join(REPO, "MANIFEST.in")) as f:
    grafted = {line.split()[1] for line in f if line.startswith("graft ")}
  parts = set(cell_parts()) - {"pyproject.toml", "research"}  # both in every sdist
  assert parts <= grafted


# ------------------------------------------------------------ the setup cell, faked Colab

_COLAB_GPU = {"jax": "0.12.0", "jaxlib": "0.12.0", "jax-cuda12-plugin": "0.12.0",
              "jax-cuda12-pjrt": "0.12.0", "numpy": "2.3.1"}
_COLAB_TPU = {"jax": "0.12.0", "jaxlib": "0.12.0", "libtpu": "0.0.21", "numpy": "2.3.1"}
_NO_PLUGIN = {"jax": "0.12.0", "jaxlib": "0.12.0", "numpy": "2.3.1"}


def make_project(root):
  """A minimal copy of the project: what the cell checks for, and the real runtime_setup."""
  for d in ("research", "configs", "colab"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, d, "__init__.py"), "w"):
      pass  # a .zip holds files, not empty directories
  with open(os.path.join(root, "pyproject.toml"), "w") as f:
    f.write('[project]\nname = "research"\n')
  shutil.copy(os.path.join(COLAB, "runtime_setup.py"), os.path.join(root, "colab"))


def make_archive(path, top):
  """A .tar.gz (like `python -m build`'s sdist) or .zip (like GitHub's) of a project copy."""
  with tempfile.TemporaryDirectory() as tmp:
    make_project(os.path.join(tmp, top))
    if path.endswith(".zip"):
      with zipfile.ZipFile(path, "w") as z:
        for d, _, files in os.walk(tmp):
          for f in files:
            z.write(os.path.join(d, f), os.path.relpath(os.path.join(d, f), tmp))
    else:
      with tarfile.open(path, "w:gz") as t:
        t.add(os.path.join(tmp, top), top)


class Machine:
  """A faked Colab VM: /content, google.colab, git and pip, the accelerator, the packages."""

  def __init__(self, tmp_path, monkeypatch):
    self.content = tmp_path / "content"
    self.content.mkdir()
    self.calls = []     # (argv, env) of every subprocess.run
    self.uploads = []   # what files.upload() was asked for
    self.upload = None  # (file name, builder) the user picks in the upload dialog
    self.bytes_only = False  # upload() returns the bytes without writing the file
    self.fail = {}      # "git" / "pip" -> (exit code, stderr)
    self.gpu = False
    self.installed = dict(_NO_PLUGIN)
    self.monkeypatch = monkeypatch
    monkeypatch.chdir(self.content)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", self._run)
    monkeypatch.setattr(shutil, "which",
                        lambda cmd, **_: "/usr/bin/nvidia-smi" if self.gpu and cmd ==
                        "nvidia-smi" else None)
    real_glob = glob.glob
    monkeypatch.setattr(glob, "glob", lambda pattern, **kw: [] if pattern.startswith("/dev/")
                        else real_glob(pattern, **kw))
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", self._version(real_version))
    for key in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE"):
      monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # restored afterwards
    sys.modules.pop("runtime_setup", None)

  def in_colab(self):
    colab = types.ModuleType("google.colab")
    colab.files = types.SimpleNamespace(upload=self._upload)
    self.monkeypatch.setitem(sys.modules, "google.colab", colab)

  def tpu(self):
    self.monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")

  def _version(self, real):
    def version(name):
      if name in runtime_setup.PINNED:
        if name not in self.installed:
          raise importlib.metadata.PackageNotFoundError(name)
        return self.installed[name]
      return real(name)
    return version

  def _upload(self):
    """Writes the picked file into the cwd, as Colab does (unless self.bytes_only)."""
    self.uploads.append(os.getcwd())
    if self.upload is None:
      return {}
    name, build = self.upload
    build(name)
    with open(name, "rb") as f:
      data = f.read()
    if self.bytes_only:
      os.remove(name)
    return {name: data}

  def _run(self, cmd, capture_output=False, text=False, env=None, **kwargs):
    del capture_output, text, kwargs
    cmd = list(cmd)
    self.calls.append((cmd, env))
    tool = "git" if cmd[0] == "git" else "pip" if cmd[1:3] == ["-m", "pip"] else cmd[0]
    if tool in self.fail:
      code, err = self.fail[tool]
      return subprocess.CompletedProcess(cmd, code, "", err)
    if cmd[:2] == ["git", "clone"]:
      make_project(os.path.join(os.getcwd(), cmd[-1]))
    return subprocess.CompletedProcess(cmd, 0, "", "")

  def git(self):
    return [c for c, _ in self.calls if c[0] == "git"]

  def pip(self):
    return [c for c, _ in self.calls if c[1:3] == ["-m", "pip"]]

  def run_cell(self, url=""):
    """Executes the setup cell with REPO_URL = url; its namespace."""
    namespace = {"__name__": "__main__"}
    code = compile(setup_cell.render(url), "setup_cell", "exec")
    exec(code, namespace)  # pylint: disable=exec-used
    return namespace


@pytest.fixture
def machine(tmp_path, monkeypatch):
  yield Machine(tmp_path, monkeypatch)
  sys.modules.pop("runtime_setup", None)  # the copy the cell imported lives under tmp_path


def _pip_install(machine, root, extra=""):
  (cmd,) = machine.pip()
  constraints = cmd[cmd.index("-c") + 1]
  assert cmd == [sys.executable, "-m", "pip", "install", "-q", "-e", root + extra, "-c",
                 constraints]
  return open(constraints).read().splitlines()


def test_with_the_url_set_the_cell_clones_and_installs_around_colabs_jax(machine, capsys):
  machine.in_colab()
  ns = machine.run_cell(URL)
  root = str(machine.content / "research")
  assert machine.git() == [["git", "clone", "-q", "--depth=1", URL, "research"]]
  assert machine.calls[0][1]["GIT_TERMINAL_PROMPT"] == "0"  # a private repo fails, never waits
  pins = _pip_install(machine, root)
  assert pins == ["jax==0.12.0", "jaxlib==0.12.0", "numpy==2.3.1"]
  assert ns["ROOT"] == root and os.getcwd() == root and root in sys.path
  assert not machine.uploads
  assert f"using the checkout at {root}" in capsys.readouterr().out

  # Run again in the same session: the cwd is the copy, so nothing is fetched or installed.
  machine.calls.clear()
  assert machine.run_cell(URL)["INSTALL"] is False and not machine.calls
  # After Runtime > Restart session (the cwd back in /content): the clone is reused.
  os.chdir(machine.content)
  machine.run_cell(URL)
  assert not machine.git() and len(machine.pip()) == 1


@pytest.mark.parametrize("archive, top", [("research-0.1.0.tar.gz", "research-0.1.0"),
                                          ("research-main.zip", "research-main")])
def test_without_a_url_an_archive_in_content_is_unpacked_and_installed(machine, archive, top):
  machine.in_colab()
  make_archive(str(machine.content / archive), top)
  machine.run_cell()
  assert not machine.git() and not machine.uploads
  _pip_install(machine, str(machine.content / "research-source" / top))


@pytest.mark.parametrize("bytes_only", [False, True])
def test_without_a_url_or_an_archive_colab_asks_for_one(machine, capsys, bytes_only):
  machine.in_colab()
  machine.bytes_only = bytes_only
  machine.upload = ("research-main.zip", lambda name: make_archive(name, "research-main"))
  machine.run_cell()
  assert machine.uploads == [str(machine.content)]
  assert "REPO_URL is not set: choose a copy of the project to upload" in capsys.readouterr().out
  _pip_install(machine, str(machine.content / "research-source" / "research-main"))


def test_the_sdist_is_used_when_the_wheel_beside_it_came_too(machine):
  machine.in_colab()
  make_archive(str(machine.content / "research-0.1.0.tar.gz"), "research-0.1.0")
  zipfile.ZipFile(machine.content / "research-0.1.0-py3-none-any.whl", "w").close()  # newer
  machine.run_cell()
  _pip_install(machine, str(machine.content / "research-source" / "research-0.1.0"))


def test_a_copy_on_drive_is_used_as_it_is(machine):
  machine.in_colab()
  drive = machine.content / "drive" / "MyDrive" / "research"
  make_project(str(drive))
  machine.run_cell()
  assert not machine.git() and not machine.uploads
  _pip_install(machine, str(drive))


def _one_line(excinfo):
  message = str(excinfo.value)
  assert "\n" not in message
  return message


def test_an_uploaded_wheel_says_which_file_to_upload_instead(machine, capsys):
  machine.in_colab()
  machine.upload = ("research-0.1.0-py3-none-any.whl",
                    lambda name: zipfile.ZipFile(name, "w").close())
  with pytest.raises(SystemExit) as excinfo:
    machine.run_cell()  # The wheel twice: moved aside twice, the upload offered twice.
  assert "is a wheel" in _one_line(excinfo) and "python -m build" in str(excinfo.value)
  assert len(machine.uploads) == 2 and not machine.calls
  assert (machine.content / "research-0.1.0-py3-none-any.whl.not-the-project").exists()


@pytest.mark.parametrize("name, content, why", [
    ("photos.zip", None, "photos.zip holds no copy of the project"),
    ("research.tar.gz", b"truncated", "research.tar.gz cannot be extracted")])
def test_a_bad_upload_is_moved_aside_and_the_upload_offered_again(machine, capsys, name,
                                                                  content, why):
  machine.in_colab()
  bad = machine.content / name
  if content is None:
    with zipfile.ZipFile(bad, "w") as z:
      z.writestr("a.txt", "not the project")
  else:
    bad.write_bytes(content)
  machine.upload = ("research-main.zip", lambda n: make_archive(n, "research-main"))
  machine.run_cell()  # One run: told, asked again, installed from the good upload.
  out = capsys.readouterr().out
  told = [line for line in out.splitlines() if why in line]
  assert len(told) == 1 and f"moved it to {name}.not-the-project: upload the project's " \
      ".tar.gz" in told[0], out
  assert not bad.exists() and (machine.content / f"{name}.not-the-project").exists()
  assert len(machine.uploads) == 1
  _pip_install(machine, str(machine.content / "research-source" / "research-main"))


def test_a_bad_upload_then_a_cancelled_dialog_is_one_step(machine):
  machine.in_colab()
  (machine.content / "research.tar.gz").write_bytes(b"not an archive")
  with pytest.raises(SystemExit) as excinfo:
    machine.run_cell()
  line = _one_line(excinfo)
  assert "research.tar.gz cannot be extracted" in line
  assert line.endswith("rerun this cell and upload the project's .tar.gz (the one "
                       "`python -m build` writes in dist/)")
  assert "MyDrive" not in line and "REPO_URL" not in line  # One step, not a menu.
  # The rerun no longer trips on the file: it asks for the upload.
  machine.upload = ("research-main.zip", lambda n: make_archive(n, "research-main"))
  machine.run_cell()
  assert len(machine.uploads) == 2
  _pip_install(machine, str(machine.content / "research-source" / "research-main"))


def test_outside_colab_a_bad_archive_is_moved_aside_in_one_line(machine):
  (machine.content / "research.tar.gz").write_bytes(b"truncated")
  with pytest.raises(SystemExit) as excinfo:
    machine.run_cell()
  line = _one_line(excinfo)
  assert "research.tar.gz cannot be extracted" in line and "rerun this cell" in line
  assert not machine.calls
  with pytest.raises(SystemExit) as excinfo:  # The rerun names every way, not the file.
    machine.run_cell()
  assert _one_line(excinfo).startswith("no copy of the project was found")


def _damaged_archive(path, top):
  """A copy of the project whose archive breaks after the cell's four names are extracted: a
  truncated .tar.gz (gzip's EOFError) or a .zip whose last member fails its CRC."""
  with tempfile.TemporaryDirectory() as tmp:
    make_project(os.path.join(tmp, top))
    big = os.path.join(tmp, top, "research", "zz_last.bin")
    with open(big, "wb") as f:
      f.write(random.Random(0).randbytes(1 << 16))  # incompressible, so it is cut
    if path.endswith(".zip"):
      with zipfile.ZipFile(path, "w") as z:
        for d, _, files in sorted(os.walk(tmp)):
          for name in sorted(files):
            z.write(os.path.join(d, name), os.path.relpath(os.path.join(d, name), tmp))
      data = bytearray(open(path, "rb").read())
      data[data.index(b"zz_last.bin") + 2000] ^= 0xFF  # inside the last member's data
      open(path, "wb").write(bytes(data))
    else:
      with tarfile.open(path, "w:gz") as t:
        t.add(os.path.join(tmp, top), top)
      data = open(path, "rb").read()
      open(path, "wb").write(data[:int(len(data) * 0.7)])


@pytest.mark.parametrize("name", ["research-0.1.0.tar.gz", "research-main.zip"])
def test_an_archive_that_breaks_midway_leaves_no_partial_copy(machine, name):
  # The four names came out before the error, so a rerun used to take the partial copy.
  _damaged_archive(str(machine.content / name), "research-main")
  with pytest.raises(SystemExit) as excinfo:
    machine.run_cell()
  assert f"{name} cannot be extracted" in _one_line(excinfo)
  assert sorted(os.listdir(machine.content)) == [f"{name}.not-the-project"]
  with pytest.raises(SystemExit) as excinfo:  # The rerun installs nothing from a partial copy.
    machine.run_cell()
  assert _one_line(excinfo).startswith("no copy of the project was found")
  assert not machine.calls
  machine.in_colab()  # In Colab: a good upload after it is unpacked and installed.
  machine.upload = ("research-main.zip", lambda n: make_archive(n, "research-main"))
  machine.run_cell()
  _pip_install(machine, str(machine.content / "research-source" / "research-main"))


def test_outside_colab_with_nothing_to_install_from_it_names_every_way(machine):
  with pytest.raises(SystemExit) as excinfo:
    machine.run_cell()
  message = _one_line(excinfo)
  assert message.startswith("no copy of the project was found")
  assert all(s in message for s in (".tar.gz", ".zip", "MyDrive/research", "REPO_URL"))
  assert not machine.calls and not machine.uploads


def test_the_upload_dialog_cancelled_is_one_line(machine):
  machine.in_colab()
  with pytest.raises(SystemExit) as excinfo:
    machine.run_cell()
  assert _one_line(excinfo).startswith("no copy of the project was found")
  assert len(machine.uploads) == 1


@pytest.mark.parametrize("tool", ["git", "pip"])
def test_a_failed_clone_or_install_prints_its_output_and_stops_in_one_line(machine, tool,
                                                                           capsys):
  machine.in_colab()
  machine.fail[tool] = (128, f"fatal: {tool} said no")
  with pytest.raises(SystemExit) as excinfo:
    machine.run_cell(URL)
  assert "failed (exit 128); its output is above" in _one_line(excinfo)
  assert f"fatal: {tool} said no" in capsys.readouterr().out


def test_in_a_checkout_the_cell_installs_nothing(machine):
  root = machine.content / "checkout"
  make_project(str(root))
  os.chdir(root / "colab")  # Jupyter started in colab/
  ns = machine.run_cell(URL)
  assert ns["ROOT"] == str(root) and ns["INSTALL"] is False and not machine.calls


@pytest.mark.parametrize("runtime, installed, extra", [
    ("gpu", _COLAB_GPU, ""), ("gpu", _NO_PLUGIN, "[cuda12]"),
    ("tpu", _COLAB_TPU, ""), ("tpu", _NO_PLUGIN, "[tpu]"), ("cpu", _NO_PLUGIN, "")])
def test_the_install_adds_jaxs_plugin_only_where_the_runtime_lacks_it(machine, capsys, runtime,
                                                                      installed, extra):
  machine.in_colab()
  machine.installed = dict(installed)
  if runtime == "gpu":
    machine.gpu = True
  elif runtime == "tpu":
    machine.tpu()
  ns = machine.run_cell(URL)
  assert ns["RUNTIME"].accelerator == runtime
  pins = _pip_install(machine, str(machine.content / "research"), extra)
  assert pins == [f"{k}=={v}" for k, v in sorted(installed.items())]  # Colab's JAX stays
  out = capsys.readouterr().out
  assert f"accelerator: {runtime}; jax 0.12.0 (kept as installed)" in out
  assert (f"installing the project{extra}" in out) == bool(extra)


# ------------------------------------------------------------ runtime_setup, unit


def _version(table):
  def version(name):
    if name not in table:
      raise importlib.metadata.PackageNotFoundError(name)
    return table[name]
  return version


def test_setup_on_a_colab_gpu_pins_jax_and_stops_preallocation(tmp_path):
  environ = {}
  runtime = runtime_setup.prepare(
      environ=environ, which=lambda cmd: "/usr/bin/nvidia-smi" if cmd == "nvidia-smi" else None,
      exists=lambda pattern: [], version=_version(_COLAB_GPU), modules={}, tmpdir=str(tmp_path))
  assert runtime.accelerator == "gpu" and runtime.install and runtime.extra == ""
  assert environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  pins = open(runtime.constraints).read().splitlines()
  assert pins == ["jax==0.12.0", "jax-cuda12-pjrt==0.12.0", "jax-cuda12-plugin==0.12.0",
                  "jaxlib==0.12.0", "numpy==2.3.1"]
  assert not runtime.notes
  assert "accelerator: gpu; jax 0.12.0 (kept as installed)" in runtime_setup.describe(runtime)


def test_setup_detects_a_tpu_and_a_cpu_and_warns_when_jax_started_first(tmp_path):
  common = dict(version=_version({"jax": "0.12.0"}), tmpdir=str(tmp_path))
  tpu = runtime_setup.prepare(environ={"COLAB_TPU_ADDR": "10.0.0.2:8470"},
                              which=lambda cmd: None, exists=lambda pattern: [], modules={},
                              **common)
  assert tpu.accelerator == "tpu" and not tpu.environment and tpu.extra == "[tpu]"
  vm = runtime_setup.prepare(environ={}, which=lambda cmd: None, modules={},
                             exists=lambda p: ["/dev/accel0"] if p.startswith("/dev/accel")
                             else [], **common)
  assert vm.accelerator == "tpu"
  cpu = runtime_setup.prepare(environ={}, which=lambda cmd: None, exists=lambda p: [],
                              modules={}, install=False, **common)
  assert cpu.accelerator == "cpu" and cpu.constraints is None and not cpu.environment
  assert cpu.extra == ""
  late = runtime_setup.prepare(environ={}, which=lambda cmd: "/usr/bin/" + cmd,
                               exists=lambda p: [], modules={"jax": object()}, **common)
  assert late.notes and "Restart session" in late.notes[0]


def test_the_extras_the_cell_can_name_exist_in_pyproject():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
  for accelerator in ("gpu", "tpu"):
    extra = runtime_setup.jax_extra(accelerator, {})
    assert extra and extra.strip("[]") in extras
