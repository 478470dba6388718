"""DeepSpeed engine for the policy: ZeRO-2 by default (ZeRO-3 via configs/deepspeed/zero3.json), torch AdamW.

The JSON file supplies the ZeRO section; batch arithmetic, clipping and precision are filled in from the run
config so the two never disagree. On CPU the client optimizer is torch's AdamW (DeepSpeed's fused / CPU Adam would
JIT-compile for about a minute on first use, measured on the 2-core CPU machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from maskgrpo.config.schema import TrainRun, check_world_size
from maskgrpo.policy import build_policy, trainable_parameters


def deepspeed_config(cfg: TrainRun, world: int) -> dict:
    path = Path(cfg.deepspeed.config)
    if not path.is_file():
        raise FileNotFoundError(f"deepspeed.config: {path} not found")
    ds = json.loads(path.read_text())
    rl = cfg.rl
    check_world_size(cfg, world)  # ConfigError: P / ranks must divide by rl.micro_batch_prompts
    p_local = cfg.prompts.per_round // world
    micro = rl.micro_batch_prompts * rl.group_size  # rollouts per micro-batch
    accum = p_local // rl.micro_batch_prompts  # micro-batches per inner update
    ds.update({
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": micro * accum * world,
        "gradient_clipping": cfg.optim.grad_clip,
        "bf16": {"enabled": cfg.deepspeed.precision == "bf16"},
    })  # fmt: skip
    return ds


def build_engine(cfg: TrainRun, model: torch.nn.Module, world: int, device: torch.device):
    """(DeepSpeed engine over the policy, reference context manager)."""
    import deepspeed

    ds = deepspeed_config(cfg, world)
    model.to(device)
    policy, reference = build_policy(model, cfg.lora, need_reference=cfg.rl.kl_beta > 0)
    params = trainable_parameters(policy)
    # fused: one pass over the parameters per step (CPU and CUDA kernels; the same update up to float rounding),
    # 7x faster than the per-tensor loop on CPU at 27.6 M parameters (README, "Round cost")
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
                            fused=True)  # fmt: skip
    warm = cfg.optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    engine, _, _, _ = deepspeed.initialize(model=policy, optimizer=opt, lr_scheduler=sched, config=ds)
    return engine, reference
