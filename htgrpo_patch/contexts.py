"""Differs from the baseline ``random_remask`` context in: the context is the fully masked canvas x_M with the
prompt, for every token, update and rollout (docs/method.md 3.5, Eq. 9/19/24), so every token may be scored in every
update; which of them train is the staged loss's choice (``htgrpo_patch.loss``, the round's plan).

The model input then depends on the prompt only, so all G rollouts of a prompt share ONE input row: old and
reference log-probs take one no-grad forward per unique prompt per round, and each inner update one forward per
unique prompt, every rollout's log-probs gathered from the shared log-softmax (the trainer forwards each distinct
row once).

``revealed_structure`` (paper ablation A5) evaluates the ratio with each rollout's structural tokens revealed, for
the tokens that are still masked in that context. Like every context builder it keeps the rule that a token is
never scored at a slot that is visible in its own input row (tests/test_context_rule.py): the structural tokens
read their log-probs from the prompt's shared fully masked row, the refinement tokens from the rollout's
revealed-structure row (per-token rows, as the trace context does).
"""

from __future__ import annotations

from typing import Any

import torch

from htgrpo_patch.config import HTGRPOOptions, options_or_defaults
from htgrpo_patch.equations import stage_token_sets
from maskgrpo.algo.types import ContextUpdate, ModelInput, Rollouts, RoundContexts
from maskgrpo.catalog import CONTEXTS


class FullyMasked:
    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        p = rollouts.prompts  # (P, T) rows, image slots already masked: exactly x_M with the prompt
        every = torch.ones(rollouts.codes.shape, device=rollouts.codes.device)  # (B, N) all image tokens
        inp = ModelInput(p.input_ids, p.attention_mask, rollouts.prompt_of_rollout())
        return RoundContexts([inp], [ContextUpdate(0, every) for _ in range(num_updates)])


class RevealedStructure:
    """Ablation A5: rows [0, P) = x_M per prompt, rows [P, P + B) = rollout i's structural tokens (rank <= K)
    revealed. Token k of rollout i reads row prompt(i) if it is structural, else row P + i: never its own code."""

    def __init__(self, structure_ratio: float) -> None:
        self.structure_ratio = structure_ratio

    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        if "rank" not in rollouts.extras:
            raise ValueError("context revealed_structure needs generation ranks: use rl.sampler_wrapper: ranked")
        p = rollouts.prompts
        prompt = rollouts.prompt_of_rollout()  # (B,)
        structure, _ = stage_token_sets(rollouts.extras["rank"], self.structure_ratio)  # (B, N)
        revealed = p.input_ids[prompt].clone()  # (B, T)
        revealed[:, p.image_positions] = torch.where(structure, rollouts.image_ids(), p.mask_id)
        ids = torch.cat([p.input_ids, revealed])  # (P + B, T)
        attn = torch.cat([p.attention_mask, p.attention_mask[prompt]])  # (P + B, T)
        own = p.input_ids.shape[0] + torch.arange(rollouts.num_rollouts, device=ids.device)  # (B,) row P + i
        rows = torch.where(structure, prompt[:, None], own[:, None])  # (B, N) per-token row
        every = torch.ones(rollouts.codes.shape, device=rollouts.codes.device)
        return RoundContexts([ModelInput(ids, attn, rows)], [ContextUpdate(0, every) for _ in range(num_updates)])


@CONTEXTS.register("fully_masked")
def _fully_masked(cfg: Any, options: HTGRPOOptions | None) -> FullyMasked:
    return FullyMasked()


@CONTEXTS.register("revealed_structure")
def _revealed(cfg: Any, options: HTGRPOOptions | None) -> RevealedStructure:
    return RevealedStructure(options_or_defaults(options).structure_ratio)
