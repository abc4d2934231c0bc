"""No choice reads the test split or the reported measure (issue 32, item 3): an AST scan of
every runner in research/experiments/ for a selection (argmin/argmax/argsort, min/max/sorted
with a key, _choose) fed by a test value, or a choice (a `best`/`chosen` name) that reads no
validation value. Known cases are an explicit allowlist, so anything new fails."""
import ast
import pathlib
import re

import pytest

from research.experiments import harness

REPO = pathlib.Path(__file__).resolve().parents[1]
RUNNERS = sorted((REPO / "research" / "experiments").glob("*.py"))

# (file, function, rule) -> why it is still there. Each entry is known and tracked.
ALLOWED: dict = {}


_TEST = re.compile(r"(^|_)test($|_)", re.IGNORECASE)
# A held-out run (a seed no result reports) is validation too: batch_size's cap.
_VALID = re.compile(r"(^|_)(val(id|idation)?|held_out)($|_)", re.IGNORECASE)
_CHOICE = re.compile(r"best|chosen|choice|select|pick", re.IGNORECASE)
_KEYED = {"min", "max", "sorted"}          # a choice only with key=...
_ARG = {"argmin", "argmax", "nanargmin", "nanargmax", "argsort"}  # a choice without axis=...
_CHOOSERS = {"_choose", "choose"}


def _variables(node: ast.AST) -> set[str]:
  """The variables an expression reads (what a tainted name can flow through)."""
  return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _names(node: ast.AST, skip_compares: bool = True) -> set[str]:
  """Identifiers, attribute names and string constants an expression reads; the string of a
  comparison (`split == "test"`, a branch on the split's name) is not data and is skipped."""
  out, skip = set(), set()
  for n in ast.walk(node):
    if skip_compares and isinstance(n, ast.Compare):
      skip.update(id(c) for c in [n.left, *n.comparators] if isinstance(c, ast.Constant))
  for n in ast.walk(node):
    if isinstance(n, ast.Name):
      out.add(n.id)
    elif isinstance(n, ast.Attribute):
      out.add(n.attr)
    elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip:
      out.add(n.value)
  return out


def _is_selection(call: ast.Call) -> bool:
  f = call.func
  name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
  kwargs = {k.arg for k in call.keywords}
  if name in _CHOOSERS:
    return True
  if name in _KEYED and isinstance(f, ast.Name):
    return "key" in kwargs
  if name in _ARG:
    # np.argmax(x) or x.argmax(): over a whole array, a choice; with an axis (a positional
    # one after the array), per-row predictions.
    module_call = (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                   and f.value.id in ("np", "jnp"))
    arrays = len(call.args) if module_call else len(call.args) + 1
    return "axis" not in kwargs and arrays <= 1
  return False


def _assignments(fn: ast.AST):
  for n in ast.walk(fn):
    if isinstance(n, ast.Assign):
      yield n.targets, n.value
    elif isinstance(n, (ast.AugAssign, ast.AnnAssign)) and n.value is not None:
      yield [n.target], n.value
    elif isinstance(n, ast.For):  # a comprehension's variables are its own (its value's reads)
      yield [n.target], n.iter
    elif isinstance(n, ast.NamedExpr):
      yield [n.target], n.value


def _target_names(targets) -> set[str]:
  """The names an assignment writes: `a, b = ...` both; `a[i] = ...` and `a.f = ...` only a."""
  out = set()
  for t in targets:
    while isinstance(t, (ast.Subscript, ast.Attribute, ast.Starred)):
      t = t.value
    if isinstance(t, ast.Name):
      out.add(t.id)
    elif isinstance(t, (ast.Tuple, ast.List)):
      out |= _target_names(t.elts)
  return out


