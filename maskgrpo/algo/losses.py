"""Policy losses, registered by name; each composes the pure functions of ``maskgrpo.algo.equations``.

Signature (all losses): ``loss(inputs: LossInputs) -> (scalar loss, metrics)``; metric keys under ``policy/``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from maskgrpo.algo.equations import aggregate_seq_mean, aggregate_token_mean, k3_kl, token_loss
from maskgrpo.algo.types import LossInputs
from maskgrpo.registry import Registry

AGGREGATIONS = {"token_mean": aggregate_token_mean, "seq_mean": aggregate_seq_mean}


class PolicyLoss(Protocol):
    reductions: dict[str, str]
    """Metric key -> how the trainer reduces it over the micro-batches that reported it (``maskgrpo.algo.
    metric_reduce.REDUCTIONS``: mean, max); keys not named reduce by mean."""

    def __call__(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


POLICY_REDUCTIONS = {"policy/ratio_max": "max"}
"""Reductions of ``policy_metrics``' keys that are not a mean (a loss that renames them declares the new keys)."""


LOSSES: Registry[Any] = Registry("policy loss")
"""name -> factory(cfg: TrainRun, options: the preset's typed patch options or None) -> PolicyLoss."""


@torch.no_grad()
def policy_metrics(
    x: LossInputs, adv: torch.Tensor, clip_eps: float, support: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Clip fraction, ratio mean / max and k3 KL over the support set (0-d tensors: no device sync here)."""
    s = (x.support if support is None else support) > 0
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
    """Clipped surrogate + beta * k3 KL, A_hat = A_i for every token of rollout i (method.md 1 [GRPO] / [MG])."""

    def __init__(self, clip_eps: float, kl_beta: float, aggregation: str) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; valid: {sorted(AGGREGATIONS)}")
        self.clip_eps, self.kl_beta, self.aggregate = clip_eps, kl_beta, AGGREGATIONS[aggregation]
        self.reductions = dict(POLICY_REDUCTIONS)

    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        adv = x.advantages[:, None].expand_as(x.logp)  # (b, N): A_hat = A_i
        per_token = token_loss(x.logp, x.old_logp, x.ref_logp, adv, self.clip_eps, self.kl_beta)
        return self.aggregate(per_token, x.support), policy_metrics(x, adv, self.clip_eps)


@LOSSES.register("grpo")
def _grpo(cfg: Any, options: Any = None) -> GRPOLoss:
    return GRPOLoss(cfg.rl.clip_eps, cfg.rl.kl_beta, cfg.rl.aggregation)
