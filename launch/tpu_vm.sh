#!/usr/bin/env bash
# Runs a research.main experiment on a Cloud TPU VM slice: every host (worker) gets the
# committed code (git archive HEAD), installs it with jax[tpu] into a Python 3.12 virtual
# environment (uv), and runs the same command; JAX finds the other hosts itself
# (--coordinator_address=auto -> jax.distributed.initialize()).
#
#   launch/tpu_vm.sh --create --name=bp-v4 --accelerator=v4-8 --config=configs/default.py \
#       --fetch=runs/ --delete -- --config.num_steps=5000
#   launch/tpu_vm.sh --dry-run --name=bp-v4     # print the gcloud commands only
#
# Options (flags override the environment variables in brackets):
#   --name=NAME          TPU VM name                       [TPU_NAME, default research-tpu]
#   --zone=ZONE          zone                              [TPU_ZONE, default us-central2-b]
#   --accelerator=TYPE   slice type, e.g. v4-8, v5litepod-8 [TPU_ACCELERATOR, default v4-8]
#   --version=VERSION    TPU VM software version   [TPU_VERSION, default tpu-ubuntu2204-base]
#   --project=PROJECT    Google Cloud project              [TPU_PROJECT, default: gcloud's]
#   --config=FILE        experiment config, relative to the repo [default configs/default.py]
#   --workdir=DIR        run directory on the VM, relative to ~/research or gs://...
#                                                          [default runs/<config>-<time>]
#   --create             create the VM first (--spot for a cheaper, preemptible one)
#   --streaming          also install the streaming pipeline (.[streaming]) and gcsfs, for
#                        config.data.pipeline=streaming with the records in a gs:// bucket
#   --fetch=LOCAL_DIR    afterwards, copy worker 0's workdir into LOCAL_DIR
#   --delete             afterwards, delete the VM (also when the run failed)
#   --dry-run            print the commands instead of running them
# Everything after -- is passed to research.main on every worker.
set -euo pipefail

name="${TPU_NAME:-research-tpu}"
zone="${TPU_ZONE:-us-central2-b}"
accelerator="${TPU_ACCELERATOR:-v4-8}"
version="${TPU_VERSION:-tpu-ubuntu2204-base}"
project="${TPU_PROJECT:-}"
config="configs/default.py"
workdir=""
create=0
spot=0
streaming=0
fetch=""
delete=0
dry_run=0

# Prints the comment block above as help.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while (($#)); do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --accelerator=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --create) create=1 ;;
    --spot) spot=1 ;;
    --streaming) streaming=1 ;;
    --fetch=*) fetch="${1#*=}" ;;
    --delete) delete=1 ;;
    --dry-run|--dry_run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (research.main flags go after --); see --help" >&2
       exit 2 ;;
  esac
  shift
done
main_args=("$@")

if [[ -z "$workdir" ]]; then
  config_name="$(basename "${config%%:*}" .py)"
  workdir="runs/${config_name}-$(date +%Y%m%d-%H%M%S)"
fi
if [[ -n "$fetch" && "$workdir" == gs://* ]]; then
  echo "error: --fetch copies from the VM's disk; with --workdir=$workdir use gsutil instead" >&2
  exit 2
fi

gcloud_flags=("--zone=$zone")
if [[ -n "$project" ]]; then gcloud_flags+=("--project=$project"); fi

# Prints its arguments as one shell-quoted line (single quotes only where needed).
quote() {
  local arg out=()
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# Runs "$@", or prints it (shell-quoted, ready to paste) with --dry-run.
run() {
  if ((dry_run)); then
    quote "$@"
  else
    "$@"
  fi
}

if ((!dry_run)) && ! command -v gcloud >/dev/null; then
  echo "error: gcloud not found; install the Google Cloud SDK (https://cloud.google.com/sdk)" >&2
  exit 2
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
tarball="${TMPDIR:-/tmp}/research-${name}.tar.gz"

if ((create)); then
  create_cmd=(gcloud compute tpus tpu-vm create "$name" "${gcloud_flags[@]}"
              "--accelerator-type=$accelerator" "--version=$version")
  if ((spot)); then create_cmd+=(--spot); fi
  run "${create_cmd[@]}"
fi

if ((!dry_run)) && [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
  echo "note: uncommitted changes are not shipped; the VM runs HEAD" >&2
fi
run git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
run gcloud compute tpus tpu-vm scp "$tarball" "$name:research.tar.gz" --worker=all \
    "${gcloud_flags[@]}"

main_cmd=(python -m research.main "--config=$config" "--workdir=$workdir"
          --coordinator_address=auto "${main_args[@]}")
# The TPU VM images' system Python (3.10 on tpu-ubuntu2204-base) is older than any JAX this
# project accepts (3.11+; JAX 0.12 needs 3.12), so each worker installs uv and makes a
# Python 3.12 virtual environment with it (uv downloads a standalone CPython; no apt, no PPA).
remote="set -e; rm -rf ~/research; mkdir -p ~/research; tar xzf ~/research.tar.gz -C ~/research"
remote+='; cd ~/research; command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh'
remote+='; export PATH="$HOME/.local/bin:$PATH"; uv venv -q --allow-existing --python 3.12 ~/venv'
if ((streaming)); then
  remote+='; . ~/venv/bin/activate; uv pip install -q -e ".[streaming]" "jax[tpu]" gcsfs; '
else
  remote+='; . ~/venv/bin/activate; uv pip install -q -e . "jax[tpu]"; '
fi
remote+="$(quote "${main_cmd[@]}")"

status=0
run gcloud compute tpus tpu-vm ssh "$name" --worker=all "${gcloud_flags[@]}" \
    "--command=$remote" || status=$?

if [[ -n "$fetch" ]]; then
  run mkdir -p "$fetch"
  remote_workdir="$workdir"
  if [[ "$workdir" != /* ]]; then remote_workdir="research/$workdir"; fi
  run gcloud compute tpus tpu-vm scp --recurse "$name:$remote_workdir" "$fetch" --worker=0 \
      "${gcloud_flags[@]}" || status=$?
fi
if ((delete)); then
  run gcloud compute tpus tpu-vm delete "$name" "${gcloud_flags[@]}" --quiet
fi
exit "$status"
