"""The protocol every experiment runs under, so that rigour does not depend on a runner's author.

A runner declares an `Experiment`: its arms (each with a grid of settings to tune), the
baseline arm, its sizes (labels per class, widths, ...), its seeds, and two functions:

  fit(arm, setting, size, seeds, subsets) -> [params per seed]
  measure(arm, setting, size, seed, params, split) -> {field: float}   split: "valid" | "test"
      (optionally, on test, also "per_example": {field: values_N}, e.g. each test example's
      0/1 correctness for "accuracy": then the table adds an interval that counts the test
      set's sampling, stats.crossed)

and `run(experiment, workdir)` owns everything else:

  - labelled subsets are stratified (the same number of labels per class, every class present)
    and redrawn per seed (stratified_indices); a size no class can hold is refused in one line;
  - every arm is tuned on the validation split equally in kind (check: the same step sizes,
    STEP, for every arm with a step, and as many candidates for each arm's own strength;
    `select` names the validation field that picks the setting); where a choice sits at the
    edge of a numeric axis, that axis grows by one step (extend_grid, within the arm's bounds)
    and the new cells run, round after round, until the choice is interior or
    Experiment.max_extensions is spent; the final grid, the values added, the edges that
    remain and the choice are recorded, and the test split is measured once, for the chosen
    setting only;
  - statistics (research/experiments/stats.py): mean and sample std over seeds, and the paired
    difference to the baseline arm (the same seeds, hence the same subsets) with a 95%
    t-interval over seeds and, with per-example values, a 95% interval that also counts the
    test examples' sampling; each block's family of comparisons (`Experiment.family`) is
    Holm-adjusted, and a difference is an effect only when its adjusted p < 0.05 and the
    wider interval excludes zero (`table`, `protocol_note`);
  - every cell is kept in WORKDIR/harness by its content (research/experiments/store.py: an
    id hashed from the experiment, the config's fingerprint, size, arm, setting, seeds and
    data draws; params as .npz, never pickled; a checksum on every line and params file), so
    a run killed at any point resumes without redoing finished cells and ends with the same
    results.json and metrics.jsonl (fit must be a function of its arguments: the same seeds,
    the same params);
  - the cells run in this process ("local") or as Ray tasks (config.experiment.executor =
    "ray", research/executor.py); this process stays the only writer of the store.

`train_seeds` trains the seeds of one cell with the kernel's chunk, as a loop over one compiled
program (`mode="loop"`, the default: at 5 seeds as fast as or faster than vmap on XLA:CPU for
every workload docs/performance.md measures) or as one jax.vmap-ped program ("vmap"). `table`, `plot` and `write` render
results.json; `run_cells` runs one experiment's cells on config.experiment.executor (every
runner's cells go through it), and `run_from_config` is the whole body of a runner whose
experiment is one `run`.
launch/regenerate_experiments.py splices each section's results.md into docs/experiments.md,
so the doc cannot drift from the results.
"""
import contextlib
import dataclasses
import itertools
import json
import math
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from scipy import stats

from research import data as data_lib
from research import errors
from research import executor as executor_lib
from research import kernel
from research import metrics as metrics_lib
from research import workdir as workdir_lib
from research.experiments import stats as stats_lib
from research.experiments import store as store_lib

CONFIDENCE = 0.95
PER_EXAMPLE = stats_lib.PER_EXAMPLE  # the key of a test record's per-example values
TIE = 1e-6  # relative: below it two validation scores are one (float32 sums differ ~1e-7)
MIN_SEEDS = 5  # Fewer seeds can run (tests, quick looks); their tables say it is no finding.
SEED_MODES = kernel.SEED_MODES
STEP = "learning_rate"  # the step-size axis of arms' grids: shared by every arm (check)
# Config fields that cannot change a cell's result, left out of config_fingerprint (and so of
# every cell's id): where the cells run, how far grids may grow (a larger budget reuses every
# cell a smaller one ran), and checkpoint and profiling bookkeeping.
FINGERPRINT_EXCLUDED = ("experiment.executor", "experiment.max_extensions", "checkpoint_every",
                        "keep_checkpoints", "profile_steps")


# ------------------------------------------------------------------------------------ subsets


def stratified_indices(labels_N: np.ndarray, per_class: int, seed: int,
                       num_classes: int | None = None, what: str = "the training split"
                       ) -> np.ndarray:
  """Sorted indices of `per_class` examples of every class, drawn without replacement by
  `seed` alone (a fresh draw per seed). Refuses a draw that cannot hold every class."""
  labels_N = np.asarray(labels_N)
  k = int(labels_N.max()) + 1 if num_classes is None else num_classes
  if per_class < 1:
    raise errors.ConfigError(f"{per_class} labels per class: draw at least 1 per class")
  counts = np.bincount(labels_N, minlength=k)
  short = [c for c in range(k) if counts[c] < per_class]
  if short:
    raise errors.ConfigError(
        f"{per_class} labels per class cannot be drawn from {what}: class(es) "
        f"{', '.join(map(str, short[:10]))} hold only {counts[short[0]]}; use at most "
        f"{int(counts.min())} per class")
  rng = np.random.default_rng([seed, per_class])
  idx = [rng.choice(np.flatnonzero(labels_N == c), per_class, replace=False) for c in range(k)]
  return np.sort(np.concatenate(idx)).astype(np.int32)


def stratified_subset(split: data_lib.Split, per_class: int, seed: int,
                      num_classes: int | None = None) -> data_lib.Split:
  """The examples of stratified_indices as a Split."""
  idx = stratified_indices(split.y, per_class, seed, num_classes)
  return data_lib.Split(split.x[idx], split.y[idx])


def seeded_slice(split: data_lib.Split, num_examples: int, seed: int) -> data_lib.Split:
  """A seeded subset of `num_examples` examples of split, without replacement (0 = all): NOT
  stratified, and one draw for every training seed. The runners not yet under run() still
  draw their slices with it; stratified_subset is the protocol's draw."""
  n = len(split)
  if num_examples == 0:
    return split
  if num_examples > n:
    raise errors.ConfigError(f"config.experiment.train_examples={num_examples} is more than "
                             f"the {n} training examples; use at most {n} (0 = all)")
  idx = np.sort(np.random.default_rng(seed).choice(n, num_examples, replace=False))
  return data_lib.Split(split.x[idx], split.y[idx])


# --------------------------------------------------------------------------------- statistics


def summary(values: Sequence[float]) -> dict[str, float]:
  """{"n", "mean", "std"}: std is the sample standard deviation (ddof = 1; nan for n = 1)."""
  v = np.asarray(values, np.float64)
  return {"n": len(v), "mean": float(v.mean()),
          "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan")}


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
  """The t-interval for the mean of `values`: mean ± t_{n-1} s / sqrt(n)."""
  s = summary(values)
  if s["n"] < 2:
    return (float("nan"), float("nan"))
  half = stats.t.ppf(0.5 + confidence / 2, s["n"] - 1) * s["std"] / math.sqrt(s["n"])
  return (s["mean"] - half, s["mean"] + half)


def evaluation(out: Mapping[str, Any]) -> dict[str, Any]:
  """A measure's record from kernel.evaluate's output: accuracy and loss, and the per-example
  correctness when it was asked for (evaluate(..., per_example=True), on the test split)."""
  record = {"accuracy": out["accuracy"], "loss": out["loss"]}
  if stats_lib.PER_EXAMPLE in out:
    record[stats_lib.PER_EXAMPLE] = dict(out[stats_lib.PER_EXAMPLE])
  return record


