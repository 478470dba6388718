"""Cosine mask schedule (docs/models.md 3.1, 3.3), hand-computed cases."""

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


@pytest.mark.parametrize("num_tokens,num_steps,masked,revealed", [
    # 7 tokens, 3 steps: floor(7 cos(pi/6)) = floor(6.062) = 6, floor(7 cos(pi/3)) = floor(3.5) = 3, then 0
    (7, 3, [6, 3, 0], [1, 3, 3]),
    # 10 tokens, 4 steps: floor(10 * 0.92388) = 9, floor(10 * 0.70711) = 7, floor(10 * 0.38268) = 3, then 0
    (10, 4, [9, 7, 3, 0], [1, 2, 4, 3]),
    # 1 token, 2 steps: floor(cos(pi/4)) = 0 after the first step, so it is revealed there and nothing later
    (1, 2, [0, 0], [1, 0]),
])  # fmt: skip
def test_masked_and_reveal_counts_hand_computed(num_tokens, num_steps, masked, revealed) -> None:
    assert cosine_masked_counts(num_tokens, num_steps) == masked
    assert cosine_reveal_counts(num_tokens, num_steps) == revealed


def test_cosine_gamma_fp32_endpoint_is_negative() -> None:
    # docs/models.md 3.3: gamma(1) = -4.4e-8 in fp32 (cos of fp32(pi/2)), so floor(N * gamma(1)) = -1 and the
    # sampler's clamp makes m = 1 at the last step.
    assert cosine_gamma_fp32(0.0) == 1.0
    assert cosine_gamma_fp32(1.0) < 0
    assert cosine_gamma_fp32(1.0) == pytest.approx(-4.37e-8, rel=1e-2)
    assert maskgit_masked_target(1024, 11, 12) == -1


def test_maskgit_target_appendix_a6_and_fp32_rounding() -> None:
    # The 16-token numbers above hold in fp32 too.
    assert [maskgit_masked_target(16, s, 4) for s in range(3)] == [14, 11, 6]
    # models.md 3.3, T=12: commits 9 26 43 60 74 88 101 112 leave 1024 - 513 = 511 masked after step s=7 (r = 8/12);
    # fp64 gives floor(1024 * 0.5000000000000001) = 512, fp32 cos gives 0.49999997 -> 511.
    assert maskgit_masked_target(1024, 7, 12) == 511
    assert math.floor(1024 * cosine_gamma(8 / 12)) == 512
