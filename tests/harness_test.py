"""The experiment harness's protocol: stratified subsets redrawn per seed, statistics against
scipy.stats, the equal-budget rule, selection on validation with the test split measured once,
and an interrupted run resuming to identical results without redoing finished cells."""
import ast
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import processes
import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats

from research import data as data_lib
from research import errors
from research import kernel
from research import losses
from research import models
from research import optim
from research import config_lib
from research.data import sklearn_data
from research.experiments import harness
from scripts import launch_script  # tests/ is on sys.path (tests/scripts.py)

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ subsets


def test_stratified_draws_hold_every_class_equally_and_change_with_the_seed():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 500)
  draws = [harness.stratified_indices(labels, 3, seed, 10) for seed in range(5)]
  for idx in draws:
    assert len(set(idx.tolist())) == 30
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), np.full(10, 3))
  assert len({tuple(d) for d in draws}) == 5  # A fresh draw per seed...
  np.testing.assert_array_equal(draws[2], harness.stratified_indices(labels, 3, 2, 10))  # ...
  # ...that is a function of the seed alone.


def test_a_draw_that_cannot_hold_every_class_is_refused_in_one_line():
  labels = np.array([0] * 5 + [1] * 5 + [2] * 1)
  with pytest.raises(errors.ConfigError, match=r"class\(es\) 2 hold only 1; use at most 1") as e:
    harness.stratified_indices(labels, 2, 0, 3)
  assert "\n" not in str(e.value)
  with pytest.raises(errors.ConfigError, match="class"):  # A class absent altogether.
    harness.stratified_indices(np.array([0, 0, 1, 1]), 1, 0, 3)


# --------------------------------------------------------------------------------- statistics


def test_the_paired_interval_is_scipys_and_the_std_is_the_sample_std():
  rng = np.random.default_rng(1)
  a, b = rng.normal(0.8, 0.05, 7), rng.normal(0.78, 0.05, 7)
  got = harness.paired(a, b)
  want = stats.ttest_rel(a, b).confidence_interval(0.95)
  np.testing.assert_allclose(got["ci"], [want.low, want.high], rtol=1e-12)
  np.testing.assert_allclose(got["std"], np.std(a - b, ddof=1), rtol=1e-12)
  assert harness.summary(a)["std"] == pytest.approx(np.std(a, ddof=1), rel=1e-12)
  assert got["effect"] == (want.low > 0 or want.high < 0)


def test_an_effect_is_called_only_when_the_interval_excludes_zero():
  base = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
  assert harness.paired(base + [0.01, 0.02, 0.01, 0.02, 0.015], base)["effect"]
  assert not harness.paired(base + [0.03, -0.02, 0.01, -0.01, 0.0], base)["effect"]


# ----------------------------------------------------------------------- the protocol's rules


def _fake(seeds=(0, 1, 2), grids=None, calls=None, fail_after=None):
  """An experiment whose "training" is arithmetic: the valid score peaks at lr = 0.1, and arm
  "b" is 0.02 better than "a" on the test split for every seed."""
  calls = calls if calls is not None else {"fit": [], "test": []}
  grids = grids or {"a": {"lr": (0.01, 0.1, 1.0)}, "b": {"lr": (0.01, 0.1, 1.0)}}

  def fit(arm, setting, size, seeds, subsets):
    if fail_after is not None and len(calls["fit"]) >= fail_after:
      raise KeyboardInterrupt("killed")
    calls["fit"].append((arm, size, setting["lr"]))
    assert len(subsets) == len(seeds)
    return [{"w": np.full(3, seed + setting["lr"])} for seed in seeds]

  def measure(arm, setting, size, seed, params, split):
    if split == "test":
      calls["test"].append((arm, size, setting["lr"], seed))
    score = 0.9 - abs(np.log10(setting["lr"]) + 1) * 0.1 + 0.01 * size
    return {"accuracy": score + (0.02 if arm == "b" else 0.0) + 0.001 * seed,
            "loss": float(params["w"][0])}

  labels = np.repeat(np.arange(3), 10)
  split = data_lib.Split(np.zeros((30, 2), np.float32), labels.astype(np.int32))
  exp = harness.Experiment(
      "fake", [harness.Arm(name, grid) for name, grid in grids.items()], "a", (1, 2),
      "labels per class", list(seeds), fit, measure, draw=harness.labelled_draw(split, 3))
  return exp, calls


