"""Holds the repository's URL and writes the notebooks' setup cell and badges from it.

  python colab/setup_cell.py --repo-url=https://github.com/OWNER/NAME   # set it, rewrite all
  python colab/setup_cell.py                # rewrite the notebooks from REPO_URL as it stands
  python colab/setup_cell.py --check        # exit 1 when a notebook or the README is stale

REPO_URL is the one place the URL lives: the command above writes it here, into each
notebook's setup cell (Colab opens a notebook alone, so the cell must carry the URL) and into
the badges of the notebooks and of colab/README.md (badges only for github.com URLs, the only
ones Colab opens). tests/colab_setup_test.py fails when they disagree.

Unset (""), the setup cell needs no edit either: in Colab it asks for a copy of the project
(the .tar.gz that `python -m build` writes, or a .zip of the repository) with an upload
button, or uses a copy already in /content or in Drive's MyDrive/research.
"""
import argparse
import json
import os
import re
import sys

REPO_URL = ""
BRANCH = "main"  # the branch the badges open

COLAB = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = ("01_backprop_by_hand.ipynb", "02_model_zoo.ipynb", "03_optimizer_sweep.ipynb")
_URL_LINE = re.compile(r'^REPO_URL = .*$', re.M)
_GITHUB = re.compile(r"^(?:https://github\.com/|git@github\.com:)([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")
_BADGE = re.compile(r"^\[!\[Open In Colab\]\(.*\n(?:\n)?", re.M)
_README_BLOCK = re.compile(r"(<!-- open-in-colab -->\n).*?(<!-- /open-in-colab -->)", re.S)

