#!/usr/bin/env bash
# MaskGRPO baseline on MMaDA-8B-Base: configs/mmada_maskgrpo.yaml under the DeepSpeed launcher (ZeRO-2, 8 GPUs).
# Every hyperparameter is in the YAML; the variables below are resources, paths and endpoints only, and each is
# passed to `python -m maskgrpo.train` as a dotted override (printed by the dry run). Extra arguments are more
# overrides and win over these, e.g. `bash launch/mmada_maskgrpo.sh rl.rounds=10`.
#
#   NUM_GPUS=8                    training ranks per node (prompts.per_round must divide by NUM_NODES x NUM_GPUS:
#                                 24 -> 8 or 6 GPUs on one node; 2 x 8 GPUs need e.g. prompts.per_round=48)
#   NUM_NODES=1                   nodes; > 1 needs HOSTFILE (DeepSpeed starts every node over ssh)
#   HOSTFILE=                     DeepSpeed hostfile, one 'hostname slots=8' per line; the first NUM_NODES hosts run
#   MASTER_ADDR=                  address of the first host, reachable from every node (--master_addr); default on
#                                 several nodes: the hostfile's first host
#   TRAIN_GPUS=                   GPU slots that train on every node, e.g. 0,1,2,3,4,5 (DeepSpeed --include; the
#                                 other GPUs stay free for reward servers); NUM_GPUS becomes their count
#   ZERO_STAGE=2                  2 -> configs/deepspeed/zero2.json, 3 -> configs/deepspeed/zero3.json
#   MODEL_PATH=Gen-Verse/MMaDA-8B-Base   backbone.path: hub id or local dir (config.json + safetensors + tokenizer)
#   VQ_PATH=showlab/magvitv2      backbone.options.vq_path: MAGVIT-v2 weights, hub id or local dir
#   CLIP_PATH=openai/clip-vit-large-patch14   rewards.clip.kwargs.model_path: hub id or local dir
#   PROMPTS=data/train_prompts.jsonl          prompts.source: GenEval-style metadata JSONL ({"prompt", ...} per line)
#   OUTPUT_DIR=runs/mmada_maskgrpo            run.output_dir: config, metrics, checkpoints, images, final/
#   HPSV3_URL=http://127.0.0.1:18087/score            rewards.hpsv3.kwargs.url (python -m maskgrpo.rewards.serve)
#   UNIFIEDREWARD_URL=http://127.0.0.1:18088/score    rewards.unifiedreward.kwargs.url
#   START_REWARDS=0               1: start the config's reward servers on REWARD_GPUS, wait for them (at most
#                                 REWARD_WAIT_S=900 s), train, stop them (python -m maskgrpo.reward_launch)
#   REWARD_GPUS=                  GPUs of the reward servers, e.g. 6,7 (with TRAIN_GPUS=0,1,2,3,4,5) or 7 (shared)
#   HPSV3_PYTHON=                 python of the HPSv3 judge's own venv (pip install hpsv3)
#   UNIFIEDREWARD_PYTHON=.venv/bin/python   python of the UnifiedReward judge's environment
#   REWARD_SCORERS=               NAME=module:attr ... to serve another scorer for a reward (stand-ins for tests)
#   GRAD_CKPT=1                   backbone.options.gradient_checkpointing (1/0): whole-block activation recompute
#   MASTER_PORT=29500             rendezvous port of the DeepSpeed launcher (--master_port)
#   GPU_MEM_GB=80 GPU_TYPE=H100   GPU memory and type (H100, H200, A100) the dry run's memory and time refer to
#   HF_HUB_OFFLINE=1              weights come from the Hugging Face cache only (bash launch/fetch_weights.sh CONFIG
#                                 fills it, with network); 0 lets local rank 0 of each node download
#   DRY_RUN=0                     1 (or the argument --dry-run): validate the config, check paths, print the batch
#                                 arithmetic, a memory estimate, the time per round and run, the cached weights and
#                                 the reward servers' placement; loads no weights, needs no GPU and no network
# Relative paths are relative to the repository root (the launcher cd's there). The launcher never installs: .venv
# must be up to date (bash scripts/setup_env.sh, docs/gpu.md "Set-up on a cluster").
LAUNCHER_MISSING_HINT="It ships with the repository; restore it with your VCS."
source "$(dirname "${BASH_SOURCE[0]}")/_gpu_common.sh"
gpu_launch configs/mmada_maskgrpo.yaml runs/mmada_maskgrpo "$@"