LR = {"learning_rate": (1e-3, 3e-3, 1e-2)}


def _with_arms(*arms):
  exp, _ = _fake()
  return harness.Experiment(**{**exp.__dict__, "arms": list(arms)})


@pytest.mark.parametrize("arms", [
    # A baseline tunes the step size alone; each method the same step sizes and its own
    # strength, over as many candidates as the other methods'.
    [harness.Arm("a", LR), harness.Arm("b", {**LR, "l2": (1e-4, 1e-3)}),
     harness.Arm("c", {**LR, "weight": (0.3, 0.7)})],
    # A method with no step size (closed form) tunes its strength over the whole budget.
    [harness.Arm("a", {**LR, "l2": (1e-4, 1e-3)}),
     harness.Arm("b", {"C": (0.1, 1, 10, 100, 1e3, 1e4)}, step=False)],
    # No step size anywhere: the strengths alone, equal in number.
    [harness.Arm("a", {"lr": (0.01, 0.1)}), harness.Arm("b", {"lr": (0.01, 0.1)})],
], ids=["baseline-and-strengths", "stepless", "no-step"])
def test_tuning_equal_in_kind_is_accepted(arms):
  harness.check(_with_arms(*arms))


@pytest.mark.parametrize("arms, match", [
    ([harness.Arm("a", LR), harness.Arm("b", {"learning_rate": (1e-3, 3e-3, 3e-2)})],
     r"tune the step size over different candidates \(a: \(0.001, 0.003, 0.01\); b:"),
    ([harness.Arm("a", LR), harness.Arm("b", {"l2": (1e-4, 1e-3, 1e-2)})],
     r"a tune the step size \(learning_rate\) but b do\(es\) not"),
    ([harness.Arm("a", LR), harness.Arm("b", {**LR, "l2": (1e-4, 1e-3)}),
      harness.Arm("c", {**LR, "weight": (0.3, 0.5, 0.7)})],
     r"strength over different numbers of settings \(b: 2, c: 3\)"),
    ([harness.Arm("a", {**LR, "l2": (1e-4, 1e-3)}),
      harness.Arm("b", {"C": (0.1, 1, 10)}, step=False)],
     r"different numbers of settings \(a: 2, b: 1\).*no step size: 3x as many"),
    ([harness.Arm("a", {"lr": (0.1,)}), harness.Arm("b", {"lr": (0.01, 0.1)})],
     r"different numbers of settings \(a: 1, b: 2\)"),
    ([harness.Arm("a", LR), harness.Arm("b", LR, bounds={"learning_rate": "0 to 1"})],
     r"arm b's bound for learning_rate is '0 to 1'; write an interval such as '\[0, 1\)'"),
], ids=["other-step-sizes", "no-step-size", "strengths", "stepless", "counts", "bound"])
def test_tuning_unequal_in_kind_is_refused_in_one_line(arms, match):
  with pytest.raises(errors.ConfigError, match=match) as e:
    harness.check(_with_arms(*arms))
  assert "\n" not in str(e.value)


def test_own_step_sizes_need_only_the_same_number():
  sgd, adam = {"learning_rate": (0.1, 1.0)}, {"learning_rate": (1e-3, 1e-2)}
  with pytest.raises(errors.ConfigError, match="different candidates"):
    harness.check(_with_arms(harness.Arm("a", sgd), harness.Arm("b", adam)))
  exp = _with_arms(harness.Arm("a", sgd), harness.Arm("b", adam))
  harness.check(harness.Experiment(**{**exp.__dict__, "step_sizes": "own"}))
  with pytest.raises(errors.ConfigError, match=r"own step sizes.*a: 2, b: 3"):
    harness.check(harness.Experiment(**{**exp.__dict__, "step_sizes": "own", "arms": [
        harness.Arm("a", sgd), harness.Arm("b", {"learning_rate": (1e-3, 1e-2, 0.1)})]}))


