#!/usr/bin/env bash
# MaskGRPO baseline on ShapesWorld (CPU): the shipped toy base, RL, ShapesEval before/after.
# NPROC=2 for two DeepSpeed ranks; extra arguments are config overrides (see launch/_toy_rl.sh).
CONFIG="${CONFIG:-configs/toy_maskgrpo.yaml}"
source "$(dirname "${BASH_SOURCE[0]}")/_toy_rl.sh"
