"""The runners whose cells once ran outside harness.run_cells (approximation, batch size,
curvature, pre-training, skip-gram, surrogate) now resume like every other: a run killed in
the middle of a cell ends with the results and the metrics.jsonl of an uninterrupted run (the
skip-gram tables and pre-trained layers read back from their .npz with their records), and
pre-training's per-seed artifact (pretrained.npz) lets its cells run as Ray tasks.

The kill is taken from observed progress: harness.train_seeds raises KeyboardInterrupt at its
k-th call (inside a cell), never a clock."""
import json
import pathlib
import shutil
import tempfile

import pytest

from configs import exp_approximation
from configs import exp_pretraining
from configs import exp_skipgram
from research import metrics as metrics_lib
from research.experiments import approximation
from research.experiments import embeddings
from research.experiments import harness
from research.experiments import pretraining

REPO = pathlib.Path(__file__).resolve().parents[1]


def _approximation():
  config = exp_approximation.get_config()
  config.num_steps = 60
  config.experiment.update(targets=("sines_1d", "bumps_2d"), widths=(2, 8), seeds=2,
                           train_points=32, valid_points=16, learning_rates=(3e-3, 3e-2),
                           grid_points_1d=21, grid_points_2d=5)
  return config


def _pretraining():
  config = exp_pretraining.get_config()
  config.model.hidden_sizes = (16,)
  config.num_steps, config.eval_every = 40, 20
  config.experiment.update(dict(labels_per_class=(1, 2), pretrain_layers=1, pretrain_steps=40,
                                num_filters=2, inits=("pretrained", "glorot"),
                                learning_rates=(0.1, 0.5), seeds=2))
  return config


def _skipgram():
  config = exp_skipgram.get_config()
  config.model.embed_dim = 16
  config.experiment.update(dict(epochs=2, seeds=2, labels_per_topic=(5,),
                                methods=("bow_lr", "skipgram_frozen", "ppmi_svd"),
                                baseline="bow_lr",
                                learning_rates=(0.03, 0.1), l2s=(0.0,)))
  config.num_steps, config.eval_every = 40, 20
  return config


# Each has at least 6 fits through train_seeds: five kills at the 2nd leave work for each.
RUNNERS = {"approximation": (approximation, _approximation),
           "pretraining": (pretraining, _pretraining),
           "skipgram": (embeddings, _skipgram)}


TIMINGS = ("wall_time", "seconds", "ppmi_seconds")  # how long, not what: left out


def _untimed(tree):
  if isinstance(tree, dict):
    return {k: _untimed(v) for k, v in tree.items() if k not in TIMINGS}
  if isinstance(tree, list):
    return [_untimed(v) for v in tree]
  return tree


def _outcome(result, workdir) -> dict:
  """What a resume must not change: the results (less timings) and every record (less
  timing fields), in order."""
  results = _untimed(json.loads(json.dumps(result, sort_keys=True, default=str)))
  records = [{k: v for k, v in r.items() if k not in metrics_lib.TIMING_FIELDS}
             for r in metrics_lib.read_metrics(workdir)]
  return {"results": results, "records": records}


@pytest.fixture(scope="module", params=sorted(RUNNERS))
def fresh(request, tmp_path_factory):
  module, config = RUNNERS[request.param]
  workdir = tmp_path_factory.mktemp(request.param)
  return request.param, _outcome(module.run(config(), str(workdir)), workdir)


def _killed_at(monkeypatch, call: int):
  """harness.train_seeds raising KeyboardInterrupt (a kill) at its `call`-th call."""
  real, calls = harness.train_seeds, []

  def train_seeds(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
      raise KeyboardInterrupt("killed")
    return real(*args, **kwargs)
  monkeypatch.setattr(harness, "train_seeds", train_seeds)


@pytest.mark.slow
@pytest.mark.parametrize("kills", [(2,), (2,) * 5], ids=["one_kill", "five_kills"])
def test_a_killed_runner_resumes_to_the_uninterrupted_results_and_records(
    tmp_path, monkeypatch, fresh, kills):
  name, want = fresh
  module, config = RUNNERS[name]
  for call in kills:
    with monkeypatch.context() as m:
      _killed_at(m, call)
      with pytest.raises(KeyboardInterrupt):
        module.run(config(), str(tmp_path))
  assert _outcome(module.run(config(), str(tmp_path)), tmp_path) == want


@pytest.mark.slow
@pytest.mark.parametrize("fresh", ["pretraining"], indirect=True)
def test_pretraining_runs_its_cells_on_a_local_ray_cluster_with_the_local_results(
    tmp_path, fresh):
  """ray.init(num_cpus=2) in this process: every fit and test measurement is a Ray task that
  rebuilds the experiment from the config and reads the pre-trained layers from the
  workdir's pretrained.npz; results and records equal the local executor's."""
  _, want = fresh
  ray = pytest.importorskip("ray")
  config = _pretraining()
  config.experiment.executor = "ray"
  ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's unix sockets: short paths.
  ray.init(address="local", num_cpus=2, _temp_dir=ray_tmp, include_dashboard=False,
           runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}})
  try:
    result = pretraining.run(config, str(tmp_path))
  finally:
    ray.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)
  got = _outcome(result, tmp_path)
  assert got == want
