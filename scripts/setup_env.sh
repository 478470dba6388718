#!/usr/bin/env bash
# One idempotent set-up step: a virtual environment at .venv with this project installed editable
# (test extras included). Safe to run again: it reinstalls only when setup.py or the constraints change.
#
#   CPU machine (no nvidia-smi):   torch is pinned to the CPU build in requirements/cpu-constraints.txt.
#   GPU machine with CUDA torch:   the venv sees the system site-packages, so that torch is kept as is.
#   HTGRPO_PYTHON=/path/python     pick the interpreter that creates the venv (default: python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${HTGRPO_PYTHON:-python3}"
venv="$root/.venv"

has_gpu=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && has_gpu=1
cuda_torch=0
if [ "$has_gpu" = 1 ] && "$py" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' >/dev/null 2>&1; then
  cuda_torch=1
fi

stamp_src="$(cat setup.py requirements/cpu-constraints.txt; echo "gpu=$has_gpu cuda_torch=$cuda_torch")"
stamp="$(printf '%s' "$stamp_src" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.htgrpo-stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

echo "[setup] creating $venv (gpu=$has_gpu, keep system CUDA torch=$cuda_torch)"
if [ "$cuda_torch" = 1 ]; then
  "$py" -m venv --system-site-packages "$venv"
else
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip setuptools wheel
if [ "$has_gpu" = 1 ]; then
  "${pip[@]}" -e ".[test,lumina]"
else
  # Install the CPU torch first, from the pin, so nothing later can ask for a CUDA build.
  "${pip[@]}" -c requirements/cpu-constraints.txt torch
  "${pip[@]}" -c requirements/cpu-constraints.txt -e ".[test,lumina]"
fi
echo "$stamp" >"$venv/.htgrpo-stamp"
echo "[setup] done: $("$venv/bin/python" -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__)' 2>/dev/null)"
