"""Text a user reads: `--help`'s line per config, and no references they cannot follow.

The help lines are the first line of each config's docstring (research.main.describe_configs);
a summary that runs onto a second line is cut mid-sentence there. Issue numbers belong to the
project's tracker, which a user of this repository does not see; source line numbers in sample
output go stale with every edit of the file.
"""
import ast
import glob
import os
import re
import subprocess
import sys

import processes
import pytest

from research import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# "issue 7", "Issue 14's", "issues 3", and "#12" not preceded by a word (jax-ml/jax#12868, a
# public reference, and hex colours like "#636363" do not match).
ISSUE_REF = re.compile(r"\b[Ii]ssues? \d+|(?<![\w/&-])#\d{1,4}\b")
SHIPPED = ("README.md", "pyproject.toml", "MANIFEST.in", "docs/", "configs/", "research/",
           "colab/", "launch/", ".ci/")
TEXT = (".py", ".md", ".ipynb", ".toml", ".sh", ".in", "")  # "" : .ci/run


def test_every_config_has_a_one_sentence_help_line():
  rows = main.describe_configs()
  assert len(rows) == len(glob.glob(os.path.join(REPO, "configs", "*.py")))
  bad = []
  for name, line in rows:
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
      doc = ast.get_docstring(ast.parse(f.read())) or ""
    summary = " ".join(doc.split("\n\n")[0].split())
    if not line or line != summary or line[-1] not in ".!?" or ISSUE_REF.search(line):
      bad.append(f"{name}: {line!r}")
  assert not bad, ("each config's docstring must open with one line that is a whole sentence "
                   "(ending with a full stop) and cites no issue numbers: " + "; ".join(bad))


def test_the_help_text_lists_the_lines():
  text = main.help_text()
  for name, line in main.describe_configs():
    assert re.search(rf"^  {re.escape(name)} +{re.escape(line)}$", text, re.M), name


def _shipped_files():
  try:
    out = subprocess.run(["git", "ls-files", "-z", *SHIPPED], cwd=REPO, capture_output=True,
                         check=True)
    paths = [p for p in out.stdout.decode().split("\0") if p]
  except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
    paths = [os.path.relpath(os.path.join(d, f), REPO) for top in SHIPPED
             for d, _, files in os.walk(os.path.join(REPO, top)) for f in files
             if "__pycache__" not in d] + [p for p in SHIPPED if not p.endswith("/")]
  return [p for p in paths if os.path.splitext(p)[1] in TEXT
          and os.path.isfile(os.path.join(REPO, p))]


def test_no_shipped_text_cites_an_issue_number():
  files = _shipped_files()
  assert "README.md" in files and any(p.startswith("configs/") for p in files)
  hits = []
  for path in files:
    with open(os.path.join(REPO, path), encoding="utf-8", errors="replace") as f:
      for number, line in enumerate(f, 1):
        hits += [f"{path}:{number}: {m.group(0)}" for m in ISSUE_REF.finditer(line)]
  assert not hits, "rephrase without the tracker's numbers: " + "; ".join(hits)


@pytest.mark.parametrize("text, found", [
    ("(issue 7, item 5)", True), ("Issue 14's layers", True), ("see #12.", True),
    ("jax-ml/jax#12868", False), ('colors=("#636363",)', False), ("issue tracking", False)])
def test_the_issue_pattern(text, found):
  assert bool(ISSUE_REF.search(text)) == found


def test_the_readme_sample_output_names_no_source_lines():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  assert "] step   3000 | loss" in readme  # the sample is still there
  assert not re.findall(r"\w+\.py:\d+\]", readme)


_FIGURES = {  # what the README's sample output shows, as regexes over the run's log
    "loss": r"\] step +3000 \| loss ([\d.]+) \| acc ([\d.]+) \|",
    "valid": r"\] step +3000 \| valid loss ([\d.]+) \| valid acc ([\d.]+)",
    "test": r"\] done: test accuracy ([\d.]+), test loss ([\d.]+),",
}


@pytest.mark.slow
def test_the_readme_sample_output_is_what_the_first_command_prints(tmp_path):
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-m", "research.main",
                        f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=processes.GUARD_S)
  assert run.returncode == 0, run.stderr[-2000:]
  for name, pattern in _FIGURES.items():
    shown = re.search(pattern, readme)
    printed = re.search(pattern, run.stderr + run.stdout)
    assert shown and printed, name
    # Four printed decimals; another XLA version may round the last one differently.
    assert [float(v) for v in shown.groups()] == pytest.approx(
        [float(v) for v in printed.groups()], abs=2e-3), (name, printed.group(0))
