#!/usr/bin/env bash
# Pretrain the ShapesWorld toy base (cached in cache/toy_base) and print its held-out ShapesEval table.
# Extra arguments are config overrides, e.g. `bash launch/toy_pretrain.sh pretrain.steps=500`.
# FORCE=1 retrains even when the cache exists.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
BASE_DIR="${BASE_DIR:-cache/toy_base}"
if [ -f "$BASE_DIR/base_eval.md" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "[toy] toy base cached in $BASE_DIR (FORCE=1 to retrain); its held-out ShapesEval:"
  cat "$BASE_DIR/base_eval.md"
  exit 0
fi
"$PY" -m maskgrpo.toy.pretrain --config configs/toy_pretrain.yaml run.output_dir="$BASE_DIR" "$@"
