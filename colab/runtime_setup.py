"""What a notebook's first cell needs before JAX starts, in the standard library only (it runs
before the project is installed).

  runtime = runtime_setup.prepare(install)   # detects the accelerator, sets the environment
  pip install -q -e ROOT{runtime.extra} -c {runtime.constraints}   # when runtime.install

(the notebooks' first cell, written by colab/setup_cell.py, runs exactly this).

- The accelerator is read from the machine, not from JAX (importing JAX would fix its
  settings): a TPU by Colab's or the TPU VM's environment variables or /dev/accel*, a GPU by
  nvidia-smi, else the CPU.
- On a GPU, XLA_PYTHON_CLIENT_PREALLOCATE=false: JAX would otherwise take 75% of the GPU's
  memory at its first array, for a notebook that needs a few MB.
- The install never changes Colab's preinstalled JAX: a pip constraints file pins the installed
  versions of jax, jaxlib, their CUDA/TPU plugins, numpy and ml-dtypes, so `pip install -e`
  adds the project's other dependencies around them.
- JAX's accelerator plugin is installed only where it is missing: on a GPU without a
  jax-cuda plugin the install adds the project's `cuda12` extra (jax[cuda12]), on a TPU without
  libtpu the `tpu` extra (jax[tpu]); Colab's GPU and TPU runtimes ship theirs, so there the
  install adds nothing to JAX.
"""
import dataclasses
import glob
import importlib.metadata
import os
import shutil
import sys
import tempfile
from typing import Callable, Mapping, MutableMapping

# What Colab ships and a plain `pip install` might move (jax>=0.10 would accept an older one).
PINNED = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
          "jax-cuda13-pjrt", "libtpu", "libtpu-nightly", "numpy", "ml-dtypes")


@dataclasses.dataclass
class Runtime:
  accelerator: str         # "tpu" | "gpu" | "cpu"
  install: bool            # False inside a checkout that is already installed
  constraints: str | None  # a pip constraints file pinning the installed versions
  extra: str               # "[cuda12]" | "[tpu]" | "": the project's extra JAX needs here
  pinned: dict             # package -> installed version
  environment: dict        # variables set for JAX
  notes: list              # what the user should know (e.g. restart the session)


def detect_accelerator(environ: Mapping[str, str], which: Callable[[str], str | None],
                       exists: Callable[[str], list]) -> str:
  """tpu, gpu or cpu, from the environment and the devices, without importing JAX."""
  if any(k in environ for k in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE")) or (
      exists("/dev/accel*") or exists("/dev/vfio/[0-9]*")):
    return "tpu"
  if which("nvidia-smi") or exists("/dev/nvidia[0-9]*"):
    return "gpu"
  return "cpu"


def jax_extra(accelerator: str, pinned: Mapping[str, str]) -> str:
  """The project's extra that gives JAX this accelerator, or "" when its plugin is installed."""
  if accelerator == "gpu" and not any(name.startswith("jax-cuda") for name in pinned):
    return "[cuda12]"  # CUDA 12 wheels run on every driver Colab has shipped (13 needs >= 580)
  if accelerator == "tpu" and not any(name.startswith("libtpu") for name in pinned):
    return "[tpu]"
  return ""


def installed_versions(version: Callable[[str], str]) -> dict:
  out = {}
  for name in PINNED:
    try:
      out[name] = version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def prepare(install: bool = True, *, environ: MutableMapping[str, str] | None = None,
            which: Callable[[str], str | None] | None = None,
            exists: Callable[[str], list] | None = None,
            version: Callable[[str], str] | None = None,
            modules: Mapping | None = None, tmpdir: str | None = None) -> Runtime:
  """Detects the accelerator, sets JAX's environment and writes the constraints file.

  The keyword arguments stand in for the machine in tests; unset, they are looked up when
  called (shutil.which, glob.glob, importlib.metadata.version, sys.modules), so a test can
  also patch those.
  """
  environ = os.environ if environ is None else environ
  which = which or shutil.which
  exists = exists or glob.glob
  version = version or importlib.metadata.version
  modules = sys.modules if modules is None else modules
  accelerator = detect_accelerator(environ, which, exists)
  env, notes = {}, []
  if accelerator == "gpu":
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  for key, value in env.items():
    environ[key] = value
  if env and "jax" in modules:
    notes.append("JAX was imported before this cell, so it ignores " + ", ".join(env)
                 + ": use Runtime > Restart session and run this cell first")
  pinned = installed_versions(version)
  constraints = None
  if install:
    path = os.path.join(tmpdir or tempfile.gettempdir(), "research-constraints.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(f"{name}=={v}\n" for name, v in sorted(pinned.items()))
    constraints = path
  extra = jax_extra(accelerator, pinned) if install else ""
  return Runtime(accelerator, install, constraints, extra, pinned, env, notes)


def describe(runtime: Runtime) -> str:
  jax_version = runtime.pinned.get("jax", "not installed yet")
  lines = [f"accelerator: {runtime.accelerator}; jax {jax_version} (kept as installed)"]
  if runtime.extra:
    lines.append(f"installing the project{runtime.extra}: JAX's {runtime.accelerator} plugin is "
                 "missing here")
  lines += [f"{k}={v}" for k, v in runtime.environment.items()]
  return "\n".join(lines + runtime.notes)