def paired(values: Sequence[float], baseline: Sequence[float],
           confidence: float = CONFIDENCE) -> dict[str, Any]:
  """The paired difference values - baseline over the same seeds: {"n", "mean", "std",
  "ci": [lo, hi], "p", "effect"}; effect is True only when the interval excludes zero (one
  comparison, uncorrected: a table's conclusions are stats.block's, Holm-adjusted)."""
  if len(values) != len(baseline):
    raise ValueError(f"paired difference of {len(values)} and {len(baseline)} values")
  diff = np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
  lo, hi = t_interval(diff, confidence)
  p = stats_lib.paired_t(diff, confidence)["p"]
  return {**summary(diff), "ci": [lo, hi], "p": p, "effect": bool(lo > 0 or hi < 0)}


# ------------------------------------------------------------------------ arms and experiments


@dataclasses.dataclass(frozen=True)
class Arm:
  """One method of an experiment; grid maps each hyperparameter to tune to its candidates
  (the cells are their product; an empty grid is one cell). STEP ("learning_rate") is the
  step size; every other axis is the arm's own strength (check's rule: tuning equal in kind).

  bounds: {axis: "[lo, hi)"}, the interval an edge extension stays in ("[" / "]" closed,
  "(" / ")" open; inf allowed); default "(0, inf)" for an axis whose candidates are all
  positive, else unbounded. step: False for an arm with no step size (a closed-form or
  L-BFGS fit), which tunes its strength alone, over as many cells as the others' budget."""
  name: str
  grid: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
  bounds: Mapping[str, str] = dataclasses.field(default_factory=dict)
  step: bool = True

  def cells(self) -> list[dict[str, Any]]:
    return _product(self.grid)


