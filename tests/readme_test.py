"""Every command README.md shows in a code block runs as written, so the README cannot drift.

The ```bash blocks' commands run in a fresh directory (holding links to configs/ and launch/,
as a clone's root does), `python` being this interpreter and the project on PYTHONPATH.
`pip install` parts are left out (the test runs in the installed project). A training command
gets TINY's overrides appended, so it runs a few steps instead of thousands; selfcheck gets
--quick. A command that cannot run here is in SKIPPED with the reason, and every command is
either run or skipped by name: a new command in the README fails this test until it runs or is
listed. The error examples (`$ command` then its output) must print what the README shows.

Fast tier: the error examples, and every research.main command's flags and config checked with
--print_config (no JAX). The real runs are slow.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

# Appended to research.main commands: the same program and config, 20 steps instead of thousands.
TINY = ["--config.num_steps=20", "--config.log_every=10", "--config.eval_every=10",
        "--config.checkpoint_every=0"]

# Commands the README shows that this test does not run, by their text (comments removed,
# continuations joined), with the reason.
SKIPPED = {
    "python -m pytest": "the test suite itself",
    'python -m pytest -m "not slow"': "the test suite itself",
    "python -m research.main --config=configs/<experiment>.py --workdir=DIR":
        "a template: <experiment> and DIR are placeholders",
    "python launch/make_records.py --format=imagefolder --src=/data/imagenet --out=/data/inet_rec":
        "needs ImageNet in /data/imagenet (tests/streaming_test.py converts a synthetic tree)",
    "python launch/make_records.py --format=idx --src=/data/mnist --out=/data/mnist_rec":
        "needs MNIST's IDX files in /data/mnist (tests/streaming_test.py converts IDX files)",
    "python launch/make_records.py --verify=/data/inet_rec":
        "needs the ImageNet records made above",
    "python -m research.main --config=configs/alexnet_imagenet.py "
    "--config.data.data_dir=/data/inet_rec --workdir=runs/alexnet":
        "needs the ImageNet records (tests/streaming_test.py runs its :cpu variant)",
    "gsutil -m cp -r /data/inet_rec gs://BUCKET/inet_rec": "needs a Cloud Storage bucket",
    "launch/tpu_vm.sh --create --name=alexnet --accelerator=v4-32 --streaming "
    "--config=configs/alexnet_imagenet.py --workdir=gs://BUCKET/runs/alexnet -- "
    "--config.data.data_dir=gs://BUCKET/inet_rec --config.compute_dtype=bfloat16":
        "needs a Cloud TPU slice (tests/launch_test.py checks tpu_vm.sh's --dry-run commands)",
    "ray start --head --port=6379":
        "starts a Ray head that outlives the test (tests/ray_test.py starts a two-node cluster "
        "with its own port, temp dir and token, and stops it)",
    "ray start --address=HEAD_IP:6379": "HEAD_IP is a placeholder for another machine",
    "python -m research.main --config=configs/exp_weight_sharing.py --workdir=runs/ws "
    "--config.experiment.executor=ray --ray_address=HEAD_IP:6379":
        "HEAD_IP is a placeholder (tests/ray_test.py runs this against its two-node cluster)",
    "python launch/sweep.py --config=... --sweep=... --executor=ray --parallel=16":
        "a template: ... are placeholders (tests/ray_test.py runs the sweep on Ray)",
    "python launch/regenerate_experiments.py --workdir=/tmp/experiments --executor=ray "
    "--ray_address=HEAD_IP:6379 --jobs=3":
        "HEAD_IP is a placeholder, and it reruns every section (tests/regenerate_test.py "
        "checks that both flags reach every section's command and that --jobs runs "
        "sections at once)",
}


def _code_blocks(text: str) -> list[tuple[str, str]]:
  """(language, body) of every fenced code block."""
  return re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)


def readme_commands() -> list[tuple[str, list[str]]]:
  """(text, argv) of every command in README's bash blocks, `pip install` parts removed."""
  with open(README, encoding="utf-8") as f:
    blocks = _code_blocks(f.read())
  commands = []
  for lang, body in blocks:
    if lang != "bash":
      continue
    for line in body.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s+#\s.*$", "", line)  # A comment: two spaces or more, "# ".
      for part in line.split("&&"):
        text = " ".join(part.split())
        if text and not text.startswith("pip install"):
          commands.append((text, shlex.split(text)))
  return commands


