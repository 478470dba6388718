"""The DeepSpeed JSON a run uses: the file ``deepspeed.config`` names, with the run's batch arithmetic filled in.

Pure (json and the config schema only), so the dry run (``maskgrpo.launch_plan``) prints the trainer's own numbers
without importing torch's model stack.
"""

from __future__ import annotations

import json
from pathlib import Path

from maskgrpo.config.schema import TrainRun, check_world_size


def deepspeed_config(cfg: TrainRun, world: int) -> dict:
    """``deepspeed.config``'s JSON with the run's micro-batch (rollouts), accumulation, clipping and precision over
    ``world`` ranks; a prompt count that does not divide over the ranks raises ConfigError."""
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
