"""research.metrics (JSON lines + TensorBoard) and research.plot (learning-curve PNGs)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import image as mpl_image

from research import errors
from research import metrics
from research import plot

_RECORDS = [
    {"step": 10, "split": "train", "loss": 1.5, "accuracy": 0.25, "note": "warmup"},
    {"step": 20, "split": "train", "loss": np.float32(0.75), "accuracy": jnp.float32(0.5)},
    {"step": 20, "split": "valid", "loss": 0.875, "accuracy": 0.5, "ok": True},
    {"step": 20, "split": "test", "loss": 0.9, "accuracy": 0.5, "wall_time": 3.0},
]


def _write_run(workdir, records=_RECORDS):
  with metrics.MetricWriter(str(workdir)) as writer:
    for record in records:
      writer.write(record)


def _tb_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
  scalars = {}
  for tag, step, value in metrics.read_tensorboard(workdir):
    scalars.setdefault(tag, []).append((step, value))
  return scalars


def test_jsonl_round_trip(tmp_path):
  _write_run(tmp_path)
  got = metrics.read_metrics(str(tmp_path))
  assert len(got) == 4
  assert got[0] == _RECORDS[0]
  assert got[1] == {"step": 20, "split": "train", "loss": 0.75, "accuracy": 0.5}
  assert [r["step"] for r in metrics.read_metrics(str(tmp_path), split="valid")] == [20]
  # Each line is a standalone JSON object.
  lines = open(tmp_path / "metrics.jsonl").read().splitlines()
  assert json.loads(lines[3])["wall_time"] == 3.0


def test_tensorboard_scalars_named_split_slash_key(tmp_path):
  _write_run(tmp_path)
  scalars = _tb_scalars(str(tmp_path))
  assert scalars["train/loss"] == [(10, 1.5), (20, 0.75)]
  assert scalars["valid/accuracy"] == [(20, 0.5)]
  assert scalars["test/wall_time"] == [(20, 3.0)]
  # Strings and booleans are not scalars; step and split are not metrics.
  assert not {"train/note", "valid/ok", "train/step", "train/split"} & set(scalars)


def test_nested_groups_add_no_tags_that_repeat_the_step(tmp_path):
  _write_run(tmp_path, [{"step": 10, "split": "train", "loss": 1.0,
                         "norms": {"grad": {"0/w": 0.5}, "w": {"0/w": 2.0}}}])
  assert set(_tb_scalars(str(tmp_path))) == {
      "train/loss", "train/norms/grad/0/w", "train/norms/w/0/w"}


def test_record_needs_step_and_split(tmp_path):
  with metrics.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    with pytest.raises(ValueError, match="'step'"):
      writer.write({"split": "train", "loss": 1.0})
    with pytest.raises(ValueError, match="'split'"):
      writer.write({"step": 1, "loss": 1.0})


def test_read_skips_a_torn_last_line_but_not_a_bad_middle_one(tmp_path):
  _write_run(tmp_path, _RECORDS[:2])
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 30, "spl')  # A run killed mid-write.
  assert [r["step"] for r in metrics.read_metrics(str(tmp_path))] == [10, 20]
  with open(path, "a") as f:
    f.write('\n{"step": 40, "split": "train"}\n')
  with pytest.raises(errors.DataError, match="line 3"):
    metrics.read_metrics(str(tmp_path))


def test_read_missing_file_is_a_data_error(tmp_path):
  with pytest.raises(errors.DataError, match="metrics.jsonl does not exist"):
    metrics.read_metrics(str(tmp_path / "nope"))


def test_plot_runs_writes_one_panel_per_metric(tmp_path):
  for name in ("run_a", "run_b"):
    _write_run(tmp_path / name)
  out = plot.plot_runs([str(tmp_path / "run_a"), str(tmp_path / "run_b")],
                       str(tmp_path / "curves.png"))
  image = mpl_image.imread(out)
  height, width = image.shape[:2]
  assert (height, width) == (4 * 120, 2 * 5.5 * 120)
  assert image[..., :3].std() > 0.05  # Not blank.


def test_plot_cli(tmp_path, capsys):
  _write_run(tmp_path / "run")
  out = str(tmp_path / "acc.png")
  plot.main([str(tmp_path / "run"), f"--out={out}", "--metrics=accuracy"])
  assert mpl_image.imread(out).shape[1] == 5.5 * 120
  assert out in capsys.readouterr().out


def test_plot_unknown_metric_is_a_data_error(tmp_path):
  _write_run(tmp_path / "run")
  with pytest.raises(errors.DataError, match="'perplexity'"):
    plot.plot_runs([str(tmp_path / "run")], str(tmp_path / "x.png"), metrics=("perplexity",))
