"""Hand-computed checks of the HT-GRPO equations (htgrpo_patch/equations.py, docs/method.md section 3)."""

import math

import pytest
import torch

from htgrpo_patch.equations import (
    credit_weights,
    draw_subset,
    generation_ranks,
    stage_of_update,
    stage_token_sets,
    subset_rate,
)
from maskgrpo.algo.equations import token_advantages


def test_eq1_ranks_by_step_then_tie_order():
    # steps [1, 0, 1, 0] with raster tie order: step 0 holds positions 1, 3 -> ranks 1, 2; step 1: 0, 2 -> 3, 4
    ranks = generation_ranks(torch.tensor([[1, 0, 1, 0]]), torch.tensor([[0, 1, 2, 3]]))
    assert ranks.tolist() == [[3, 1, 4, 2]]
    # reversed tie order swaps the ranks inside each step only
    assert generation_ranks(torch.tensor([[1, 0, 1, 0]]), torch.tensor([[3, 2, 1, 0]])).tolist() == [[4, 2, 3, 1]]


def test_eq1_ranks_are_a_permutation():
    steps = torch.randint(0, 5, (3, 40))
    tie = torch.rand(3, 40).argsort(1).argsort(1)
    r = generation_ranks(steps, tie)
    assert torch.equal(r.sort(1).values, torch.arange(1, 41).expand(3, 40))
    # earlier step -> smaller rank, always
    a, b = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    earlier = steps[:, a] < steps[:, b]
    assert bool((r[:, a] < r[:, b])[earlier].all())


def test_eq6_stage_schedule_2_4_2():
    got = [stage_of_update(m, (2, 4, 2)) for m in range(1, 9)]
    assert got == [("global", 1, 2), ("global", 2, 2), ("structure", 1, 4), ("structure", 2, 4),
                   ("structure", 3, 4), ("structure", 4, 4), ("refine", 1, 2), ("refine", 2, 2)]  # fmt: skip
    # a zero budget skips its stage (two-stage ablation)
    assert [stage_of_update(m, (0, 2, 1))[0] for m in (1, 2, 3)] == ["structure", "structure", "refine"]
    with pytest.raises(ValueError):
        stage_of_update(9, (2, 4, 2))


def test_eq7_stage_sets_cut_by_token_count():
    # L = 10, rho = 0.3 -> K = floor(3.0) = 3: ranks 1..3 are structural
    rank = torch.tensor([[4, 1, 10, 3, 2, 5, 6, 7, 8, 9]])
    s, r = stage_token_sets(rank, 0.3)
    assert s.tolist() == [[False, True, False, True, True, False, False, False, False, False]]
    assert torch.equal(r, ~s)
    # rho = 0.25 with L = 10 -> K = floor(2.5) = 2
    assert stage_token_sets(rank, 0.25)[0].sum().item() == 2


def test_eq8_subset_rates():
    # down, p_max 1, p_min 0.5, mu_stage 4: u = 0, 1/3, 2/3, 1 -> p = 1, 0.8333, 0.6667, 0.5
    assert [subset_rate(j, 4, 1.0, 0.5, "down") for j in (1, 2, 3, 4)] == pytest.approx([1, 5 / 6, 2 / 3, 0.5])
    assert [subset_rate(j, 4, 1.0, 0.5, "up") for j in (1, 2, 3, 4)] == pytest.approx([0.5, 2 / 3, 5 / 6, 1])
    assert subset_rate(3, 4, 0.9, 0.5, "constant") == 0.9
    assert subset_rate(1, 1, 1.0, 0.5, "down") == 1.0  # u = 0 when the stage has one update
    with pytest.raises(ValueError, match="valid"):
        subset_rate(1, 2, 1, 0.5, "sideways")


def test_subset_draws_stay_in_stage_and_have_the_right_size():
    g = torch.Generator().manual_seed(0)
    stage = torch.rand(4, 1000, generator=g) < 0.4
    s = draw_subset(stage, 0.5, "bernoulli", g)
    assert not bool((s & ~stage).any())
    assert abs(s.sum().item() / stage.sum().item() - 0.5) < 0.05  # Bernoulli(0.5) over ~1600 members
    f = draw_subset(stage, 0.3, "fixed_size", g)
    assert not bool((f & ~stage).any())
    assert f.sum(1).tolist() == [math.ceil(0.3 * n) for n in stage.sum(1).tolist()]
    assert torch.equal(draw_subset(stage, 1.0, "bernoulli", g), stage)


def test_eq10_credit_weights_and_token_advantages():
    # L = 4, rho = 0.5 (K = 2): ranks [3, 1, 4, 2] -> structural at positions 1 and 3
    w = credit_weights(torch.tensor([[3, 1, 4, 2]]), 0.5, 1.2, 0.8)
    torch.testing.assert_close(w, torch.tensor([[0.8, 1.2, 0.8, 1.2]]))
    a = token_advantages(torch.tensor([2.0]), w)  # A_hat = w * A, maskgrpo.algo.equations
    torch.testing.assert_close(a, torch.tensor([[1.6, 2.4, 1.6, 2.4]]))