def test_a_missing_baseline_and_one_seed_are_refused():
  exp, _ = _fake()
  with pytest.raises(errors.ConfigError, match="baseline 'c' is not one of the arms"):
    harness.check(harness.Experiment(**{**exp.__dict__, "baseline": "c"}))
  with pytest.raises(errors.ConfigError, match="needs at least 2"):
    harness.check(harness.Experiment(**{**exp.__dict__, "seeds": [0]}))


def test_each_arm_is_chosen_on_validation_and_the_test_split_is_measured_once(tmp_path):
  exp, calls = _fake()
  results = harness.run(exp, tmp_path)
  for entry in results["sizes"]:
    for name, arm in entry["arms"].items():
      assert arm["chosen"] == {"lr": 0.1}
      assert [c["setting"]["lr"] for c in arm["grid"]] == [0.01, 0.1, 1.0]
  # The test split: once per seed, for the chosen setting only.
  assert sorted(calls["test"]) == sorted((arm, size, 0.1, seed) for arm in "ab"
                                         for size in (1, 2) for seed in (0, 1, 2))
  b = results["sizes"][0]["arms"]["b"]["stats"]["accuracy"]
  assert b["vs_baseline"]["mean"] == pytest.approx(0.02)
  assert b["n"] == 3 and not results["finding"]  # 3 seeds: a look, not a finding.
  text = harness.table(results, [("accuracy", "test acc %", 100.0)])
  # The same +0.02 on every seed: p 0 after Holm over the block's 2 sizes x 2 fields; no
  # per-example values, so the test-sampling interval is missing and the note says so.
  assert "| +2.0 [+2.0, +2.0] | n/a | <0.001 * |" in text and "lr=0.1" in text
  note = harness.protocol_note(results)
  assert "not a finding" in note and "chosen on the validation split" in note
  assert "4 comparisons" in note and "interval is missing" in note


def test_a_diverged_setting_is_never_chosen_and_a_table_field_keeps_its_digits(tmp_path):
  exp, _ = _fake()
  measure = exp.measure

  def diverging(arm, setting, size, seed, params, split):
    out = measure(arm, setting, size, seed, params, split)
    if setting["lr"] == 0.1 and arm == "a":  # The best setting, diverged.
      out["accuracy"] = float("nan")
    return out

  results = harness.run(harness.Experiment(**{**exp.__dict__, "measure": diverging}), tmp_path)
  assert results["sizes"][0]["arms"]["a"]["chosen"] != {"lr": 0.1}
  assert results["sizes"][0]["arms"]["b"]["chosen"] == {"lr": 0.1}
  text = harness.table(results, [("loss", "loss", 1.0, 3)])
  assert "| 0.010 ± " in text or "| 1.010 ± " in text


def test_equal_validation_counts_are_a_tie_that_the_first_setting_wins(tmp_path):
  # The adversarial section's case: 756 of 900 validation examples right for two settings
  # (153 147 152 152 152 and 150 149 152 152 153 of 180), as the float32 accuracies the
  # evaluation returned, whose means differ in the last bits.
  exp, _ = _fake(seeds=range(5))
  valid = {0.01: [0.5] * 5,
           0.1: [0.8500000238418579, 0.8166666626930237, 0.8444444537162781,
                 0.8444444537162781, 0.8444444537162781],
           1.0: [0.8333333730697632, 0.8277778029441833, 0.8444444537162781,
                 0.8444444537162781, 0.8500000238418579]}
  assert np.mean(valid[0.1]) < np.mean(valid[1.0])  # Only a tie rule keeps the first.
  measure = exp.measure

  def tied(arm, setting, size, seed, params, split):
    out = measure(arm, setting, size, seed, params, split)
    if split == "valid":
      out["accuracy"] = valid[setting["lr"]][seed]
    return out

  exp = harness.Experiment(**{**exp.__dict__, "measure": tied})
  for arm in harness.run(exp, tmp_path / "tie")["sizes"][0]["arms"].values():
    assert arm["chosen"] == {"lr": 0.1}
  valid[1.0][0] = float(np.float32(151 / 180))  # One more right is better, not a tie.
  for arm in harness.run(exp, tmp_path / "better")["sizes"][0]["arms"].values():
    assert arm["chosen"] == {"lr": 1.0}


