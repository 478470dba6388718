"""HT-GRPO options (``patch_options:`` when ``patch: htgrpo``), docs/method.md section 3.

Each default is marked as in docs/method.md: stated (the paper fixes it), inferred (our reading) or unknown (value
stripped from the public text; chosen here and exposed). This dataclass is the one place the defaults live: a
component built without the preset's options (e.g. ``rl.context: revealed_structure`` alone) takes them from
:func:`options_or_defaults`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from maskgrpo.config import rng

Stage = Literal["global", "structure", "refine"]
"""Stage names, in schedule order (the keys of a per-stage p_max / p_min mapping)."""


@dataclass(frozen=True)
class HTGRPOOptions:
    structure_ratio: float = field(default=0.3, metadata=rng(gt=0.0, lt=1.0))
    """rho: fraction of tokens (by generation rank) called structural; K = floor(rho * L) (Eq. 7; unknown)."""
    budgets: tuple[int, int, int] = (2, 4, 2)
    """(mu_g, mu_s, mu_r): inner updates of the Global, Structure and Refinement stages, run in that order
    (Eq. 6/17; 2:4:2 stated). They must sum to rl.num_inner_updates; a 0 skips the stage."""
    p_max: float | dict[Stage, float] = field(default=1.0, metadata=rng(gt=0.0, le=1.0))
    """Subset rate at the start of a stage (mode down) (Eq. 8; unknown). One number for every stage, or one per
    stage as in the paper's appendix F.1: {global: 1.0, structure: 1.0, refine: 0.8} (all three keys)."""
    p_min: float | dict[Stage, float] = field(default=0.5, metadata=rng(gt=0.0, le=1.0))
    """Subset rate at the end of a stage (mode down) (Eq. 8; unknown). One number, or one per stage like p_max."""
    schedule: Literal["down", "up", "constant"] = "down"
    """phi(u): 'down' = 1 - u (linear decay p_max -> p_min, default), 'up' = u, 'constant' = 1 (p = p_max)
    (Eq. 8, 29, 30)."""
    subset: Literal["bernoulli", "fixed_size"] = "bernoulli"
    """Support draw: each stage token kept with probability p, or a uniform subset of size ceil(p * |T_stage|)."""
    weight_structure: float = field(default=1.2, metadata=rng(gt=0.0))
    """w_s: credit weight of structural tokens (Eq. 10; w_s > 1 > w_r stated, value unknown)."""
    weight_refine: float = field(default=0.8, metadata=rng(gt=0.0))
    """w_r: credit weight of refinement tokens (Eq. 10; value unknown). w_s = w_r = 1 is the no-credit ablation."""
    tie_break: Literal["random", "raster", "confidence"] = "random"
    """Order of tokens committed at the same sampler step when ranking (Eq. 1): seeded random (default), raster,
    or confidence (higher sampled-token log-prob first). Which tokens come first at all is the rollout sampler's
    choice: with emerge the commit order is model-free, with maskgit it follows confidence (README)."""

    def __post_init__(self) -> None:
        if len(self.budgets) != 3 or min(self.budgets) < 0 or sum(self.budgets) < 1:
            raise ValueError(f"budgets must be three counts >= 0 with a positive sum, got {self.budgets}")
        for name in ("p_max", "p_min"):
            value = getattr(self, name)
            missing = [s for s in STAGES if s not in value] if isinstance(value, dict) else []
            if missing:
                raise ValueError(f"{name} per stage must give every stage {list(STAGES)}; missing {missing}")
        for stage in STAGES:
            p_max, p_min = self.rates(stage)
            if p_min > p_max:
                raise ValueError(f"p_min ({p_min}) must be <= p_max ({p_max}) for stage {stage!r}")

    def rates(self, stage: str) -> tuple[float, float]:
        """(p_max, p_min) of ``stage``: the shared pair, or the stage's entries of the per-stage mappings."""
        pick = lambda v: v[stage] if isinstance(v, dict) else v  # noqa: E731
        return pick(self.p_max), pick(self.p_min)


STAGES: tuple[str, ...] = typing.get_args(Stage)
TIE_BREAKS: tuple[str, ...] = typing.get_args(typing.get_type_hints(HTGRPOOptions)["tie_break"])


def options_or_defaults(options: HTGRPOOptions | None) -> HTGRPOOptions:
    """The run's options, or the defaults of :class:`HTGRPOOptions` for a component used without the preset."""
    return options if options is not None else HTGRPOOptions()
