#!/usr/bin/env bash
# The ShapesWorld comparison studies (CPU), same base / prompts / rollouts / optimizer steps for every method.
#   bash launch/toy_compare.sh                 the 10-method study, 3 seeds (41 min measured on the 2-core machine;
#                                              runs/toy_compare/study.md and reward_curves.png)
#   bash launch/toy_compare.sh --plan focused  the focused study: MaskGRPO, HT-GRPO, HT-GRPO with
#                                              confidence-ordered ranks and its MaskGRPO twin (maskgit rollouts),
#                                              HT no credit, A5; 5 seeds, 24 eval images per caption, paired
#                                              differences with 95% intervals, reward and accuracy curves
#                                              (runs/toy_compare_focused; sizing in eval/toy_compare.py FOCUSED)
#   bash launch/toy_compare.sh --plan budget   every HT variant given its reference's compute, shipped base
#                                              (runs/toy_compare_budget; docs/evidence.md)
#   bash launch/toy_compare.sh --plan compose patch_options.structure_ratio=0.5
#                                              the same on the composition base, with the rho picked on its
#                                              validation captions; make the base first, once:
#                                              BASE=compose bash launch/toy_pretrain.sh (about 1 h 40 min)
#   bash launch/toy_compare.sh --quick         a small version in a few minutes (runs/toy_compare_quick)
# Every plan is resumable: rerunning the command only does what is missing. Other arguments go to
# `python -m eval.toy_compare` (--seeds, --methods, --jobs, --threads, KEY=VALUE overrides).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
"$PY" -m eval.toy_compare "$@"
