"""What a run reports about time: the ETA of its progress lines, and the wall time of a run
that was resumed (the whole run's, not its last process's)."""
import json
import math
import shutil

from configs import default
from research import checkpoint
from research import metrics
from research import train


def test_the_eta_ignores_compiles_and_counts_from_the_first_log_line():
  eta = train._Eta(now=100.0, compile_seconds=5.0)
  # First log line: 100 steps in 10 s since training started (its compile excluded).
  assert eta.update(110.0, 100, 5.0, steps_left=900) == 90.0
  # A 20 s compile of a new chunk length, then 100 steps in 10 s: still 10 steps/s.
  assert eta.update(140.0, 200, 25.0, steps_left=800) == 80.0
  # One window twice as slow moves the ETA by the average since the first line, not 2x.
  assert eta.update(160.0, 300, 25.0, steps_left=700) == 700 * 30.0 / 200
  assert math.isnan(train._Eta(0.0, 0.0).update(1.0, 0, 0.0, steps_left=10))


def test_a_resumed_run_s_wall_time_includes_the_earlier_processes(tmp_path):
  """The earlier process's time up to the checkpoint (its last kept record's "elapsed", set
  here to 1000 s) is part of the final wall time and of every later record's "elapsed"."""
  config = default.get_config()
  config.update(num_steps=40, log_every=10, eval_every=20, checkpoint_every=20)
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  shutil.rmtree(checkpoint.checkpoint_dir(workdir) / "40")  # As if killed before step 40's.
  path = workdir / metrics.FILENAME
  records = [json.loads(line) for line in path.read_text().splitlines()]
  for r in records:
    if r["step"] == 20 and r["split"] == "train":
      r["elapsed"] = 1000.0
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  result = train.train_and_evaluate(config, str(workdir))
  assert result["wall_time"] > 1000.0
  after = [r for r in metrics.read_metrics(str(workdir)) if r["step"] > 20]
  assert all(r["elapsed"] > 1000.0 for r in after if r["split"] == "train")
  assert [r["wall_time"] for r in after if r["split"] == "test"] == [result["wall_time"]]
