"""HT-GRPO options (``patch_options:`` when ``patch: htgrpo``), method.md section 3.

Each default is marked as in method.md: stated (the paper fixes it), inferred (our reading) or unknown (value
stripped from the public text; chosen here and exposed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from maskgrpo.config import rng


@dataclass(frozen=True)
class HTGRPOOptions:
    structure_ratio: float = field(default=0.3, metadata=rng(gt=0.0, lt=1.0))
    """rho: fraction of tokens (by generation rank) called structural; K = floor(rho * L) (Eq. 7; unknown)."""
    budgets: tuple[int, int, int] = (2, 4, 2)
    """(mu_g, mu_s, mu_r): inner updates of the Global, Structure and Refinement stages, run in that order
    (Eq. 6/17; 2:4:2 stated). They must sum to rl.num_inner_updates; a 0 skips the stage."""
    p_max: float = field(default=1.0, metadata=rng(gt=0.0, le=1.0))
    """Subset rate at the start of a stage (mode down) (Eq. 8; unknown)."""
    p_min: float = field(default=0.5, metadata=rng(gt=0.0, le=1.0))
    """Subset rate at the end of a stage (mode down) (Eq. 8; unknown)."""
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
    or confidence (higher sampled-token log-prob first)."""

    def __post_init__(self) -> None:
        if len(self.budgets) != 3 or min(self.budgets) < 0 or sum(self.budgets) < 1:
            raise ValueError(f"budgets must be three counts >= 0 with a positive sum, got {self.budgets}")
        if self.p_min > self.p_max:
            raise ValueError(f"p_min ({self.p_min}) must be <= p_max ({self.p_max})")
