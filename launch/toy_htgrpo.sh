#!/usr/bin/env bash
# HT-GRPO on ShapesWorld (CPU): the shipped toy base, RL, ShapesEval before/after. The README's main job.
# NPROC=2 for two DeepSpeed ranks; extra arguments are config overrides (see launch/_toy_rl.sh).
CONFIG="${CONFIG:-configs/toy_htgrpo.yaml}"
source "$(dirname "${BASH_SOURCE[0]}")/_toy_rl.sh"
