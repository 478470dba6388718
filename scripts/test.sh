#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the whole test suite (extra args go to pytest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 DS_ACCELERATOR=cpu WANDB_MODE=disabled
# Tiny tensors: one intra-op thread per process is faster on 2 cores and avoids oversubscription in 2-rank tests.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q "$@" tests
