#!/usr/bin/env bash
# The ShapesWorld comparison study (CPU): base, MaskGRPO, UniGRPO, TraceGRPO, HT-GRPO and its ablations, 3 seeds each,
# same base / prompts / rollouts / optimizer steps. Writes runs/toy_compare/study.md and reward_curves.png.
#   bash launch/toy_compare.sh            the full study (74 min measured on a 2-core machine; resumable)
#   bash launch/toy_compare.sh --quick    a small version in a few minutes (runs/toy_compare_quick)
# Other arguments go to `python -m eval.toy_compare` (--seeds, --methods, --jobs, KEY=VALUE overrides).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
bash launch/toy_pretrain.sh >/dev/null
"$PY" -m eval.toy_compare "$@"