# The notebooks' first cell. Plain Python (no `!` shell lines), so tests run it as it is, with
# Colab, git and pip faked. The REPO_URL line is replaced by render().
CELL = '''\
#@title Setup: get the project if needed, install it without changing Colab's JAX
# Written by colab/setup_cell.py, which holds the repository's URL for every notebook. Empty:
# this cell asks for a copy of the project to upload instead of cloning.
REPO_URL = ""  #@param {type:"string"}

import glob
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

PARTS = ("pyproject.toml", "research", "configs", "colab")  # what a copy of the project holds
HOW = ("upload the .tar.gz that `python -m build` writes in dist/ (or a .zip of the "
       "repository), put the repository on Drive as MyDrive/research, or set REPO_URL above")


def is_project(d):
  return all(os.path.exists(os.path.join(d, p)) for p in PARTS)


def run(cmd, what, **kwargs):
  """Runs cmd; when it fails, prints its output and stops with one line."""
  done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
  if done.returncode:
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\\n")
    raise SystemExit(f"{what} failed (exit {done.returncode}); its output is above")


UPLOAD = "the project's .tar.gz (the one `python -m build` writes in dist/)"


class NotTheProject(Exception):
  """An archive that is not a copy of the project (the message says why)."""


def unpack(archive):
  """The project's root after extracting `archive` (a .tar.gz or .zip) into research-source/;
  NotTheProject when it is none. Extracted beside it first and renamed when whole, so a
  truncated archive never leaves a partial copy that a rerun would take for the project."""
  if archive.endswith(".whl"):
    raise NotTheProject(f"{archive} is a wheel, which holds only the research package, and "
                        "the notebooks also need configs/")
  dest = os.path.abspath("research-source")
  partial = dest + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  try:
    if archive.endswith(".zip"):
      with zipfile.ZipFile(archive) as z:
        z.extractall(partial)
    else:
      with tarfile.open(archive) as t:
        # filter="data" refuses links and paths out of dest (Python 3.12, 3.11.4+).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        t.extractall(partial, **safe)
  except Exception as e:  # pylint: disable=broad-except
    # Any failure mid-archive (EOFError, zlib.error, a bad CRC...) means not a usable copy.
    shutil.rmtree(partial, ignore_errors=True)
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise NotTheProject(f"{archive} cannot be extracted ({reason})") from None
  found = [d for d in [partial] + sorted(glob.glob(os.path.join(partial, "*"))) if is_project(d)]
  if not found:
    shutil.rmtree(partial, ignore_errors=True)
    raise NotTheProject(f"{archive} holds no copy of the project ({', '.join(PARTS)})")
  shutil.rmtree(dest, ignore_errors=True)  # This cell's own folder, holding no project.
  os.replace(partial, dest)
  return dest + found[0][len(partial):]


def archives_here():
  """The archives in the cwd (Colab's upload target), oldest first."""
  return sorted(glob.glob("*.tar.gz") + glob.glob("*.zip") + glob.glob("*.whl"),
                key=os.path.getmtime)


# Jupyter started in a checkout (or in its colab/): use it, install nothing.
ROOT = next((os.path.abspath(d) for d in (os.getcwd(), os.path.dirname(os.getcwd()))
             if is_project(d)), None)
INSTALL = ROOT is None
if INSTALL:
  # A copy from an earlier run of this cell, or one on a mounted Drive.
  kept = ["research", *sorted(glob.glob(os.path.join("research-source", "*"))),
          "research-source", os.path.join("drive", "MyDrive", "research")]
  ROOT = next((os.path.abspath(d) for d in kept if is_project(d)), None)
if ROOT is None and REPO_URL:
  run(["git", "clone", "-q", "--depth=1", REPO_URL, "research"], f"git clone {REPO_URL}",
      env=dict(os.environ, GIT_TERMINAL_PROMPT="0"))
  ROOT = os.path.abspath("research")
rejected = None  # what the last archive that was not the project was, once moved aside
uploads = 0
while ROOT is None:
  archives = archives_here()
  if not archives and "google.colab" in sys.modules and uploads < 2:
    uploads += 1
    if rejected is None:
      print("REPO_URL is not set: choose a copy of the project to upload (the .tar.gz that "
            "`python -m build` writes in dist/, or a .zip of the repository)")
    from google.colab import files
    uploaded = files.upload()
    for name, data in uploaded.items():
      if not os.path.exists(name):  # Colab versions that only return the bytes
        with open(name, "wb") as f:
          f.write(data)
    archives = list(uploaded)
  if not archives:
    raise SystemExit(f"{rejected}: rerun this cell and upload {UPLOAD}" if rejected else
                     "no copy of the project was found: " + HOW)
  # The newest archive; a wheel only when nothing else came (dist/ holds both).
  archive = ([a for a in archives if not a.endswith(".whl")] or archives)[-1]
  try:
    ROOT = unpack(archive)
  except NotTheProject as e:
    # Moved aside (kept, renamed): the upload is offered again, here or when the cell reruns.
    os.replace(archive, archive + ".not-the-project")
    rejected = f"{e}; moved it to {archive}.not-the-project"
    if "google.colab" not in sys.modules:
      raise SystemExit(f"{rejected}: put {UPLOAD} in {os.getcwd()} and rerun this cell") from None
    print(f"{rejected}: upload {UPLOAD}")
# Standard library only, so it runs before the install and before JAX starts: detects the
# TPU, GPU or CPU, sets XLA_PYTHON_CLIENT_PREALLOCATE=false on a GPU, pins the installed jax,
# jaxlib, their plugins and numpy in a pip constraints file, and names the jax extra
# ([cuda12], [tpu]) where the accelerator's plugin is missing.
sys.path.insert(0, os.path.join(ROOT, "colab"))
import runtime_setup

RUNTIME = runtime_setup.prepare(install=INSTALL)
if INSTALL:
  run([sys.executable, "-m", "pip", "install", "-q", "-e", ROOT + RUNTIME.extra,
       "-c", RUNTIME.constraints], "pip install -e " + ROOT + RUNTIME.extra)
  importlib.invalidate_caches()
os.chdir(ROOT)  # configs/... and launch/... are relative to the repository root.
if ROOT not in sys.path:
  # `from configs import ...`; also finds `research` before Colab's kernel restarts.
  sys.path.insert(0, ROOT)
print("using the checkout at", ROOT)
print(runtime_setup.describe(RUNTIME))
import jax

print(f"jax {jax.__version__} on {jax.default_backend()}:", jax.devices())
'''


def github(url: str) -> tuple[str, str] | None:
  """(owner, name) of a github.com URL, else None."""
  m = _GITHUB.match(url.strip())
  return (m.group(1), m.group(2)) if m else None


