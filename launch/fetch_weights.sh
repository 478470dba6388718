#!/usr/bin/env bash
# Fetch every weight a config needs into the Hugging Face cache, with sizes and SHA-256 digests, so that the launch
# itself is offline (the GPU launchers default to HF_HUB_OFFLINE=1). Run it once on a machine with network whose
# cache the GPU nodes share (same HF_HOME), e.g. a login node:
#
#   bash launch/fetch_weights.sh configs/mmada_htgrpo.yaml            # backbone, MAGVIT-v2, CLIP, the reward judges
#   MODEL_PATH=org/other-model bash launch/fetch_weights.sh configs/mmada_htgrpo.yaml rl.rounds=10
#   bash launch/fetch_weights.sh configs/dimoo_htgrpo.yaml --no-judges   # the servers run elsewhere
#   bash launch/fetch_weights.sh configs/mmada_htgrpo.yaml --check       # offline: what the cache holds (exit 1: missing)
#
# MODEL_PATH, VQ_PATH and CLIP_PATH, when set, override the config as they do in the launchers; other arguments are
# config overrides or flags of `python -m maskgrpo.models.fetch` (--check, --no-judges, --no-digests, --manifest).
# Writes cache/fetch/<config name>.json (what was fetched: revisions, files, sizes, digests).
SETUP_ONLY_CHECK=1
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[ $# -ge 1 ] || { echo "usage: bash launch/fetch_weights.sh CONFIG [key=value ...] [--check] [--no-judges]" >&2; exit 2; }
CONFIG="$1"
shift
[ -f "$CONFIG" ] || { echo "error: $CONFIG not found" >&2; exit 2; }
overrides=()
if [ -n "${MODEL_PATH:-}" ]; then overrides+=("backbone.path=$MODEL_PATH"); fi
if [ -n "${VQ_PATH:-}" ]; then overrides+=("backbone.options.vq_path=$VQ_PATH"); fi
if [ -n "${CLIP_PATH:-}" ]; then overrides+=("rewards.clip.kwargs.model_path=$CLIP_PATH"); fi
check=0
for a in "$@"; do [ "$a" = --check ] && check=1; done
if [ "$check" = 0 ]; then export HF_HUB_OFFLINE=0; fi  # fetching is the one step that needs the hub
exec "$PY" -m maskgrpo.models.fetch --config "$CONFIG" ${overrides[@]+"${overrides[@]}"} "$@"
