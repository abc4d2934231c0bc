"""research/experiments/stats.py: the test-inclusive interval against a case with a known
answer, Holm's adjustment, a block's family and its effects, and --check's tolerant
comparison of two rendered blocks."""
import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from research.experiments import stats

# Per-example (p_arm, p_baseline) of the population's test examples, equally likely: most
# examples are easy (or hard) for both arms, a few favour one of them, as on a real test set;
# seed s shifts each arm's probabilities by U(-H, H).
TYPES = np.array([(0.97, 0.97)] * 6 + [(0.9, 0.5), (0.4, 0.8), (0.8, 0.3), (0.05, 0.05)])
H, SEEDS, N = 0.02, 5, 200


def _known_answer():
  """The true mean difference and the true variance of its estimate (the mean over seeds and
  examples): seed part + example part + Bernoulli interaction / (S N)."""
  pa, pb = TYPES[:, 0], TYPES[:, 1]
  var_u = H * H / 3
  seed_part = 2 * var_u
  example_part = np.var(pa - pb)
  interaction = np.mean(pa * (1 - pa)) + np.mean(pb * (1 - pb)) - 2 * var_u
  return float(np.mean(pa - pb)), (seed_part / SEEDS + example_part / N
                                   + interaction / (SEEDS * N))


def _draw(rng, shared=True):
  """One simulated experiment: a fresh test set from the population (one for every seed when
  shared, else one per seed), S seeds; per-example 0/1 correctness a_SxN, b_SxN."""
  kind = rng.integers(len(TYPES), size=N if shared else (SEEDS, N))
  pa, pb = TYPES[kind, 0], TYPES[kind, 1]
  u, v = rng.uniform(-H, H, (SEEDS, 1)), rng.uniform(-H, H, (SEEDS, 1))
  a = (rng.random((SEEDS, N)) < pa + u).astype(np.float64)
  b = (rng.random((SEEDS, N)) < pb + v).astype(np.float64)
  return a, b


def test_the_test_inclusive_interval_has_its_nominal_coverage_where_the_seed_interval_does_not():
  delta, true_var = _known_answer()
  rng = np.random.default_rng(0)
  runs = 2000
  covered = covered_t = 0
  means, variances = [], []
  for _ in range(runs):
    a, b = _draw(rng)
    c = stats.crossed(list(a), list(b))
    t = stats.paired_t(a.mean(axis=1) - b.mean(axis=1))
    covered += c["ci"][0] <= delta <= c["ci"][1]
    covered_t += t["ci"][0] <= delta <= t["ci"][1]
    means.append(c["mean"])
    variances.append(c["se"] ** 2)
  # The known variance is the simulated one (the check of the check) and the estimator's mean.
  assert np.var(means) == pytest.approx(true_var, rel=0.1)
  assert np.mean(variances) == pytest.approx(true_var, rel=0.05)
  # 95% within 3 standard errors of a 2000-run proportion (0.015); seeds alone: well below.
  assert abs(covered / runs - 0.95) < 0.015
  assert covered_t / runs < 0.9


def test_with_a_test_draw_per_seed_the_interval_is_the_t_interval_and_covers():
  rng = np.random.default_rng(1)
  pa, pb = TYPES[:, 0], TYPES[:, 1]
  delta = float(np.mean(pa - pb))
  covered, runs = 0, 1000
  for _ in range(runs):
    a, b = _draw(rng, shared=False)
    c = stats.crossed(list(a), list(b), shared=False)
    t = stats.paired_t(a.mean(axis=1) - b.mean(axis=1))
    assert c["ci"] == pytest.approx(t["ci"]) and c["design"] == "nested"
    covered += c["ci"][0] <= delta <= c["ci"][1]
  assert abs(covered / runs - 0.95) < 0.025


def test_the_paired_p_value_is_scipys_and_holm_is_the_step_down_adjustment():
  a, b = [0.91, 0.93, 0.92, 0.95, 0.90], [0.90, 0.90, 0.91, 0.92, 0.90]
  got = stats.paired_t(np.subtract(a, b))
  assert got["p"] == pytest.approx(sp_stats.ttest_rel(a, b).pvalue)
  # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, then the running maximum.
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm([float("nan"), 0.01]) == pytest.approx([1.0, 0.02])
  assert stats.paired_t([0.02] * 5)["p"] == 0.0 and stats.paired_t([0.0] * 5)["p"] == 1.0


