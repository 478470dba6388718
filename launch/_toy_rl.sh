# Sourced by launch/toy_*.sh with CONFIG set: ShapesWorld RL end to end on CPU. Pretrains the toy base if it is
# not cached (cache/toy_base), runs RL, and prints the held-out ShapesEval table before and after.
#   NPROC=2     two processes (DeepSpeed ZeRO-2 over gloo); prompts.per_round must divide by it
#   extra args  config overrides, e.g. rl.rounds=10 run.seed=1
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
NPROC="${NPROC:-1}"
bash launch/toy_pretrain.sh >/dev/null
RUN_DIR="$("$PY" -m maskgrpo.train --config "$CONFIG" --print-run-dir "$@")"
echo "[toy] $CONFIG -> $RUN_DIR"
"$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m maskgrpo.train --config "$CONFIG" "$@"
"$PY" -m maskgrpo.toy.compare_evals "$RUN_DIR"
