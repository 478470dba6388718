"""Differs from the baseline ``grpo`` loss in its plan: in inner update m the support set is a random subset of the
active stage's tokens (Global -> Structure -> Refinement, Eq. 6-8) and every token's advantage is credit-weighted,
A_hat = w * A (Eq. 10). The per-token surrogate, the unweighted KL term and the aggregation are the baseline's
(docs/method.md 3.7, Eq. 11), so the whole difference is data in the round's plan (``maskgrpo.algo.plan``).

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
)
from maskgrpo.algo.losses import POLICY_REDUCTIONS, GRPOLoss
from maskgrpo.algo.plan import RoundPlan, UpdatePlan
from maskgrpo.algo.types import LossInputs, Rollouts, RoundContexts
from maskgrpo.catalog import LOSSES


def stage_metrics(x: LossInputs, policy: dict[str, torch.Tensor], loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """``stage/<stage>/*`` of one micro-batch: the policy metrics renamed, the loss, mean weight over S and p."""
    s = x.support > 0  # (b, N)
    out = {f"stage/{x.stage}/{k.split('/', 1)[1]}": v for k, v in policy.items()}
    out[f"stage/{x.stage}/loss"] = loss.detach()
    out[f"stage/{x.stage}/mean_weight"] = (x.weight * s).sum() / s.sum().clamp(min=1)
    out[f"stage/{x.stage}/p"] = torch.tensor(x.rate)
    return out


class StagedCreditLoss(GRPOLoss):
    def __init__(self, clip_eps: float, kl_beta: float, aggregation: str, options: HTGRPOOptions) -> None:
        super().__init__(clip_eps, kl_beta, aggregation)
        self.o = options
        stage_max = {f"stage/{s}/{k.split('/', 1)[1]}": r for s in STAGES for k, r in POLICY_REDUCTIONS.items()}
        self.reductions = {**POLICY_REDUCTIONS, **stage_max}  # ratio_max reduces by max, the rest by mean

    def plan(self, rollouts: Rollouts, contexts: RoundContexts, generator: torch.Generator) -> RoundPlan:
        """Update m: stage (Eq. 6), its token set (Eq. 7), a fresh subset at rate p (Eq. 8) of the tokens the
        context may score, and the credit weights (Eq. 10), the same for every update."""
        o = self.o
        if "rank" not in rollouts.extras:
            raise ValueError("loss ht_staged needs generation ranks: use rl.sampler_wrapper: ranked")
        if len(contexts.updates) != sum(o.budgets):
            raise ValueError(f"patch_options.budgets {o.budgets} must sum to rl.num_inner_updates="
                             f"{len(contexts.updates)}")  # fmt: skip
        rank = rollouts.extras["rank"]  # (B, N)
        structure, refine = stage_token_sets(rank, o.structure_ratio)  # Eq. 7, (B, N) each
        token_sets = {GLOBAL: torch.ones_like(structure), STRUCTURE: structure}
        w = credit_weights(rank, o.structure_ratio, o.weight_structure, o.weight_refine).to(rank.device)  # Eq. 10
        updates = []
        for m, u in enumerate(contexts.updates, start=1):
            stage, j, mu_stage = stage_of_update(m, o.budgets)  # Eq. 6
            p = subset_rate(j, mu_stage, *o.rates(stage), o.schedule)  # Eq. 8
            picked = draw_subset(token_sets.get(stage, refine) & (u.scorable > 0), p, o.subset, generator)  # (B, N)
            updates.append(UpdatePlan(m, u.input_index, picked.to(u.scorable.dtype) * u.scorable, w, stage, p))
        return RoundPlan(contexts.inputs, updates)

    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, metrics = super().__call__(x)
        metrics.update(stage_metrics(x, metrics, loss))
        return loss, metrics


@LOSSES.register("ht_staged")
def _ht_staged(cfg: Any, options: HTGRPOOptions | None) -> StagedCreditLoss:
    if options is None:
        raise ValueError("rl.loss ht_staged needs patch: htgrpo (its options come from patch_options)")
    return StagedCreditLoss(cfg.rl.clip_eps, cfg.rl.kl_beta, cfg.rl.aggregation, options)
