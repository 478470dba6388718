"""MaskGRPO / GRPO equations, one pure tensor function each (docs/method.md sections 1 and 2).

Notation (docs/method.md): G = ``group_size``, A_i = advantage of rollout i, eps = ``clip_eps``, beta = ``kl_beta``,
mu = ``num_inner_updates``, m = 1-based inner update index. Hand-computed tests: tests/test_equations.py
(each case worked by hand in its comment).
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-5) -> torch.Tensor:
    """Group-relative advantage [GRPO], docs/method.md 1.3: A_i = (R_i - mean_g(R)) / (std_g(R) + eps).

    rewards: (N,) with rows [kG, (k+1)G) = the G rollouts of prompt k (gathered from all ranks). std is the unbiased
    (Bessel) std; eps = 1e-5 sits outside the sqrt. A zero-variance group gives exactly 0 (never NaN). Returns (N,).
    Test: [1, 0, 0, 0] -> [1.5, -0.5, -0.5, -0.5] (Bessel std 0.5).
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (the group std is undefined for 1), got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.double().view(-1, group_size)  # (P, G)
    centred = r - r.mean(dim=1, keepdim=True)
    adv = centred / (r.std(dim=1, unbiased=True, keepdim=True) + eps)
    return adv.view(-1).to(rewards.dtype)  # (N,)


def zero_std_fraction(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> float:
    """Fraction of groups whose rewards have std < tol (their advantages are all 0)."""
    return float((rewards.double().view(-1, group_size).std(dim=1) < tol).float().mean())


def token_advantages(advantages: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-token advantage A_hat_i^k = w_i^k * A_i: w = 1 for GRPO / MaskGRPO (docs/method.md 1), the credit weights
    w_s / w_r of HT-GRPO (method.md 3.6, Eq. 10 [HT]). advantages (B,), weight (B, N) -> (B, N). The KL term is never
    weighted. Test: A = 2, w = [0.8, 1.2] -> [1.6, 2.4]; w = 1 returns A_i exactly.
    """
    return weight * advantages[:, None]


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """Clipped surrogate [GRPO] (PPO form): min(ratio * A_hat, clip(ratio, 1 - eps, 1 + eps) * A_hat), elementwise.

    ratio, adv: broadcastable, e.g. (B, N) and (B, N) or (B, 1). Positive = good; the loss uses its negative.
    Test: eps = 0.2, ratio 1.5, A = +1 -> 1.2 (clipped); ratio 0.5, A = +1 -> 0.5 (gradient flows).
    """
    return torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi_theta || pi_ref) per token [GRPO]: exp(ref - logp) - (ref - logp) - 1 >= 0.

    Test: pi_ref / pi_theta = 2 -> 2 - ln 2 - 1 = 0.306853; equal log-probs -> 0.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def token_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor,
    clip_eps: float, kl_beta: float,
) -> torch.Tensor:  # fmt: skip
    """Per-token GRPO loss, docs/method.md section 1: -surr(exp(logp - old), A_hat) + beta * k3(logp, ref). (B, N).

    ``adv`` is A_hat, already broadcast to (B, N) or (B, 1); the KL term is never weighted. ``ref_logp`` None
    (beta = 0, no reference) drops the KL term.
    """
    loss = -clipped_surrogate(torch.exp(logp - old_logp), adv, clip_eps)
    if ref_logp is not None and kl_beta != 0.0:
        loss = loss + kl_beta * k3_kl(logp, ref_logp)
    return loss


def aggregate_token_mean(loss: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Token mean over the support set [MG]: sum(loss * s) / sum(s); s (B, N) float weights, 0 = outside S.

    Test: loss [[1,1,1,1],[4,0,0,0]], mask [[1,1,1,1],[1,0,0,0]] -> 8 / 5 = 1.6.
    An empty support set gives 0 (with gradient graph kept), not NaN.
    """
    return (loss * support).sum() / support.sum().clamp(min=1e-12)


def aggregate_seq_mean(loss: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Mean per rollout over its support, then mean over rollouts that have any support (original GRPO).

    Test: the inputs above -> (1 + 4) / 2 = 2.5.
    """
    per_row = (loss * support).sum(dim=1) / support.sum(dim=1).clamp(min=1e-12)  # (B,)
    has = (support.sum(dim=1) > 0).to(loss.dtype)
    return (per_row * has).sum() / has.sum().clamp(min=1.0)


def remask_ratio(m: int, mu: int, min_mask_rate: float) -> float:
    """MaskGRPO's increasing mask ratio for inner update m (1-based) [MG], docs/method.md 2:

    ratio_m = min(m_min + (1 - m_min) * m / mu, 0.999). Test: m_min 0.6, mu 4 -> 0.7, 0.8, 0.9, 0.999.
    """
    if not 1 <= m <= mu:
        raise ValueError(f"inner update index m={m} outside 1..{mu}")
    return min(min_mask_rate + (1.0 - min_mask_rate) * m / mu, 0.999)


def code_logprobs(code_logits: torch.Tensor, codes: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """log pi(x^k | context) over the image-code slice: log_softmax(z)[x], in fp32 (docs/method.md 1).

    code_logits: (R, N, K) logits restricted to the K image codes, one row per distinct model input; codes: (B, N)
    in [0, K); rows: the input row each rollout reads, (B,) for one row per rollout or (B, N) for one row per token
    (trajectory contexts), None when R == B and rollout i reads row i. Several rollouts may share one row (HT-GRPO:
    the G rollouts of a prompt share one fully masked context): the shared log-softmax is computed once and
    gathered per rollout without materialising a (B, N, K) copy. Returns (B, N).
    Test: logits [0, 0, ln 2], code 2 -> ln 0.5 = -0.693147.
    """
    logp = torch.log_softmax(code_logits.float(), dim=-1)  # (R, N, K)
    if rows is None:
        return logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1)  # (B, N)
    pos = torch.arange(codes.shape[1], device=codes.device)
    rows = rows if rows.dim() == 2 else rows[:, None]  # (B, N) or (B, 1)
    return logp[rows, pos[None, :], codes]  # (B, N)