def render(url: str) -> str:
  """The setup cell's source with REPO_URL = url."""
  return _URL_LINE.sub(lambda _: f'REPO_URL = {json.dumps(url)}  #@param {{type:"string"}}',
                       CELL, count=1)


def badge(url: str, notebook: str, branch: str = BRANCH) -> str:
  """The Open-in-Colab badge of colab/<notebook>, or "" when Colab cannot open `url`."""
  repo = github(url)
  if not repo:
    return ""
  return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
          f"(https://colab.research.google.com/github/{repo[0]}/{repo[1]}/blob/{branch}"
          f"/colab/{notebook})")


def readme_block(url: str) -> str:
  """colab/README.md's part between the open-in-colab markers."""
  if github(url):
    return "".join(f"- `{n}`: {badge(url, n)}\n" for n in NOTEBOOKS)
  return ("This copy sets no repository URL (`REPO_URL` in `colab/setup_cell.py`), so there are "
          "no\nbadges: in Colab, File > Open notebook > Upload (or its GitHub tab, with the "
          "notebook's\nURL), then run the first cell, which asks for a copy of the project "
          "(see below).\n")


def sync_notebook(notebook: dict, name: str, url: str) -> dict:
  """`notebook` (nbformat JSON) with its setup cell and badge written from `url`."""
  cells = notebook["cells"]
  title = cells[0]
  text = _BADGE.sub("", "".join(title["source"]))
  head, sep, rest = text.partition("\n\n")
  mark = badge(url, name)
  text = head + sep + (mark + "\n\n" if mark else "") + rest if sep else text
  title["source"] = text.splitlines(keepends=True)
  setup = next(c for c in cells if c["cell_type"] == "code")
  setup["source"] = render(url).splitlines(keepends=True)
  return notebook


def write(url: str, colab: str = COLAB) -> list[str]:
  """Rewrites the notebooks and colab/README.md in `colab` from `url`; the paths it changed."""
  changed = []
  for name in NOTEBOOKS:
    path = os.path.join(colab, name)
    with open(path, encoding="utf-8") as f:
      old = f.read()
    # nbformat's own layout, so saving from Jupyter leaves no diff.
    new = json.dumps(sync_notebook(json.loads(old), name, url), indent=1, sort_keys=True,
                     ensure_ascii=False) + "\n"
    if new != old:
      changed.append(path)
      with open(path, "w", encoding="utf-8") as f:
        f.write(new)
  path = os.path.join(colab, "README.md")
  with open(path, encoding="utf-8") as f:
    old = f.read()
  new = _README_BLOCK.sub(lambda m: m.group(1) + readme_block(url) + m.group(2), old)
  if new != old:
    changed.append(path)
    with open(path, "w", encoding="utf-8") as f:
      f.write(new)
  return changed


def set_url(url: str, path: str = __file__) -> None:
  """Writes `url` as REPO_URL into this file."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  with open(path, "w", encoding="utf-8") as f:
    f.write(_URL_LINE.sub(lambda _: f"REPO_URL = {json.dumps(url)}", text, count=1))


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repo-url", help="the repository's URL (git clone's argument); "
                      "'' unsets it")
  parser.add_argument("--check", action="store_true",
                      help="change nothing; exit 1 when a notebook or the README is stale")
  args = parser.parse_args(argv)
  url = REPO_URL if args.repo_url is None else args.repo_url.strip()
  if url and not re.match(r"^(https?://|git@|ssh://|file://)\S+$", url):
    print(f"error: --repo-url={url!r} is not a URL git can clone; pass e.g. "
          "https://github.com/OWNER/NAME", file=sys.stderr)
    return 2
  if args.check:
    import shutil  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as tmp:
      for name in NOTEBOOKS + ("README.md",):
        shutil.copy(os.path.join(COLAB, name), tmp)
      stale = [os.path.basename(p) for p in write(url, tmp)]
    if stale:
      print(f"stale: {', '.join(stale)}; run `python colab/setup_cell.py`", file=sys.stderr)
      return 1
    return 0
  if url != REPO_URL:
    set_url(url)
  for path in write(url):
    print("rewrote", os.path.relpath(path))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