def test_per_example_correctness_packs_into_a_string_and_back():
  record = {"accuracy": 0.75, stats.PER_EXAMPLE: {"accuracy": np.array([1, 0, 1, 1]),
                                                  "loss": [0.5, 0.25, 0.0, 1.0]}}
  packed = stats.pack(record)
  assert packed[stats.PER_EXAMPLE]["accuracy"] == "1011"
  assert stats.unpack(packed[stats.PER_EXAMPLE]["accuracy"]).tolist() == [1, 0, 1, 1]
  assert stats.unpack(packed[stats.PER_EXAMPLE]["loss"]).tolist() == [0.5, 0.25, 0.0, 1.0]
  assert stats.pack({"accuracy": 0.5}) == {"accuracy": 0.5}


def _results(diffs, per_example=None, family=None, params=True):
  """A results.json dict: a baseline 'base' and arms 'm0', 'm1', ... whose accuracy is the
  baseline's + diffs[k] (per seed); 'params' a field constant over seeds (a design count)."""
  base = [0.90, 0.91, 0.89, 0.90, 0.92]
  arms = {"base": [{"accuracy": v, **({"params": 10.0} if params else {})} for v in base]}
  for k, d in enumerate(diffs):
    arms[f"m{k}"] = [{"accuracy": v + x, **({"params": 20.0} if params else {})}
                     for v, x in zip(base, d)]
  if per_example:
    for name, records in arms.items():
      for r, pe in zip(records, per_example[name]):
        r[stats.PER_EXAMPLE] = {"accuracy": pe}
  return {"baseline": "base", "seeds": list(range(5)), "confidence": 0.95, "family": family,
          "sizes": [{"size": 1, "arms": {n: {"test": t, "grid": [{}], "chosen": {}}
                                         for n, t in arms.items()}}]}


def test_an_effect_survives_holm_within_the_block_and_constant_fields_are_not_compared():
  clear = [0.03, 0.032, 0.029, 0.031, 0.03]
  weak = [0.01, 0.0, 0.015, 0.005, 0.012]  # p ~ 0.03 alone
  assert stats.paired_t(weak)["p"] < 0.05
  b = stats.block(_results([clear] + [weak] * 4))
  assert b["family"] == ["accuracy"]  # params is constant over seeds: a design quantity
  assert b["count"] == 5 and b["survive"] == 1
  assert b["comparisons"][(0, "m0", "accuracy")]["effect"]
  weak_c = b["comparisons"][(0, "m1", "accuracy")]
  assert _excludes_zero(weak_c["t"]["ci"]) and not weak_c["effect"]
  assert weak_c["p_holm"] == pytest.approx(min(1.0, 4 * weak_c["p"]))
  assert b["missing_test"] == ["accuracy"]
  # A declared family narrows it: the other fields are shown, never effects.
  narrow = stats.block(_results([clear, weak], family=["params"]))
  assert narrow["count"] == 2 and not narrow["comparisons"][(0, "m0", "accuracy")]["effect"]
  assert stats.count([_results([clear] + [weak] * 4), _results([clear])]) == (6, 2)


def _excludes_zero(ci):
  return ci[0] > 0 or ci[1] < 0


def test_a_block_with_per_example_values_follows_the_wider_interval():
  # One arm +1 example in 100 on every seed, always the same example: the seeds agree
  # exactly (t-interval of zero width), the test set says one example is no evidence.
  n = 100
  base = [np.r_[np.zeros(1), np.ones(n - 1) * (np.arange(n - 1) % 2)] for _ in range(5)]
  arm = [np.r_[np.ones(1), x[1:]] for x in base]
  res = _results([[0.0] * 5], params=False)
  for r, pe in zip(res["sizes"][0]["arms"]["base"]["test"], base):
    r.update(accuracy=float(pe.mean()), per_example={"accuracy": stats.pack(
        {"per_example": {"a": pe}})["per_example"]["a"]})
  for r, pe in zip(res["sizes"][0]["arms"]["m0"]["test"], arm):
    r.update(accuracy=float(pe.mean()), per_example={"accuracy": pe.tolist()})
  c = stats.block(res)["comparisons"][(0, "m0", "accuracy")]
  assert c["t"]["ci"] == pytest.approx([0.01, 0.01])  # the seeds alone: an effect
  assert c["test"]["ci"][0] < 0 < c["test"]["ci"][1] and c["wide"] == c["test"]["ci"]
  assert not c["effect"]


