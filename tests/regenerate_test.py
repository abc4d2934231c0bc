"""launch/regenerate_experiments.py's faults: a doc that is missing, read-only or not a file is
one line and an exit code before any section runs; a doc that fails at the end keeps the
sections' results and says how to finish; --check on a fresh clone says it needs a
regeneration first."""
import os
import shutil
import signal
import sys
import threading

import pytest
import processes  # tests/ is on sys.path
from scripts import launch_script  # tests/scripts.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def regen(tmp_path, monkeypatch):
  """The module, its DOC a copy of docs/experiments.md under tmp_path, and sections that
  fail the test if they run (each writes its results.md when a test allows it; the real
  run_section stays as shipped_run_section, whose SectionFailed is this module's)."""
  module = launch_script("regenerate_experiments")
  doc = tmp_path / "experiments.md"
  shutil.copy(os.path.join(REPO, "docs", "experiments.md"), doc)
  monkeypatch.setattr(module, "DOC", str(doc))
  monkeypatch.setattr(module, "shipped_run_section", module.run_section, raising=False)
  monkeypatch.setattr(module, "run_section",
                      lambda section, *_: pytest.fail(f"section {section} ran"))
  return module


def _one_line(capsys) -> str:
  err = capsys.readouterr().err
  assert len(err.splitlines()) == 1 and err.startswith("error: "), err
  return err


def test_a_missing_doc_is_one_line_before_any_section(regen, tmp_path, capsys):
  os.remove(regen.DOC)
  for check in ([], ["--check"]):
    assert regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask", *check]) == 2
    assert "experiments.md is missing; restore it" in _one_line(capsys)


def test_a_doc_that_cannot_be_written_is_refused_before_any_section(regen, tmp_path, capsys):
  os.remove(regen.DOC)
  os.mkdir(regen.DOC)  # Not writable as a file for any user, root included.
  assert regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask"]) == 2
  line = _one_line(capsys)
  assert "is a directory; restore it (git checkout" in line and "no section was run" in line
  assert "chmod" not in line  # No mode makes a directory a file.
  with open(tmp_path / "latin1.md", "wb") as f:
    f.write(b"caf\xe9\n")
  os.rmdir(regen.DOC)
  os.replace(tmp_path / "latin1.md", regen.DOC)
  for check in ([], ["--check"]):
    assert regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask", *check]) == 2
    assert "is not UTF-8 text; restore it" in _one_line(capsys)


def test_a_read_only_doc_is_refused_before_any_section(regen, tmp_path, capsys):
  os.chmod(regen.DOC, 0o444)
  if os.access(regen.DOC, os.W_OK):
    pytest.skip("running as root: a read-only mode does not stop writes")
  assert regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask"]) == 2
  assert "chmod u+rw" in _one_line(capsys)


def test_a_doc_that_fails_at_the_end_keeps_the_results_and_says_how_to_finish(
    regen, tmp_path, monkeypatch, capsys):
  def run_section(section, workdir, *_):
    os.makedirs(workdir)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
      f.write("# t\n\nnew tables\n")
    os.remove(regen.DOC)  # Taken away while the section ran.
    os.mkdir(regen.DOC)
    return 1.0

  monkeypatch.setattr(regen, "run_section", run_section)
  assert regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask"]) == 4
  err = capsys.readouterr().err
  line = [x for x in err.splitlines() if x.startswith("error:")]
  assert len(line) == 1 and "rerun the same command" in line[0] and "Traceback" not in err
  assert "restore it (git checkout" in line[0]
  assert (tmp_path / "w" / "multitask" / "results.md").exists()


