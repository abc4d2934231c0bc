"""research.benchmark on the mlp workload for a fraction of a second, launch/compare_peers and
launch/xla_options."""
import json
import math
import os
import sys

import chex
import jax
import numpy as np
import pytest

from research import benchmark
from research import errors
from research import models

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "launch"))
import compare_peers  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import xla_options  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# The peer benchmark's formulas for 784-512-512-10, batch 128, written out independently.
MLP_PARAMS = (784 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
MLP_GFLOPS = 3 * 2 * (784 * 512 + 512 * 512 + 512 * 10) * 128 / 1e9


@pytest.fixture(scope="module")
def mlp_record():
  return benchmark.run_workload("mlp", seconds=0.2, windows=2, steps_per_dispatch=4,
                                peak_gflops=100.0)


@pytest.mark.slow
def test_mlp_record_fields(mlp_record):
  r = mlp_record
  assert r["workload"] == "mlp" and r["grad"] == "autodiff"
  assert r["params"] == r["expected_params"] == MLP_PARAMS
  assert r["same_as_peers"]
  assert r["gflops_per_step"] == pytest.approx(MLP_GFLOPS)
  for key in ("steps_per_sec", "steps_per_sec_min", "steps_per_sec_1", "compile_s",
              "compile_s_scan", "host_rss_peak_mb"):
    assert r[key] > 0, key
  assert r["steps_per_sec_min"] <= r["steps_per_sec"] <= r["steps_per_sec_max"]
  assert r["examples_per_sec"] == pytest.approx(128 * r["steps_per_sec"])
  assert r["mfu"] == pytest.approx(r["steps_per_sec"] * MLP_GFLOPS / 100.0)
  assert 1 <= r["steps_per_dispatch"] <= 4
  assert r["data_s_per_step"] >= 0 and 0 <= r["foreign_load_median"] <= 1
  assert math.isfinite(r["loss_last"])
  json.dumps(r)  # The record is what --json writes.


def test_mlp_manual_grad_trains_like_autodiff():
  manual = benchmark.make_step("mlp", "manual")
  auto = benchmark.make_step("mlp", "autodiff")
  idx = jax.numpy.arange(2 * 128, dtype=jax.numpy.int32).reshape(2, 128)
  sums = [chunk(state, x, y, idx)[1]["loss_sum"] for chunk, state, x, y, _ in (manual, auto)]
  assert float(sums[0]) == pytest.approx(float(sums[1]), rel=1e-4)


@pytest.mark.slow
def test_every_workload_has_a_manual_step():
  # The benchmark times manual vs autodiff everywhere; a model without a hand-written backward
  # would be skipped (make_step returns None).
  for name in benchmark.WORKLOADS:
    assert benchmark.make_step(name, "manual") is not None, name


@pytest.mark.parametrize("name", sorted(benchmark.WORKLOADS))
def test_params_match_peers_unless_noted(name):
  w = benchmark.WORKLOADS[name]
  model = models.build(benchmark.model_config(name), w.input_shape, benchmark.NUM_CLASSES)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert (n == w.expected_params) == (not w.note), (name, n, w.expected_params)


def test_alexnet_formula_matches_peers_small_alexnet():
  # 3x3 SAME convs 64-192-384-256-256 at 32, 16, 8, 8, 8; fc 4096-1024-1024-10.
  convs = (32 * 32 * 64 * 3 + 16 * 16 * 192 * 64 + 8 * 8 * (384 * 192 + 256 * 384 + 256 * 256))
  assert benchmark.alexnet_forward_macs() == 9 * convs + 4096 * 1024 + 1024 * 1024 + 1024 * 10


def test_unknown_workload_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="workloads"):
    benchmark.resolve("mlp,resnet")
  assert benchmark.resolve("alexnet-small, mlp") == ["alexnet", "mlp"]


def test_compare_peers_table(tmp_path):
  project = {"meta": {}, "results": [
      {"workload": "mlp", "grad": "autodiff", "steps_per_sec": 400.0, "same_as_peers": True},
      {"workload": "mlp", "grad": "manual", "steps_per_sec": 380.0, "same_as_peers": True},
      {"workload": "alexnet", "steps_per_sec": 1.0, "same_as_peers": False}]}
  peers = [
      {"framework": "jax", "workload": "mlp", "steps_per_s": 320.0},
      {"framework": "torch", "workload": "mlp", "steps_per_s": 200.0},
      {"framework": "torch", "workload": "alexnet", "steps_per_s": 2.0},
      {"framework": "jax", "workload": "alexnet", "steps_per_s": 0.5},
      {"framework": "flax", "workload": "alexnet", "steps_per_s": None, "error": "boom"}]
  (tmp_path / "p.json").write_text(json.dumps(project))
  (tmp_path / "q.json").write_text(json.dumps(peers))
  rows = compare_peers.comparison_rows(compare_peers.load_project(str(tmp_path / "p.json")),
                                       compare_peers.load_peers(str(tmp_path / "q.json")))
  by = {r["workload"]: r for r in rows}
  assert by["mlp"]["fastest"] == "jax" and by["mlp"]["vs_fastest"] == pytest.approx(1.25)
  assert by["mlp"]["goal_met"] and by["mlp"]["manual_vs_autodiff"] == pytest.approx(0.95)
  assert by["alexnet"]["project_manual"] is None
  assert by["alexnet"]["fastest"] == "torch" and by["alexnet"]["vs_jax"] == pytest.approx(2.0)
  assert not by["alexnet"]["goal_met"] and "flax" not in by["alexnet"]["peers"]
  out = tmp_path / "t.md"
  assert compare_peers.main([str(tmp_path / "p.json"), str(tmp_path / "q.json"),
                             "--markdown", str(out)]) == 0
  table = out.read_text()
  assert "| mlp | 400.0 | 380.0 | 0.95x |" in table and "1.25x" in table
  assert "alexnet †" in table