def test_an_interrupted_run_resumes_to_identical_results_without_redoing_cells(tmp_path):
  calls = {"fit": [], "test": []}
  exp, _ = _fake(calls=calls, fail_after=4)
  with pytest.raises(KeyboardInterrupt):
    harness.run(exp, tmp_path)
  assert len(calls["fit"]) == 4
  # A torn last line (a kill mid-append) is ignored.
  with open(tmp_path / "harness" / "cells.jsonl", "a") as f:
    f.write('{"format":2,"kind":"fit","id":"')
  done = list(calls["fit"])
  exp, _ = _fake(calls=calls)
  resumed = harness.run(exp, tmp_path)
  redone = calls["fit"][len(done):]
  assert not set(redone) & set(done) and len(redone) == 12 - 4
  fresh_calls = {"fit": [], "test": []}
  fresh = harness.run(_fake(calls=fresh_calls)[0], tmp_path / "fresh")
  strip = lambda r: json.dumps({k: v for k, v in r.items() if k != "wall_time"}, sort_keys=True)
  assert strip(resumed) == strip(fresh)
  # A finished run redoes nothing.
  before = len(calls["fit"])
  assert strip(harness.run(_fake(calls=calls)[0], tmp_path)) == strip(fresh)
  assert len(calls["fit"]) == before


# ------------------------------------------------------------------------- training the seeds


@pytest.fixture(scope="module")
def tiny():
  data = data_lib.load(sklearn_data.config("digits"))
  model = models.build(ml_collections.ConfigDict({"name": "mlp", "hidden_sizes": (8,),
                                                  "activation": "relu"}), data.input_shape, 10)
  subsets = [harness.stratified_subset(data.train, 2, s, 10) for s in (0, 1, 2)]
  loss_fn = losses.make_loss_fn(model, "softmax", 0.0, len(subsets[0]), 10)
  optimizer = optim.make_optimizer(config_lib.optimizer(learning_rate=0.1), 12)
  return model, loss_fn, optimizer, subsets


def test_seeds_as_one_vmapped_program_equal_the_loop(tiny):
  model, loss_fn, optimizer, subsets = tiny
  args = (model, loss_fn, optimizer, 12, 5, subsets, [0, 1, 2])
  vmapped = harness.train_seeds(*args, mode="vmap", chunk_steps=5)
  looped = harness.train_seeds(*args, mode="loop", chunk_steps=5)
  for v, l in zip(vmapped, looped):
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(l)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  # Different seeds and subsets give different networks.
  assert not np.allclose(jax.tree.leaves(looped[0])[0], jax.tree.leaves(looped[1])[0])
  with pytest.raises(errors.ConfigError, match="seed_mode"):
    harness.train_seeds(*args, mode="pmap")
  # Given params (e.g. pre-trained) replace the init, not the per-step randomness.
  inits = {s: model.init(jax.random.split(jax.random.key(s))[0]) for s in (0, 1, 2)}
  given = harness.train_seeds(*args, mode="loop", chunk_steps=5, init_params=inits.get)
  for g, l in zip(given, looped):
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(l)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", harness.SEED_MODES)
def test_on_chunk_sees_every_evaluation_s_params_and_stops_a_seed(tiny, mode):
  """The hook early stopping and the surrogate's checkpoint rules train with: after every
  chunk, each training seed's params and its chunk means (the train record's); True stops
  that seed, whose returned params are those it stopped at; the others train on."""
  model, loss_fn, optimizer, subsets = tiny
  args = (model, loss_fn, optimizer, 15, 5, subsets, [0, 1, 2])
  seen, kept, records = [], {}, []

  class Writer:
    def write(self, record):
      records.append(record)

  def on_chunk(seed, step, params, train):
    seen.append((seed, step, train["loss"]))
    kept[(seed, step)] = jax.device_get(params)
    return seed == 1 and step == 5

  out = harness.train_seeds(*args, mode=mode, chunk_steps=5, on_chunk=on_chunk,
                            writer=Writer())
  steps = {s: [step for seed, step, _ in seen if seed == s] for s in (0, 1, 2)}
  assert steps == {0: [5, 10, 15], 1: [5], 2: [5, 10, 15]}
  # The hook's means are the train records' (vmap: seed 1's later chunks still train).
  by_record = {(r["seed"], r["step"]): r["loss"] for r in records}
  assert all(by_record[(seed, step)] == loss for seed, step, loss in seen)
  for seed, step in ((0, 15), (1, 5), (2, 15)):
    for a, b in zip(jax.tree.leaves(out[seed]), jax.tree.leaves(kept[(seed, step)])):
      np.testing.assert_array_equal(np.asarray(a), b)
  plain = harness.train_seeds(*args, mode=mode, chunk_steps=5)
  for a, b in zip(jax.tree.leaves(plain[0]), jax.tree.leaves(out[0])):
    np.testing.assert_array_equal(a, b)  # the hook changes nothing of a seed it does not stop