def readme_error_examples() -> list[tuple[str, str]]:
  """(command, the first line the README shows it printing) of each `$ command` example."""
  with open(README, encoding="utf-8") as f:
    blocks = _code_blocks(f.read())
  examples = []
  for _, body in blocks:
    lines = body.splitlines()
    for i, line in enumerate(lines[:-1]):
      if line.startswith("$ "):
        examples.append((line[2:], lines[i + 1]))
  return examples


COMMANDS = readme_commands()
RUN = [(text, argv) for text, argv in COMMANDS if text not in SKIPPED]


def _run(argv: list[str], tmp_path) -> subprocess.CompletedProcess:
  """argv run as a user runs it at a clone's root: `python` is this interpreter."""
  for name in ("configs", "launch"):
    if not os.path.exists(tmp_path / name):
      os.symlink(os.path.join(REPO, name), tmp_path / name)
  if argv[0] == "python":
    argv = [sys.executable, *argv[1:]]
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)


def _is_main(argv: list[str]) -> bool:
  return argv[:3] == ["python", "-m", "research.main"]


def test_every_readme_command_is_run_or_skipped_with_a_reason():
  texts = [text for text, _ in COMMANDS]
  assert len(RUN) >= 6, texts  # The parser found the blocks.
  assert not set(SKIPPED) - set(texts), "SKIPPED names a command the README no longer shows"
  assert not [t for t, _ in RUN if "<" in t or "/data/" in t or "gs://" in t], RUN


def test_the_tensorboard_extra_is_tensorboard_alone():
  """`pip install -e '.[tensorboard]'` (the README's) installs TensorBoard, not the profile
  plugin, whose xprof pulls in the Google Cloud SDK, gcsfs and duckdb: that is `.[profile]`."""
  import tomllib  # pylint: disable=g-import-not-at-top
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
  assert [r.split(">")[0] for r in extras["tensorboard"]] == ["tensorboard"]
  assert any(r.startswith("tensorboard-plugin-profile") for r in extras["profile"])


@pytest.mark.every_case
@pytest.mark.parametrize("command, shown", [pytest.param(c, s, id=c)
                                            for c, s in readme_error_examples()])
def test_readme_error_examples_print_what_the_readme_shows(tmp_path, command, shown):
  result = _run(shlex.split(command), tmp_path)
  assert result.returncode == 2, result.stderr[-2000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith(shown.split("...")[0].rstrip()), (line, shown)


@pytest.mark.every_case
@pytest.mark.parametrize("text, argv", [pytest.param(t, a, id=t) for t, a in RUN
                                        if _is_main(a)])
def test_readme_training_commands_parse_with_print_config(tmp_path, text, argv):
  result = _run(argv + ["--print_config"], tmp_path)
  assert result.returncode == 0, (text, result.stderr[-2000:])
  assert "num_steps:" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("text, argv", [pytest.param(t, a, id=t) for t, a in RUN])
def test_readme_command_runs(tmp_path, text, argv):
  if _is_main(argv):
    argv = argv + TINY
  elif argv[:3] == ["python", "-m", "research.selfcheck"]:
    argv = argv + ["--quick", f"--out={tmp_path / 'selfcheck.md'}"]
  result = _run(argv, tmp_path)
  assert result.returncode == 0, (text, result.stderr[-3000:])
  if _is_main(argv):
    assert "done: test" in result.stderr or "finished" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_readme_python_block_runs(tmp_path):
  """The README's notebook example, with its workdir in tmp_path and TINY's step count."""
  with open(README, encoding="utf-8") as f:
    blocks = [body for lang, body in _code_blocks(f.read()) if lang == "python"]
  assert blocks
  for body in blocks:
    code = "def _tiny(c):\n  c.num_steps = 20\n  return c\n" + body.replace(
        '"/tmp/run"', repr(str(tmp_path / "run"))).replace(
            "default.get_config()", "_tiny(default.get_config())")
    code += "\nassert set(result['test']) == {'loss', 'accuracy'}, result['test']\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr[-3000:]
