# Sourced by launch/toy_*.sh with CONFIG set: ShapesWorld RL end to end on CPU, from the shipped toy base
# (assets/toy_base, checked against its manifest when loaded; no pretraining): ShapesEval before, RL, ShapesEval
# after, then the before/after tables.
#   NPROC=2     two processes (DeepSpeed ZeRO-2 over gloo); prompts.per_round must divide by it
#   OMP_NUM_THREADS  torch threads per process, default 1: results are bit-identical for any value, and on a busy
#               2-core machine 2 threads ran RL rounds 3-4x slower than 1 (45 s vs 12 s at load 4-5; 3.7 s/round with
#               2 threads on an idle machine); set 2 on an idle machine for its speed-up
#   AUTO_RESUME=1  resume when the run folder has a checkpoint, start otherwise (a requeued job needs no edit)
#   extra args  config overrides, e.g. rl.rounds=10 run.seed=1, or backbone.path=cache/toy_base for a base made by
#               launch/toy_pretrain.sh
# SIGTERM / SIGUSR1 (a cluster's preemption) stop the run at a round boundary with a checkpoint; --resume continues.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
NPROC="${NPROC:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
RUN_DIR="$("$PY" -m maskgrpo.train --config "$CONFIG" --print-run-dir "$@")"
echo "[toy] $CONFIG -> $RUN_DIR"
resume=()
if [ "${AUTO_RESUME:-0}" = 1 ]; then resume=(--auto-resume); fi
run_ranks "$NPROC" -m maskgrpo.train --config "$CONFIG" "${resume[@]}" "$@"
if [ ! -d "$RUN_DIR/final" ]; then exit 0; fi # preempted: the checkpoint is written, --resume continues
"$PY" -m maskgrpo.toy.compare_evals "$RUN_DIR"