def test_per_example_correctness_is_the_accuracy_and_the_table_shows_both_intervals(tiny,
                                                                                     tmp_path):
  model, loss_fn, optimizer, subsets = tiny
  data = data_lib.load(sklearn_data.config("digits"))
  eval_fn = kernel.make_eval_fn(model, "softmax", 10)
  params = harness.train_seeds(model, loss_fn, optimizer, 12, 5, subsets, [0, 1, 2])
  # 7 does not divide the split: the padded last batch must not add examples.
  out = kernel.evaluate(eval_fn, params[0], data.test, 7, per_example=True)
  hit_N = out["per_example"]["accuracy"]
  assert hit_N.shape == (len(data.test),) and set(np.unique(hit_N)) <= {0.0, 1.0}
  assert hit_N.mean() == pytest.approx(out["accuracy"])
  assert "per_example" not in kernel.evaluate(eval_fn, params[0], data.test, 7)

  def measure(arm, setting, size, seed, p, split):
    scale = 1.0 if arm == "a" else 0.5  # arm "b": a worse network
    shrunk = jax.tree.map(lambda a: a * scale, p)
    return harness.evaluation(kernel.evaluate(eval_fn, shrunk, data.test, 64,
                                              per_example=split == "test"))

  exp = harness.Experiment("pe", [harness.Arm("a"), harness.Arm("b")], "a", (2,), "labels",
                           [0, 1, 2], lambda arm, s, size, seeds, sub: params, measure)
  results = harness.run(exp, tmp_path)
  record = results["sizes"][0]["arms"]["b"]["test"][0]
  assert isinstance(record["per_example"]["accuracy"], str)  # packed: one 0/1 per example
  assert len(record["per_example"]["accuracy"]) == len(data.test)
  saved = json.loads(json.dumps(results))  # what results.json gives back renders the same
  text = harness.table(saved, [("accuracy", "acc %", 100.0)])
  row = next(line for line in text.splitlines() if line.startswith("| 2 | b |"))
  assert "n/a" not in row and row.count("[") == 2
  note = harness.protocol_note(saved)  # loss has no per-example values; accuracy has
  assert "No per-example test values for loss (" in note and "nothing is chosen" in note


# ------------------------------------------------------------------------------ the house


def _imports(path: pathlib.Path) -> set[str]:
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module:
      out |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    elif isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
  return out


def test_no_runner_imports_another_runner_and_the_kernel_imports_nothing_above_it():
  from research import experiments  # pylint: disable=g-import-not-at-top
  runners = {spec.split(":")[0] for spec in experiments.RUNNERS.values()}
  runners.discard("research.train")  # The run loop: experiments may run whole library runs.
  for module in runners | {"research.experiments.harness", "research.experiments.report",
                           "research.experiments.variants"}:
    path = REPO / (module.replace(".", "/") + ".py")
    clash = (_imports(path) & runners) - {module}
    assert not clash, f"{module} imports runner(s) {sorted(clash)}"
  above = {"research.train", "research.run_config", "research.workdir", "research.checkpoint",
           "research.metrics", "research.experiments", "research.benchmark", "research.main"}
  kernel_imports = _imports(REPO / "research" / "kernel.py")
  assert not {i for i in kernel_imports if i.startswith(tuple(above))}, kernel_imports


