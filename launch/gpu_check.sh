#!/usr/bin/env bash
# The GPU check (eval/gpu_check.py): one H100 or H200, no network, at most 8 minutes (--time-budget-s 480; the
# depth is lowered to fit), random weights at MMaDA-8B's real shape (the configs' 513-token text window: rows of
# 1539 tokens), both methods, bf16, ZeRO-2 on one GPU, MAGVIT-v2 decode. Writes runs/gpu_check/gpu_check.json and
# gpu_check.md; the dry runs of the GPU launchers then estimate time per round from it (maskgrpo/launch_time.py).
#
#   bash launch/gpu_check.sh                      # on the GPU machine (CUDA_VISIBLE_DEVICES picks the GPU)
#   bash launch/gpu_check.sh --blocks 8           # a shallower main depth on a slower GPU
#   bash launch/gpu_check.sh --device cpu --tiny  # the same code at a tiny width on CPU (what the test suite runs)
SETUP_ONLY_CHECK=1
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
exec "$PY" -m eval.gpu_check "$@"
