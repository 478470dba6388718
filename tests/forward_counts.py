"""Expected rollout forward counts, now that ``guided_code_logits`` forwards each distinct input row once.

The rollout's rows per sampler step are the distinct (prompt, canvas) conditional rows plus, with CFG, one
unconditional row per distinct canvas (the unconditional row does not see the prompt). At the first step every
canvas is fully masked: P + 1 rows for P distinct prompts instead of 2 P G.
"""

from __future__ import annotations

import torch


def max_rollout_forwards(steps: int, prompts: int, rollouts: int) -> int:
    """Upper bound for ``rollouts`` = P x G rollouts of P distinct prompts in one sampler call with CFG: P + 1 rows at
    the first step, at most 2 per rollout at each later step (fewer while canvases still coincide)."""
    return prompts + 1 + (steps - 1) * 2 * rollouts


def rollout_forwards(rollouts, steps: int, chunk: int, cfg: bool = True) -> int:
    """The exact rows forwarded to produce ``rollouts`` (maskgrpo.algo.types.Rollouts), sampled ``chunk`` rollouts
    per sampler call: the canvas before step s holds the codes committed before s (``commit_step < s``)."""
    prompt_ids = rollouts.prompts.input_ids[rollouts.prompt_of_rollout()]  # (B, T_prompt)
    total = 0
    for a in range(0, rollouts.num_rollouts, chunk):
        codes, commit, ids = (t[a : a + chunk] for t in (rollouts.codes, rollouts.commit_step, prompt_ids))
        for s in range(steps):
            canvas = torch.where(commit < s, codes, -1)  # (b, N), -1 = still masked
            total += len(torch.unique(torch.cat([ids, canvas], dim=1), dim=0))
            total += len(torch.unique(canvas, dim=0)) if cfg else 0
    return total
