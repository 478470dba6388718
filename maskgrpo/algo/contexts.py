"""Context builders: the input the log-probs are evaluated in, and the support set, per inner update.

Baseline (``random_remask``, method.md 2 [MG]): inner update m re-masks every image position of every rollout
independently with probability ratio_m; the support set is the re-masked positions. Registered by name; the patch
adds its own builders to the same registry without touching this file.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from maskgrpo.algo.equations import remask_ratio
from maskgrpo.algo.types import ModelInput, Rollouts, RoundContexts, UpdatePlan
from maskgrpo.registry import Registry


class ContextBuilder(Protocol):
    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        """All mu contexts of a round at once (old / reference log-probs are computed once per distinct input)."""
        ...


CONTEXTS: Registry[Any] = Registry("context builder")
"""name -> factory(cfg: TrainRun, options: the preset's typed patch options or None) -> ContextBuilder."""


def remask_ratios(schedule: str, num_updates: int, min_mask_rate: float, generator: torch.Generator) -> list[float]:
    """Mask ratio of each inner update: 'increasing' [MG] or 'uniform' ~ U(m_min, 0.999) (UniGRPO)."""
    if schedule == "increasing":
        return [remask_ratio(m, num_updates, min_mask_rate) for m in range(1, num_updates + 1)]
    if schedule == "uniform":
        u = torch.rand(num_updates, generator=generator, device=generator.device).tolist()
        return [min_mask_rate + (0.999 - min_mask_rate) * x for x in u]
    raise ValueError(f"unknown remask schedule {schedule!r}; valid: ['increasing', 'uniform']")


class RandomRemask:
    """MaskGRPO's random re-masking context [MG] (method.md 2). Every rollout gets its own input rows."""

    def __init__(self, schedule: str = "increasing", min_mask_rate: float = 0.6, loss_mask: str = "current") -> None:
        if loss_mask not in ("current", "upstream_count"):
            raise ValueError(f"unknown loss_mask {loss_mask!r}; valid: ['current', 'upstream_count']")
        self.schedule, self.min_mask_rate, self.loss_mask = schedule, min_mask_rate, loss_mask

    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        p = rollouts.prompts
        dev = rollouts.codes.device
        rows = rollouts.prompt_of_rollout()  # (B,)
        ids, attn = p.input_ids.to(dev)[rows], p.attention_mask.to(dev)[rows]  # (B, T)
        image = rollouts.image_ids()  # (B, N)
        masks = []
        for ratio in remask_ratios(self.schedule, num_updates, self.min_mask_rate, generator):
            masks.append(torch.rand(image.shape, generator=generator, device=dev) < ratio)  # (B, N)
        inputs = []
        for masked in masks:
            x = ids.clone()
            x[:, p.image_positions.to(dev)] = torch.where(masked, p.mask_id, image)  # only image slots re-masked
            inputs.append(ModelInput(x, attn, torch.arange(len(rows), device=dev)))
        if self.loss_mask == "upstream_count":  # upstream quirk: weight = how many of the mu masks covered a token
            count = torch.stack(masks).sum(0).float()  # (B, N)
            updates = [UpdatePlan(i, count) for i in range(num_updates)]
        else:
            updates = [UpdatePlan(i, m.float()) for i, m in enumerate(masks)]
        return RoundContexts(inputs, updates)


@CONTEXTS.register("random_remask")
def _random_remask(cfg: Any, options: Any = None) -> RandomRemask:
    return RandomRemask(cfg.remask.schedule, cfg.remask.min_mask_rate, cfg.remask.loss_mask)
