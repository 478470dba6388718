#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then run the whole test suite (extra args go to pytest).
#
#   bash scripts/test.sh                  everything (what CI runs)
#   bash scripts/test.sh -m "not slow"    the quick suite: leaves out the multi-process, kill / resume, soak, study
#                                         and golden-run tests (marked slow in tests/)
#   HTGRPO_SLOW_TESTS=1 bash scripts/test.sh     also every further fault variant (tests marked sweep)
#
# Tests run in HTGRPO_TEST_WORKERS parallel pytest processes (pytest-xdist; default 2; 0 = one process), each test
# file in one process, so a file's module fixtures are built once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 DS_ACCELERATOR=cpu WANDB_MODE=disabled
# Tiny tensors: one intra-op thread per process is faster on 2 cores and avoids oversubscription in 2-rank tests.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
workers="${HTGRPO_TEST_WORKERS:-2}"
case "$workers" in
  ''|*[!0-9]*) echo "error: HTGRPO_TEST_WORKERS must be a whole number (0 = no parallel workers), got '$workers'" >&2
               exit 2 ;;
esac
parallel=()
[ "$workers" -gt 0 ] && parallel=(-n "$workers" --dist loadfile)
exec .venv/bin/python -m pytest -q "${parallel[@]}" "$@" tests
