#!/usr/bin/env bash
# One idempotent set-up step: a virtual environment at .venv with this project installed editable (test and lumina
# extras). It installs only when .venv is missing or setup.py / requirements/cpu-constraints.txt changed.
#
#   bash scripts/setup_env.sh            make or update .venv (needs PyPI); the toy launchers and scripts/test.sh run it
#   bash scripts/setup_env.sh --check    install nothing: exit 0 when .venv is up to date, else one line saying how to
#                                        make it (exit 3). The GPU launchers run this: a GPU node without network
#                                        never pip-installs.
#
# Which torch the venv gets is chosen once, when it is made, and recorded in .venv/.htgrpo-torch; later runs keep it
# on any machine (a venv made on a CPU login node is not rebuilt on a GPU node):
#   HTGRPO_TORCH=cpu     the CPU build pinned in requirements/cpu-constraints.txt (default without an NVIDIA GPU)
#   HTGRPO_TORCH=cuda    torch from the package index as pip resolves it (on Linux x86_64 PyPI's torch is a CUDA
#                        build): make the GPU nodes' venv on a login node without GPUs with this. PIP_INDEX_URL /
#                        PIP_EXTRA_INDEX_URL pick another CUDA wheel index.
#   HTGRPO_TORCH=system  a venv over the interpreter's own site-packages, keeping its (CUDA) torch as is (default on
#                        an NVIDIA GPU machine whose python3 already has a CUDA torch; else cuda there)
# Setting HTGRPO_TORCH to another value than the venv's rebuilds it with that torch.
#   HTGRPO_PYTHON=/path/python   the interpreter that creates the venv (default: python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${HTGRPO_PYTHON:-python3}"
venv="$root/.venv"
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "error: unknown argument '$1' (use --check or nothing)" >&2; exit 2 ;;
esac
requested="${HTGRPO_TORCH:-}"
case "$requested" in ""|cpu|cuda|system) ;; *) echo "error: HTGRPO_TORCH must be cpu, cuda or system, got '$requested'" >&2; exit 2 ;; esac

# The stamp hashes what the install depends on plus the torch mode. The mode strings are the ones earlier versions
# of this script wrote (gpu=0: CPU pin; gpu=1 cuda_torch=0: index torch; gpu=1 cuda_torch=1: system torch), so a
# venv they made stays valid.
mode_key() {
  case "$1" in cpu) echo "gpu=0 cuda_torch=0" ;; cuda) echo "gpu=1 cuda_torch=0" ;; system) echo "gpu=1 cuda_torch=1" ;; esac
}
stamp_of() { printf '%s' "$(cat setup.py requirements/cpu-constraints.txt; mode_key "$1")" | sha256sum | cut -d' ' -f1; }

have=""
[ -x "$venv/bin/python" ] && have="$(cat "$venv/.htgrpo-stamp" 2>/dev/null || true)"
recorded="$(cat "$venv/.htgrpo-torch" 2>/dev/null || true)"
venv_mode=""
for m in cpu cuda system; do [ -n "$have" ] && [ "$have" = "$(stamp_of "$m")" ] && venv_mode="$m"; done
if [ -n "$venv_mode" ] && { [ -z "$requested" ] || [ "$requested" = "$venv_mode" ]; }; then
  [ -n "$recorded" ] || echo "$venv_mode" >"$venv/.htgrpo-torch" 2>/dev/null || true
  exit 0
fi

if [ "$check" = 1 ]; then
  if [ ! -x "$venv/bin/python" ]; then why="there is no $venv"
  elif [ -n "$venv_mode" ]; then why="$venv has torch=$venv_mode but HTGRPO_TORCH=$requested"
  else why="$venv is out of date (setup.py or requirements/cpu-constraints.txt changed since it was made)"; fi
  echo "error: $why: make it on a machine with PyPI access (a login node will do) with \`HTGRPO_TORCH=${requested:-${recorded:-cuda}} bash scripts/setup_env.sh\`; launchers never install by themselves" >&2
  exit 3
fi

mode="${requested:-$recorded}"
if [ -z "$mode" ]; then
  mode=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    mode=cuda
    "$py" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' >/dev/null 2>&1 && mode=system
  fi
fi
if [ "$mode" = system ] && ! "$py" -c 'import torch' >/dev/null 2>&1; then
  echo "error: HTGRPO_TORCH=system but $py has no torch; install one there or use HTGRPO_TORCH=cuda" >&2
  exit 2
fi

echo "[setup] creating $venv (torch=$mode)"
if [ "$mode" = system ]; then
  "$py" -m venv --system-site-packages "$venv"
else
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip setuptools wheel
if [ "$mode" = cpu ]; then
  # Install the CPU torch first, from the pin, so nothing later can ask for a CUDA build.
  "${pip[@]}" -c requirements/cpu-constraints.txt torch
  "${pip[@]}" -c requirements/cpu-constraints.txt -e ".[test,lumina]"
else
  "${pip[@]}" -e ".[test,lumina]"
fi
stamp_of "$mode" >"$venv/.htgrpo-stamp"
echo "$mode" >"$venv/.htgrpo-torch"
echo "[setup] done: $("$venv/bin/python" -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "(CUDA", torch.version.cuda, ") transformers", transformers.__version__, "deepspeed", deepspeed.__version__)' 2>/dev/null)"
