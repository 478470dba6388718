"""Hand-computed checks of the baseline equations (each case worked out in its comment)."""

import math

import pytest
import torch

from maskgrpo.algo.equations import (
    aggregate_seq_mean,
    aggregate_token_mean,
    clipped_surrogate,
    code_logprobs,
    group_advantages,
    k3_kl,
    remask_ratio,
    token_advantages,
    token_loss,
    zero_std_fraction,
)


def test_group_advantages_bessel_std_method_1_3():
    # mean 0.25; squared deviations 0.5625 + 3 * 0.0625 = 0.75; Bessel std sqrt(0.75 / 3) = 0.5
    # A = (R - 0.25) / (0.5 + 1e-5)
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-5)
    torch.testing.assert_close(a, expected)
    assert abs(a[0].item() - 1.5) < 1e-4  # the population std (0.4330) would give 1.7321


def test_group_advantages_zero_variance_and_shift_scale_invariance():
    r = torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0, 1.0, 2.0, 0.0])
    a = group_advantages(r, 4)
    assert torch.equal(a[:4], torch.zeros(4))  # a constant group gives exactly 0, not NaN
    torch.testing.assert_close(group_advantages(r + 7.0, 4), a)
    torch.testing.assert_close(group_advantages(r * 3.0, 4), a, atol=1e-4, rtol=1e-4)  # up to the 1e-5 eps
    assert zero_std_fraction(r, 4) == 0.5


def test_group_advantages_rejects_bad_groups():
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(torch.zeros(5), 2)


def test_token_advantages_weight_times_advantage():
    # A_hat = w * A: A = [2, -1], w = [[0.8, 1.2], [1, 1]] -> [[1.6, 2.4], [-1, -1]]; w = 1 returns A_i bit for bit
    a = torch.tensor([2.0, -1.0])
    got = token_advantages(a, torch.tensor([[0.8, 1.2], [1.0, 1.0]]))
    torch.testing.assert_close(got, torch.tensor([[1.6, 2.4], [-1.0, -1.0]]))
    x = torch.randn(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(token_advantages(x, torch.ones(5, 3)), x[:, None].expand(5, 3))


def test_clipped_surrogate_hand_computed():
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.1])
    adv = torch.tensor([1.0, -1.0, 1.0, 2.0])
    # loss = -surr: -1.2 (clipped), +0.8 (clipped), -0.5 (not clipped), -2.2 (not clipped)
    torch.testing.assert_close(-clipped_surrogate(ratio, adv, 0.2), torch.tensor([-1.2, 0.8, -0.5, -2.2]))


def test_clipped_surrogate_gradient_only_where_unclipped():
    ratio = torch.tensor([1.5, 0.5], requires_grad=True)
    clipped_surrogate(ratio, torch.tensor([1.0, 1.0]), 0.2).sum().backward()
    assert ratio.grad.tolist() == [0.0, 1.0]  # 1.5 is clipped at 1.2 (no gradient); 0.5 passes through


def test_k3_kl_hand_computed():
    # pi_ref / pi_theta = 2: 2 - ln 2 - 1 = 0.306853
    kl = k3_kl(torch.tensor([math.log(0.25)]), torch.tensor([math.log(0.5)]))
    assert abs(kl.item() - 0.306853) < 1e-6
    assert k3_kl(torch.tensor([-1.3]), torch.tensor([-1.3])).item() == 0.0


def test_token_loss_combines_surrogate_and_unweighted_kl():
    logp, old, ref = (
        torch.tensor([[math.log(0.25)]]),
        torch.tensor([[math.log(0.25)]]),
        torch.tensor([[math.log(0.5)]]),
    )
    # ratio 1 -> surr = A = 2; loss = -2 + 0.1 * 0.306853
    assert abs(token_loss(logp, old, ref, torch.tensor([[2.0]]), 0.2, 0.1).item() - (-2 + 0.0306853)) < 1e-6
    assert token_loss(logp, old, None, torch.tensor([[2.0]]), 0.2, 0.1).item() == -2.0


def test_aggregation_modes_hand_computed():
    loss = torch.tensor([[1.0, 1, 1, 1], [4, 0, 0, 0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0]])
    assert aggregate_token_mean(loss, mask).item() == pytest.approx(1.6)  # 8 / 5
    assert aggregate_seq_mean(loss, mask).item() == pytest.approx(2.5)  # (1 + 4) / 2
    assert aggregate_token_mean(loss, torch.zeros_like(mask)).item() == 0.0


def test_masked_positions_have_no_effect_on_aggregates():
    loss = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    changed = loss.clone()
    changed[0, 1] = 1e6
    for agg in (aggregate_token_mean, aggregate_seq_mean):
        assert agg(loss, mask).item() == agg(changed, mask).item() == 2.0


def test_remask_ratio_schedule_method_2():
    # m_min 0.6, mu 4: 0.6 + 0.4 * m / 4 = 0.7, 0.8, 0.9, 1.0 -> capped at 0.999
    assert [remask_ratio(m, 4, 0.6) for m in (1, 2, 3, 4)] == pytest.approx([0.7, 0.8, 0.9, 0.999])
    with pytest.raises(ValueError):
        remask_ratio(0, 4, 0.6)


def test_code_logprobs_hand_computed_and_shared_rows():
    logits = torch.tensor([[[0.0, 0.0, math.log(2.0)], [0.0, 0.0, math.log(2.0)]]])  # (1, 2, 3): p = [.25, .25, .5]
    lp = code_logprobs(logits, torch.tensor([[2, 0]]))
    torch.testing.assert_close(lp, torch.tensor([[math.log(0.5), math.log(0.25)]]))
    assert abs(lp.sum().item() - math.log(0.125)) < 1e-6  # -2.079442
    # shared rows: three rollouts reading one input row equal three copies of it
    z = torch.randn(2, 5, 7)
    codes = torch.randint(0, 7, (3, 5))
    rows = torch.tensor([1, 1, 0])
    torch.testing.assert_close(code_logprobs(z, codes, rows), code_logprobs(z[rows], codes))


def test_code_logprobs_per_token_rows():
    z = torch.randn(4, 5, 7)
    codes = torch.randint(0, 7, (2, 5))
    rows = torch.tensor([[0, 1, 0, 1, 0], [2, 2, 3, 3, 3]])  # token k of rollout b reads row rows[b, k]
    got = code_logprobs(z, codes, rows)
    for b in range(2):
        for k in range(5):
            expected = torch.log_softmax(z[rows[b, k], k], -1)[codes[b, k]]
            assert abs(got[b, k].item() - expected.item()) < 1e-6
