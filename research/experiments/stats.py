"""The statistics behind every results block: pure NumPy/SciPy, no JAX.

A results block is one results.json (harness.run's dict). Its comparisons are every arm's
paired difference to the baseline, for every field of its family, at every size. For each:

  paired_t(diff_S)                   the paired t-interval over seeds (the test set fixed)
  crossed(a_SxN, b_SxN)              an interval that also counts the test set's sampling:
                                     seeds and test examples are crossed (every seed measures
                                     the same examples), so Var(mean difference) = seed part
                                     + example part + interaction / (S N); estimated from the
                                     two-way ANOVA of the per-example differences D_SxN:
                                       V = MS_seed/(S N) + max(0, MS_ex - MS_res)/(S N)
                                     with Satterthwaite's degrees of freedom. With each seed
                                     on its own test draw (nested) the seed variance already
                                     holds the test sampling, and the interval is the t one.
  holm(p)                            Holm's step-down adjustment within the block's family

and `block(results)` puts them together: a difference is an effect only when its
Holm-adjusted p < ALPHA (p of the wider analysis: the larger of the t and test-inclusive
p-values) and the wider of the two intervals excludes zero. `count` sums comparisons and
survivors over several results.json files (the doc's top); `borderline` says whether a
conclusion could flip within the reproduction tolerance; `compare_blocks` is `--check`'s
comparison of two rendered blocks.
"""
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats

CONFIDENCE = 0.95
ALPHA = 0.05
PER_EXAMPLE = "per_example"  # the optional key of a test record: {field: per-example values}
# Reproduction tolerance (reruns on another machine moved numbers by up to 2 units
# of the last printed digit). A printed number may move by TOLERANCE_UNITS units of its last
# digit, counting at most SIGNIFICANT digits (7,311 examples: 3 units of the tens); a
# conclusion is borderline when its interval's end nearest zero lies within that of zero, or
# its adjusted p within P_BAND.
TOLERANCE_UNITS = 3
SIGNIFICANT = 3
P_BAND = (ALPHA / 2, 2 * ALPHA)
P_FACTOR = P_BAND[1] / P_BAND[0]  # --check: how far a printed p may move


# ------------------------------------------------------------------------- per-example values


def pack(record: Mapping[str, Any]) -> dict:
  """record with its per-example vectors stored compactly for JSON: a vector of 0/1 (e.g.
  correctness) as a string of '0'/'1' characters, one per test example; any other vector as a
  list of floats. A record without them is returned as is."""
  if PER_EXAMPLE not in record:
    return dict(record)
  packed = {}
  for field, values in record[PER_EXAMPLE].items():
    if isinstance(values, str):
      packed[field] = values
      continue
    v = np.asarray(values, np.float64).ravel()
    if np.all((v == 0) | (v == 1)):
      packed[field] = "".join("1" if x else "0" for x in v)
    else:
      packed[field] = [float(x) for x in v]
  return {**record, PER_EXAMPLE: packed}


def unpack(values) -> np.ndarray:
  """A per-example vector as float64 values_N (the inverse of pack)."""
  if isinstance(values, str):
    return (np.frombuffer(values.encode("ascii"), np.uint8) - ord("0")).astype(np.float64)
  return np.asarray(values, np.float64).ravel()


def per_example(records: Sequence[Mapping[str, Any]], field: str) -> list[np.ndarray] | None:
  """[values_N per seed] of field, or None when any seed's record lacks them."""
  out = []
  for r in records:
    values = (r.get(PER_EXAMPLE) or {}).get(field)
    if values is None:
      return None
    out.append(unpack(values))
  return out


# --------------------------------------------------------------------------------- intervals


def _two_sided(mean: float, se: float, df: float, confidence: float):
  if not (se > 0 and math.isfinite(se)):
    p = 1.0 if mean == 0 else 0.0
    return (mean, mean), p
  half = sp_stats.t.ppf(0.5 + confidence / 2, df) * se
  p = float(2 * sp_stats.t.sf(abs(mean) / se, df))
  return (mean - half, mean + half), p


