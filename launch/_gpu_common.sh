# Sourced by the GPU launchers (launch/mmada_{maskgrpo,htgrpo}.sh, launch/dimoo_{maskgrpo,htgrpo}.sh). It turns the
# launch variables documented in their headers into dotted config overrides, then either prints the dry-run plan
# (python -m maskgrpo.launch_plan) or starts the DeepSpeed launcher. Hyperparameters live in the YAML only: every
# variable below is a resource, a path or an endpoint, and each reaches the trainer as a visible `key=value`.
# A launcher may set MODEL_PATH / VQ_PATH defaults before sourcing this file (VQ_PATH set but empty: no vq_path
# override, the YAML's value stands) and put backbone-specific overrides in LAUNCH_EXTRA_OVERRIDES.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

NUM_GPUS="${NUM_GPUS:-8}"
ZERO_STAGE="${ZERO_STAGE:-2}"
MODEL_PATH="${MODEL_PATH:-Gen-Verse/MMaDA-8B-Base}"
VQ_PATH="${VQ_PATH-showlab/magvitv2}"
CLIP_PATH="${CLIP_PATH:-openai/clip-vit-large-patch14}"
PROMPTS="${PROMPTS:-data/train_prompts.jsonl}"
HPSV3_URL="${HPSV3_URL:-http://127.0.0.1:18087/score}"
UNIFIEDREWARD_URL="${UNIFIEDREWARD_URL:-http://127.0.0.1:18088/score}"
GRAD_CKPT="${GRAD_CKPT:-1}"
MASTER_PORT="${MASTER_PORT:-29500}"
GPU_MEM_GB="${GPU_MEM_GB:-80}"
DRY_RUN="${DRY_RUN:-0}"
LAUNCH_EXTRA_OVERRIDES=()

die() { echo "error: $*" >&2; exit 2; }

# gpu_launch CONFIG DEFAULT_OUTPUT_DIR [--dry-run] [key=value ...]
gpu_launch() {
  local config="$1" default_out="$2"
  shift 2
  local args=() a
  for a in "$@"; do
    if [ "$a" = "--dry-run" ]; then DRY_RUN=1; else args+=("$a"); fi
  done
  [ -f "$config" ] || die "$config not found. $LAUNCHER_MISSING_HINT"
  [[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]] || die "NUM_GPUS must be a positive integer, got '$NUM_GPUS'"
  case "$ZERO_STAGE" in 2|3) ;; *) die "ZERO_STAGE must be 2 or 3 (configs/deepspeed/zero{2,3}.json), got '$ZERO_STAGE'" ;; esac
  local ckpt
  case "${GRAD_CKPT,,}" in 1|true|yes) ckpt=true ;; 0|false|no) ckpt=false ;; *) die "GRAD_CKPT must be 1 or 0, got '$GRAD_CKPT'" ;; esac
  local out="${OUTPUT_DIR:-$default_out}"
  local overrides=(
    "run.output_dir=$out"
    "backbone.path=$MODEL_PATH"
    "backbone.options.gradient_checkpointing=$ckpt"
    "prompts.source=$PROMPTS"
    "deepspeed.config=configs/deepspeed/zero${ZERO_STAGE}.json"
    "rewards.hpsv3.kwargs.url=$HPSV3_URL"
    "rewards.unifiedreward.kwargs.url=$UNIFIEDREWARD_URL"
    "rewards.clip.kwargs.model_path=$CLIP_PATH"
  )
  if [ -n "$VQ_PATH" ]; then overrides+=("backbone.options.vq_path=$VQ_PATH"); fi
  overrides+=(${LAUNCH_EXTRA_OVERRIDES[@]+"${LAUNCH_EXTRA_OVERRIDES[@]}"})
  local cmd=("$PY" -m deepspeed.launcher.runner --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT"
             --module maskgrpo.train --config "$config" "${overrides[@]}" "${args[@]}")
  if [ "$DRY_RUN" = 1 ]; then
    echo "[dry-run] would run (from $ROOT):"
    printf ' %q' "${cmd[@]}"; echo
    exec "$PY" -m maskgrpo.launch_plan --num-gpus "$NUM_GPUS" --gpu-mem-gb "$GPU_MEM_GB" --config "$config" \
      "${overrides[@]}" "${args[@]}"
  fi
  command -v nvidia-smi >/dev/null 2>&1 || echo "warning: no nvidia-smi on this machine; DRY_RUN=1 checks a launch without GPUs" >&2
  exec "${cmd[@]}"
}