def test_interleaved_mode_alternates_windows_and_reports_ratios_per_round():
  out = benchmark.interleaved("mlp", ("project", "reference", "manual"), rounds=2,
                              window_seconds=0.05, steps_per_dispatch=2, log=lambda _: None)
  variants = {r["variant"]: r for r in out["results"]}
  assert set(variants) == {"project", "reference", "manual"}
  assert all(len(r["rates"]) == 2 and r["steps_per_sec"] > 0 for r in variants.values())
  peak = out["meta"]["peak_gflops"]
  for r in variants.values():  # MFU from the peers' FLOP formula, against the best peak.
    achieved = r["steps_per_sec"] * MLP_GFLOPS
    assert r["mfu"] == pytest.approx(achieved / max(peak, achieved))
    assert r["peak_exceeded"] == (achieved > peak)
  pairs = {q["pair"]: q for q in out["ratios"]}
  assert set(pairs) == {"project / reference", "manual / project"}
  q = pairs["project / reference"]
  assert q["per_round"] == [a / b for a, b in zip(variants["project"]["rates"],
                                                   variants["reference"]["rates"])]
  assert q["min"] <= q["median"] <= q["max"]
  assert out["meta"]["mode"] == "interleaved" and len(out["meta"]["peaks"]) == 2


def test_the_reference_step_trains_the_same_model():
  """The plain-JAX step updates params of the project's mlp, from the project's init."""
  w = benchmark.WORKLOADS["mlp"]
  model = models.build(benchmark.model_config("mlp"), w.input_shape, benchmark.NUM_CLASSES)
  init = model.init(jax.random.split(jax.random.key(0))[0])
  run, sync = benchmark.make_reference_step("mlp")
  params, _ = sync()
  chex.assert_trees_all_equal(params, init)
  run(3)
  params, _ = sync()
  chex.assert_trees_all_equal_shapes_and_dtypes(params, init)
  for new, old in zip(jax.tree.leaves(params), jax.tree.leaves(init)):
    assert np.isfinite(new).all() and not np.array_equal(new, old)
  with pytest.raises(errors.ConfigError, match="variants='fast'"):
    benchmark.interleaved("mlp", ("fast",), log=lambda _: None)


def test_xla_options_parse_types_and_repeated_enums():
  assert xla_options.parse_options(
      "xla_cpu_enable_fast_math=true,--xla_cpu_prefer_vector_width=512,"
      "xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
      "LIBRARY_FUSION_TYPE_ELTWISE,xla_cpu_use_onednn=False") == {
          "xla_cpu_enable_fast_math": True, "xla_cpu_prefer_vector_width": 512,
          "xla_cpu_experimental_ynn_fusion_type":
              "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_ELTWISE",
          "xla_cpu_use_onednn": False}
  with pytest.raises(errors.ConfigError, match="'fast' is not name=value"):
    xla_options.parse_options("fast")


def test_xla_options_compares_compiles_of_the_project_step(capsys):
  assert xla_options.main(["--workloads=mlp", "--options=xla_cpu_enable_fast_math=true",
                           "--rounds=2", "--window_seconds=0.05",
                           "--steps_per_dispatch=2"]) == 0
  out = capsys.readouterr().out
  rows = [line.split() for line in out.splitlines() if "steps/s" in line]
  assert [r[0] for r in rows] == ["default", "xla_cpu_enable_fast_math=True"]
  assert all(float(r[1]) > 0 and r[3].endswith("x") for r in rows)
  # Both compiles start from the same state: the first chunk's losses agree (fast math moves
  # the last bits at most).
  assert float(rows[1][-1]) == pytest.approx(float(rows[0][-1]), rel=1e-4)
  with pytest.raises(errors.ConfigError, match="XLA refused it .*no_such_option"):
    xla_options.compile_variants("mlp", "autodiff", [{"xla_cpu_no_such_option": True}], 2)
  with pytest.raises(errors.ConfigError, match="no --options given"):
    xla_options.main(["--workloads=mlp"])
