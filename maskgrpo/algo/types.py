"""The data that flows between the RL loop's stages, with shapes (swap-point inputs and outputs).

B = rollouts on this rank = P * G (rows [kG, (k+1)G) are the G rollouts of prompt k), N image slots, T tokens,
R = rows of one model input (B for per-rollout contexts, P when the G rollouts of a prompt share one context).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from maskgrpo.layout import T2IBatch


@dataclass(frozen=True)
class Rollouts:
    """One round's rollouts on this rank, produced with the policy frozen as pi_old.

    prompts:        T2IBatch with P rows (one per prompt), image slots masked.
    group_size:     G.
    codes:          (B, N) long in [0, K).
    commit_step:    (B, N) long, sampler step at which each slot was committed.
    logp_at_commit: (B, N) float32, behaviour log-prob under the guided sampler distribution.
    extras:         sampler-specific (B, N) tensors, e.g. "rank" from a ranked sampler.
    """

    prompts: T2IBatch
    group_size: int
    codes: torch.Tensor
    commit_step: torch.Tensor
    logp_at_commit: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_rollouts(self) -> int:
        return int(self.codes.shape[0])

    def prompt_of_rollout(self) -> torch.Tensor:
        """(B,) long: index of the prompt row of each rollout."""
        return torch.arange(self.num_rollouts, device=self.codes.device) // self.group_size

    def image_ids(self) -> torch.Tensor:
        """(B, N) vocabulary ids of the committed codes."""
        return self.codes + self.prompts.code_offset


@dataclass(frozen=True)
class ModelInput:
    """One distinct set of model input rows of a round; rollouts read their log-probs from ``rows``.

    input_ids:      (R, T) long; attention_mask: (R, T) bool.
    rows:           (B,) long, the input row of each rollout (shared rows = one forward serves several rollouts),
                    or (B, N) long, the input row of each token (trajectory contexts: one row per commit step).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor


@dataclass(frozen=True)
class UpdatePlan:
    """What inner update m (1-based) uses: which ModelInput, and the support-set weights of every token.

    support: (B, N) float, 0 = not in the support set S; 1 for plain membership (other values weight tokens,
             e.g. the upstream mask-count quirk).
    """

    input_index: int
    support: torch.Tensor


@dataclass(frozen=True)
class RoundContexts:
    """A context builder's output for one round: the distinct inputs and, per inner update, the plan."""

    inputs: list[ModelInput]
    updates: list[UpdatePlan]


@dataclass(frozen=True)
class LossInputs:
    """Everything a policy loss sees for one micro-batch of one inner update (b rollouts of the micro-batch).

    logp, old_logp:  (b, N) float32 log pi_theta / log pi_old of the committed codes in this update's context.
    ref_logp:        (b, N) float32 or None (kl_beta = 0).
    advantages:      (b,) float32 group advantages A_i.
    support:         (b, N) float support weights from the context builder.
    update_index:    m, 1-based; num_updates: mu.
    extras:          (b, N) rollout extras (e.g. "rank").
    generator:       for losses that draw random subsets (dedicated, checkpointed).
    """

    logp: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor | None
    advantages: torch.Tensor
    support: torch.Tensor
    update_index: int
    num_updates: int
    extras: dict[str, torch.Tensor]
    generator: torch.Generator
