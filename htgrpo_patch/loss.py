"""Differs from the baseline ``grpo`` loss in: the support set is a random subset of the active stage's tokens
(Global -> Structure -> Refinement, Eq. 6-8) and the advantage is credit-weighted per token, A_hat = w * A
(Eq. 10); the KL term is unweighted and the aggregation is the baseline's (method.md 3.7, Eq. 11).

Metrics: the baseline's ``policy/*`` over the support set, plus ``stage/<stage>/*`` (global, structure, refine)
reported only by the updates of that stage, so the trainer's per-round average of a key is over that stage's
updates: loss, clip_frac, ratio_mean, ratio_max, kl_k3, support_frac, mean_weight (mean credit weight over the
support) and p (the subset rate).
"""

from __future__ import annotations

from typing import Any

import torch

from htgrpo_patch.config import HTGRPOOptions
from htgrpo_patch.equations import (
    GLOBAL,
    STAGES,
    STRUCTURE,
    credit_weights,
    draw_subset,
    stage_of_update,
    stage_token_sets,
    subset_rate,
    weighted_advantage,
)
from maskgrpo.algo.equations import token_loss
from maskgrpo.algo.losses import AGGREGATIONS, LOSSES, POLICY_REDUCTIONS, policy_metrics
from maskgrpo.algo.types import LossInputs


def stage_metrics(stage: str, policy: dict[str, torch.Tensor], loss: torch.Tensor, weights: torch.Tensor,
                  support: torch.Tensor, p: float) -> dict[str, torch.Tensor]:  # fmt: skip
    """``stage/<stage>/*`` of one micro-batch: the policy metrics renamed, the loss, mean weight over S and p."""
    s = support > 0  # (b, N)
    out = {f"stage/{stage}/{k.split('/', 1)[1]}": v for k, v in policy.items()}
    out[f"stage/{stage}/loss"] = loss.detach()
    out[f"stage/{stage}/mean_weight"] = (weights * s).sum() / s.sum().clamp(min=1)
    out[f"stage/{stage}/p"] = torch.tensor(p)
    return out


class StagedCreditLoss:
    def __init__(self, clip_eps: float, kl_beta: float, aggregation: str, options: HTGRPOOptions) -> None:
        self.clip_eps, self.kl_beta, self.aggregate = clip_eps, kl_beta, AGGREGATIONS[aggregation]
        self.o = options
        stage_max = {f"stage/{s}/{k.split('/', 1)[1]}": r for s in STAGES for k, r in POLICY_REDUCTIONS.items()}
        self.reductions = {**POLICY_REDUCTIONS, **stage_max}  # ratio_max reduces by max, the rest by mean

    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.o
        if "rank" not in x.extras:
            raise ValueError("loss ht_staged needs generation ranks: use rl.sampler_wrapper: ranked")
        if x.num_updates != sum(o.budgets):
            raise ValueError(f"patch_options.budgets {o.budgets} must sum to rl.num_inner_updates={x.num_updates}")
        rank = x.extras["rank"]  # (b, N)
        stage, j, mu_stage = stage_of_update(x.update_index, o.budgets)  # Eq. 6
        structure, refine = stage_token_sets(rank, o.structure_ratio)  # Eq. 7, (b, N) each
        stage_set = {GLOBAL: torch.ones_like(structure), STRUCTURE: structure}.get(stage, refine)
        p = subset_rate(j, mu_stage, *o.rates(stage), o.schedule)  # Eq. 8
        support = draw_subset(stage_set & (x.support > 0), p, o.subset, x.generator).to(x.support.dtype) * x.support
        w = credit_weights(rank, o.structure_ratio, o.weight_structure, o.weight_refine).to(x.logp.device)  # Eq. 10
        adv = weighted_advantage(x.advantages, w)  # (b, N) A_hat
        per_token = token_loss(x.logp, x.old_logp, x.ref_logp, adv, self.clip_eps, self.kl_beta)
        loss = self.aggregate(per_token, support)
        metrics = policy_metrics(x, adv, self.clip_eps, support)
        metrics.update(stage_metrics(stage, metrics, loss, w, support, p))
        return loss, metrics


@LOSSES.register("ht_staged")
def _ht_staged(cfg: Any, options: HTGRPOOptions | None) -> StagedCreditLoss:
    if options is None:
        raise ValueError("rl.loss ht_staged needs patch: htgrpo (its options come from patch_options)")
    return StagedCreditLoss(cfg.rl.clip_eps, cfg.rl.kl_beta, cfg.rl.aggregation, options)
