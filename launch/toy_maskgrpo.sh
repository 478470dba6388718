#!/usr/bin/env bash
# MaskGRPO baseline on ShapesWorld, end to end on CPU: pretrain the toy base if it is not cached, run RL, and print
# the held-out ShapesEval table before and after. Extra arguments are config overrides (e.g. rl.rounds=10).
#   NPROC=2 bash launch/toy_maskgrpo.sh    two processes (DeepSpeed ZeRO-2 over gloo)
#   CONFIG=configs/...yaml                 another config
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
CONFIG="${CONFIG:-configs/toy_maskgrpo.yaml}"
NPROC="${NPROC:-1}"
bash launch/toy_pretrain.sh >/dev/null
RUN_DIR="$("$PY" -m maskgrpo.train --config "$CONFIG" --print-run-dir "$@")"
"$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m maskgrpo.train --config "$CONFIG" "$@"
"$PY" -m maskgrpo.toy.compare_evals "$RUN_DIR"
