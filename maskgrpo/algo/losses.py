"""Policy losses, registered by name; each composes the pure functions of ``maskgrpo.algo.equations``.

A loss has two parts, one signature for all:

- ``loss.plan(rollouts, contexts, generator) -> RoundPlan``: once per round, which of the context's scorable tokens
  train in each inner update and with which advantage weight (``maskgrpo.algo.plan``);
- ``loss(inputs: LossInputs) -> (scalar loss, metrics)``: per micro-batch, the surrogate on the plan's support;
  metric keys under ``policy/``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from maskgrpo.algo.equations import aggregate_seq_mean, aggregate_token_mean, k3_kl, token_advantages, token_loss
from maskgrpo.algo.plan import RoundPlan, UpdatePlan
from maskgrpo.algo.types import LossInputs, Rollouts, RoundContexts

AGGREGATIONS = {"token_mean": aggregate_token_mean, "seq_mean": aggregate_seq_mean}


class PolicyLoss(Protocol):
    reductions: dict[str, str]
    """Metric key -> how the trainer reduces it over the micro-batches that reported it (``maskgrpo.algo.
    metric_reduce.REDUCTIONS``: mean, max); keys not named reduce by mean."""

    def plan(self, rollouts: Rollouts, contexts: RoundContexts, generator: torch.Generator) -> RoundPlan:
        """The round's plan: per inner update, the support set and advantage weights (drawn from ``generator``)."""
        ...

    def __call__(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


POLICY_REDUCTIONS = {"policy/ratio_max": "max"}
"""Reductions of ``policy_metrics``' keys that are not a mean (a loss that renames them declares the new keys)."""


@torch.no_grad()
def policy_metrics(x: LossInputs, adv: torch.Tensor, clip_eps: float) -> dict[str, torch.Tensor]:
    """Clip fraction, ratio mean / max and k3 KL over the support set (0-d tensors: no device sync here)."""
    s = x.support > 0
    n = s.sum().clamp(min=1)
    ratio = torch.exp(x.logp - x.old_logp)
    clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
    out = {
        "policy/clip_frac": (clipped & s).sum() / n,
        "policy/ratio_mean": (ratio * s).sum() / n,
        "policy/ratio_max": torch.where(s, ratio, torch.zeros_like(ratio)).max(),
        "policy/support_frac": s.float().mean(),
    }
    if x.ref_logp is not None:
        out["policy/kl_k3"] = (k3_kl(x.logp, x.ref_logp) * s).sum() / n
    return out


class GRPOLoss:
    """Clipped surrogate + beta * k3 KL over the plan's support, A_hat = weight * A_i (docs/method.md 1 [GRPO] / [MG]).

    Its plan trains every token the context lets it score, with weight 1 (A_hat = A_i): MaskGRPO's support set is
    exactly the re-masked positions.
    """

    def __init__(self, clip_eps: float, kl_beta: float, aggregation: str) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; valid: {sorted(AGGREGATIONS)}")
        self.clip_eps, self.kl_beta, self.aggregate = clip_eps, kl_beta, AGGREGATIONS[aggregation]
        self.reductions = dict(POLICY_REDUCTIONS)

    def plan(self, rollouts: Rollouts, contexts: RoundContexts, generator: torch.Generator) -> RoundPlan:
        ones = torch.ones(rollouts.codes.shape, device=rollouts.codes.device)  # (B, N): A_hat = A_i
        return RoundPlan(contexts.inputs, [UpdatePlan(m, u.input_index, u.scorable, ones)
                                           for m, u in enumerate(contexts.updates, start=1)])  # fmt: skip

    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        adv = token_advantages(x.advantages, x.weight)  # (b, N): A_hat
        per_token = token_loss(x.logp, x.old_logp, x.ref_logp, adv, self.clip_eps, self.kl_beta)
        return self.aggregate(per_token, x.support), policy_metrics(x, adv, self.clip_eps)


def grpo_loss(cfg: Any, options: Any = None) -> GRPOLoss:
    """``rl.loss: grpo`` (maskgrpo.catalog)."""
    return GRPOLoss(cfg.rl.clip_eps, cfg.rl.kl_beta, cfg.rl.aggregation)
