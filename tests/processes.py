"""For tests that run research in real processes, without clocks: a run stopped at a chosen
point of its progress, and a port no other process can take before the coordinator binds it."""
import contextlib
import os
import socket
import subprocess
import sys

# The limit on a test's subprocess: a guard against a hang, never a speed check. A run that
# takes 40 s on a quiet 2-core machine takes 10 minutes at load average 30; an hour is past
# anything but a hang, and the failure then says so.
GUARD_S = 3600

# The environment for every process of a multi-process (jax.distributed) run a test starts:
# the suite's persistent compilation cache off. With a cache entry already written (by an
# earlier run of the same program), both processes of a 2-process CPU run wait forever at
# their first chunk (jax 0.12.1: futex waits, no progress, no error; seen 4 times in 5 at load
# 10, never with the cache off): the "fails under load" of the 2-process tests.
MULTIPROCESS_ENV = {"JAX_ENABLE_COMPILATION_CACHE": "false"}

# research.main with a kill point: at an observed point of its progress the run says so on a
# pipe and waits for the test, which SIGKILLs it there (or lets it go on). A point is a count
# of events, never a time:
#   record N         after the N-th record is on disk in metrics.jsonl;
#   before_commit N  the N-th checkpoint written whole into orbax's temporary directory, before
#                    the rename that commits it;
#   after_commit N   right after the N-th checkpoint's commit.
MAIN_WITH_KILL_POINT = r"""
import os, runpy, sys
point, n, marker = sys.argv[1], int(sys.argv[2]), os.fdopen(int(sys.argv[3]), "w")
sys.argv = ["research.main"] + sys.argv[4:]
count = [0]

def stop():
  marker.write("at the kill point\n")
  marker.flush()
  sys.stdin.readline()  # Until the test kills the run or lets it go on.

if point == "record":
  from research import workdir
  append = workdir.append_line
  def append_line(path, line):
    append(path, line)
    if os.path.basename(str(path)) == "metrics.jsonl":
      count[0] += 1
      if count[0] == n:
        stop()
  workdir.append_line = append_line
else:
  assert point in ("before_commit", "after_commit"), point
  rename = os.rename
  def commit(src, dst, *args, **kwargs):
    is_commit = (os.path.basename(os.path.dirname(os.fspath(dst))) == "checkpoints"
                 and os.path.basename(os.fspath(dst)).isdigit())
    count[0] += is_commit
    if is_commit and count[0] == n and point == "before_commit":
      stop()
    rename(src, dst, *args, **kwargs)
    if is_commit and count[0] == n and point == "after_commit":
      stop()
  os.rename = commit
runpy.run_module("research.main", run_name="__main__", alter_sys=True)
"""



def start_until(args, kill_point, log, cwd, env):
  """Starts `python -m research.main *args` and returns its Popen once it waits at
  kill_point=(point, n); `proc.communicate("go on\\n")` lets it finish."""
  read, write = os.pipe()
  proc = subprocess.Popen(
      [sys.executable, "-c", MAIN_WITH_KILL_POINT, kill_point[0], str(kill_point[1]),
       str(write), *args], cwd=cwd, env=env, pass_fds=(write,), stdin=subprocess.PIPE,
      stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True)
  os.close(write)
  with os.fdopen(read) as marker:
    said = marker.readline()  # Blocks until the run is at its point, or ends ("").
  if not said:
    proc.wait()
    raise AssertionError(f"the run ended (exit {proc.returncode}) before its kill point "
                         f"{kill_point}; stderr: " + open(log).read()[-2000:])
  return proc


@contextlib.contextmanager
def reserved_port():
  """A free localhost port, kept bound (SO_REUSEPORT) until the block ends: no other process
  can take it between the choice and the jax.distributed coordinator's bind, which gRPC makes
  with SO_REUSEPORT too."""
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
