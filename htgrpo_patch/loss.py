"""Differs from the baseline ``grpo`` loss in: the support set is a random subset of the active stage's tokens
(Global -> Structure -> Refinement, Eq. 6-8) and the advantage is credit-weighted per token, A_hat = w * A
(Eq. 10); the KL term is unweighted and the aggregation is the baseline's (method.md 3.7, Eq. 11).
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
from maskgrpo.algo.losses import AGGREGATIONS, LOSSES, policy_metrics
from maskgrpo.algo.types import LossInputs


class StagedCreditLoss:
    def __init__(self, clip_eps: float, kl_beta: float, aggregation: str, options: HTGRPOOptions) -> None:
        self.clip_eps, self.kl_beta, self.aggregate = clip_eps, kl_beta, AGGREGATIONS[aggregation]
        self.o = options

    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.o
        if "rank" not in x.extras:
            raise ValueError("loss ht_staged needs generation ranks: use rl.sampler_wrapper: ranked")
        if x.num_updates != sum(o.budgets):
            raise ValueError(f"patch_options.budgets {o.budgets} must sum to rl.num_inner_updates={x.num_updates}")
        rank = x.extras["rank"]  # (b, N)
        stage, j, mu_stage = stage_of_update(x.update_index, o.budgets)  # Eq. 6
        structure, refine = stage_token_sets(rank, o.structure_ratio)  # Eq. 7
        stage_set = {GLOBAL: torch.ones_like(structure), STRUCTURE: structure}.get(stage, refine)
        p = subset_rate(j, mu_stage, o.p_max, o.p_min, o.schedule)  # Eq. 8
        support = draw_subset(stage_set & (x.support > 0), p, o.subset, x.generator).to(x.support.dtype) * x.support
        w = credit_weights(rank, o.structure_ratio, o.weight_structure, o.weight_refine).to(x.logp.device)  # Eq. 10
        adv = weighted_advantage(x.advantages, w)  # (b, N) A_hat
        per_token = token_loss(x.logp, x.old_logp, x.ref_logp, adv, self.clip_eps, self.kl_beta)
        metrics = policy_metrics(x, adv, self.clip_eps, support)
        metrics.update({
            "stage/index": torch.tensor(float(STAGES.index(stage))), "stage/j": torch.tensor(float(j)),
            "stage/p": torch.tensor(p), "stage/active_frac": (support > 0).float().mean(),
            "stage/mean_weight": (w * (support > 0)).sum() / (support > 0).sum().clamp(min=1),
        })  # fmt: skip
        return self.aggregate(per_token, support), metrics


@LOSSES.register("ht_staged")
def _ht_staged(cfg: Any, options: HTGRPOOptions | None) -> StagedCreditLoss:
    if options is None:
        raise ValueError("rl.loss ht_staged needs patch: htgrpo (its options come from patch_options)")
    return StagedCreditLoss(cfg.rl.clip_eps, cfg.rl.kl_beta, cfg.rl.aggregation, options)
