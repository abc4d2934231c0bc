"""research.main.main(argv) in-process: one config load, one-line errors as SystemExit, the
flags a call parses, and what it hands to the run (no real process needed)."""
import glob
import os
import subprocess
import sys

import pytest

from research import cli
from research import experiments
from research import main as main_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  return main_lib.main(["research.main", *args])


@pytest.fixture
def captured_runs(monkeypatch):
  runs = []
  monkeypatch.setattr(experiments, "run", lambda config, workdir: runs.append(
      (config, workdir, os.environ.get("XLA_FLAGS", ""))))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  return runs


@pytest.mark.parametrize("args, fragment", [
    (["--config.optimizer.lrr=1"], "config.optimizer has no field 'lrr'; its fields are:"),
    (["--config=configs/missing.py"], "no such config file; available: configs/"),
    (["--config.batch_size=abc"], "--config.batch_size=abc"),
    (["--nope=1"], "Unknown command line flag 'nope'"),
    (["stray"], "unexpected arguments: stray"),
    (["--config.model.name=foo", "--print_config"], "config.model.name='foo' is not a registered"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, args, fragment):
  with pytest.raises(SystemExit) as e:
    _main(*args)
  assert e.value.code == 2
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], err


@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_help_and_helpfull_list_the_configs_and_flags(capsys, flag):
  _main(flag)  # --helpfull, absl's name for the long help, prints the same list.
  out = capsys.readouterr().out
  assert "configs/lenet_digits.py" in out and "--print_config" in out


def test_print_config_applies_overrides_and_runs_nothing(capsys, captured_runs):
  _main(f"--config={REPO}/configs/breast_cancer.py", "--config.seed=7",
        "--config.model.hidden_sizes=(8, 4)", "--print_config")
  out = capsys.readouterr().out
  assert "seed: 7" in out and "name: breast_cancer" in out and "- 8\n  - 4" in out
  assert not captured_runs


def test_print_config_shows_a_switched_model_family_with_the_defaults_the_run_uses(
    capsys, captured_runs):
  _main("--config.model.name=lenet5", "--print_config")
  lines = capsys.readouterr().out.split("\nmodel:\n", 1)[1].splitlines()
  group = lines[:next(i for i, line in enumerate(lines) if not line.startswith(" "))]
  shown = {line.split(":")[0].strip() for line in group if not line.startswith("  -")}
  assert "variant" in shown and "hidden_sizes" not in shown and not captured_runs


def test_the_config_file_runs_once_and_main_runs_twice_in_a_process(tmp_path, captured_runs):
  calls = tmp_path / "calls"
  config_file = tmp_path / "counting.py"
  config_file.write_text(
      "from research import config_lib\n"
      "def get_config():\n"
      f"  open({str(calls)!r}, 'a').write('x')\n"
      "  return config_lib.base(num_steps=5)\n")
  _main(f"--config={config_file}", f"--workdir={tmp_path / 'a'}", "--config.seed=1")
  _main(f"--config={config_file}", f"--workdir={tmp_path / 'b'}", "--config.seed=2")
  assert calls.read_text() == "xx"  # Once per call.
  assert [(c.seed, w) for c, w, _ in captured_runs] == [(1, str(tmp_path / "a")),
                                                       (2, str(tmp_path / "b"))]


def test_deterministic_sets_the_xla_flag_before_the_run(tmp_path, captured_runs):
  _main(f"--workdir={tmp_path}", "--config.deterministic=True")
  _main(f"--workdir={tmp_path}")
  (on, _, flags_on), (off, _, flags_off) = captured_runs
  assert on.deterministic and cli.DETERMINISTIC_FLAG in flags_on
  assert not off.deterministic


def test_without_a_workdir_the_run_gets_a_new_one_named_for_the_config(captured_runs):
  _main(f"--config={REPO}/configs/breast_cancer.py")
  (_, workdir, _), = captured_runs
  assert workdir.startswith(os.path.join("runs", "breast_cancer-"))


def test_a_switched_family_refuses_the_old_family_s_fields(capsys, captured_runs):
  with pytest.raises(SystemExit) as e:
    _main("--config.model.name=lenet5", "--config.model.hidden_sizes=(10,)")
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and len(err.splitlines()) == 1, err
  assert "no field 'hidden_sizes'" in err and "hidden_sizes belongs to mlp" in err
  assert not captured_runs


def test_a_switched_family_runs_and_prints_its_own_defaults_and_overrides(capsys, captured_runs):
  args = ("--config.model.name=lenet5", "--config.model.conv_impl=xla")
  _main(*args, "--print_config")
  printed = capsys.readouterr().out.split("\nmodel:\n", 1)[1]
  _main(*args, "--workdir=/unused")  # captured_runs: the config the run (and config.json) gets
  (config, _, _), = captured_runs
  assert config.model.to_dict() == {"name": "lenet5", "variant": "faithful", "conv_impl": "xla"}
  assert printed.startswith("  conv_impl: xla\n  name: lenet5\n  variant: faithful\n")


_NO_JAX = """
import runpy, sys
codes = []
for args in ARGS:
  sys.argv = ["research.main", *args]
  try:
    runpy.run_module("research.main", run_name="__main__")
    codes.append(0)
  except SystemExit as e:
    codes.append(e.code or 0)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "optax", "orbax"))
print(codes, heavy)
"""


def test_config_mistakes_and_every_config_file_answer_before_jax_is_imported():
  """A user's mistake is reported without waiting for JAX (seconds on a loaded machine):
  bad flags and fields, out-of-range values, an unknown or switched model, --help and every
  config file's --print_config run in a process that never imports jax, optax or orbax."""
  mistakes = [["--config.optimizer.lrr=1"], ["--config.optimizer.learning_rate=-1"],
              ["--config.optimizer.name=adamw"], ["--config.loss.output=mse"],
              ["--config.model.name=foo"], ["--nope=1"], ["--config=configs/missing.py"],
              ["--config.model.name=lenet5", "--config.model.hidden_sizes=(10,)"]]
  shown = [["--help"], ["--helpfull"]] + [
      [f"--config={path}", "--print_config"] for path in sorted(
          os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "*.py")))]
  code = _NO_JAX.replace("ARGS", repr(mistakes + shown))
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout.strip().splitlines()[-1]
  assert out == repr([2] * len(mistakes) + [0] * len(shown)) + " []", out
