"""TraceGRPO baseline [Trace] (docs/method.md 4): trajectory-recording contexts, as the HT paper ran it.

The context of token k of rollout i is the true sampler state just before k was committed: positions with commit
step >= t_i(k) masked, the rest showing the rollout's codes (docs/models.md 3.4, the "step map"). With ``shrink`` > 1,
``shrink`` consecutive sampler steps share one context, the state before the group's first step. The support set
is every image token with weight 1 and the loss is the baseline ``grpo`` (A_hat = A_i), so a TraceGRPO run is
``rl.context: trace`` + ``rl.loss: grpo`` (configs/toy_tracegrpo.yaml).

Rows: one ModelInput whose rows are the (rollout, step group) pairs that hold at least one committed token,
R <= B * ceil(T / shrink); ``rows`` is per token (B, N), so each token reads its log-prob from the context of its
own step group. The trainer forwards every distinct row of a micro-batch once, so one update costs
T / shrink forwards per rollout (versus 1 for MaskGRPO and 1 / G for HT-GRPO), and old + reference log-probs
2 * R no-grad forwards per round (the same contexts serve every inner update).

Symbols (docs/method.md): t_i(k) = ``commit_step[i, k]``, T = sampler steps, s = ``shrink``, group g(k) = t(k) // s,
group start = g * s.
"""

from __future__ import annotations

from typing import Any

import torch

from maskgrpo.algo.types import ContextUpdate, ModelInput, Rollouts, RoundContexts


def trajectory_rows(commit_step: torch.Tensor, shrink: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (rollout, step group) rows of a trajectory context and each token's row [Trace] (docs/method.md 4).

    commit_step: (B, N) long, t_i(k) in [0, T). A token's group is g = t // shrink; the rows are the distinct
    (i, g) pairs that occur, sorted by rollout then group (empty groups get no row). Returns
    rows (B, N) long in [0, R): the row of every token; row_rollout (R,) long: i of each row; row_start (R,) long:
    the first sampler step of each row's group, g * shrink.
    Test: tests/test_tracegrpo.py::test_trajectory_rows_shrink_grouping (T = 4, shrink 2 -> starts 0 and 2).
    """
    if shrink < 1:
        raise ValueError(f"shrink must be >= 1, got {shrink}")
    group = commit_step // shrink  # (B, N)
    n_groups = int(group.max()) + 1 if group.numel() else 1
    rollout = torch.arange(commit_step.shape[0], device=commit_step.device)[:, None]  # (B, 1)
    uniq, rows = torch.unique(rollout * n_groups + group, return_inverse=True)  # (R,), (B, N); uniq sorted
    return rows, uniq // n_groups, (uniq % n_groups) * shrink


def sampler_state_masked(commit_step: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Which image slots are still masked just before sampler step ``start`` (docs/models.md 3.4, the step map).

    commit_step: (R, N) long; start: (R,) long. Slot k is masked iff t(k) >= start: it is committed at or after
    that step. Returns (R, N) bool. start = 0 gives the fully masked canvas x_M.
    """
    return commit_step >= start[:, None]  # (R, N)


class TraceContext:
    """TraceGRPO's trajectory context [Trace] (docs/method.md 4): one row per (rollout, group of ``shrink`` steps).

    Every inner update uses the same input and may score every token (weight 1); the contexts depend only on
    the rollouts, so the generator is not used.
    """

    def __init__(self, shrink: int = 1) -> None:
        if shrink < 1:
            raise ValueError(f"trace.shrink must be >= 1, got {shrink}")
        self.shrink = shrink

    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        p = rollouts.prompts
        dev = rollouts.codes.device
        rows, row_rollout, row_start = trajectory_rows(rollouts.commit_step, self.shrink)  # (B, N), (R,), (R,)
        masked = sampler_state_masked(rollouts.commit_step[row_rollout], row_start)  # (R, N)
        prompt = rollouts.prompt_of_rollout()[row_rollout]  # (R,) prompt row of each context row
        ids = p.input_ids.to(dev)[prompt].clone()  # (R, T)
        ids[:, p.image_positions.to(dev)] = torch.where(masked, p.mask_id, rollouts.image_ids()[row_rollout])
        inp = ModelInput(ids, p.attention_mask.to(dev)[prompt], rows)
        every = torch.ones(rollouts.codes.shape, device=dev)  # (B, N): every token scorable, weight 1
        return RoundContexts([inp], [ContextUpdate(0, every) for _ in range(num_updates)])


def trace_context(cfg: Any, options: Any = None) -> TraceContext:
    """``rl.context: trace`` (maskgrpo.catalog)."""
    return TraceContext(cfg.trace.shrink)