def _product(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  keys = list(grid)
  return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What a runner declares; `run` owns the protocol (module doc).

  draw(size, seed) -> the training data of that seed (default: none; use labelled_draw for
  labels per class); it is passed to fit as `subsets`, one per seed.
  """
  name: str
  arms: Sequence[Arm]
  baseline: str
  sizes: Sequence[Any]
  size_label: str
  seeds: Sequence[int]
  fit: Callable[..., list]
  measure: Callable[..., dict[str, float]]
  select: str = "accuracy"
  higher_is_better: bool = True
  draw: Callable[[Any, int], Any] | None = None
  select_label: str | None = None  # the protocol note's name for `select` (default: its key)
  data_note: str | None = None     # what the seeds draw (default: from `draw`)
  # The block's family of comparisons (the fields that are its question); None: every test
  # field that varies over seeds (stats.default_family). Holm adjusts within it.
  family: Sequence[str] | None = None
  test_shared: bool = True  # every seed measures the same test examples (else: its own draw)
  # fit_key(arm, setting, size) -> JSON: cells with one key share one fit (trained once, on
  # the first cell's arguments; e.g. inference rules on the same networks). Default: none.
  fit_key: Callable[[str, dict, Any], Any] | None = None
  # How many steps each numeric axis of an arm's grid may grow beyond its edges when the
  # choice lands there (extend_grid); config.experiment.max_extensions via run_from_config.
  max_extensions: int = 0
  # "shared": every arm with a step size tunes it over the same candidates; "own": the arms
  # are optimizers whose step sizes are not on one scale: the same number of candidates.
  step_sizes: str = "shared"


def fields_of(*tables: Sequence[tuple]) -> tuple[str, ...]:
  """The fields of `table` field lists ((field, heading, scale[, digits]), ...), in order and
  once each: a runner's family of comparisons is the fields its tables compare."""
  return tuple(dict.fromkeys(f for table in tables for f, *_ in table))


def labelled_draw(split: data_lib.Split, num_classes: int) -> Callable[[int, int], Any]:
  """draw(per_class, seed) -> a stratified subset of split, redrawn per seed."""
  return lambda per_class, seed: stratified_subset(split, per_class, seed, num_classes)


def check(experiment: Experiment) -> None:
  """The protocol's rules, before any work: the baseline is an arm, names are unique, at
  least 2 seeds (a confidence interval needs 2), tuning equal in kind (_check_kind), bounds
  that parse. One ConfigError line otherwise."""
  names = [a.name for a in experiment.arms]
  if len(set(names)) != len(names):
    raise errors.ConfigError(f"{experiment.name}: arm names repeat ({', '.join(names)})")
  if experiment.baseline not in names:
    raise errors.ConfigError(f"{experiment.name}: the baseline {experiment.baseline!r} is not "
                             f"one of the arms ({', '.join(names)}); add it to the methods")
  if len(experiment.seeds) < 2 or len(set(experiment.seeds)) != len(experiment.seeds):
    raise errors.ConfigError(
        f"{experiment.name}: {len(experiment.seeds)} distinct seed(s); a paired confidence "
        f"interval needs at least 2 (a finding at least {MIN_SEEDS})")
  _check_kind(experiment)
  if experiment.max_extensions < 0:
    raise errors.ConfigError(f"{experiment.name}: max_extensions={experiment.max_extensions}; "
                             "give 0 (no grid extension) or more")
  for arm in experiment.arms:
    for axis, text in arm.bounds.items():
      _parse_bound(text, f"{experiment.name}: arm {arm.name}'s bound for {axis}")


def _check_kind(experiment: Experiment) -> None:
  """Tuning equal in kind: when any arm tunes the step size (STEP), every arm with a step tunes
  it over the same candidates ("own" step sizes: the same number); arms with a strength (any
  other axis) tune it over the same number of cells; an arm with no step (Arm.step=False)
  tunes its strength over as many cells as the stepped arms' whole budget."""
  name, arms = experiment.name, experiment.arms
  errors.check_choice("step_sizes", experiment.step_sizes, ("shared", "own"))
  stepped = [a for a in arms if STEP in a.grid]
  if stepped:
    missing = [a.name for a in arms if a.step and STEP not in a.grid]
    if missing:
      raise errors.ConfigError(
          f"{name}: {', '.join(a.name for a in stepped)} tune the step size ({STEP}) but "
          f"{', '.join(missing)} do(es) not; give every arm the same {STEP} candidates (an arm "
          "with no step size: Arm(step=False))")
    if experiment.step_sizes == "shared":
      grids = {a.name: tuple(a.grid[STEP]) for a in stepped}
      if len(set(grids.values())) > 1:
        raise errors.ConfigError(
            f"{name}: the arms tune the step size over different candidates ("
            + "; ".join(f"{n}: {g}" for n, g in grids.items())
            + f"); give every arm the same {STEP} grid")
    elif len({len(a.grid[STEP]) for a in stepped}) > 1:
      raise errors.ConfigError(
          f"{name}: the arms tune their own step sizes over different numbers of candidates ("
          + ", ".join(f"{a.name}: {len(a.grid[STEP])}" for a in stepped)
          + "); give every arm as many")
  steps = len(stepped[0].grid[STEP]) if stepped else 1
  strength = {}
  for a in arms:
    own = {k: v for k, v in a.grid.items() if k != STEP}
    if own:
      n = len(_product(own))
      strength[a.name] = n if a.step else n / steps  # a stepless arm: its budget per step
  if len(set(strength.values())) > 1:
    raise errors.ConfigError(
        f"{name}: the arms tune their strength over different numbers of settings ("
        + ", ".join(f"{n}: {c:g}" for n, c in strength.items())
        + "); give every arm with a strength as many candidates"
        + (f" (an arm with no step size: {steps}x as many)"
           if any(not a.step for a in arms) else ""))


# ------------------------------------------------------------------------------------ the run


def config_fingerprint(config) -> str:
  """sha256 of the resolved config without FINGERPRINT_EXCLUDED: part of every cell's id."""
  tree = json.loads(config.to_json_best_effort())
  for field in FINGERPRINT_EXCLUDED:
    *parents, name = field.split(".")
    node = tree
    for part in parents:
      node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(name, None)
  return store_lib.entry_id(tree)


def executor_of(config) -> str:
  """config.experiment.executor ("local" | "ray"), checked; with "ray" and no Ray installed,
  one line naming the extra, before any work."""
  name = (config.get("experiment") or {}).get("executor", "local")
  errors.check_choice("experiment.executor", name, executor_lib.EXECUTORS)
  if name == "ray":
    executor_lib.import_ray()
  return name


def run_cells(config, workdir, cells: "CellWriter", experiment: Callable, *args,
              built: Experiment | None = None) -> dict:
  """run(experiment(config, *args, cells), workdir, cells) on config's executor: the one way
  a runner runs its cells. `experiment` must be a module-level function and `args` small
  and picklable (names, paths): with executor="ray" each Ray worker calls
  experiment(config, *args, CellWriter()) itself (artifacts computed before the cells, e.g.
  pre-trained layers, are read from the workdir's .npz caches there). built: this
  process's experiment(config, *args, cells), when the runner keeps it (e.g. for a figure).
  config.experiment.max_extensions, when stated, is the experiment's budget of grid
  extensions (with_budget)."""
  built = with_budget(built if built is not None else experiment(config, *args, cells), config)
  return run(built, workdir, cells, executor=executor_of(config),
             rebuild=(experiment, config, args), fingerprint=config_fingerprint(config))


def run_from_config(config, workdir, validate: Callable, experiment: Callable,
                    write: Callable) -> dict[str, Any]:
  """A runner's body: validate(config); run(experiment(config, writer)) in workdir, with
  the cells' training records in workdir/metrics.jsonl; then, on process 0,
  write(workdir, config, results) (results.md, results.json, figures). Returns the results.

  `experiment` must be a module-level function: with config.experiment.executor="ray" each
  Ray worker calls experiment(config, writer) itself to run its cells."""
  validate(config)
  executor_of(config)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
  result = run_cells(config, workdir, CellWriter(writer), experiment)
  writer.close()
  if jax.process_index() == 0:
    write(workdir, config, result)
  return result


def with_budget(experiment: Experiment, config) -> Experiment:
  """experiment with config.experiment.max_extensions (when the config states it) as its
  budget of grid extensions per axis."""
  budget = (config.get("experiment") or {}).get("max_extensions")
  if budget is None:
    return experiment
  if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
    raise errors.ConfigError(f"config.experiment.max_extensions={budget!r}; give a whole "
                             "number >= 0 (0: grids are never extended)")
  return dataclasses.replace(experiment, max_extensions=budget)


class CellWriter:
  """The writer a harness experiment's fit writes to (a MetricWriter's `write`): while the
  harness runs a cell it collects that cell's records, which go into the store with the cell
  and, in the cells' order, to `target` (workdir/metrics.jsonl); outside a cell, to `target`."""

  def __init__(self, target=None):
    self.target = target
    self.records: list | None = None

  def write(self, record: dict) -> None:
    if self.records is not None:
      self.records.append(json.loads(json.dumps(record, default=store_lib.json_default)))
    elif self.target is not None:
      self.target.write(record)

  @contextlib.contextmanager
  def muted(self):
    """Records written inside go nowhere (work outside the run's cells, e.g. a figure's
    re-fit, whose records would differ between a resumed run and an uninterrupted one)."""
    saved, self.records = self.records, []
    try:
      yield
    finally:
      self.records = saved


def run(experiment: Experiment, workdir, writer=None, *, executor: str = "local",
        rebuild: tuple[Callable, Any, tuple] | None = None, fingerprint: str = ""
        ) -> dict[str, Any]:
  """Runs the protocol (module doc) in workdir; returns the results dict (results.json's):

  {"experiment", "size_label", "seeds", "baseline", "select", "confidence",
   "sizes": [{"size", "arms": {arm: {"grid": [{"setting", "valid": [per seed]}],
              "chosen": setting, "test": [per seed {field: value}],
              "stats": {field: {"n", "mean", "std", "vs_baseline": paired(...)}}}}}],
   "wall_time"}

  Finished work is kept in WORKDIR/harness (research/experiments/store.py) by content: a
  rerun skips it, and replays its records, so metrics.jsonl ends as an uninterrupted run's.
  writer: a CellWriter (each cell's records are stored with it) or any writer (only the
  "result" records). executor: "local" (this process, cell after cell) or "ray" (each fit
  and each test measurement a Ray task; needs rebuild = (experiment_fn, config, args), which
  a worker calls as experiment_fn(config, *args, CellWriter()) to run its cells). fingerprint: the
  config's (config_fingerprint), part of every cell's id.
  """
  check(experiment)
  errors.check_choice("experiment.executor", executor, executor_lib.EXECUTORS)
  if executor == "ray" and rebuild is None:
    raise errors.ConfigError(
        f"{experiment.name}: this runner does not run its cells through "
        "harness.run_cells, so its cells cannot be rebuilt on Ray workers; set "
        "config.experiment.executor='local'")
  t_start = time.time()
  store = store_lib.CellStore(workdir_lib.as_path(workdir) / "harness")
  seeds = list(experiment.seeds)
  plan = _Plan(experiment, seeds, fingerprint)
  recorder = writer if isinstance(writer, CellWriter) else CellWriter()
  if executor == "local":
    ex = executor_lib.Local()
    submit = lambda order, job, tag: ex.submit(order, _run_job, experiment, recorder, job,
                                               seeds, tag=tag)
  else:
    ex = executor_lib.Ray()
    submit = lambda order, job, tag: ex.submit(order, _remote_job, *rebuild, fingerprint,
                                               job, seeds, tag=tag)
  emit = _Emitter(plan, store, writer, experiment)
  # Rounds: run the fits of the current grids; where an arm's choice sits at a grid edge,
  # extend that axis (extend_grid) and run the new cells; repeat until nothing changes. Each
  # round's new cells come after the last round's in the plan (and in metrics.jsonl), and the
  # rounds are a function of the stored validation records: a resumed run replays them.
  try:
    while True:
      for fid, group in plan.fits.items():
        if not group["submitted"] and not plan.fit_done(store, fid):
          group["submitted"] = True
          submit(group["order"], ("fit", group["cells"]), ("fit", fid))
      _drain(ex, plan, store, emit, experiment)
      if not plan.extend(store):
        break
    plan.add_tests()
    for i, (size, arm) in enumerate(plan.arms):
      if store.get(plan.test_id(store, i)) is None:
        chosen, fid = plan.chosen(store, i)
        submit(plan.test_order[i], ("test", size, arm, chosen, store.params(fid)), ("test", i))
    _drain(ex, plan, store, emit, experiment)
  finally:
    ex.close()
  emit.advance()
  out_sizes = []
  for si, size in enumerate(experiment.sizes):
    arms = {}
    for i in plan.arms_of_size[si]:
      arm = plan.arms[i][1]
      chosen, _ = plan.chosen(store, i)
      arms[arm] = {"grid": plan.grid(store, i), "chosen": chosen,
                   "test": store.get(plan.test_id(store, i))["test"],
                   "added": plan.added[i], "edges": plan.edges[i]}
    _add_stats(arms, experiment.baseline)
    out_sizes.append({"size": size, "arms": arms})
  data_note = experiment.data_note or (
      "subsets redrawn per seed, stratified" if experiment.draw is not None
      else "every seed trains on the same data")
  return {"experiment": experiment.name, "size_label": experiment.size_label, "seeds": seeds,
          "baseline": experiment.baseline, "select": experiment.select,
          "select_label": experiment.select_label or experiment.select, "data_note": data_note,
          "confidence": CONFIDENCE, "finding": len(seeds) >= MIN_SEEDS, "sizes": out_sizes,
          "family": list(experiment.family) if experiment.family is not None else None,
          "test_shared": experiment.test_shared, "max_extensions": experiment.max_extensions,
          "step_sizes": experiment.step_sizes,
          "wall_time": time.time() - t_start}


def _drain(ex, plan: "_Plan", store, emit: "_Emitter", experiment: Experiment) -> None:
  """Stores every submitted job's result as it finishes, writing records as far as done."""
  while True:
    emit.advance()
    if not ex.pending:
      return
    (kind, ref), out = ex.next()
    if kind == "fit":
      group = plan.fits[ref]
      store.put("fit", group["key"], {"cells": [
          {"size": c[0], "arm": c[1], "setting": c[2], "valid": v}
          for c, v in zip(group["cells"], out["valid"])], "records": out["records"]},
          out["params"])
      for (size, arm, setting), valid in zip(group["cells"], out["valid"]):
        logging.info("%s %s=%s %s %s: valid %s %.4f (%.1f s)", experiment.name,
                     experiment.size_label, size, arm, setting, experiment.select,
                     np.mean([v[experiment.select] for v in valid]), out["seconds"])
    else:
      store.put("test", plan.test_key(store, ref), {"test": out["test"],
                                                     "records": out["records"]})


# ------------------------------------------------------------------------- grid extension


def _parse_bound(text: str, what: str) -> tuple[float, float, bool, bool]:
  """'[0, 1)' -> (0.0, 1.0, lo closed, hi closed); 'inf' allowed."""
  t = str(text).strip()
  try:
    if t[0] not in "[(" or t[-1] not in "])":
      raise ValueError
    lo, hi = (float(v) for v in t[1:-1].split(","))
    if not lo < hi:
      raise ValueError
  except (ValueError, IndexError):
    raise errors.ConfigError(f"{what} is {text!r}; write an interval such as '[0, 1)' or "
                             "'(0, inf)'") from None
  return lo, hi, t[0] == "[", t[-1] == "]"


def _numeric(values) -> bool:
  return all(_is_number(v) for v in values)


def _monotone(values) -> bool:
  d = np.diff(np.asarray(values, np.float64))
  return bool((d > 0).all() or (d < 0).all())


def _next_value(values: Sequence[float], side: str) -> float:
  """One step beyond the `side` ("low" / "high") end of a sorted numeric axis: geometric (the
  ratio of the two edge candidates, rounded to the candidates' significant digits) when the
  candidates (the positive ones, past a 0) are positive and more evenly spaced in ratio than
  in difference, else arithmetic (their difference). Integers stay integers."""
  v = sorted(float(x) for x in values)
  pos = [x for x in v if x > 0]
  pair = (v[0], v[1]) if side == "low" else (v[-2], v[-1])
  geometric = False
  use = pos if side == "high" and len(pos) >= 2 else v
  if use[0] > 0 and len(use) >= 2:
    ratios, diffs = np.diff(np.log(use)), np.diff(use)
    spread = lambda x: float(np.max(x) / np.min(x))
    geometric = (spread(ratios) < spread(diffs)
                 or (len(use) == 2 and use[1] / use[0] >= 3))
    if side == "high":
      pair = (use[-2], use[-1])
  if geometric:
    new = pair[0] ** 2 / pair[1] if side == "low" else pair[1] ** 2 / pair[0]
    # As many significant digits as the candidates: 1e-3, 3e-3, 1e-2 extend to 3e-4, 3e-2.
    digits = max(len(f"{x:.12e}".split("e")[0].replace(".", "").rstrip("0")) for x in pos)
    new = float(f"{new:.{max(digits, 1) - 1}e}")
  else:
    new = 2 * pair[0] - pair[1] if side == "low" else 2 * pair[1] - pair[0]
  if all(isinstance(x, int) for x in values):
    return int(round(new))
  return float(f"{new:.12g}")  # 1e-05, not 9.999999999999998e-06


def extend_grid(axes: dict, chosen: dict, added: dict, bounds: Mapping[str, str],
                max_extensions: int) -> tuple[dict, list[dict]]:
  """One round of edge extension of one arm's grid. axes: {axis: candidates} (as tuned so
  far), chosen: the chosen setting, added: {axis: [values added so far]}. Every numeric,
  sorted axis with >= 2 candidates whose chosen value is its lowest or highest gets one more
  value beyond that edge, within the axis's bound (a closed bound is reached exactly, an open
  one approached halfway; 0 is a natural bound) and at most max_extensions per axis. Returns
  (the new axes, the edges that remain: [{"axis", "value", "side", "why": "budget" | "bound" | "unsorted"}])."""
  axes = {k: list(v) for k, v in axes.items()}
  edges = []
  for axis, values in list(axes.items()):
    if len(values) < 2 or not _numeric(values) or chosen.get(axis) not in values:
      continue
    v = chosen[axis]
    if v not in (min(values), max(values)):
      continue
    side = "low" if v == min(values) else "high"
    edge = {"axis": axis, "value": v, "side": side}
    if not _monotone(values):
      edges.append({**edge, "why": "unsorted"})
      continue
    if v == 0:
      edges.append({**edge, "why": "bound"})
      continue
    if len(added.get(axis, ())) >= max_extensions:
      edges.append({**edge, "why": "budget"})
      continue
    default = "(0, inf)" if min(values) > 0 else "(-inf, inf)"
    lo, hi, lo_closed, hi_closed = _parse_bound(bounds.get(axis, default), f"bound of {axis}")
    new = _next_value(values, side)
    inside = ((lo < new or (lo_closed and new == lo)) and (new < hi or (hi_closed and new == hi)))
    if not inside:
      # Past the bound: a closed bound is tried itself, an open one halfway to it (dropout's
      # p at 0.8 of (0, 1) tries 0.9, not nothing).
      reach = lo if side == "low" else hi
      closed = lo_closed if side == "low" else hi_closed
      if v != reach and math.isfinite(reach):
        new = type(v)(reach if closed else (v + reach) / 2)
      else:
        edges.append({**edge, "why": "bound"})
        continue
    if new in values:  # An integer axis whose step rounds to nothing.
      edges.append({**edge, "why": "bound"})
      continue
    ascending = values[0] < values[-1]
    at_start = (side == "low") == ascending
    axes[axis] = [new] + values if at_start else values + [new]
  return axes, edges


# ------------------------------------------------------------------------------- the plan


class _Plan:
  """The cells of an experiment, their fits (cells with one fit_key share one) and the ids of
  every entry (store.py's module doc), in their canonical order: the first round's cells
  (size, arm, setting), then each extension round's new cells in that order, then every
  arm's test."""

  def __init__(self, experiment: Experiment, seeds: list, fingerprint: str):
    self.experiment = experiment
    base = {"experiment": experiment.name, "config": fingerprint, "seeds": seeds}
    self.base = base
    self.fits: dict[str, dict] = {}      # fit id -> {"key", "cells", "order", "submitted"}
    self.arms: list[tuple] = []          # (size, arm name) in order
    self.arms_of_size: list[list[int]] = []
    self.axes: list[dict] = []           # per arm: {axis: candidates}, as extended
    self.added: list[dict] = []          # per arm: {axis: [values added]}
    self.edges: list[list] = []          # per arm: the edges that remain (extend_grid)
    self.arm_cells: list[list[tuple]] = []  # per arm: (setting, fit id), in grid order
    self.arm_fits: list[set] = []
    self.joined: list[dict] = []         # per arm: setting -> the round it joined the grid
    self.rounds = 0                      # extension rounds so far
    self.bounds: list[Mapping] = []
    self.draws: list = []
    self.test_order: list[int] = []
    self.events: list[tuple] = []        # ("fit", fit id, first?) | ("test", arm index)
    for size in experiment.sizes:
      draws = None
      if experiment.draw is not None:
        draws = [store_lib.digest(experiment.draw(size, s))
                 for s in seeds]
      self.arms_of_size.append([])
      for arm in experiment.arms:
        self.arms_of_size[-1].append(len(self.arms))
        self.arms.append((size, arm.name))
        self.axes.append({k: list(v) for k, v in arm.grid.items()})
        self.added.append({})
        self.edges.append([])
        self.bounds.append(arm.bounds)
        self.draws.append(draws)
        self.arm_cells.append([])
        self.arm_fits.append(set())
        self.joined.append({})
    for i in range(len(self.arms)):
      self._add_cells(i)

  def _add_cells(self, i: int) -> None:
    """Arm i's cells for its current axes (their product, in order); events for new ones."""
    size, name = self.arms[i]
    have = {store_lib.canonical(s): f for s, f in self.arm_cells[i]}
    cells = []
    for setting in _product(self.axes[i]):
      fid = have.get(store_lib.canonical(setting))
      if fid is None:
        fit = (self.experiment.fit_key(name, setting, size) if self.experiment.fit_key
               else {"size": size, "arm": name, "setting": setting})
        key = {**self.base, "draws": self.draws[i], "fit": fit}
        fid = store_lib.entry_id(key)
        first = fid not in self.fits
        if first:
          self.fits[fid] = {"key": key, "cells": [], "order": len(self.events),
                            "submitted": False}
        self.fits[fid]["cells"].append((size, name, setting))
        self.fits[fid]["submitted"] = False  # A shared fit with a new cell: measure it too.
        self.events.append(("fit", fid, first))
      cells.append((setting, fid))
      self.joined[i].setdefault(store_lib.canonical(setting), self.rounds)
    self.arm_cells[i] = cells
    self.arm_fits[i] = {fid for _, fid in cells}

  def extend(self, store) -> bool:
    """One extension round over every arm (extend_grid); True when some grid grew."""
    grew = False
    for i in range(len(self.arms)):
      chosen, _ = self.chosen(store, i)
      axes, self.edges[i] = extend_grid(self.axes[i], chosen, self.added[i], self.bounds[i],
                                        self.experiment.max_extensions)
      if axes != self.axes[i]:
        for axis, values in axes.items():
          new = [v for v in values if v not in self.axes[i][axis]]
          if new:
            self.added[i].setdefault(axis, []).extend(new)
        self.axes[i] = axes
        grew = True
    self.rounds += 1
    for i in range(len(self.arms)):  # In the canonical order, once every arm has chosen.
      self._add_cells(i)
    return grew

  def add_tests(self) -> None:
    for i in range(len(self.arms)):
      self.test_order.append(len(self.events))
      self.events.append(("test", i))

  def fit_done(self, store, fid: str) -> bool:
    entry = store.get(fid)
    if entry is None:
      return False
    have = {store_lib.canonical([c["size"], c["arm"], c["setting"]]) for c in entry["cells"]}
    return all(store_lib.canonical(list(c)) in have for c in self.fits[fid]["cells"])

  def _valid(self, store, fid: str, size, arm: str, setting) -> list:
    want = store_lib.canonical([size, arm, setting])
    return next(c["valid"] for c in store.get(fid)["cells"]
                if store_lib.canonical([c["size"], c["arm"], c["setting"]]) == want)

  def grid(self, store, i: int) -> list[dict]:
    size, arm = self.arms[i]
    return [{"setting": setting, "valid": self._valid(store, fid, size, arm, setting)}
            for setting, fid in self.arm_cells[i]]

  def chosen(self, store, i: int) -> tuple[dict, str]:
    """Arm i's choice (_choose), a tie going to the setting tried first: the first round's
    grid before any extension's values (a low-side extension lists its value first, and a
    tie must not pick it and grow the grid again)."""
    joined = self.joined[i]
    tried = sorted(range(len(self.arm_cells[i])),
                   key=lambda k: joined[store_lib.canonical(self.arm_cells[i][k][0])])
    grid = self.grid(store, i)
    setting = _choose([grid[k] for k in tried], self.experiment)
    fid = next(f for s, f in self.arm_cells[i] if s == setting)
    return setting, fid

  def test_key(self, store, i: int) -> dict:
    size, arm = self.arms[i]
    setting, fid = self.chosen(store, i)
    return {**self.base, "fit": fid, "test": {"size": size, "arm": arm, "setting": setting}}

  def test_id(self, store, i: int) -> str | None:
    """The id of arm i's test entry; None while a fit of the arm is unfinished."""
    if any(not self.fit_done(store, f) for f in self.arm_fits[i]):
      return None
    return store_lib.entry_id(self.test_key(store, i))


class _Emitter:
  """Writes the stored records to the writer in the plan's order, as far as work is done: a
  fit's records at its first cell, an arm's "result" records after its test. The same order
  whether the work was done now, before a kill, or by Ray workers in any order."""

  def __init__(self, plan: _Plan, store, writer, experiment: Experiment):
    self.plan, self.store, self.experiment = plan, store, experiment
    self.target = writer.target if isinstance(writer, CellWriter) else writer
    self.next = 0

  def advance(self) -> None:
    events, store = self.plan.events, self.store
    while self.next < len(events):
      event = events[self.next]
      if event[0] == "fit":
        _, fid, first = event
        if not self.plan.fit_done(store, fid):
          return
        records = store.get(fid)["records"] if first else []
      else:
        i = event[1]
        tid = self.plan.test_id(store, i)
        if tid is None or store.get(tid) is None:
          return
        size, arm = self.plan.arms[i]
        records = store.get(tid)["records"] + [
            {"step": 0, "split": "result", "size": size, "arm": arm, "seed": s,
             **{k: v for k, v in record.items() if k != stats_lib.PER_EXAMPLE}}
            for s, record in zip(self.plan.base["seeds"], store.get(tid)["test"])]
      if self.target is not None:
        for record in records:
          self.target.write(record)
      self.next += 1


def _run_job(experiment: Experiment, recorder: CellWriter, job: tuple, seeds: list) -> dict:
  """One fit (("fit", cells): trains once, measures every cell on valid) or one test
  measurement (("test", size, arm, setting, params)); returns what the store keeps, with the
  records the experiment wrote meanwhile. Params come back as NumPy arrays."""
  t0 = time.time()
  recorder.records = []
  try:
    if job[0] == "fit":
      cells = job[1]
      size, arm, setting = cells[0]
      subsets = ([experiment.draw(size, s) for s in seeds] if experiment.draw is not None
                 else None)
      params = jax.device_get(experiment.fit(arm, setting, size, seeds, subsets))
      valid = [[experiment.measure(a, st, sz, s, p, "valid") for s, p in zip(seeds, params)]
               for sz, a, st in cells]
      return {"params": params, "valid": _plain(valid), "records": recorder.records,
              "seconds": time.time() - t0}
    _, size, arm, setting, params = job
    # Per-example test values (if any) are packed: one "0110..." string per field.
    test = [stats_lib.pack(experiment.measure(arm, setting, size, s, p, "test"))
            for s, p in zip(seeds, params)]
    return {"test": _plain(test), "records": recorder.records}
  finally:
    recorder.records = None


def _plain(values):
  return json.loads(json.dumps(values, default=store_lib.json_default))


_WORKER_EXPERIMENTS: dict = {}  # In a Ray worker: (runner, fingerprint) -> (experiment, recorder)


def _remote_job(experiment_fn: Callable, config, args: tuple, fingerprint: str, job: tuple,
                seeds: list) -> dict:
  """_run_job in a Ray worker: the experiment built from (config, *args) once per worker
  process."""
  key = (experiment_fn.__module__, experiment_fn.__qualname__, repr(args), fingerprint)
  if key not in _WORKER_EXPERIMENTS:
    recorder = CellWriter()
    with kernel.precision(config):
      _WORKER_EXPERIMENTS[key] = (experiment_fn(config, *args, recorder), recorder)
  experiment, recorder = _WORKER_EXPERIMENTS[key]
  with kernel.precision(config):
    return _run_job(experiment, recorder, job, seeds)


def _choose(grid: list[dict], experiment: Experiment) -> dict:
  """The setting with the best mean validation `select` over seeds (the first on a tie); a
  setting whose score is not finite (a diverged run) is never chosen. Scores within TIE of the
  best, relatively, are a tie: equal accuracies (equal counts of correct examples) summed
  from float32 values in another order differ in the last bits, which must not choose.
  Only validation records reach it: a cell holding anything but its setting and its "valid"
  records is refused: no choice reads test."""
  for cell in grid:
    if set(cell) != {"setting", "valid"}:
      raise AssertionError(f"{experiment.name}: _choose received {sorted(cell)}; it chooses "
                           "on the validation records alone")
  sign = 1.0 if experiment.higher_is_better else -1.0
  scores = [sign * float(np.mean([v[experiment.select] for v in cell["valid"]]))
            for cell in grid]
  finite = [s if math.isfinite(s) else -math.inf for s in scores]
  best = max(finite)
  if best == -math.inf:
    raise errors.NonFiniteLossError(
        f"{experiment.name}: validation {experiment.select} is not finite for any setting "
        f"of {[cell['setting'] for cell in grid]}; narrow the grid (e.g. smaller learning "
        "rates)")
  tied = best - TIE * max(abs(best), 1e-30)
  return grid[next(i for i, s in enumerate(finite) if s >= tied)]["setting"]


def regroup(results: dict, groups: Mapping[str, Sequence[tuple[dict, str]]],
            higher_is_better: bool = True) -> dict:
  """A sweep's arms regrouped into tuned arms: results (harness.run's) with, at each size, arm
  `name` of groups = {name: [(setting, sweep arm), ...]} choosing among its sweep arms on the
  validation records of each one's chosen setting (_choose: mean `select`, the first on a
  tie; the setting reported is the sweep arm's choice, e.g. its step size, with `setting`)
  and reporting the chosen one's test records; a group of one arm (the baseline) has nothing
  to choose. A choice at the end of a group's numeric strengths is an edge ("sweep": the
  sweep's strengths are fixed), beside the sweep arm's own edges. Returns a results block of
  its own (family and statistics recomputed)."""
  exp = Experiment(results["experiment"], [Arm(n) for n in groups], results["baseline"], (),
                   results["size_label"], results["seeds"], fit=None, measure=None,
                   select=results["select"], higher_is_better=higher_is_better)
  sizes = []
  for entry in results["sizes"]:
    arms = {}
    for name, members in groups.items():
      grid = []
      for setting, arm in members:
        swept = entry["arms"][arm]
        cell = next(c for c in swept["grid"] if c["setting"] == swept["chosen"])
        grid.append({"setting": {**swept["chosen"], **setting}, "valid": cell["valid"]})
      chosen = _choose(grid, exp)
      k = [c["setting"] for c in grid].index(chosen)
      swept = entry["arms"][members[k][1]]
      axes = {a: [s[a] for s, _ in members] for a in members[k][0]}
      _, edges = extend_grid(axes, chosen, {}, {}, 0)
      arms[name] = {"grid": grid, "chosen": chosen, "test": swept["test"],
                    "added": swept.get("added", {}),
                    "edges": swept.get("edges", []) + [{**e, "why": "sweep"} for e in edges]}
    _add_stats(arms, results["baseline"])
    sizes.append({"size": entry["size"], "arms": arms})
  return {**results, "sizes": sizes}


def _add_stats(arms: dict, baseline: str) -> None:
  base = arms[baseline]["test"]
  for arm in arms.values():
    fields = [f for f in arm["test"][0] if _is_number(arm["test"][0][f])]
    arm["stats"] = {}
    for f in fields:
      values = [r[f] for r in arm["test"]]
      entry = summary(values)
      if f in base[0] and all(math.isfinite(v) for v in values):
        entry["vs_baseline"] = paired(values, [r[f] for r in base])
      arm["stats"][f] = entry


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------- training the seeds


def train_seeds(model, loss_fn: Callable, optimizer, num_steps: int, batch_size: int,
                subsets: Sequence[data_lib.Split], seeds: Sequence[int], *,
                mode: str = "loop", augment_fn: Callable | None = None,
                value_and_grad: Callable | None = None, batches: Callable | None = None,
                chunk_steps: int | None = None, what: str = "", writer=None,
                tag: dict | None = None, with_step: bool = False,
                init_params: Callable[[int], Any] | None = None,
                on_chunk: Callable[[int, int, Any, dict], bool | None] | None = None) -> list:
  """Trains one model per seed on that seed's subset with the kernel's chunk; returns the final
  params per seed. Every subset has one shape (stratified draws do), so "loop" compiles the
  chunk once and "vmap" runs all seeds as one program (jax.vmap over the states, the subsets
  and the batch indices). batches(seed, n, start, num) -> idx_SxB (default: the library's
  batch order, data.batch_indices); each run starts from kernel.init_state(key(seed)), or,
  with init_params(seed) -> params (e.g. pre-trained weights), from those params with the
  same per-step randomness. With a writer, each chunk's mean E and aux scalars per seed are a
  "train" record (with `tag`).

  on_chunk(seed, step, params, train) runs after every chunk (every chunk_steps steps) for
  each seed still training, with that seed's params after `step` steps and its chunk means
  {"loss", aux...} (the train record's scalars): the hook for work that needs the params at
  every evaluation (early stopping, checkpoint rules). The params are the next chunk's input,
  which it donates: copy what you keep (jax.device_get or jax.tree.map(jnp.copy, ...)).
  Returning True stops that seed (early stopping); its returned params are then those after
  `step` steps. In "vmap" mode the program runs until every seed has stopped, and a stopped
  seed gets no further calls."""
  errors.check_choice("experiment.seed_mode", mode, SEED_MODES)
  n = len(subsets[0])
  if any(len(s) != n for s in subsets):
    raise ValueError("train_seeds needs one subset size for every seed")
  batches = batches or (lambda seed, n, start, num: data_lib.batch_indices(
      seed, n, batch_size, start, num))
  chunk_steps = min(chunk_steps or num_steps, num_steps)
  bounds = [(s, min(s + chunk_steps, num_steps)) for s in range(0, num_steps, chunk_steps)]
  chunk = kernel.make_train_chunk(loss_fn, optimizer, augment_fn, value_and_grad,
                                  with_step=with_step)
  if init_params is None:
    states = [kernel.init_state(model, optimizer, jax.random.key(s)) for s in seeds]
  else:
    states = [kernel.train_state(init_params(s), optimizer,
                                 jax.random.split(jax.random.key(s))[1]) for s in seeds]
  if mode == "vmap":
    run_chunk = jax.jit(jax.vmap(chunk), donate_argnums=0)
    state = jax.tree.map(lambda *a: jnp.stack(a), *states)
    x_R = jnp.asarray(np.stack([s.x for s in subsets]))
    y_R = jnp.asarray(np.stack([s.y for s in subsets]))
    stopped = {}  # seed index -> its params when it stopped
    for start, stop in bounds:
      idx = np.stack([batches(s, n, start, stop - start) for s in seeds])
      state, sums = run_chunk(state, x_R, y_R, idx)
      _check_finite(sums, seeds, what)
      means = _write_sums(writer, tag, sums, seeds, start, stop)
      if on_chunk is not None:
        for i, seed in enumerate(seeds):
          if i in stopped:
            continue
          params = jax.tree.map(lambda a, i=i: a[i], state["params"])
          if on_chunk(seed, stop, params, means[i]):
            stopped[i] = jax.device_get(params)
        if len(stopped) == len(seeds):
          break
    return [stopped[i] if i in stopped else jax.tree.map(lambda a, i=i: a[i], state["params"])
            for i in range(len(seeds))]
  out = []
  for seed, state, subset in zip(seeds, states, subsets):
    x, y = jnp.asarray(subset.x), jnp.asarray(subset.y)
    for start, stop in bounds:
      state, sums = chunk(state, x, y, batches(seed, n, start, stop - start))
      _check_finite(sums, [seed], what)
      means = _write_sums(writer, tag, jax.tree.map(lambda a: a[None], sums), [seed], start,
                          stop)
      if on_chunk is not None and on_chunk(seed, stop, state["params"], means[0]):
        break
    out.append(state["params"])
  return out


def _write_sums(writer, tag, sums_R, seeds, start: int, stop: int) -> list[dict]:
  """Each seed's chunk means {"loss", aux...}, written as a "train" record when there is a
  writer."""
  host = jax.device_get({k: v for k, v in sums_R.items() if k.endswith("_sum")})
  means = [{k[:-len("_sum")]: float(v[i]) / (stop - start) for k, v in host.items()}
           for i in range(len(seeds))]
  if writer is not None:
    for seed, mean in zip(seeds, means):
      writer.write({"step": stop, "split": "train", **(tag or {}), "seed": seed, **mean})
  return means


def _check_finite(sums, seeds, what: str) -> None:
  bad = np.atleast_1d(np.asarray(sums["first_bad_step"]))
  if (bad >= 0).any():
    i = int(np.argmax(bad >= 0))
    raise errors.NonFiniteLossError(
        f"{what or 'training'}, seed {seeds[i]}: the loss became NaN/inf at step {int(bad[i])}; "
        "lower the learning rates of the experiment's grid")


# ---------------------------------------------------------------------------------- rendering


def fmt_summary(entry: dict, scale: float = 100.0, digits: int = 1) -> str:
  """'93.2 ± 0.4': mean ± sample std, times scale (100: accuracies in %)."""
  std = entry["std"]
  return (f"{scale * entry['mean']:.{digits}f} ± "
          + ("-" if not math.isfinite(std) else f"{scale * std:.{digits}f}"))


def holm_family(entries: Sequence[dict | None]) -> list[dict | None]:
  """paired() entries taken as one family of comparisons (a note's or a side table's): each
  gains "p_holm", Holm's adjusted p within the family, and keeps "effect" only when that p is
  below 0.05 and its t-interval excludes zero. These comparisons have no per-example values,
  so their interval is over seeds alone; None entries pass through."""
  present = [e for e in entries if e is not None]
  adjusted = iter(stats_lib.holm([e["p"] for e in present]))
  out = []
  for e in entries:
    if e is not None:
      p = next(adjusted)
      e = {**e, "p_holm": p, "effect": bool(e["effect"] and p < 1 - CONFIDENCE)}
    out.append(e)
  return out


def outside_family(entry: dict | None) -> dict | None:
  """A comparison shown for the record, outside any family: printed with its unadjusted p in
  parentheses and never called an effect."""
  return None if entry is None else {**entry, "effect": False, "outside": True}


def fmt_paired(entry: dict | None, scale: float = 100.0, digits: int = 1) -> str:
  """'+1.2 [-0.3, +2.7], p (Holm) 0.012 *': the paired mean difference and its t-interval over
  seeds, times scale, with its Holm-adjusted p after holm_family ('*': an effect) or its
  unadjusted p in parentheses after outside_family (never an effect)."""
  if entry is None:
    return "-"
  lo, hi = entry["ci"]
  text = (f"{scale * entry['mean']:+.{digits}f} [{scale * lo:+.{digits}f}, "
          f"{scale * hi:+.{digits}f}]")
  if "p_holm" in entry:
    return text + f", p (Holm) {_fmt_p(entry['p_holm'])}" + (" *" if entry["effect"] else "")
  if entry.get("outside"):
    return text + f" (p {_fmt_p(entry['p'])}, unadjusted)"
  return text + (" *" if entry["effect"] else "")


def table(results: dict, fields: Sequence[tuple], digits: int = 1) -> str:
  """A markdown table of results.json: one row per size and arm, with the chosen setting and,
  per (field, heading, scale[, digits]), mean ± sample std, the paired difference to the
  baseline with its 95% t-interval over seeds, the 95% interval that also counts the test
  examples' sampling ('n/a' without per-example values), and the p-value of the wider of the
  two, Holm-adjusted within the block's family ('*': an effect; '†': borderline within the
  reproduction tolerance; '(p)': a field outside the family, unadjusted, never an effect)."""
  from research.experiments import report  # pylint: disable=g-import-not-at-top
  baseline = results["baseline"]
  family = stats_lib.block(results)
  rows = []
  for i, entry in enumerate(results["sizes"]):
    for name, arm in entry["arms"].items():
      row = {results["size_label"]: entry["size"], "method": name,
             "chosen on valid": _fmt_setting(arm["chosen"], arm.get("edges", ()))}
      for field, heading, scale, *places in fields:
        places = places[0] if places else digits
        st = arm["stats"].get(field)
        row[f"{heading} (n={len(results['seeds'])})"] = (
            "-" if st is None else fmt_summary(st, scale, places))
        cells = fmt_comparison(family["comparisons"].get((i, name, field)), scale, places)
        if name == baseline:
          cells = ("(baseline)", "", "")
        row[f"{heading}: Δ vs {baseline} [95% CI, seeds]"] = cells[0]
        row[f"{heading}: [95% CI, seeds + test examples]"] = cells[1]
        row[f"{heading}: p (Holm)"] = cells[2]
      rows.append(row)
  return report.markdown_table(report.columns_of(rows), rows)


def fmt_comparison(c: dict | None, scale: float = 100.0, digits: int = 1
                   ) -> tuple[str, str, str]:
  """(Δ [t-interval], [test-inclusive interval] or 'n/a', adjusted p with its marks) of one
  stats.block comparison, times scale."""
  if c is None:
    return ("-", "-", "-")
  f = lambda v: f"{scale * v:+.{digits}f}"
  lo, hi = c["t"]["ci"]
  delta = f"{f(c['mean'])} [{f(lo)}, {f(hi)}]"
  test = "n/a" if c["test"] is None else f"[{f(c['test']['ci'][0])}, {f(c['test']['ci'][1])}]"
  if c["p_holm"] is None:
    return delta, test, f"({_fmt_p(c['p'])})"
  lo, hi = c["wide"]
  near = min(abs(lo), abs(hi))
  tol = stats_lib.tolerance(scale * near, digits) / scale if scale else 0.0
  mark = (" *" if c["effect"] else "") + (" †" if stats_lib.borderline(c, tol) else "")
  return delta, test, _fmt_p(c["p_holm"]) + mark


def _fmt_p(p: float) -> str:
  if not math.isfinite(p):
    return "-"
  return "<0.001" if p < 0.001 else f"{p:.3f}"


EDGE_MARKS = {"low": "⇤", "high": "⇥"}  # a choice still at that end of its axis
EDGE_WHY = {"budget": "budget, the extensions ran out", "bound": "bound, the axis's limit",
            "sweep": "sweep, a strength read at every value and never extended",
            "unsorted": "unsorted, a grid with no order to extend"}


def _fmt_setting(setting: dict, edges: Sequence[dict] = ()) -> str:
  """'learning_rate=0.01 ⇥ (budget), l2=0.001': each edge that remains marked with its side
  and why (budget: the extensions ran out; bound: the axis's bound; unsorted: not extended)."""
  marks = {e["axis"]: f" {EDGE_MARKS[e['side']]} ({e['why']})" for e in edges}
  return ", ".join((f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}") + marks.get(k, "")
                   for k, v in setting.items()) or "-"


def chooses(results: dict) -> bool:
  """Whether anything in the block is chosen on validation (an arm's grid holds more than one
  setting)."""
  return any(len(arm["grid"]) > 1 for entry in results["sizes"]
             for arm in entry["arms"].values())


def protocol_note(results: dict) -> str:
  """The sentences naming the protocol behind a block: how each setting was chosen (only where
  something is chosen), the intervals, and the multiplicity correction with its counts."""
  n = len(results["seeds"])
  family = stats_lib.block(results)
  conf = round(100 * results["confidence"])
  note = f"n = {n} seeds ({results.get('data_note', 'subsets redrawn per seed, stratified')}); "
  if chooses(results):
    steps = any(STEP in c["setting"] for e in results["sizes"] for a in e["arms"].values()
                for c in a["grid"])
    own = results.get("step_sizes") == "own"
    note += (f"each method's setting chosen on the validation split by mean "
             f"{results.get('select_label', results['select'])}, tuning equal in kind ("
             + (("every method its own step sizes, as many" if own else
                 "every method the same step sizes to start") + ", and " if steps else "")
             + "each method's own strength over as many candidates); ")
    if "max_extensions" in results:
      budget = results["max_extensions"]
      whys = sorted({e["why"] for entry in results["sizes"] for a in entry["arms"].values()
                     for e in a.get("edges", ())})
      note += ((f"where a choice sat at a grid edge, its axis was extended by one step at a "
                f"time (each method's grid at its own edges), up to {budget} steps per axis; "
                if budget else "grids not extended at their edges; ")
               + ("⇤ / ⇥ a choice still at the low / high edge (why: "
                  + "; ".join(EDGE_WHY[w] for w in whys) + "); " if whys else
                  "no choice remains at a grid edge; "))
  else:
    note += "nothing is chosen (one setting per method); "
  note += (f"test measured once; ± is the sample std; Δ is the paired difference to "
           f"{results['baseline']}: its {conf}% t-interval over seeds, and a {conf}% interval "
           "that also counts the sampling of the test examples (seeds x examples, "
           "research/experiments/stats.py); p is that of the wider, Holm-adjusted within the "
           f"block's {family['count']} comparisons (each method against {results['baseline']} "
           f"in {', '.join(family['family']) or 'no field'}, at every value of "
           f"{results['size_label']}); * an effect (adjusted p < {stats_lib.ALPHA:g} and the "
           f"wider interval excludes zero): {family['survive']} of {family['count']}; † could "
           f"change within the reproduction tolerance ({stats_lib.TOLERANCE_UNITS} units of "
           f"the last digit; of the {stats_lib.SIGNIFICANT}rd significant digit for longer "
           "numbers); (p): outside the family, unadjusted, never an effect.")
  if family["missing_test"]:
    note += (f" No per-example test values for {', '.join(family['missing_test'])} (this "
             "runner records them for accuracy only, or the field is not a mean over test "
             "examples): the test-sampling interval is missing (n/a) and its conclusions follow "
             "the t-interval alone.")
  if n < MIN_SEEDS:
    note += f" With fewer than {MIN_SEEDS} seeds this is a look, not a finding."
  return note


def plot(path, results: dict, field: str, ylabel: str, title: str, scale: float = 100.0) -> None:
  """Each arm's mean against the size, with the 95% t-interval of the mean as error bars."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from research.experiments import report  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(6.4, 4.4), layout="constrained")
  ax = fig.subplots()
  sizes = [e["size"] for e in results["sizes"]]
  numeric = all(isinstance(s, (int, float)) for s in sizes)
  xs = sizes if numeric else list(range(len(sizes)))
  for name in results["sizes"][0]["arms"]:
    means, lo, hi = [], [], []
    for e in results["sizes"]:
      values = [scale * r[field] for r in e["arms"][name]["test"]]
      m = float(np.mean(values))
      a, b = t_interval(values)
      means.append(m)
      lo.append(m - a)
      hi.append(b - m)
    ax.errorbar(xs, means, yerr=[lo, hi], marker="o", capsize=3, label=name)
  if numeric and len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 8:
    ax.set_xscale("log")
    ax.minorticks_off()
  ax.set_xticks(xs, [str(s) for s in sizes])
  ax.set_xlabel(results["size_label"])
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(title=f"mean, 95% CI (n={len(results['seeds'])})")
  ax.set_title(title)
  report.save_figure(fig, path)


def write(workdir, results: dict, title: str, fields: Sequence[tuple],
          notes: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
  """workdir/results.json and results.md (notes, the protocol note, the table, then any
  `extra` markdown blocks), process 0."""
  if jax.process_index() != 0:
    return
  from research.experiments import report  # pylint: disable=g-import-not-at-top
  path = workdir_lib.as_path(workdir)
  report.write_json(path / "results.json", results)
  workdir_lib.write_text(path / "results.md", "\n\n".join(
      [f"# {title}", *notes, protocol_note(results), table(results, fields), *extra]) + "\n")
