# Sourced by the GPU launchers (launch/mmada_{maskgrpo,htgrpo}.sh, launch/dimoo_{maskgrpo,htgrpo}.sh). It turns the
# launch variables documented in their headers into dotted config overrides, then either prints the dry-run plan
# (python -m maskgrpo.launch_plan) or starts the DeepSpeed launcher. Hyperparameters live in the YAML only: every
# variable below is a resource, a path or an endpoint, and each reaches the trainer as a visible `key=value`.
# A launcher may set MODEL_PATH / VQ_PATH defaults before sourcing this file (VQ_PATH set but empty: no vq_path
# override, the YAML's value stands) and put backbone-specific overrides in LAUNCH_EXTRA_OVERRIDES.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

NUM_GPUS_SET="${NUM_GPUS:+set}"
NUM_GPUS="${NUM_GPUS:-8}"
NUM_NODES="${NUM_NODES:-1}"
HOSTFILE="${HOSTFILE:-}"
MASTER_ADDR="${MASTER_ADDR:-}"
TRAIN_GPUS="${TRAIN_GPUS:-}"
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
  [[ "$NUM_NODES" =~ ^[1-9][0-9]*$ ]] || die "NUM_NODES must be a positive integer, got '$NUM_NODES'"
  local resources=()  # how the DeepSpeed launcher picks GPUs and hosts
  gpu_resources
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
  local cmd=("$PY" -m deepspeed.launcher.runner "${resources[@]}" --master_port "$MASTER_PORT"
             --module maskgrpo.train --config "$config" "${overrides[@]}" "${args[@]}")
  if [ "$DRY_RUN" = 1 ]; then
    echo "[dry-run] would run (from $ROOT):"
    printf ' %q' "${cmd[@]}"; echo
    exec "$PY" -m maskgrpo.launch_plan --num-gpus "$NUM_GPUS" --num-nodes "$NUM_NODES" --gpu-mem-gb "$GPU_MEM_GB" \
      --config "$config" "${overrides[@]}" "${args[@]}"
  fi
  command -v nvidia-smi >/dev/null 2>&1 || echo "warning: no nvidia-smi on this machine; DRY_RUN=1 checks a launch without GPUs" >&2
  exec "${cmd[@]}"
}

# gpu_resources: fill `resources` with the DeepSpeed launcher's resource flags from NUM_NODES, NUM_GPUS, HOSTFILE,
# MASTER_ADDR and TRAIN_GPUS, after checking them. Without TRAIN_GPUS: --num_nodes / --num_gpus (the first NUM_GPUS
# slots of the first NUM_NODES hosts). With TRAIN_GPUS (e.g. 0,1,2,3,4,5, leaving GPUs 6 and 7 of every node to
# reward servers): --include host:0,...,5@host2:0,...,5 over the first NUM_NODES hosts (localhost without a
# hostfile), and NUM_GPUS becomes the number of listed slots. DeepSpeed ignores CUDA_VISIBLE_DEVICES once
# --num_gpus or --include is given, so slots are chosen here, never through that variable.
gpu_resources() {
  local hosts=()
  if [ -n "$HOSTFILE" ]; then
    [ -f "$HOSTFILE" ] || die "HOSTFILE=$HOSTFILE not found (a DeepSpeed hostfile: one 'hostname slots=N' per line)"
    mapfile -t hosts < <(awk '!/^[[:space:]]*(#|$)/ {print $1}' "$HOSTFILE")
    [ "${#hosts[@]}" -ge "$NUM_NODES" ] ||
      die "HOSTFILE=$HOSTFILE lists ${#hosts[@]} host(s), NUM_NODES=$NUM_NODES needs that many"
    resources+=(--hostfile "$HOSTFILE")
  elif [ "$NUM_NODES" -gt 1 ]; then
    die "NUM_NODES=$NUM_NODES needs HOSTFILE (a DeepSpeed hostfile listing the nodes: 'hostname slots=8' per line)"
  fi
  if [ "$NUM_NODES" -gt 1 ] && [ -z "$MASTER_ADDR" ]; then
    die "NUM_NODES=$NUM_NODES needs MASTER_ADDR: the address of the first host of HOSTFILE, reachable from every node"
  fi
  if [ -n "$TRAIN_GPUS" ]; then
    [[ $TRAIN_GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "TRAIN_GPUS must list GPU indices (0,1,2,3,4,5): got '$TRAIN_GPUS'"
    local count
    count=$(tr ',' '\n' <<<"$TRAIN_GPUS" | sort -u | wc -l)
    if [ -n "$NUM_GPUS_SET" ] && [ "$NUM_GPUS" != "$count" ]; then
      die "NUM_GPUS=$NUM_GPUS but TRAIN_GPUS=$TRAIN_GPUS lists $count GPUs: leave NUM_GPUS unset or make them agree"
    fi
    NUM_GPUS="$count"
    local include="" h
    if [ "${#hosts[@]}" -gt 0 ]; then
      for h in "${hosts[@]:0:$NUM_NODES}"; do include+="${include:+@}$h:$TRAIN_GPUS"; done
    else
      include="localhost:$TRAIN_GPUS"
    fi
    resources+=(--include "$include")
  else
    [[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]] || die "NUM_GPUS must be a positive integer, got '$NUM_GPUS'"
    resources+=(--num_nodes "$NUM_NODES" --num_gpus "$NUM_GPUS")
  fi
  if [ -n "$MASTER_ADDR" ]; then resources+=(--master_addr "$MASTER_ADDR"); fi
}
