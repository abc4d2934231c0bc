"""research/gradcheck: passes the real manual gradients and catches wrong ones."""
import jax.numpy as jnp
import pytest
from absl import flags

from research import backprop
from research import errors
from research import gradcheck
from research.gradcheck import command

BATCH = 8  # Every check here uses one (seed, batch), so the compiled functions are shared.
# The README's promise ("relative error 1e-10 in float64, 1e-4 in float32"), not the module's
# own table: a loosened TOLERANCES must fail here.
DOCUMENTED_REL = {"float64": 1e-10, "float32": 1e-4}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_manual_gradient_passes(dtype):
  rows = gradcheck.check_model("mlp", dtype, batch=BATCH)
  assert [r.path for r in rows] == [f"[{l}]['{n}']" for l in range(3) for n in ("b", "w")]
  assert rows[1].shape == (20, 32)
  assert gradcheck.TOLERANCES[dtype]["rel"] <= DOCUMENTED_REL[dtype]
  for r in rows:
    assert r.ok, r
    assert r.rel_err <= DOCUMENTED_REL[dtype], r


def test_a_wrong_gradient_fails_both_checks_in_the_arrays_it_touches():
  problem = gradcheck.build("mlp", batch=BATCH, dtype="float32")

  def no_bias_grad(params, *args):  # a classic bug: forgetting the bias gradient
    grads = problem.grad_fn(params, *args)
    return [dict(g, b=jnp.zeros_like(g["b"])) for g in grads]

  rows = gradcheck.check_model("mlp", "float32", batch=BATCH, grad_fn=no_bias_grad)
  for r in rows:
    if r.path.endswith("['b']"):
      assert not r.ok and r.rel_err == pytest.approx(1.0) and r.fd_rel_err > 0.5, r
    else:
      assert r.ok, r


def _quadratic(key, batch, dtype, wrong=False):
  """E = 0.5 ||A p||^2, dE/dp = A^T A p: a second family, through the registry."""
  del batch
  a = jnp.arange(12.0, dtype=dtype).reshape(4, 3) / 10
  p = {"p": jnp.array([1.0, -2.0, 0.5], dtype)}
  grad = lambda q: {"p": a.T @ (a @ q["p"]) * (1.01 if wrong else 1.0)}
  return gradcheck.Problem(params=p, args=(), loss_fn=lambda q: 0.5 * jnp.sum((a @ q["p"])**2),
                           grad_fn=grad, description="0.5 ||A p||^2")


def test_registry_takes_new_models_and_run_exit_code_reports_failures(monkeypatch):
  monkeypatch.setitem(backprop.core._PROBLEMS, "quadratic", _quadratic)
  monkeypatch.setitem(backprop.core._PROBLEMS, "quadratic_wrong",
                      lambda *a: _quadratic(*a, wrong=True))
  assert "quadratic" in gradcheck.names()
  printed = []
  assert gradcheck.run(["quadratic"], timing=False, echo=printed.append) == 0
  assert printed[-1].strip() == "all 2 arrays agree"
  printed.clear()
  assert gradcheck.run(["quadratic", "quadratic_wrong"], timing=False,
                       echo=printed.append) == 1
  assert "| quadratic_wrong | float64 | `['p']` | (3,) |" in "\n".join(printed)
  assert printed[-1].strip() == "FAILED: 2 of 4 arrays disagree beyond tolerance"


def test_unknown_model_and_bad_batch_are_config_errors():
  with pytest.raises(errors.ConfigError, match="--model='lenet'.*choose one of: .*mlp"):
    gradcheck.build("lenet")
  with pytest.raises(errors.ConfigError, match="--batch=0"):
    gradcheck.build("mlp", batch=0)


def _main(argv, capsys):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["gradcheck", *argv])
  try:
    with pytest.raises(SystemExit) as exit_info:
      command.main(["gradcheck"])
  finally:
    flags.FLAGS.unparse_flags()
  return exit_info.value.code, capsys.readouterr()


def test_cli_prints_the_tables_and_exits_zero(capsys):
  code, out = _main(["--model=mlp", f"--batch={BATCH}", "--saturation"], capsys)
  assert code == 0, out.out
  for line in ("| model | dtype | param | shape | max abs err | rel err | fd rel err | ok |",
               "| model | B | manual (ms) | jax.grad (ms) | manual / jax.grad |",
               "all 12 arrays agree"):
    assert line in out.out
  assert out.out.count("| mlp | float64 |") == out.out.count("| mlp | float32 |") == 6
  assert "inf/NaN" in out.out  # the saturation table's literal columns
  timing = next(l for l in out.out.splitlines() if l.startswith(f"| mlp | {BATCH} |"))
  manual_ms, autodiff_ms = (float(c) for c in timing.split("|")[3:5])
  assert manual_ms > 0 and autodiff_ms > 0


def test_cli_unknown_model_exits_two(capsys):
  code, out = _main(["--model=nope"], capsys)
  assert code == 2 and "--model='nope'" in out.err


def test_time_model_reports_positive_medians():
  t = gradcheck.time_model("mlp", batch=BATCH, repeats=3)
  assert set(t) == {"manual_ms", "autodiff_ms"} and min(t.values()) > 0


def test_no_model_flag_means_every_registered_check_and_list_prints_them(capsys):
  assert command.model_names("all") == command.model_names("") == gradcheck.names()
  assert command.model_names("mlp, conv_layers") == ["mlp", "conv_layers"]
  code, out = _main(["--list"], capsys)
  assert code == 0
  assert [line.split()[0] for line in out.out.splitlines()] == gradcheck.names()


def test_a_zero_gradient_leaf_is_judged_at_its_dtypes_rounding():
  """transformer_classifier's key bias b_k has a true gradient of exactly 0; at B=4 its
  float32 autodiff gradient is rounding noise ~1e-8 of the whole norm, above a fixed 1e-8."""
  for dtype in ("float32", "float64"):
    rows = gradcheck.check_model("transformer_classifier", dtype, batch=4)
    bk = [r for r in rows if r.path.endswith("['bk']")]
    assert len(bk) == 2 and all(r.ok for r in rows), [r for r in rows if not r.ok]
