# Sourced by the launchers: repository root, the project's virtual environment, CPU-safe defaults.
# SETUP_ONLY_CHECK=1 (set by the GPU launchers before sourcing): never install; stop with one line when .venv is
# missing or out of date (scripts/setup_env.sh --check). Otherwise .venv is made or updated (the toy launchers: a
# fresh CPU machine needs nothing else).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${SETUP_ONLY_CHECK:-0}" = 1 ]; then bash scripts/setup_env.sh --check; else bash scripts/setup_env.sh; fi
PY="$ROOT/.venv/bin/python"
export HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
if ! command -v nvidia-smi >/dev/null 2>&1; then export DS_ACCELERATOR=cpu; fi

# run_ranks N ARGS...: `python -m torch.distributed.run --standalone --nproc_per_node N ARGS...`, set up for
# preemption: torchrun leaves SIGTERM / SIGUSR1 to its workers (PET_SIGNALS_TO_HANDLE without SIGTERM, and an
# inherited "ignore"), and a SIGTERM / SIGUSR1 sent to this shell is passed on to the workers, which write a
# checkpoint at the last completed round and exit 0 (docs/reliability.md, "Preemption"). A cluster that signals
# every process of the job (SLURM) reaches the workers directly.
run_ranks() {
  local n="$1" pid rc
  shift
  (trap '' TERM USR1; exec env PET_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT \
    "$PY" -m torch.distributed.run --standalone --nproc_per_node "$n" "$@") &
  pid=$!
  trap 'pkill -TERM -P "$pid" || true' TERM
  trap 'pkill -USR1 -P "$pid" || true' USR1
  while true; do
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break # wait also returns when a trapped signal arrives: the run goes on
  done
  trap - TERM USR1
  return "$rc"
}
