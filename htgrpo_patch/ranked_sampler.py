"""Differs from the baseline rollout sampler in: it also returns generation ranks (docs/method.md 3.1, Eq. 1).

Wraps any registered sampler; the wrapped sampler already records commit steps (its per-step hook is there for
such wrappers). Ranks order positions by (commit step, tie-break within the step) and are returned as
``extras["rank"]`` (B, N) long, a permutation of 1..N per row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from htgrpo_patch.config import TIE_BREAKS, HTGRPOOptions, options_or_defaults
from htgrpo_patch.equations import generation_ranks
from maskgrpo.catalog import SAMPLER_WRAPPERS
from maskgrpo.layout import T2IBatch
from maskgrpo.sampling.base import SamplerOutput, StepHook


def tie_order(out: SamplerOutput, tie_break: str, generator: torch.Generator) -> torch.Tensor:
    """(B, N) permutation of 0..N-1 per row that orders tokens committed at the same step."""
    b, n = out.codes.shape
    if tie_break == "raster":
        return torch.arange(n, device=out.codes.device).expand(b, n)
    if tie_break == "random":  # seeded from the rollout generator, drawn after the sampler's own draws
        u = torch.rand(b, n, generator=generator, device=generator.device).to(out.codes.device)
        return u.argsort(dim=1).argsort(dim=1)
    if tie_break == "confidence":  # higher log-prob of the sampled token first; raster among equal values
        return (-out.logp_at_commit).argsort(dim=1, stable=True).argsort(dim=1)
    raise ValueError(f"unknown tie_break {tie_break!r}; valid: {list(TIE_BREAKS)}")


@dataclass(frozen=True)
class RankedSampler:
    base: Any
    tie_break: str = HTGRPOOptions.tie_break
    """One of HTGRPOOptions.tie_break's values; the default is that type's (the one place it is set)."""

    def __post_init__(self) -> None:
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(f"unknown tie_break {self.tie_break!r}; valid: {list(TIE_BREAKS)}")

    @property
    def num_steps(self) -> int:
        return self.base.num_steps

    @property
    def cfg_scale(self) -> float:
        return self.base.cfg_scale

    def sample(self, model: Any, batch: T2IBatch, generator: torch.Generator,
               step_hook: StepHook | None = None) -> SamplerOutput:  # fmt: skip
        out = self.base.sample(model, batch, generator, step_hook)
        rank = generation_ranks(out.commit_step, tie_order(out, self.tie_break, generator))  # (B, N)
        return replace(out, extras={**out.extras, "rank": rank})


@SAMPLER_WRAPPERS.register("ranked")
def _ranked(sampler: Any, cfg: Any, options: HTGRPOOptions | None) -> RankedSampler:
    return RankedSampler(sampler, tie_break=options_or_defaults(options).tie_break)