@pytest.mark.parametrize("damage", ["a directory", "not UTF-8", "results.json not JSON"])
@pytest.mark.parametrize("check", [True, False])
def test_a_damaged_results_file_is_one_line_naming_it(regen, tmp_path, monkeypatch, capsys,
                                                      damage, check):
  workdir = tmp_path / "w" / "multitask"

  def run_section(section, out, *_):
    os.makedirs(out, exist_ok=True)
    if damage == "a directory":
      os.makedirs(os.path.join(out, "results.md"))
    else:
      with open(os.path.join(out, "results.md"), "wb") as f:
        f.write(b"# t\n\ntables\n" if damage.startswith("results.json") else b"caf\xe9\n")
      with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        f.write("{not json")
    return 1.0

  if check:
    run_section("multitask", str(workdir))
  else:
    monkeypatch.setattr(regen, "run_section", run_section)
  before = open(regen.DOC, encoding="utf-8").read()
  args = ["--workdir", str(tmp_path / "w"), "--sections=multitask"]
  if check and damage.startswith("results.json"):
    pytest.skip("--check reads only results.md")
  assert regen.main(args + ["--check"] * check) == 2
  line = _one_line(capsys)
  name = "results.json" if damage.startswith("results.json") else "results.md"
  assert f"{workdir / name} cannot be read" in line and "rerun without --check" in line
  assert open(regen.DOC, encoding="utf-8").read() == before  # the doc untouched


def test_check_on_a_fresh_clone_says_it_needs_a_regeneration_first(regen, tmp_path, capsys):
  assert regen.main(["--check"]) == 2
  assert "needs one first: python launch/regenerate_experiments.py" in _one_line(capsys)
  assert regen.main(["--check", "--workdir", str(tmp_path), "--sections=multitask"]) == 2
  assert "--check needs a regeneration first" in _one_line(capsys)


def _fake_spawn(ready=None, fail=None):
  """A stand-in for a section's process: writes its results.md (after waiting, with `ready`,
  a threading.Barrier, until that many run at once), or with `fail` a (config, exit code,
  line): that section writes the line and exits with the code, once the others started."""
  started, commands = threading.Event(), []

  def spawn(cmd, out):
    commands.append(cmd)
    if fail and f"--config=configs/{fail[0]}" in cmd:
      started.wait(timeout=processes.GUARD_S)
      out.write(fail[2] + "\n")
      return fail[1]
    started.set()
    if ready is not None:
      ready.wait()
    workdir = next(a for a in cmd if a.startswith("--workdir=")).split("=", 1)[1]
    os.makedirs(workdir)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
      f.write("# t\n\nnew tables\n")
    if out is not None:
      out.write("a section's output\n")
    return 0

  return spawn, commands


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_executor_and_ray_address_reach_every_sections_command(regen, tmp_path, monkeypatch,
                                                               jobs):
  spawn, commands = _fake_spawn()
  monkeypatch.setattr(regen, "run_section", regen.shipped_run_section)
  monkeypatch.setattr(regen, "_spawn", spawn)
  assert regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask,sparsity",
                     "--executor=ray", "--ray_address=10.0.0.1:6379", f"--jobs={jobs}"]) == 0
  assert len(commands) == 2
  for cmd in commands:
    assert "--config.experiment.executor=ray" in cmd and "--ray_address=10.0.0.1:6379" in cmd


def test_jobs_runs_sections_at_once_and_appends_each_ones_output_to_its_log(regen, tmp_path,
                                                                           monkeypatch, capsys):
  # Each fake section waits until two run together: one at a time, the barrier breaks (the
  # timeout only bounds a broken --jobs; two threads reach it at once on any machine).
  spawn, _ = _fake_spawn(ready=threading.Barrier(2, timeout=300))
  monkeypatch.setattr(regen, "run_section", regen.shipped_run_section)
  monkeypatch.setattr(regen, "_spawn", spawn)
  work = tmp_path / "w"
  work.mkdir()
  (work / "sparsity.log").write_text("an earlier run's output\n")
  assert regen.main(["--workdir", str(work), "--sections=multitask,sparsity", "--jobs=2"]) == 0
  out = capsys.readouterr().out
  assert "multitask: " in out and "sparsity: " in out and "2 at once" in out
  log = (work / "sparsity.log").read_text().splitlines()
  assert log[0] == "an earlier run's output" and "exp_sparse_representations.py" in log[1]
  assert log[2] == "a section's output"
  for section in ("multitask", "sparsity"):
    assert "new tables" in regen.block(section).search(open(regen.DOC).read()).group(2)