# --------------------------------------------------------------------- a real kill, resumed


def _multitask_cmd(workdir):
  return [sys.executable, "-m", "research.main", "--config=configs/exp_multitask.py",
          f"--workdir={workdir}", "--config.num_steps=40", "--config.eval_every=20",
          "--config.log_every=20", "--config.experiment.labels_per_class=(2,)",
          "--config.experiment.seeds=2", "--config.experiment.methods=('single','aux_parity')",
          "--config.experiment.learning_rates=(0.001,0.003)",
          "--config.experiment.aux_weights=(1.0,)", "--config.experiment.max_extensions=0"]


def _trained_cells(log: str) -> int:
  return log.count("valid accuracy")


@pytest.mark.slow
def test_a_harness_runner_killed_mid_way_resumes_to_identical_results(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  cells = tmp_path / "killed" / "harness" / "cells.jsonl"
  proc = subprocess.Popen(_multitask_cmd(tmp_path / "killed"), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  # Kill once two of the four cells are on disk: observed progress, not a clock.
  while proc.poll() is None and not (cells.exists() and cells.read_text().count("\n") >= 2):
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before the kill point: " + proc.stderr.read()[-500:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stderr.close()
  done = cells.read_text().count('"kind":"fit"')  # Trained cells (not test entries).
  resumed = subprocess.run(_multitask_cmd(tmp_path / "killed"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=processes.GUARD_S)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert _trained_cells(resumed.stderr) == 4 - done  # Finished cells are not trained again.
  fresh = subprocess.run(_multitask_cmd(tmp_path / "fresh"), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=processes.GUARD_S)
  assert fresh.returncode == 0, fresh.stderr[-2000:]
  assert _trained_cells(fresh.stderr) == 4
  strip = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k != "wall_time"}
  assert strip(tmp_path / "killed" / "results.json") == strip(tmp_path / "fresh" / "results.json")


# ------------------------------------------------------------------- regenerating the doc


def test_the_doc_has_a_results_block_for_every_harness_section_and_splicing_replaces_it():
  regen = launch_script("regenerate_experiments")
  doc = (REPO / "docs" / "experiments.md").read_text()
  for section in regen.SECTIONS:
    assert regen.block(section).search(doc), section
  text = "<!-- results:x -->\nold\n<!-- /results:x -->\nafter"
  assert regen.splice(text, "x", "new\n") == "<!-- results:x -->\nnew\n<!-- /results:x -->\nafter"
  with pytest.raises(ValueError, match="no <!-- results:y --> block"):
    regen.splice(text, "y", "new\n")


def test_regenerate_refuses_an_unknown_section_and_check_finds_a_stale_block(tmp_path, capsys):
  regen = launch_script("regenerate_experiments")
  assert regen.main(["--workdir", str(tmp_path), "--sections=nope"]) == 2
  assert "unknown nope" in capsys.readouterr().err
  (tmp_path / "multitask").mkdir()
  (tmp_path / "multitask" / "results.md").write_text("# t\n\nnot what the doc says\n")
  assert regen.main(["--workdir", str(tmp_path), "--sections=multitask", "--check"]) == 1


def _block_doc(section, text):
  return f"intro\n<!-- results:{section} -->\n{text}<!-- /results:{section} -->\n"


def test_check_passes_numbers_within_the_tolerance_and_fails_a_changed_choice(tmp_path, capsys,
                                                                             monkeypatch):
  regen = launch_script("regenerate_experiments")
  table = ("| size | method | chosen on valid | acc (n=5) | acc: p (Holm) |\n|---|---|---|---|---|\n"
           "| 1 | a | lr=0.1 | 90.1 ± 0.3 |  |\n| 1 | b | lr=0.1 | 92.0 ± 0.2 | 0.004 * |\n")
  doc = tmp_path / "experiments.md"
  doc.write_text(_block_doc("multitask", table))
  monkeypatch.setattr(regen, "DOC", str(doc))
  (tmp_path / "w" / "multitask").mkdir(parents=True)
  results = tmp_path / "w" / "multitask" / "results.md"
  check = lambda: regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask",
                              "--check"])
  results.write_text("# t\n\n" + table.replace("92.0 ± 0.2", "92.2 ± 0.2"))  # another machine
  assert check() == 0 and "within the tolerance in: multitask" in capsys.readouterr().out
  results.write_text("# t\n\n" + table.replace("| b | lr=0.1", "| b | lr=1"))
  assert check() == 1 and "the choice differs" in capsys.readouterr().out
  results.write_text("# t\n\n" + table.replace("0.004 *", "0.060"))
  assert check() == 1 and "a conclusion flipped" in capsys.readouterr().out
  assert doc.read_text() == _block_doc("multitask", table)  # --check changes nothing


