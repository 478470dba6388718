"""Resolve the run's components from the config by registered name (the only place names become objects).

The loop asks for a backbone, a rollout sampler, a context builder, a policy loss and the reward functions; the
resolved names are written into the run directory and every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maskgrpo.algo.contexts import CONTEXTS
from maskgrpo.algo.losses import LOSSES
from maskgrpo.backbones import BACKBONES
from maskgrpo.config.schema import TrainRun
from maskgrpo.prompts import load_prompt_metadata
from maskgrpo.rewards.base import RewardSpec, build_rewards

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Components:
    backbone: Any
    sampler: Any
    context: Any
    loss: Any
    reward_fns: list
    reward_specs: list[RewardSpec]
    prompts: list[dict]
    names: dict[str, str]


def resolve_components(cfg: TrainRun, device: torch.device) -> Components:
    backbone = BACKBONES.get(cfg.backbone.name)(cfg.backbone.path, dtype=DTYPES[cfg.backbone.dtype], device=device,
                                                **cfg.backbone.options)  # fmt: skip
    if cfg.prompts.source == "backbone":
        prompts = list(getattr(backbone, "train_prompts", []))
        if not prompts:
            raise ValueError(f"backbone {cfg.backbone.name!r} has no built-in prompts; set prompts.source to a JSONL")
    else:
        prompts = load_prompt_metadata(cfg.prompts.source)
    specs = [
        RewardSpec(name, e.weight, e.scale, dict(e.kwargs), e.allow_nan, e.entry) for name, e in cfg.rewards.items()
    ]
    context = {"world_spec": getattr(backbone, "spec", None)}
    names = {
        "backbone": cfg.backbone.name,
        "sampler": cfg.rollout.name,
        "context": cfg.rl.context,
        "loss": cfg.rl.loss,
        "rewards": ",".join(s.name for s in specs),
    }
    return Components(
        backbone=backbone,
        sampler=cfg.rollout.build(),
        context=CONTEXTS.get(cfg.rl.context)(cfg),
        loss=LOSSES.get(cfg.rl.loss)(cfg),
        reward_fns=build_rewards(specs, device=device, context=context),
        reward_specs=specs,
        prompts=prompts,
        names=names,
    )