def test_failed_sections_among_jobs_are_one_line_naming_each_and_keep_the_others(
    regen, tmp_path, monkeypatch, capsys):
  spawn, _ = _fake_spawn(fail=("exp_sparse_representations.py", 3,
                               "error: the disk is full; free space and rerun"))
  monkeypatch.setattr(regen, "run_section", regen.shipped_run_section)
  monkeypatch.setattr(regen, "_spawn", spawn)
  before = open(regen.DOC).read()
  work = tmp_path / "w"
  # With 2 at once: sparsity fails once multitask has started, which still finishes.
  assert regen.main(["--workdir", str(work), "--sections=sparsity,multitask", "--jobs=2"]) == 1
  line = _one_line(capsys)
  assert "sparsity failed (exit 3; its output:" in line and "sparsity.log" in line
  assert "ending: error: the disk is full" in line and "rerun the same command" in line
  assert (work / "multitask" / "results.md").exists() and open(regen.DOC).read() == before


def test_a_killed_section_is_named_with_its_signal_and_the_rest_do_not_start(
    regen, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(regen, "run_section", regen.shipped_run_section)
  monkeypatch.setattr(regen, "_spawn", lambda cmd, out: -9)
  assert regen.main(["--workdir", str(tmp_path / "w"), "--sections=multitask,sparsity"]) == 1
  line = _one_line(capsys)
  assert "multitask failed (killed by SIGKILL)" in line and "not started: sparsity" in line


def test_interrupting_a_regeneration_stops_its_sections_and_says_how_to_go_on(
    regen, tmp_path, monkeypatch, capsys):
  # Real processes: two sections that wait until they are stopped; then SIGTERM arrives.
  monkeypatch.setattr(regen, "run_section", regen.shipped_run_section)
  spawned, real = [], regen._spawn

  def spawn(cmd, out):
    spawned.append(cmd)
    if len(spawned) == 2:
      threading.Thread(target=lambda: _signal_once_both_run(regen)).start()
    return real([sys.executable, "-c", "import time; time.sleep(3600)"], out)

  monkeypatch.setattr(regen, "_spawn", spawn)
  work = tmp_path / "w"
  assert regen.main(["--workdir", str(work), "--sections=multitask,sparsity,curvature",
                     "--jobs=2"]) == 130
  assert "interrupted; the finished sections and cells are kept" in _one_line(capsys)
  assert len(spawned) == 2 and not regen._children  # curvature never started


def _signal_once_both_run(regen):
  while len(regen._children) < 2:
    threading.Event().wait(0.05)
  os.kill(os.getpid(), signal.SIGTERM)


def test_jobs_on_ray_without_one_cluster_and_a_missing_block_are_refused_before_any_section(
    regen, tmp_path, monkeypatch, capsys):
  monkeypatch.delenv("RAY_ADDRESS", raising=False)
  work = str(tmp_path / "w")
  for address in ([], ["--ray_address=local"]):
    assert regen.main(["--workdir", work, "--sections=multitask", "--jobs=2",
                       "--executor=ray", *address]) == 2
    assert "needs one cluster for every section" in _one_line(capsys)
  assert regen.main(["--workdir", work, "--jobs=0"]) == 2
  assert "--jobs=0" in _one_line(capsys)
  doc = open(regen.DOC).read()
  with open(regen.DOC, "w", encoding="utf-8") as f:
    f.write(regen.block("sparsity").sub("", doc))
  assert regen.main(["--workdir", work, "--sections=multitask,sparsity"]) == 2
  assert "no <!-- results:sparsity --> block" in _one_line(capsys)
