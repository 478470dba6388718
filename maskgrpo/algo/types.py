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
class ContextUpdate:
    """What a context builder says about inner update m: the input it reads and the tokens that may be scored there.

    input_index: which ``RoundContexts.inputs`` entry the update reads.
    scorable:    (B, N) float, 0 = the token must not be scored in this context (e.g. it is visible in its row);
                 > 0 = it may be, with this aggregation weight (1 plain; the upstream mask-count quirk counts masks).
    The loss then picks the tokens that train from the scorable ones (``maskgrpo.algo.plan``).
    """

    input_index: int
    scorable: torch.Tensor


@dataclass(frozen=True)
class RoundContexts:
    """A context builder's output for one round: the distinct inputs and, per inner update, what it may score."""

    inputs: list[ModelInput]
    updates: list[ContextUpdate]


@dataclass(frozen=True)
class LossInputs:
    """Everything a policy loss sees for one micro-batch of one inner update (b rollouts of the micro-batch).

    logp, old_logp:  (b, N) float32 log pi_theta / log pi_old of the committed codes in this update's context.
    ref_logp:        (b, N) float32 or None (kl_beta = 0).
    advantages:      (b,) float32 group advantages A_i.
    support:         (b, N) float, the plan's support set S: 0 = not trained, > 0 = trained with this aggregation
                     weight (maskgrpo.algo.plan.UpdatePlan.support).
    weight:          (b, N) float, the plan's advantage weights: A_hat = weight * A_i (1 for the baseline).
    stage:           the plan's label of the update (HT-GRPO: global / structure / refine), or None.
    rate:            the plan's subset rate p of the update (HT-GRPO, Eq. 8), or None.
    """

    logp: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor | None
    advantages: torch.Tensor
    support: torch.Tensor
    weight: torch.Tensor
    stage: str | None = None
    rate: float | None = None
