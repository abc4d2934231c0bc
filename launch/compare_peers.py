"""Merges the project's benchmark JSON with a peers JSON from the same sitting into one table.

  python -m research.benchmark --json=/tmp/project.json
  <peers venv>/bin/python PEERS/run_peers.py --json /tmp/peers.json   # not in this repository
  python launch/compare_peers.py /tmp/project.json /tmp/peers.json [--markdown out.md]

Project JSON: {"meta": ..., "results": [{"workload", "steps_per_sec", ...}]} as written by
research.benchmark. Peers JSON: a list of {"framework", "workload", "steps_per_s", ...} rows.
Only ratios of numbers measured in the same sitting mean anything on a shared machine.
"""
import argparse
import json
import sys

PEER_ORDER = ("torch", "torch_compile", "flax", "equinox", "jax")
ALIASES = {"alexnet-small": "alexnet", "alexnet_small": "alexnet", "attn": "attention"}
GOAL = 1.2  # the project's target: this many times the fastest peer


def load_project(path: str) -> dict[str, dict[str, dict]]:
  """{workload: {grad: record}} from research.benchmark's JSON (a dict with "results", or a
  list); records without a "grad" count as autodiff."""
  with open(path) as f:
    data = json.load(f)
  rows = data["results"] if isinstance(data, dict) else data
  out: dict[str, dict[str, dict]] = {}
  for r in rows:
    out.setdefault(ALIASES.get(r["workload"], r["workload"]), {})[r.get("grad", "autodiff")] = r
  return out


def load_peers(path: str) -> dict[str, dict[str, float]]:
  """{workload: {framework: median steps/s}}; failed cells (steps_per_s None) are left out."""
  with open(path) as f:
    rows = json.load(f)
  out: dict[str, dict[str, float]] = {}
  for r in rows:
    if r.get("steps_per_s"):
      out.setdefault(ALIASES.get(r["workload"], r["workload"]), {})[r["framework"]] = (
          r["steps_per_s"])
  return out


def _fmt(v: float | None) -> str:
  if v is None:
    return "—"
  return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def comparison_rows(project: dict[str, dict[str, dict]],
                    peers: dict[str, dict[str, float]]) -> list[dict]:
  """One row per workload present in both: the project's steps/s (autodiff, and manual where
  measured), each peer's, and the ratios. Ratios to the peers use the autodiff step."""
  rows = []
  for wl, recs in project.items():
    cells = peers.get(wl)
    rec = recs.get("autodiff") or recs.get("manual")
    if not cells or rec is None:
      continue
    fastest = max(cells, key=cells.get)
    ours = rec["steps_per_sec"]
    manual = recs["manual"]["steps_per_sec"] if "manual" in recs and "autodiff" in recs else None
    rows.append({
        "workload": wl, "project": ours, "project_manual": manual,
        "manual_vs_autodiff": manual / ours if manual else None,
        "peers": cells, "fastest": fastest,
        "vs_fastest": ours / cells[fastest],
        "manual_vs_fastest": manual / cells[fastest] if manual else None,
        "vs_jax": ours / cells["jax"] if "jax" in cells else None,
        "goal_met": ours >= GOAL * cells[fastest],
        "same_as_peers": rec.get("same_as_peers", True)})
  return rows


def _ratio(v: float | None) -> str:
  return "—" if v is None else f"{v:.2f}x"


def markdown(rows: list[dict]) -> str:
  """The comparison as a markdown table (median steps/s)."""
  frameworks = [f for f in PEER_ORDER if any(f in r["peers"] for r in rows)]
  frameworks += sorted({f for r in rows for f in r["peers"]} - set(frameworks))
  head = (["workload", "project", "project manual", "manual / autodiff"] + frameworks
          + ["fastest peer", "project / fastest", "manual / fastest", "project / jax",
             f"≥ {GOAL}x fastest"])
  lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
  for r in rows:
    mark = "" if r["same_as_peers"] else " †"
    cells = ([r["workload"] + mark, _fmt(r["project"]), _fmt(r["project_manual"]),
              _ratio(r["manual_vs_autodiff"])]
             + [_fmt(r["peers"].get(f)) for f in frameworks]
             + [r["fastest"], _ratio(r["vs_fastest"]), _ratio(r["manual_vs_fastest"]),
                _ratio(r["vs_jax"]), "yes" if r["goal_met"] else "no"])
    lines.append("| " + " | ".join(cells) + " |")
  if any(not r["same_as_peers"] for r in rows):
    lines.append("\n† the project's model is not exactly the peers' (see the benchmark's note).")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("project_json")
  parser.add_argument("peers_json")
  parser.add_argument("--markdown", help="also write the table here")
  args = parser.parse_args(argv)
  table = markdown(comparison_rows(load_project(args.project_json), load_peers(args.peers_json)))
  print(table, end="")
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
