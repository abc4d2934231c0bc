#!/usr/bin/env bash
# Runs one research.main experiment as N local processes joined by jax.distributed, the way
# the hosts of a TPU pod or GPU cluster run it: same program, process i of N, coordinator at
# 127.0.0.1:PORT. On CPU each process has one device, so the batch is split N ways.
#
#   launch/multihost_local.sh -n 2 -- --config=configs/default.py --workdir=/tmp/mh
#   launch/multihost_local.sh --dry-run -n 4 --port=12345 -- --config=configs/default.py
#
# Options (before --; everything after -- goes to every research.main process):
#   -n N, --num_processes=N   processes to start (default 2, env NUM_PROCESSES)
#   --port=P                  coordinator port (default: a free one, env PORT)
#   --log_dir=DIR             per-process logs DIR/process_<i>.log (default: a new temp dir)
#   --dry-run                 print the commands instead of running them
# Process 0's output streams to the terminal; the script exits non-zero if any process fails.
set -euo pipefail

num_processes="${NUM_PROCESSES:-2}"
port="${PORT:-}"
log_dir=""
dry_run=0
python="${PYTHON:-python}"

# Prints the comment block above as help.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while (($#)); do
  case "$1" in
    -n) num_processes="$2"; shift 2 ;;
    --num_processes=*) num_processes="${1#*=}"; shift ;;
    --port=*) port="${1#*=}"; shift ;;
    --log_dir=*) log_dir="${1#*=}"; shift ;;
    --dry-run|--dry_run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (research.main flags go after --); see --help" >&2; exit 2 ;;
  esac
done
main_args=("$@")

if ! [[ "$num_processes" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --num_processes=$num_processes must be a positive integer" >&2; exit 2
fi
if [[ -z "$port" ]]; then
  port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
if ! [[ "$port" =~ ^[0-9]+$ ]]; then
  echo "error: --port=$port must be a number" >&2; exit 2
fi

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

# Fills cmd with the command line of process $1.
process_cmd() {
  cmd=(env "JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}" "$python" -m research.main "${main_args[@]}"
       "--coordinator_address=127.0.0.1:$port" "--num_processes=$num_processes"
       "--process_id=$1")
}

if ((dry_run)); then
  for ((i = 0; i < num_processes; i++)); do
    process_cmd "$i"
    quote "${cmd[@]}"
  done
  exit 0
fi

log_dir="${log_dir:-$(mktemp -d -t multihost.XXXXXX)}"
mkdir -p "$log_dir"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
  done
}
trap 'stop_all; exit 130' INT TERM
for ((i = 0; i < num_processes; i++)); do
  process_cmd "$i"
  if ((i == 0)); then
    "${cmd[@]}" > >(tee "$log_dir/process_0.log") 2>&1 &
  else
    "${cmd[@]}" >"$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=("$!")
done
echo "started $num_processes processes (coordinator 127.0.0.1:$port); logs in $log_dir" >&2

# The survivors of a failed process would wait in their collectives until JAX's timeouts,
# so the first failure stops them all.
status=0
running=$num_processes
while ((running)); do
  running=0
  failed=()  # "index code" of the processes found stopped with an error in this pass
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    [[ -n "$pid" ]] || continue
    if kill -0 "$pid" 2>/dev/null; then
      running=$((running + 1))
      continue
    fi
    pids[i]=""
    code=0
    wait "$pid" 2>/dev/null || code=$?  # 2>/dev/null: no "Killed" job line from bash.
    if ((code != 0)); then failed+=("$i $code"); fi
  done
  if ((${#failed[@]})) && ((status == 0)); then
    # A peer's death makes the others stop too (exit 4, one line each): name the process
    # killed by a signal (exit > 128) as the cause when there is one.
    cause="${failed[0]}"
    for entry in "${failed[@]}"; do
      if ((${entry#* } > 128)); then cause="$entry"; break; fi
    done
    i="${cause% *}"; code="${cause#* }"
    how=$( ((code > 128)) && echo "was killed (signal $((code - 128)))" || echo "failed (exit $code)")
    echo "process $i $how; see $log_dir/process_$i.log; stopping the others (rerun the same command to resume from the last checkpoint)" >&2
    status=1
    stop_all
  fi
  if ((running)); then sleep 0.2; fi
done
exit "$status"
