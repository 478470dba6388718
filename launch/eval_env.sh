#!/usr/bin/env bash
# One command per benchmark scorer: a Python 3.10 venv that runs the official scorer on Hopper GPUs (sm_90).
# Run it once on a machine with network (a login node will do; no GPU needed, the GenEval build needs nvcc 12.x).
#
#   bash launch/eval_env.sh geneval ENV_DIR    requirements/eval-geneval.txt, then mmcv-full 1.x (branch 1.x) and
#                                              mmdet 2.x (branch 2.x) built from source for sm_80 + sm_90
#   bash launch/eval_env.sh dpg ENV_DIR        requirements/eval-dpg.txt (ELLA's DPG-Bench scorer)
#   PRINT_ONLY=1 bash launch/eval_env.sh ...   print the commands, run nothing
#
#   EVAL_PYTHON=python3.10      interpreter that makes the venv (GenEval's stack needs <= 3.10)
#   CUDA_ARCHS="8.0;9.0"        TORCH_CUDA_ARCH_LIST of the mmcv / mmdet builds (A100 = 8.0, H100 / H200 = 9.0)
#   SRC_DIR=ENV_DIR/src         where mmcv and mmdetection are cloned
# Then score with the commands of docs/after_training.md (evaluate_images.py; dpg_bench/dist_eval.sh) using
# ENV_DIR/bin/python. Not run by the sessions that wrote it (no GPU, no CUDA toolkit, no network).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage="usage: bash launch/eval_env.sh geneval|dpg ENV_DIR"
[ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
which="$1"
env_dir="$(realpath -m "$2")"
case "$which" in geneval|dpg) ;; *) echo "error: unknown scorer '$which'; $usage" >&2; exit 2 ;; esac
py="${EVAL_PYTHON:-python3.10}"
archs="${CUDA_ARCHS:-8.0;9.0}"
src="${SRC_DIR:-$env_dir/src}"
pip="$env_dir/bin/python -m pip install --disable-pip-version-check"
steps=("$py -m venv $env_dir" "$pip --upgrade pip setuptools wheel" "$pip -r $ROOT/requirements/eval-$which.txt")
if [ "$which" = geneval ]; then
  build="TORCH_CUDA_ARCH_LIST='$archs' FORCE_CUDA=1 MMCV_WITH_OPS=1"
  steps+=(
    "git clone --branch 1.x https://github.com/open-mmlab/mmcv.git $src/mmcv"
    "cd $src/mmcv && $build $pip --no-build-isolation -v -e ."
    "git clone --branch 2.x https://github.com/open-mmlab/mmdetection.git $src/mmdetection"
    "cd $src/mmdetection && $build $pip --no-build-isolation -v -e ."
    "$env_dir/bin/python -c 'import torch, mmcv, mmdet; from mmcv.ops import nms; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"archs\", torch.cuda.get_arch_list() if torch.cuda.is_available() else \"(no GPU here)\", \"mmcv\", mmcv.__version__, \"mmdet\", mmdet.__version__)'"
  )
else
  steps+=("$env_dir/bin/python -c 'import torch, accelerate, modelscope, pandas; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"modelscope\", modelscope.__version__)'")
fi
for s in "${steps[@]}"; do
  echo "+ $s"
  if [ "${PRINT_ONLY:-0}" != 1 ]; then (eval "$s"); fi
done
