"""Step 2 of a round: G rollouts per prompt from the frozen policy pi_old (shared by the trainer and the plan CLI)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from maskgrpo.algo.types import Rollouts
from maskgrpo.layout import T2IBatch
from maskgrpo.sampling.base import StepHook


def slice_batch(batch: T2IBatch, start: int, end: int) -> T2IBatch:
    """Rows [start, end) of a T2IBatch (ids, masks and their unconditional twins)."""
    return replace(batch, **{k: getattr(batch, k)[start:end] for k in ("input_ids", "attention_mask", "uncond_ids",
                                                                        "uncond_mask")})  # fmt: skip


@torch.no_grad()
def sample_rollouts(sampler: Any, model: torch.nn.Module, prompts: T2IBatch, group_size: int, batch_size: int,
                    generator: torch.Generator, step_hook: StepHook | None = None) -> Rollouts:  # fmt: skip
    """G rollouts of each of the P prompt rows, sampled ``batch_size`` rollouts per sampler call (CFG, no grad).

    prompts: (P, T) rows, image slots masked. Returns Rollouts with B = P * G rows, rows [kG, (k+1)G) = prompt k.
    The model is put in eval mode (pi_old: no dropout).
    """
    rows = prompts.repeat_interleave(group_size)  # (B, T)
    model.eval()
    outs = [sampler.sample(model, slice_batch(rows, s, s + batch_size), generator, step_hook)
            for s in range(0, rows.input_ids.shape[0], batch_size)]  # fmt: skip
    cat = {k: torch.cat([getattr(o, k) for o in outs]) for k in ("codes", "commit_step", "logp_at_commit")}
    extras = {k: torch.cat([o.extras[k] for o in outs]) for k in outs[0].extras}
    return Rollouts(prompts, group_size, cat["codes"], cat["commit_step"], cat["logp_at_commit"], extras)
