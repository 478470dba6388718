"""Mask schedules shared by the samplers and the trainer (written once, docs/models.md 3.1)."""

from __future__ import annotations

import math

import torch


def cosine_gamma(r: float) -> float:
    """gamma(r) = cos(pi * r / 2): the fraction of image slots still masked at time r in [0, 1].

    gamma(0) = 1 (all masked), gamma(1) = 0 (none). MaskGIT / MUSE / MMaDA cosine schedule.
    Test: tests/test_schedules.py (by hand: 16 tokens, 4 steps -> 2, 3, 5, 6 revealed).
    """
    return math.cos(math.pi * r / 2.0)


def cosine_masked_counts(num_tokens: int, num_steps: int) -> list[int]:
    """Masked count after each step k = 1..T: floor(N * gamma(k / T)) (0 after the last step)."""
    counts = [math.floor(num_tokens * cosine_gamma(k / num_steps)) for k in range(1, num_steps)]
    return [min(num_tokens, max(0, c)) for c in counts] + [0]


def cosine_reveal_counts(num_tokens: int, num_steps: int) -> list[int]:
    """Tokens revealed at each step of a deterministic cosine schedule; sums to num_tokens."""
    before = [num_tokens] + cosine_masked_counts(num_tokens, num_steps)[:-1]
    after = cosine_masked_counts(num_tokens, num_steps)
    return [b - a for b, a in zip(before, after)]


def cosine_gamma_fp32(r: float) -> float:
    """gamma(r) = cos(pi * r / 2) evaluated as a torch float32 cos, the numerics of MMaDA's ``t2i_generate``.

    The MaskGIT commit counts in docs/models.md 3.3 are defined by this rounding: fp64 moves some of them by one
    (T=12: 111/121 instead of 112/120), and gamma(1) = -4.37e-8 < 0 in fp32, so floor(N * gamma(1)) = -1.
    Test: tests/test_schedules.py, tests/test_samplers.py (the N=1024 tables).
    """
    t = torch.tensor(r, dtype=torch.float32)
    return float(torch.cos(t * (math.pi / 2.0)))


def maskgit_masked_target(num_tokens: int, step: int, num_steps: int) -> int:
    """m = floor(N * gamma((s + 1) / T)) in fp32: slots left masked after 0-based step s (docs/models.md 3.3).

    This is the target before the sampler clamps it to [1, unknown - 1]; it is relative to N, not to the number of
    slots still masked, and can be -1 at the last step (see ``cosine_gamma_fp32``).
    """
    gamma = torch.tensor(cosine_gamma_fp32((step + 1) / num_steps), dtype=torch.float32)
    return int(torch.floor(num_tokens * gamma))
