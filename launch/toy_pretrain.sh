#!/usr/bin/env bash
# Reproduce the shipped ShapesWorld toy base (assets/toy_base) into cache/toy_base and say whether it is identical.
# The toy RL launchers load the shipped base and never pretrain; run this to check the recipe or to change it
# (docs/toy_base.md). About 20 min on a 2-core CPU. Extra arguments are config overrides, e.g.
# `bash launch/toy_pretrain.sh pretrain.steps=500` (a changed recipe then differs from the shipped base, and a base
# made that way is used by passing backbone.path=cache/toy_base to the RL launchers).
#   BASE=compose      the composition base instead: configs/toy_pretrain_compose.yaml into cache/toy_base_compose,
#                     compared with its record assets/toy_base_compose (digests, recipe, evaluations; the weights
#                     are over git's 5 MB limit, so this is how a clone gets them: docs/toy_base.md; about 1 h 40 min)
#   FORCE=1           retrain even when the folder is complete (has its manifest.json)
#   BASE_DIR=DIR      write elsewhere (default cache/toy_base or cache/toy_base_compose)
#   OMP_NUM_THREADS   default 2, the shipped recipe's threads: bit-identical weights need the same thread count,
#                     torch version and CPU kind (assets/toy_base/manifest.json records them)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
case "${BASE:-toy}" in
  toy)     NAME=toy_base;         CONFIG=configs/toy_pretrain.yaml ;;
  compose) NAME=toy_base_compose; CONFIG=configs/toy_pretrain_compose.yaml ;;
  *) echo "error: BASE must be toy or compose, got '${BASE}'" >&2; exit 2 ;;
esac
SHIPPED="assets/$NAME"
BASE_DIR="${BASE_DIR:-cache/$NAME}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
if [ -f "$BASE_DIR/manifest.json" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "[toy] base already made in $BASE_DIR (FORCE=1 to retrain); its held-out ShapesEval:"
  cat "$BASE_DIR/base_eval.md"
else
  "$PY" -m maskgrpo.toy.pretrain --config "$CONFIG" run.output_dir="$BASE_DIR" "$@"
fi
if [ ! -d "$SHIPPED" ]; then
  echo "[toy] $BASE_DIR is ready; no $SHIPPED to compare it with (docs/toy_base.md)"
  exit 0
fi
"$PY" -m maskgrpo.toy.base_manifest compare "$BASE_DIR" "$SHIPPED"