def paired_t(diff_S: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
  """The t-interval over seeds of the mean paired difference: {"n", "mean", "std", "ci",
  "p", "df"}; p is the two-sided paired t-test's (scipy.stats.ttest_rel's). Identical
  differences have zero width and p 0 (1 when they are all zero)."""
  d = np.asarray(diff_S, np.float64)
  n = len(d)
  mean = float(d.mean())
  if n < 2:
    return {"n": n, "mean": mean, "std": float("nan"), "ci": [float("nan")] * 2,
            "p": float("nan"), "df": 0}
  std = float(d.std(ddof=1))
  ci, p = _two_sided(mean, std / math.sqrt(n), n - 1, confidence)
  return {"n": n, "mean": mean, "std": std, "ci": list(ci), "p": p, "df": n - 1}


def crossed(a: Sequence[np.ndarray], b: Sequence[np.ndarray], shared: bool = True,
            confidence: float = CONFIDENCE) -> dict[str, Any]:
  """The interval for the mean paired difference that counts the test set's sampling (module
  doc), from per-seed per-example values a[s]_N, b[s]_N of the arm and the baseline (the same
  examples in the same order for both). shared: every seed measured the same test examples
  (crossed); otherwise (or when the seeds' test sets differ in size) each seed's difference
  already carries its own test draw and the interval is paired_t's. Returns {"mean", "ci",
  "se", "df", "p", "design"}."""
  if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
    raise ValueError("per-example values of the arm and the baseline differ in shape")
  s = len(a)
  sizes = {len(x) for x in a}
  if not shared or len(sizes) > 1:
    t = paired_t([float(np.mean(x - y)) for x, y in zip(a, b)], confidence)
    return {"mean": t["mean"], "ci": t["ci"], "se": t["std"] / math.sqrt(s) if s > 1 else
            float("nan"), "df": t["df"], "p": t["p"], "design": "nested"}
  d = np.stack([np.asarray(x, np.float64) - np.asarray(y, np.float64) for x, y in zip(a, b)])
  n = d.shape[1]
  mean = float(d.mean())
  if s < 2 or n < 2:
    return {"mean": mean, "ci": [float("nan")] * 2, "se": float("nan"), "df": 0,
            "p": float("nan"), "design": "crossed"}
  seed_m, ex_m = d.mean(axis=1), d.mean(axis=0)
  ms_seed = n * float(np.sum((seed_m - mean) ** 2)) / (s - 1)
  ms_ex = s * float(np.sum((ex_m - mean) ** 2)) / (n - 1)
  resid = d - seed_m[:, None] - ex_m[None, :] + mean
  ms_res = float(np.sum(resid ** 2)) / ((s - 1) * (n - 1))
  v_seed = ms_seed / (s * n)
  v_test = max(0.0, ms_ex - ms_res) / (s * n)
  v = v_seed + v_test
  if v_test > 0:  # Satterthwaite for (MS_seed + MS_ex - MS_res) / (S N)
    c = 1.0 / (s * n)
    df = v ** 2 / ((c * ms_seed) ** 2 / (s - 1) + (c * ms_ex) ** 2 / (n - 1)
                   + (c * ms_res) ** 2 / ((s - 1) * (n - 1)))
  else:
    df = float(s - 1)
  ci, p = _two_sided(mean, math.sqrt(v), df, confidence)
  return {"mean": mean, "ci": list(ci), "se": math.sqrt(v), "df": float(df), "p": p,
          "design": "crossed"}


def holm(pvalues: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values (in the input's order); a nan p counts as 1."""
  p = np.asarray([1.0 if not math.isfinite(x) else x for x in pvalues], np.float64)
  m = len(p)
  order = np.argsort(p, kind="stable")
  adjusted = np.empty(m)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return adjusted.tolist()


def _excludes_zero(ci) -> bool:
  lo, hi = ci
  return bool(lo > 0 or hi < 0)


def _width(ci) -> float:
  lo, hi = ci
  return hi - lo if math.isfinite(lo) and math.isfinite(hi) else math.inf


# ------------------------------------------------------------------------------ a results block


def _finite(values) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             for v in values)


def default_family(results: Mapping[str, Any]) -> list[str]:
  """The fields a block compares when its experiment names none: every numeric test field
  of the baseline that varies over seeds in some arm (a field constant over the seeds of
  every arm, e.g. a parameter count, is a design quantity, not a measurement)."""
  base = results["baseline"]
  fields: list[str] = []
  for entry in results["sizes"]:
    records = entry["arms"][base]["test"]
    for f, v in records[0].items():
      if f in fields or f == PER_EXAMPLE or not _finite([v]):
        continue
      varies = any(len({r.get(f) for r in arm["test"]}) > 1 for arm in entry["arms"].values())
      if varies:
        fields.append(f)
  return fields


def block(results: Mapping[str, Any]) -> dict[str, Any]:
  """Every comparison of one results block (module doc).

  Returns {"family": [fields], "comparisons": {(size index, arm, field): entry},
  "count": comparisons in the family, "survive": effects among them, "missing_test": fields
  without per-example values}. entry: {"mean", "t": paired_t, "test": crossed or None,
  "wide": the wider interval, "p": the wider analysis's p, "p_holm" (None outside the
  family), "in_family", "effect"}. Comparisons of fields outside the family are kept (shown,
  never called effects)."""
  family = list(results.get("family") or default_family(results))
  shared = bool(results.get("test_shared", True))
  confidence = results.get("confidence", CONFIDENCE)
  base = results["baseline"]
  comparisons: dict[tuple, dict] = {}
  missing = set()
  for i, entry in enumerate(results["sizes"]):
    base_records = entry["arms"][base]["test"]
    for name, arm in entry["arms"].items():
      if name == base:
        continue
      for f in arm["test"][0]:
        if f == PER_EXAMPLE or f not in base_records[0]:
          continue
        values = [r.get(f) for r in arm["test"]]
        ref = [r.get(f) for r in base_records]
        if not (_finite(values) and _finite(ref)) or len(values) != len(ref):
          continue
        t = paired_t(np.subtract(values, ref), confidence)
        a, b = per_example(arm["test"], f), per_example(base_records, f)
        test = crossed(a, b, shared, confidence) if a is not None and b is not None else None
        if test is None and f in family:
          missing.add(f)
        wide = t["ci"] if test is None or _width(t["ci"]) >= _width(test["ci"]) else test["ci"]
        p = t["p"] if test is None else max(t["p"], test["p"])
        comparisons[(i, name, f)] = {"mean": t["mean"], "t": t, "test": test, "wide": wide,
                                     "p": p, "p_holm": None, "in_family": f in family,
                                     "effect": False}
  keys = [k for k, c in comparisons.items() if c["in_family"]]
  for k, adjusted in zip(keys, holm([comparisons[k]["p"] for k in keys])):
    c = comparisons[k]
    c["p_holm"] = adjusted
    c["effect"] = bool(adjusted < ALPHA and _excludes_zero(c["wide"]))
  return {"family": family, "comparisons": comparisons, "count": len(keys),
          "survive": sum(comparisons[k]["effect"] for k in keys),
          "missing_test": sorted(missing)}


def count(blocks: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
  """(comparisons, survivors) summed over results.json dicts: "This document makes N
  comparisons; M survive Holm correction"."""
  n = m = 0
  for results in blocks:
    b = block(results)
    n += b["count"]
    m += b["survive"]
  return n, m


def edges(blocks: Iterable[Mapping[str, Any]]) -> list[str]:
  """One line per choice that remains at a grid edge (harness.extend_grid's "edges"), over
  results.json dicts: 'experiment, size=S, arm: axis=v at the high edge (budget: 2
  extensions)'. Blocks from before extension (no "edges") list nothing."""
  out = []
  for results in blocks:
    for entry in results["sizes"]:
      for name, arm in entry["arms"].items():
        for e in arm.get("edges", ()):
          v = e["value"]
          why = (f"budget: {results.get('max_extensions', 0)} extension(s)"
                 if e["why"] == "budget" else e["why"])
          out.append(f"{results['experiment']}, {results['size_label']}={entry['size']}, "
                     f"{name}: {e['axis']}={v:g} at the {e['side']} edge ({why})")
  return out


def blocks_in(obj: Any) -> list[dict]:
  """The results blocks (harness.run's dicts) in a results.json: the object itself and those
  nested in it (e.g. one per target, or a regrouped block beside the sweep), in order."""
  if isinstance(obj, dict):
    own = [obj] if {"sizes", "baseline", "seeds"} <= set(obj) else []
    return own + [b for k, v in obj.items() if not (own and k == "sizes")
                  for b in blocks_in(v)]
  if isinstance(obj, list):
    return [b for v in obj for b in blocks_in(v)]
  return []


def tolerance(value: float, places: int) -> float:
  """How far a number printed with `places` decimals may move between machines (module
  constants)."""
  unit = 10.0 ** -places
  if value and math.isfinite(value):
    unit = max(unit, 10.0 ** (math.floor(math.log10(abs(value))) - SIGNIFICANT + 1))
  return TOLERANCE_UNITS * unit


def borderline(comparison: Mapping[str, Any], tol: float) -> bool:
  """Whether a family comparison's status (effect / no measurable difference) could change
  when its numbers move by tol (in the field's units). An effect (adjusted p < ALPHA and the
  wider interval excludes zero) is borderline when the interval's end nearest zero is within
  tol of zero or its adjusted p is within P_BAND; a non-effect only when both conditions could
  hold after the move (so an adjusted p of 0.4 is never borderline)."""
  if comparison.get("p_holm") is None:
    return False
  lo, hi = comparison["wide"]
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return False
  excludes = lo > 0 or hi < 0
  end_near = (min(abs(lo), abs(hi)) if excludes else min(-lo, hi)) <= tol
  p = comparison["p_holm"]
  p_near = P_BAND[0] <= p <= P_BAND[1]
  if p < ALPHA and excludes:  # An effect: either condition moving undoes it.
    return bool(end_near or p_near)
  # Not an effect: it becomes one only if both conditions can hold.
  return bool((p < ALPHA or p_near) and (excludes or end_near))


# ------------------------------------------------------------------- --check: two rendered blocks


_NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")
CHOICE_HEADINGS = ("chosen on valid",)  # table columns compared exactly


def _numbers(text: str) -> tuple[list[str], list[str]]:
  """(the text between numbers, the numbers) of a line."""
  return _NUMBER.split(text), _NUMBER.findall(text)


def _value(token: str) -> float:
  return float(token.replace(",", ""))


def _places(token: str) -> int:
  mantissa = token.split("e")[0]
  return len(mantissa.split(".")[1]) if "." in mantissa else 0


def _close(a: str, b: str) -> bool:
  x, y = _value(a), _value(b)
  return abs(x - y) <= tolerance(x, max(_places(a), _places(b))) + 1e-12


def _cells(line: str) -> list[str]:
  return [c.strip() for c in line.strip().strip("|").split("|")]


def _star(cell: str) -> bool:
  return cell.rstrip(" †").endswith("*")


def compare_blocks(old: str, new: str) -> list[str]:
  """--check's comparison of a doc block (old) with a rerun's results block (new): the same
  lines, text and choices exactly ('chosen on valid' columns), every other number within
  `tolerance`; a cell whose effect mark ('*') differs is a flipped conclusion, allowed only
  where either side marks it borderline ('†'). Returns one line per problem (none: same)."""
  a, b = old.strip().splitlines(), new.strip().splitlines()
  if len(a) != len(b):
    return [f"{len(a)} lines in the doc, {len(b)} in the results"]
  problems, headings = [], []
  for k, (x, y) in enumerate(zip(a, b), start=1):
    if x == y:
      if x.startswith("|"):
        headings = _cells(x) if not headings else headings
      else:
        headings = []
      continue
    if x.startswith("|") and y.startswith("|"):
      cx, cy = _cells(x), _cells(y)
      if len(cx) != len(cy):
        problems.append(f"line {k}: the table's columns differ")
        continue
      if not headings:
        headings = cx
        problems.append(f"line {k}: the table's headings differ")
        continue
      for h, u, v in zip(headings, cx, cy):
        if u == v:
          continue
        if any(h.startswith(c) for c in CHOICE_HEADINGS):
          problems.append(f"line {k}: the choice differs ({h}: {u} vs {v})")
        elif _star(u) != _star(v) and "†" not in u + v:
          problems.append(f"line {k}: a conclusion flipped ({h}: {u} vs {v}) and neither is "
                          "marked borderline")
        elif "p (Holm)" in h:
          if not _p_close(u, v):
            problems.append(f"line {k}: {h}: {u} vs {v} differ by more than a factor "
                            f"{P_FACTOR:g}")
        elif not _same_within(u.replace("*", "").replace("†", ""),
                              v.replace("*", "").replace("†", "")):
          problems.append(f"line {k}: {h}: {u} vs {v} differ beyond the tolerance")
      continue
    headings = []
    if not _same_within(x, y):
      problems.append(f"line {k}: {x[:60]!r} vs {y[:60]!r}")
  return problems


def _p_close(u: str, v: str) -> bool:
  """Two printed p-values ('0.012', '<0.001', '(0.300)', marks aside) agree within a factor
  P_FACTOR or 0.01."""
  strip = lambda c: c.replace("*", "").replace("†", "").strip(" ()")
  u, v = strip(u), strip(v)
  if u == v:
    return True
  if not (_NUMBER.fullmatch(u.lstrip("<")) and _NUMBER.fullmatch(v.lstrip("<"))):
    return False
  x, y = _value(u.lstrip("<")), _value(v.lstrip("<"))
  return abs(x - y) <= 0.01 or (min(x, y) > 0 and max(x, y) / min(x, y) <= P_FACTOR)


def _same_within(x: str, y: str) -> bool:
  tx, nx = _numbers(x)
  ty, ny = _numbers(y)
  return (len(nx) == len(ny) and [t.strip() for t in tx] == [t.strip() for t in ty]
          and all(_close(u, v) for u, v in zip(nx, ny)))
