"""The round's update plan: for every inner update m, which tokens train, read from which input row, weighted how.

This is the one place that answers "in update m of a round, which tokens are trained, under which input row, with
which weight?". It is built once per round, right after the rewards, in two steps:

1. the **context builder** (``rl.context``; ``maskgrpo.algo.contexts``, ``htgrpo_patch.contexts``) makes the
   distinct model inputs and says, per update, which input it reads and which tokens may be scored there
   (``RoundContexts``: a token visible in its own input row is never scorable);
2. the **loss** (``rl.loss``) turns that into the plan with ``loss.plan(rollouts, contexts, generator)``: the
   baseline ``grpo`` trains every scorable token with advantage weight 1; HT-GRPO's ``ht_staged``
   (``htgrpo_patch.loss``) trains a random subset of the active stage's tokens with credit weights w_s / w_r.

The trainer then only executes the plan: old / reference log-probs once per distinct input row, and in update m
the loss of ``LossInputs(support=plan.updates[m-1].support, weight=..., ...)`` per micro-batch.
``python -m maskgrpo.explain CONFIG`` prints one round's plan. Tests: tests/test_context_rule.py (the rule on the
support that trains), tests/test_htgrpo_stages.py (stages, subsets, weights), tests/test_bit_identical.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from maskgrpo.algo.types import ModelInput, Rollouts


@dataclass(frozen=True)
class UpdatePlan:
    """Inner update m of a round. B rollouts on this rank, N image tokens each.

    m:           1-based index of the update (1..mu).
    input_index: which ``RoundPlan.inputs`` entry the update reads; ``RoundPlan.rows(m)`` gives every token's row.
    support:     (B, N) float, the support set S: 0 = the token does not train in this update; > 0 = it trains,
                 the value being its weight in the aggregation (1 plain; upstream_count: how many masks covered it).
    weight:      (B, N) float, the advantage weight: A_hat = weight * A_i (1 for MaskGRPO; w_s / w_r for HT-GRPO).
    stage:       a label of the update for metrics and tables (HT-GRPO: global / structure / refine), or None.
    rate:        the subset rate p the support was drawn with (HT-GRPO Eq. 8), or None.
    """

    m: int
    input_index: int
    support: torch.Tensor
    weight: torch.Tensor
    stage: str | None = None
    rate: float | None = None


@dataclass(frozen=True)
class RoundPlan:
    """One round's plan: the distinct model inputs and the mu updates that read them."""

    inputs: list[ModelInput]
    updates: list[UpdatePlan]

    def rows(self, m: int) -> torch.Tensor:
        """(B, N) long: the input row (of ``inputs[input_index]``) every token of every rollout reads in update m."""
        u = self.updates[m - 1]
        rows = self.inputs[u.input_index].rows
        return rows if rows.dim() == 2 else rows[:, None].expand_as(u.support)

    def describe(self, context: str) -> list[dict[str, Any]]:
        """One row per update: stage, context, distinct input rows, mean tokens trained per rollout, mean weight over
        the trained tokens, subset rate (``python -m maskgrpo.explain``)."""
        out = []
        for u in self.updates:
            trained = u.support > 0  # (B, N)
            n = int(trained.sum())
            out.append({
                "m": u.m, "stage": u.stage or "-", "context": f"{context}[{u.input_index}]",
                "rows": int(torch.unique(self.rows(u.m)[trained]).numel()) if n else 0,
                "tokens_per_rollout": n / trained.shape[0],
                "mean_weight": float((u.weight * trained).sum()) / max(n, 1),
                "rate": u.rate,
            })  # fmt: skip
        return out


def plan_round(context: Any, loss: Any, rollouts: Rollouts, num_updates: int,
               generators: Mapping[str, torch.Generator]) -> RoundPlan:  # fmt: skip
    """Step 5 of the round: the context builder's inputs (``generators["context"]``), then the loss's choice of
    the tokens that train and their weights (``generators["loss"]``)."""
    contexts = context.build(rollouts, num_updates, generators["context"])
    return loss.plan(rollouts, contexts, generators["loss"])