def test_borderline_flags_a_conclusion_that_could_flip_within_the_tolerance():
  near = {"p_holm": 0.001, "wide": [0.001, 0.05]}
  far = {"p_holm": 0.001, "wide": [0.02, 0.05]}
  p_near = {"p_holm": 0.06, "wide": [0.01, 0.05]}
  assert stats.borderline(near, 0.003) and not stats.borderline(far, 0.003)
  assert stats.borderline(p_near, 0.003)
  assert stats.borderline({"p_holm": 0.04, "wide": [0.02, 0.05]}, 0.003)  # an effect, p near
  # Not effects that cannot become one: the interval far across zero, or p far above 0.05.
  assert not stats.borderline({"p_holm": 0.06, "wide": [-0.02, 0.05]}, 0.003)
  assert not stats.borderline({"p_holm": 0.385, "wide": [-0.001, 0.05]}, 0.003)
  assert stats.borderline({"p_holm": 0.03, "wide": [-0.002, 0.05]}, 0.003)
  assert not stats.borderline({"p_holm": None, "wide": [0.0, 0.1]}, 0.003)


BLOCK = """n = 5 seeds; 3 comparisons, 1 survive.

| size | method | chosen on valid | acc (n=5) | acc: Δ vs a [95% CI, seeds] | acc: p (Holm) |
|---|---|---|---|---|---|
| 1 | a | lr=0.1 | 90.1 ± 0.3 | (baseline) |  |
| 1 | b | lr=0.1 | 92.0 ± 0.2 | +1.9 [+1.2, +2.6] | 0.004 * |
| 1 | c | lr=1 | 90.4 ± 0.5 | +0.3 [-0.1, +0.7] | 0.120 |"""


def test_check_accepts_numbers_within_the_tolerance_and_refuses_changed_choices_and_flips():
  assert stats.compare_blocks(BLOCK, BLOCK) == []
  moved = BLOCK.replace("92.0 ± 0.2", "92.2 ± 0.2").replace("[+1.2, +2.6]", "[+1.1, +2.7]")
  assert stats.compare_blocks(BLOCK, moved) == []
  far = BLOCK.replace("92.0 ± 0.2", "92.5 ± 0.2")
  assert "beyond the tolerance" in stats.compare_blocks(BLOCK, far)[0]
  choice = BLOCK.replace("| lr=1 |", "| lr=0.1 |")
  assert "the choice differs" in stats.compare_blocks(BLOCK, choice)[0]
  flipped = BLOCK.replace("0.120 |", "0.040 * |")
  assert "flipped" in stats.compare_blocks(BLOCK, flipped)[0]
  marked = BLOCK.replace("0.120 |", "0.120 † |")
  assert stats.compare_blocks(marked, flipped.replace("0.040 *", "0.040 * †")) == []
  assert "factor" in stats.compare_blocks(BLOCK, BLOCK.replace("0.120 |", "0.900 |"))[0]
  assert stats.compare_blocks(BLOCK, BLOCK.replace("3 comparisons", "three comparisons"))
  assert "lines" in stats.compare_blocks(BLOCK, BLOCK + "\nmore")[0]


def test_a_side_tables_comparisons_are_one_holm_family_and_only_survivors_are_effects():
  from research.experiments import harness  # pylint: disable=g-import-not-at-top
  base = [0.90, 0.91, 0.92, 0.93, 0.94]
  strong = harness.paired([b + d for b, d in zip(base, [0.05, 0.06, 0.05, 0.07, 0.06])], base)
  weak = harness.paired([b + d for b, d in zip(base, [0.01, 0.03, 0.0, 0.02, 0.02])], base)
  assert strong["effect"] and weak["effect"] and 0.01 < weak["p"] < 0.05  # each alone: starred
  got = harness.holm_family([strong, None, weak, weak])
  assert got[1] is None
  assert [g["p_holm"] for g in (got[0], got[2])] == pytest.approx(
      stats.holm([strong["p"], weak["p"], weak["p"]])[:2])
  assert got[0]["effect"] and not got[2]["effect"] and not got[3]["effect"]
  assert harness.fmt_paired(got[0]).endswith(" *") and "p (Holm)" in harness.fmt_paired(got[2])
  assert not harness.fmt_paired(got[2]).endswith("*")
  shown = harness.fmt_paired(harness.outside_family(strong))
  assert "unadjusted" in shown and "*" not in shown
