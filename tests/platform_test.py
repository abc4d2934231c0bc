"""Where the project runs: backend-aware defaults, explicit precision, mixed precision,
determinism on GPUs, profiling, and a gradient check that degrades gracefully without float64.
The accelerator paths are exercised by faking the backend where a CPU cannot be one."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from configs import default
from configs import lenet_digits
from research import cli
from research import errors
from research import gradcheck
from research import kernel
from research import models
from research import run_config
from research import train


def _tiny(**overrides):
  config = default.get_config()
  config.update(num_steps=60, log_every=20, eval_every=30, checkpoint_every=0)
  config.update(overrides)
  return config


def test_conv_impl_auto_is_patches_on_cpu_and_xla_elsewhere(monkeypatch):
  cfg = ml_collections.ConfigDict({"conv_impl": "auto"})
  assert models.conv_impl(cfg) == "patches"
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert models.conv_impl(cfg) == "xla"
  assert models.conv_impl(ml_collections.ConfigDict({"conv_impl": "patches"})) == "patches"
  assert lenet_digits.get_config().model.conv_impl == "auto"
  with pytest.raises(errors.ConfigError, match="choose one of: 'auto', 'xla', 'patches'"):
    models.conv_impl(ml_collections.ConfigDict({"conv_impl": "im2col"}))


def test_config_json_records_what_the_run_resolved_without_making_it_identity(tmp_path):
  config = lenet_digits.get_config()
  workdir = tmp_path / "run"
  workdir.mkdir()
  run_config.write_config(config, workdir)
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["model"]["conv_impl"] == "auto"
  assert saved["resolved"]["model.conv_impl"] == "patches"
  assert saved["resolved"]["backend"] == "cpu"
  run_config.check_same_config(config, saved, workdir)  # "resolved" is not compared.


def test_matmul_precision_reaches_every_dot_the_run_traces():
  config = _tiny(matmul_precision="highest")
  model = models.build(config.model, (64,), 10)
  params = model.init(jax.random.key(0))
  with kernel.precision(config):
    jaxpr = str(jax.make_jaxpr(lambda p, x: model.apply(p, x))(params, jnp.ones((2, 64))))
  assert jaxpr.count("Precision.HIGHEST") >= 2, jaxpr
  with kernel.precision(_tiny()):
    assert "HIGHEST" not in str(jax.make_jaxpr(lambda p, x: model.apply(p, x))(
        params, jnp.ones((2, 64))))
  with pytest.raises(errors.ConfigError, match="matmul_precision='tf32'"):
    train.validate(_tiny(matmul_precision="tf32"))


@pytest.mark.slow
def test_bfloat16_compute_keeps_params_and_loss_float32_and_trains_like_float32(tmp_path):
  cfg = ml_collections.ConfigDict({"name": "mlp", "hidden_sizes": (16,),
                                   "activation": "sigmoid"})
  model = models.build(cfg, (64,), 10, compute_dtype="bfloat16")
  params = model.init(jax.random.key(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  jaxpr = str(jax.make_jaxpr(lambda p, x: model.apply(p, x))(params, jnp.ones((2, 64))))
  assert "bf16[2,16]" in jaxpr  # the hidden layer is computed in bfloat16
  assert model.apply(params, jnp.ones((2, 64))).dtype == jnp.float32
  grads = jax.grad(lambda p: model.apply(p, jnp.ones((2, 64))).sum())(params)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  f32 = train.train_and_evaluate(_tiny(num_steps=300), str(tmp_path / "f32"))
  bf16 = train.train_and_evaluate(_tiny(num_steps=300, compute_dtype="bfloat16"),
                                  str(tmp_path / "bf16"))
  assert abs(f32["test"]["accuracy"] - bf16["test"]["accuracy"]) < 0.03
  assert bf16["test"]["accuracy"] > 0.9


def test_compute_dtype_reaches_the_run(tmp_path):
  runs = [train.train_and_evaluate(_tiny(num_steps=20, log_every=20, eval_every=20,
                                         compute_dtype=dtype), str(tmp_path / dtype))
          for dtype in ("float32", "bfloat16")]
  params = [jax.tree.leaves(run["state"]["params"]) for run in runs]
  assert all(p.dtype == jnp.float32 for p in params[1])
  # The second run computed in bfloat16: its params are not float32's bit for bit.
  assert not all(jnp.array_equal(a, b) for a, b in zip(*params))


def test_manual_gradients_refuse_bfloat16_compute_in_one_line(tmp_path):
  with pytest.raises(errors.ConfigError, match="config.grad='manual' computes in the params"):
    train.train_and_evaluate(_tiny(grad="manual", compute_dtype="bfloat16"), str(tmp_path))


def test_deterministic_on_a_gpu_needs_the_xla_flag_set_before_jax_starts(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setenv("XLA_FLAGS", "")
  with pytest.raises(errors.ConfigError, match="--xla_gpu_deterministic_ops=true"):
    train.train_and_evaluate(_tiny(deterministic=True), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  monkeypatch.setenv("XLA_FLAGS", cli.DETERMINISTIC_FLAG)
  train._check_deterministic(_tiny(deterministic=True))  # No error once the flag is set.


def test_profile_steps_write_a_trace_into_the_workdir(tmp_path):
  workdir = tmp_path / "run"
  train.train_and_evaluate(_tiny(profile_steps=(20, 30)), str(workdir))
  traces = [f for _, _, files in os.walk(workdir / "profile") for f in files]
  assert any(f.endswith(".xplane.pb") for f in traces), traces
  assert any(f.startswith("perfetto_trace") for f in traces), traces
  bounds = train.chunk_bounds(_tiny(profile_steps=(25, 35)))
  assert (20, 25) in bounds and (25, 30) in bounds and (30, 35) in bounds
  with pytest.raises(errors.ConfigError, match="profile_steps=.5, 1."):
    train.validate(_tiny(profile_steps=(5, 1)))


def test_a_profile_window_is_traced_whole_or_not_at_all():
  # A trace must start before it stops: an empty window, or a run resumed inside the window
  # or past it, traces nothing.
  assert train.profile_plan(_tiny(profile_steps=(20, 30)), 0) == (20, 30)
  assert train.profile_plan(_tiny(profile_steps=(20, 30)), 20) == (20, 30)
  for window, step in (((20, 30), 25), ((20, 30), 30), ((5, 5), 0), ((0, 0), 0)):
    assert train.profile_plan(_tiny(profile_steps=window), step) is None


def test_gradcheck_skips_float64_in_one_line_on_a_backend_without_it(monkeypatch):
  monkeypatch.setattr(gradcheck, "has_float64", lambda: False)
  printed = []
  code = gradcheck.run(["mlp"], batch=4, timing=False, echo=printed.append)
  text = "\n".join(printed)
  assert code == 0, text
  assert "float64: skipped, the cpu backend has no float64" in text
  assert "| mlp | float32 |" in text and "| mlp | float64 |" not in text
  assert "matmul precision highest" in printed[0]
  with pytest.raises(errors.ConfigError, match="has no float64"):
    gradcheck.check_model("mlp", "float64", batch=4)


@pytest.mark.slow
def test_selfcheck_quick_report_passes_on_this_cpu():
  from research import selfcheck  # pylint: disable=g-import-not-at-top
  text, ok = selfcheck.report(quick=True, log=lambda _: None)
  assert ok, text
  assert "# Self-check: cpu" in text and "all 12 arrays agree" in text
  assert "| configs/default.py | mlp |" in text and "| mlp | manual |" in text


def test_selfcheck_reports_the_environment_it_runs_in():
  from research import selfcheck  # pylint: disable=g-import-not-at-top
  env = selfcheck.environment()
  assert env["backend"] == "cpu" and env["devices"] >= 1 and env["float64"] is True
  assert env["jax"] == jax.__version__ and env["python"].startswith("3.")


def test_a_trainer_that_would_ignore_a_run_loop_field_refuses_it():
  from configs import exp_multitask  # pylint: disable=g-import-not-at-top
  from research import experiments  # pylint: disable=g-import-not-at-top
  config = exp_multitask.get_config()
  config.compute_dtype = "bfloat16"
  with pytest.raises(errors.ConfigError, match="compute_dtype='bfloat16' is read by the standard"):
    experiments.run(config, "unused")


def test_an_experiment_runner_runs_under_the_configs_matmul_precision(tmp_path):
  from research.experiments import report  # pylint: disable=g-import-not-at-top
  seen = []

  @report.runner
  def runner(config, path):
    del config, path
    seen.append(jax.config.jax_default_matmul_precision)
    return {}

  runner(_tiny(matmul_precision="highest"), tmp_path / "w")
  assert seen == ["highest"]