def test_the_doc_count_sums_every_block_of_the_results_files(tmp_path):
  regen = launch_script("regenerate_experiments")
  exp, _ = _fake(seeds=range(5))
  harness.run(exp, tmp_path / "one")
  block = json.loads(json.dumps(harness.run(exp, tmp_path / "one")))
  for name, obj in (("flat", block), ("nested", {"x": block, "y": block, "note": 1})):
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps(obj))
  # Per block: b vs a in accuracy (+0.02 every seed: an effect) and loss (0: none), 2 sizes.
  line = regen.comparisons_line([str(tmp_path / "flat"), str(tmp_path / "nested")])
  assert line.startswith("This document makes 12 comparisons") and "; 6 survive Holm" in line
  assert regen.COUNT.search((REPO / "docs" / "experiments.md").read_text())


def test_regroup_chooses_a_sweeps_strength_on_validation_not_on_test(tmp_path):
  # "x 2" is best on validation, "x 1" on test: the regrouped arm must report "x 2".
  score = {"none": (0.5, 0.5), "x 1": (0.6, 0.9), "x 2": (0.7, 0.6)}

  def measure(arm, setting, size, seed, params, split):
    return {"accuracy": score[arm][split == "test"] + 0.01 * seed}

  exp = harness.Experiment("sweep", [harness.Arm(a) for a in score], "none", (1,), "size",
                           [0, 1], lambda *a: [None, None], measure)
  results = harness.run(exp, tmp_path)
  assert not harness.chooses(results)
  chosen = harness.regroup(results, {"none": [({}, "none")],
                                     "x": [({"lambda": 1}, "x 1"), ({"lambda": 2}, "x 2")]})
  arm = chosen["sizes"][0]["arms"]["x"]
  assert arm["chosen"] == {"lambda": 2} and arm["test"][0]["accuracy"] == pytest.approx(0.6)
  assert arm["stats"]["accuracy"]["vs_baseline"]["mean"] == pytest.approx(0.1)
  assert harness.chooses(chosen) and "chosen on the validation split" in harness.protocol_note(
      chosen)


def test_the_doc_lists_every_choice_left_at_a_grid_edge(tmp_path):
  regen = launch_script("regenerate_experiments")
  # lr peaks at 0.1, the grid's top, and no extension is allowed: both arms at both sizes.
  exp, _ = _fake(grids={"a": {"lr": (0.01, 0.1)}, "b": {"lr": (0.01, 0.1)}})
  (tmp_path / "edge").mkdir()
  (tmp_path / "edge" / "results.json").write_text(json.dumps(harness.run(exp, tmp_path / "r")))
  (tmp_path / "inside").mkdir()  # Interior choices list nothing.
  (tmp_path / "inside" / "results.json").write_text(json.dumps(harness.run(_fake()[0],
                                                                           tmp_path / "i")))
  text = regen.edges_text([str(tmp_path / "edge"), str(tmp_path / "inside")])
  assert text.startswith("4 choice(s) remain at a grid edge")
  assert "- fake, labels per class=1, a: lr=0.1 at the high edge (budget: 0 extension(s))" in text
  assert regen.edges_text([str(tmp_path / "inside")]) == "No choice remains at a grid edge.\n"
  assert regen.EDGES.search((REPO / "docs" / "experiments.md").read_text())