def scan(source: str, filename: str = "<runner>") -> list[tuple[str, str, str, int]]:
  """[(file, function, rule, line)] for each selection fed by a test value ("test feeds a
  choice") and each assignment to a choice name whose value selects without reading any
  validation value ("choice without validation")."""
  tree = ast.parse(source)
  found = []
  scopes = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
  for scope in scopes:
    # Names holding test values, within the function (closures included), to a fixpoint.
    tainted = set()
    changed = True
    while changed:
      changed = False
      for targets, value in _assignments(scope):
        if any(_TEST.search(r) for r in _names(value)) or _variables(value) & tainted:
          new = _target_names(targets) - tainted
          if new:
            tainted |= new
            changed = True
    for call in (n for n in ast.walk(scope) if isinstance(n, ast.Call)):
      if not _is_selection(call):
        continue
      args = [*call.args, *(k.value for k in call.keywords)]
      reads = set().union(*(_names(a) for a in args))
      if any(_TEST.search(r) for r in reads) or set().union(*map(_variables, args)) & tainted:
        found.append((filename, scope.name, "test feeds a choice", call.lineno))
    for targets, value in _assignments(scope):
      if not any(_CHOICE.search(t) for t in _target_names(targets)):
        continue
      calls = [n for n in ast.walk(value) if isinstance(n, ast.Call) and _is_selection(n)]
      # harness._choose is the protocol's choice: it refuses anything but validation records.
      guarded = all(isinstance(c.func, ast.Name) and c.func.id in _CHOOSERS for c in calls)
      if calls and not guarded and not any(_VALID.search(r) for r in _names(value)):
        found.append((filename, scope.name, "choice without validation", value.lineno))
  return found


def test_no_runner_chooses_on_test_or_on_an_unvalidated_measure_beyond_the_known_cases():
  found = [f for path in RUNNERS for f in scan(path.read_text(), path.name)]
  keys = {(f, fn, rule) for f, fn, rule, _ in found}
  new = [f for f in found if (f[0], f[1], f[2]) not in ALLOWED]
  assert not new, "a choice reads test or no validation value: " + "; ".join(
      f"{f}:{line} in {fn}: {rule}" for f, fn, rule, line in new)
  # An allowed case that is gone must leave the list too (the list stays exact).
  assert keys == set(ALLOWED), f"fixed, remove from ALLOWED: {set(ALLOWED) - keys}"


PLANTED = '''
import numpy as np

def pick_on_test(results, dataset):
  scores = [r["test_accuracy"] for r in results]
  return results[int(np.argmax(scores))]

def pick_on_reported(grid):
  best = max(grid, key=lambda cell: cell["accuracy"])
  return best

def pick_on_the_split(grids, splits):
  x_eval = splits["test"]
  return sorted(grids, key=lambda g: g(x_eval))[0]

def fine(grid, logits, split):
  best = max(grid, key=lambda cell: cell["valid"]["accuracy"])
  pred = np.argmax(logits, axis=-1)  # per-example predictions, not a choice
  out = evaluate(logits, per_example=split == "test")  # a branch on the split's name
  return best, pred, out
'''


def test_the_scan_catches_planted_choices_on_test_and_leaves_valid_ones_alone():
  found = {(fn, rule) for _, fn, rule, _ in scan(PLANTED)}
  assert found == {("pick_on_test", "test feeds a choice"),
                   ("pick_on_reported", "choice without validation"),
                   ("pick_on_the_split", "test feeds a choice")}


def test_choose_refuses_a_grid_that_carries_test_records():
  exp = harness.Experiment("x", [harness.Arm("a")], "a", (1,), "size", [0, 1],
                           fit=None, measure=None)
  grid = [{"setting": {}, "valid": [{"accuracy": 0.5}] * 2}]
  assert harness._choose(grid, exp) == {}  # pylint: disable=protected-access
  with pytest.raises(AssertionError, match="validation records alone"):
    harness._choose([{**grid[0], "test": [{"accuracy": 0.9}] * 2}], exp)  # pylint: disable=protected-access
