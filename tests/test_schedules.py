"""Cosine mask schedule (models.md 3.1, 3.3; style_anchors Appendix A.6)."""

from __future__ import annotations

import itertools
import math

import pytest

from maskgrpo.schedules import (
    cosine_gamma,
    cosine_gamma_fp32,
    cosine_masked_counts,
    cosine_reveal_counts,
    maskgit_masked_target,
)


def test_cosine_schedule_appendix_a6_hand_computed() -> None:
    # 16 tokens, 4 steps, masked after step k = floor(16 cos(pi/2 * k/4)):
    # k=1 floor(14.78)=14, k=2 floor(11.31)=11, k=3 floor(6.12)=6, k=4 -> 0; revealed 2, 3, 5, 6 (sum 16).
    assert cosine_masked_counts(16, 4) == [14, 11, 6, 0]
    assert cosine_reveal_counts(16, 4) == [2, 3, 5, 6]
    assert sum(cosine_reveal_counts(16, 4)) == 16


def test_cosine_gamma_endpoints_and_monotone() -> None:
    assert cosine_gamma(0.0) == 1.0
    assert cosine_gamma(1.0) == pytest.approx(0.0, abs=1e-12)
    assert cosine_gamma(0.5) == pytest.approx(math.sqrt(0.5), abs=1e-12)
    values = [cosine_gamma(k / 20) for k in range(21)]
    assert all(a > b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("num_tokens,num_steps", [(16, 4), (1024, 12), (1024, 15), (7, 3)])
def test_reveal_counts_sum_to_num_tokens(num_tokens: int, num_steps: int) -> None:
    reveal = cosine_reveal_counts(num_tokens, num_steps)
    assert len(reveal) == num_steps and sum(reveal) == num_tokens and min(reveal) >= 0


def test_cosine_gamma_fp32_endpoint_is_negative() -> None:
    # models.md 3.3: gamma(1) = -4.4e-8 in fp32 (cos of fp32(pi/2)), so floor(N * gamma(1)) = -1 and the
    # sampler's clamp makes m = 1 at the last step.
    assert cosine_gamma_fp32(0.0) == 1.0
    assert cosine_gamma_fp32(1.0) < 0
    assert cosine_gamma_fp32(1.0) == pytest.approx(-4.37e-8, rel=1e-2)
    assert maskgit_masked_target(1024, 11, 12) == -1


def test_maskgit_target_appendix_a6_and_fp32_rounding() -> None:
    # Appendix A.6 numbers hold in fp32 too.
    assert [maskgit_masked_target(16, s, 4) for s in range(3)] == [14, 11, 6]
    # models.md 3.3, T=12: commits 9 26 43 60 74 88 101 112 leave 1024 - 513 = 511 masked after step s=7 (r = 8/12);
    # fp64 gives floor(1024 * 0.5000000000000001) = 512, fp32 cos gives 0.49999997 -> 511.
    assert maskgit_masked_target(1024, 7, 12) == 511
    assert math.floor(1024 * cosine_gamma(8 / 12)) == 512
