"""Which micro-batches share one model forward (and one backward) in the old / reference pass and the inner updates.

A micro-batch is ``rl.micro_batch_prompts`` whole prompt groups; its loss is aggregated over its own support set,
exactly as before. What this module decides is only how many micro-batches go through the network together:
consecutive micro-batches are merged while the distinct input rows they read stay within ``max_rows``, the rows one
micro-batch of a per-rollout context forwards (``micro_batch_prompts * G``, the activation memory the config already
budgets for). So a per-rollout context (MaskGRPO's random re-masking) keeps one micro-batch per forward, while a
context whose G rollouts share one row per prompt (HT-GRPO's fully masked canvas) forwards up to G micro-batches'
rows at once: with 3 prompts per GPU, all of them in one forward per update. A micro-batch is never split, so a
context with more rows than ``max_rows`` per micro-batch (TraceGRPO) keeps one micro-batch per forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from maskgrpo.algo.types import ModelInput


@dataclass(frozen=True)
class ForwardGroup:
    """Consecutive micro-batches forwarded together.

    rollouts: (b,) long, the rollout indices of the group's micro-batches, concatenated in micro-batch order.
    parts:    (start, end) offsets into ``rollouts``, one per micro-batch (its loss is computed on that slice).
    rows:     distinct input rows the group reads (= model rows of its forward).
    """

    rollouts: torch.Tensor
    parts: tuple[tuple[int, int], ...]
    rows: int


def distinct_rows(rows: torch.Tensor, sel: torch.Tensor) -> int:
    """Distinct input rows read by rollouts ``sel``; rows is (B,) (one row per rollout) or (B, N) (per token)."""
    return int(torch.unique(rows[sel]).numel())


def forward_groups(rows: torch.Tensor, micro_batches: list[torch.Tensor], max_rows: int) -> list[ForwardGroup]:
    """Greedy merge of consecutive micro-batches while the merged group reads <= ``max_rows`` distinct rows.

    rows: ModelInput.rows, (B,) or (B, N) long; micro_batches: rollout indices (b_i,) of each micro-batch, in order.
    A micro-batch that alone exceeds ``max_rows`` forms its own group. Test: tests/test_round_cost.py
    (shared rows: 4 micro-batches of 1 row each with max_rows 3 -> groups of 3 and 1; per-rollout rows -> 4 groups).
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    groups: list[ForwardGroup] = []
    current: list[torch.Tensor] = []
    for mb in micro_batches:
        if current and distinct_rows(rows, torch.cat([*current, mb])) > max_rows:
            groups.append(_group(rows, current))
            current = []
        current.append(mb)
    if current:
        groups.append(_group(rows, current))
    return groups


def _group(rows: torch.Tensor, mbs: list[torch.Tensor]) -> ForwardGroup:
    sel = torch.cat(mbs)
    ends = torch.tensor([len(m) for m in mbs]).cumsum(0).tolist()
    parts = tuple(zip([0, *ends[:-1]], ends))
    return ForwardGroup(sel, parts, distinct_rows(rows, sel))


@dataclass(frozen=True)
class ForwardPass:
    """One model forward and the micro-batches it serves.

    rollouts: (b,) long, rollout indices, micro-batch order; logp: (b, N) their log-probs from this forward;
    parts: (start, end) per micro-batch into both; last: the input's last pass (the gradient-accumulation boundary).
    """

    rollouts: torch.Tensor
    logp: torch.Tensor
    parts: tuple[tuple[int, int], ...]
    last: bool


class Forwards:
    """A round's forward grouping, computed once: per model input of the plan, the micro-batch groups that share one
    forward (``forward_groups`` with ``max_rows``). ``passes(i, logp_of)`` runs them in order."""

    def __init__(self, inputs: list[ModelInput], micro_batches: list[torch.Tensor], max_rows: int) -> None:
        self.groups = [forward_groups(inp.rows, micro_batches, max_rows) for inp in inputs]

    def count(self, index: int) -> int:
        """Forwards of one pass over input ``index`` (every rollout once)."""
        return len(self.groups[index])

    def passes(self, index: int, logp_of: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[ForwardPass]:
        """One ForwardPass per group of input ``index``; ``logp_of(rollouts) -> (b, N)`` is the forward."""
        groups = self.groups[index]
        for k, g in enumerate(groups):
            yield ForwardPass(g.rollouts, logp_of(g.rollouts), g.parts, k == len(groups) - 1)
