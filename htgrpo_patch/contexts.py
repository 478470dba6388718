"""Differs from the baseline ``random_remask`` context in: the context is the fully masked canvas x_M with the
prompt, for every token, update and rollout (method.md 3.5, Eq. 9/19/24).

The model input then depends on the prompt only, so all G rollouts of a prompt share ONE input row: old and
reference log-probs take one no-grad forward per unique prompt per round, and each inner update one forward per
unique prompt, every rollout's log-probs gathered from the shared log-softmax (the trainer forwards each distinct
row once). ``revealed_structure`` (paper ablation A5) reveals each rollout's structural tokens instead (per-rollout
inputs, no sharing).
"""

from __future__ import annotations

from typing import Any

import torch

from htgrpo_patch.equations import stage_token_sets
from maskgrpo.algo.contexts import CONTEXTS
from maskgrpo.algo.types import ModelInput, Rollouts, RoundContexts, UpdatePlan


class FullyMasked:
    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        p = rollouts.prompts  # (P, T) rows, image slots already masked: exactly x_M with the prompt
        every = torch.ones(rollouts.codes.shape, device=rollouts.codes.device)  # (B, N) all image tokens
        inp = ModelInput(p.input_ids, p.attention_mask, rollouts.prompt_of_rollout())
        return RoundContexts([inp], [UpdatePlan(0, every) for _ in range(num_updates)])


class RevealedStructure:
    """Ablation A5: structural tokens (rank <= K) of each rollout visible, the rest masked; one row per rollout."""

    def __init__(self, structure_ratio: float) -> None:
        self.structure_ratio = structure_ratio

    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        if "rank" not in rollouts.extras:
            raise ValueError("context revealed_structure needs generation ranks: use rl.sampler_wrapper: ranked")
        p = rollouts.prompts
        rows = rollouts.prompt_of_rollout()
        ids = p.input_ids[rows].clone()  # (B, T)
        structure, _ = stage_token_sets(rollouts.extras["rank"], self.structure_ratio)  # (B, N)
        ids[:, p.image_positions] = torch.where(structure, rollouts.image_ids(), p.mask_id)
        every = torch.ones(rollouts.codes.shape, device=rollouts.codes.device)
        inp = ModelInput(ids, p.attention_mask[rows], torch.arange(len(rows), device=ids.device))
        return RoundContexts([inp], [UpdatePlan(0, every) for _ in range(num_updates)])


@CONTEXTS.register("fully_masked")
def _fully_masked(cfg: Any, options: Any) -> FullyMasked:
    return FullyMasked()


@CONTEXTS.register("revealed_structure")
def _revealed(cfg: Any, options: Any) -> RevealedStructure:
    return RevealedStructure(options.structure_ratio if options is not None else 0.3)
