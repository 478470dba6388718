# Sourced by the GPU launchers (launch/mmada_{maskgrpo,htgrpo}.sh, launch/dimoo_{maskgrpo,htgrpo}.sh). It turns the
# launch variables documented in their headers into dotted config overrides, then either prints the dry-run plan
# (python -m maskgrpo.launch_plan) or starts the DeepSpeed launcher (through python -m maskgrpo.reward_launch when
# START_REWARDS=1). Hyperparameters live in the YAML only: every variable below is a resource, a path or an
# endpoint, and each reaches the trainer as a visible `key=value`.
# A launcher may set MODEL_PATH / VQ_PATH defaults before sourcing this file (VQ_PATH set but empty: no vq_path
# override, the YAML's value stands) and put backbone-specific overrides in LAUNCH_EXTRA_OVERRIDES.
# Never installs anything and never reaches the network: .venv must be up to date (scripts/setup_env.sh --check) and
# the weights in the Hugging Face cache (launch/fetch_weights.sh); HF_HUB_OFFLINE defaults to 1.
FETCH_VARS=""  # the weight variables the user set, for the fetch command a missing weight names
for _v in MODEL_PATH VQ_PATH CLIP_PATH; do
  if [ -n "${!_v:-}" ]; then FETCH_VARS+="$_v=${!_v} "; fi
done
SETUP_ONLY_CHECK=1
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
GPU_TYPE="${GPU_TYPE:-H100}"
START_REWARDS="${START_REWARDS:-0}"
REWARD_GPUS="${REWARD_GPUS:-}"
HPSV3_PYTHON="${HPSV3_PYTHON:-}"
UNIFIEDREWARD_PYTHON="${UNIFIEDREWARD_PYTHON:-$PY}"
REWARD_WAIT_S="${REWARD_WAIT_S:-900}"
REWARD_SCORERS="${REWARD_SCORERS:-}"
DRY_RUN="${DRY_RUN:-0}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
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
  case "$START_REWARDS" in 0|1) ;; *) die "START_REWARDS must be 0 or 1, got '$START_REWARDS'" ;; esac
  [[ "$REWARD_WAIT_S" =~ ^[1-9][0-9]*$ ]] || die "REWARD_WAIT_S must be a positive number of seconds, got '$REWARD_WAIT_S'"
  if [ "$START_REWARDS" = 1 ] && [ "$NUM_NODES" -gt 1 ]; then
    die "START_REWARDS=1 starts the reward servers on this node only; with NUM_NODES=$NUM_NODES start them yourself and set HPSV3_URL / UNIFIEDREWARD_URL to an address every node reaches (docs/gpu.md, 'Where the reward servers go')"
  fi
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
  export HTGRPO_FETCH_COMMAND="${FETCH_VARS}bash launch/fetch_weights.sh $config"
  local cmd=("$PY" -m deepspeed.launcher.runner "${resources[@]}" --master_port "$MASTER_PORT"
             --module maskgrpo.train --config "$config" "${overrides[@]}" "${args[@]}")
  local pythons=(--python "hpsv3=$HPSV3_PYTHON" --python "unifiedreward=$UNIFIEDREWARD_PYTHON")
  if [ "$DRY_RUN" = 1 ]; then
    echo "[dry-run] would run (from $ROOT):"
    printf ' %q' "${cmd[@]}"; echo
    local placement=()
    if [ "$START_REWARDS" = 1 ]; then placement+=(--start-rewards --reward-gpus "$REWARD_GPUS"); fi
    if [ -n "$TRAIN_GPUS" ]; then placement+=(--train-gpus "$TRAIN_GPUS"); fi
    exec "$PY" -m maskgrpo.launch_plan --num-gpus "$NUM_GPUS" --num-nodes "$NUM_NODES" --gpu-mem-gb "$GPU_MEM_GB" \
      --gpu-type "$GPU_TYPE" ${placement[@]+"${placement[@]}"} "${pythons[@]}" --config "$config" \
      "${overrides[@]}" "${args[@]}"
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
      die "the torch in .venv ($("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)) sees no GPU: make the venv with a CUDA torch (HTGRPO_TORCH=cuda bash scripts/setup_env.sh, on a machine with PyPI access)"
  else
    echo "warning: no nvidia-smi on this machine; DRY_RUN=1 checks a launch without GPUs" >&2
  fi
  if [ "$NUM_NODES" -gt 1 ]; then deepspeed_env_file; fi
  if [ "$START_REWARDS" = 1 ]; then
    [ -n "$REWARD_GPUS" ] || die "START_REWARDS=1 needs REWARD_GPUS (e.g. 6,7 with TRAIN_GPUS=0,1,2,3,4,5, or 7 to share GPU 7 with training): docs/gpu.md, 'Where the reward servers go'"
    local scorers=() s
    for s in $REWARD_SCORERS; do scorers+=(--scorer "$s"); done
    exec "$PY" -m maskgrpo.reward_launch --config "$config" --gpus "$REWARD_GPUS" --log-dir "$out/reward_servers" \
      --wait-s "$REWARD_WAIT_S" "${pythons[@]}" ${scorers[@]+"${scorers[@]}"} "${overrides[@]}" "${args[@]}" \
      -- "${cmd[@]}"
  fi
  exec "${cmd[@]}"
}

# deepspeed_env_file: DeepSpeed's multi-node runner forwards only some variables to the other nodes (NCCL_*,
# PYTHON*, ...) plus the lines of ~/.deepspeed_env and ./.deepspeed_env. Write those lines plus the Hugging Face
# cache variables (HF_HUB_OFFLINE, HF_HOME, HF_HUB_CACHE) to cache/launch/deepspeed_env and point DS_ENV_FILE at
# it, so every node reads the same cache offline.
deepspeed_env_file() {
  local file="$ROOT/cache/launch/deepspeed_env" v
  mkdir -p "$(dirname "$file")"
  {
    for f in "$HOME/.deepspeed_env" "$ROOT/.deepspeed_env"; do [ -f "$f" ] && grep -v '^[[:space:]]*$' "$f"; done
    for v in HF_HUB_OFFLINE HF_HOME HF_HUB_CACHE; do [ -n "${!v:-}" ] && echo "$v=${!v}"; done
  } >"$file" || true
  export DS_ENV_FILE="$file"
}

# gpu_resources: fill `resources` with the DeepSpeed launcher's resource flags from NUM_NODES, NUM_GPUS, HOSTFILE,
# MASTER_ADDR and TRAIN_GPUS, after checking them. Without TRAIN_GPUS: --num_nodes / --num_gpus (the first NUM_GPUS
# slots of the first NUM_NODES hosts). With TRAIN_GPUS (e.g. 0,1,2,3,4,5, leaving GPUs 6 and 7 of every node to
# reward servers): --include host:0,...,5@host2:0,...,5 over the first NUM_NODES hosts (localhost without a
# hostfile), and NUM_GPUS becomes the number of listed slots. DeepSpeed ignores CUDA_VISIBLE_DEVICES once
# --num_gpus or --include is given, so slots are chosen here, never through that variable. On several nodes
# MASTER_ADDR defaults to the hostfile's first host.
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
    MASTER_ADDR="${hosts[0]}"
    echo "note: MASTER_ADDR not set: using the hostfile's first host, $MASTER_ADDR (every node must reach it by that name)" >&2
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
