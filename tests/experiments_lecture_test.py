"""A tiny version of the lecture's experiment 5: universal approximation."""
import json
import os

import numpy as np
import pytest

from configs import exp_approximation
from research.experiments import approximation


def _outputs(workdir, *pngs):
  """Asserts the runner wrote its results and plots; returns results.json."""
  for name in ("results.md", "results.json", "metrics.jsonl", *pngs):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


# ------------------------------------------------------------------- 5. universal approximation


@pytest.mark.slow
def test_approximation_error_falls_with_width(tmp_path):
  config = exp_approximation.get_config()
  config.experiment.targets = ("sines_1d",)
  config.experiment.widths = (1, 32)
  config.experiment.num_seeds = 2
  config.experiment.train_points = 128
  config.experiment.grid_points_1d, config.experiment.grid_points_2d = 201, 21
  config.num_steps = 200
  config.optimizer.learning_rate, config.optimizer.schedule = 0.03, "constant"
  out = approximation.run(config, str(tmp_path))
  _outputs(tmp_path, "approximation.png")
  narrow, wide = out["rows"]
  assert (narrow["width"], wide["width"]) == (1, 32)
  assert wide["rms_median"] < 0.5 * narrow["rms_median"], (narrow, wide)
  assert wide["rms_best"] <= wide["max_best"]


def test_dense_grid_covers_the_square():
  g = approximation.dense_grid(2, 3)
  assert g.shape == (9, 2)
  np.testing.assert_array_equal(np.unique(g[:, 0]), [-1, 0, 1])
