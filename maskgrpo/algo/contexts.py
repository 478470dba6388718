"""Context builders: the inputs the log-probs are evaluated in, and which tokens each inner update may score.

Baseline (``random_remask``, docs/method.md 2 [MG]): inner update m re-masks every image position of every rollout
independently with probability ratio_m; the scorable tokens are the re-masked positions. Registered by name; the
patch adds its own builders to the same registry without touching this file. The loss then picks which scorable
tokens train and with which weight: the two together are the round's plan (``maskgrpo.algo.plan``).

The rule every plan keeps (docs/method.md 3.5): a token is never trained at a slot that is visible in its own input row
(:func:`trained_at_visible_slot` is all False). The one exemption is explicit: ``loss_mask: upstream_count``,
upstream MaskGRPO's quirk of weighting every token by how many of the mu masks covered it, visible ones included.
tests/test_context_rule.py checks the rule on the plan of every registered builder.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from maskgrpo.algo.equations import remask_ratio
from maskgrpo.algo.plan import RoundPlan
from maskgrpo.algo.types import ContextUpdate, ModelInput, Rollouts, RoundContexts
from maskgrpo.forward_plan import forward_groups
from maskgrpo.layout import T2IBatch


class ContextBuilder(Protocol):
    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        """All mu contexts of a round at once (old / reference log-probs are computed once per distinct input)."""
        ...


def trained_at_visible_slot(rollouts: Rollouts, plan: RoundPlan) -> torch.Tensor:
    """(mu, B, N) bool: token k of rollout i trains in update m (the plan's support) while its own input row shows a
    code (not the mask id) at slot k. The rule of every context builder and loss is that this is all False."""
    p = rollouts.prompts
    out = []
    for u in plan.updates:
        slots = plan.inputs[u.input_index].input_ids[:, p.image_positions]  # (R, N)
        shown = slots.gather(0, plan.rows(u.m)) != p.mask_id  # (B, N): slots[rows[i, k], k]
        out.append(shown & (u.support > 0))
    return torch.stack(out)  # (mu, B, N)


def remask_ratios(schedule: str, num_updates: int, min_mask_rate: float, generator: torch.Generator) -> list[float]:
    """Mask ratio of each inner update: 'increasing' [MG] or 'uniform' ~ U(m_min, 0.999) (UniGRPO)."""
    if schedule == "increasing":
        return [remask_ratio(m, num_updates, min_mask_rate) for m in range(1, num_updates + 1)]
    if schedule == "uniform":
        u = torch.rand(num_updates, generator=generator, device=generator.device).tolist()
        return [min_mask_rate + (0.999 - min_mask_rate) * x for x in u]
    raise ValueError(f"unknown remask schedule {schedule!r}; valid: ['increasing', 'uniform']")


class RandomRemask:
    """MaskGRPO's random re-masking context [MG] (docs/method.md 2). Every rollout gets its own input rows."""

    def __init__(self, schedule: str = "increasing", min_mask_rate: float = 0.6, loss_mask: str = "current") -> None:
        if loss_mask not in ("current", "upstream_count"):
            raise ValueError(f"unknown loss_mask {loss_mask!r}; valid: ['current', 'upstream_count']")
        self.schedule, self.min_mask_rate, self.loss_mask = schedule, min_mask_rate, loss_mask

    def build(self, rollouts: Rollouts, num_updates: int, generator: torch.Generator) -> RoundContexts:
        p = rollouts.prompts
        dev = rollouts.codes.device
        rows = rollouts.prompt_of_rollout()  # (B,)
        ids, attn = p.input_ids.to(dev)[rows], p.attention_mask.to(dev)[rows]  # (B, T)
        image = rollouts.image_ids()  # (B, N)
        masks = []
        for ratio in remask_ratios(self.schedule, num_updates, self.min_mask_rate, generator):
            masks.append(torch.rand(image.shape, generator=generator, device=dev) < ratio)  # (B, N)
        inputs = []
        for masked in masks:
            x = ids.clone()
            x[:, p.image_positions.to(dev)] = torch.where(masked, p.mask_id, image)  # only image slots re-masked
            inputs.append(ModelInput(x, attn, torch.arange(len(rows), device=dev)))
        if self.loss_mask == "upstream_count":  # upstream quirk: weight = how many of the mu masks covered a token
            count = torch.stack(masks).sum(0).float()  # (B, N)
            updates = [ContextUpdate(i, count) for i in range(num_updates)]
        else:
            updates = [ContextUpdate(i, m.float()) for i, m in enumerate(masks)]
        return RoundContexts(inputs, updates)


def random_remask(cfg: Any, options: Any = None) -> RandomRemask:
    """``rl.context: random_remask`` (maskgrpo.catalog)."""
    return RandomRemask(cfg.remask.schedule, cfg.remask.min_mask_rate, cfg.remask.loss_mask)


def _synthetic_round(builder: ContextBuilder, prompts: int, micro_batch_prompts: int, group_size: int,
                     num_image_tokens: int, num_steps: int,
                     num_updates: int) -> tuple[RoundContexts, list[list[int]]]:  # fmt: skip
    """The contexts ``builder`` makes for synthetic rollouts in which every one of ``num_steps`` sampler steps commits
    tokens (the most trajectory rows) and ranks follow the commit order, and per context input the rows of each
    forward group, grouped as the trainer groups its micro-batches (``maskgrpo.forward_plan.forward_groups``)."""
    b, n = prompts * group_size, num_image_tokens
    ids = torch.ones(prompts, n + 2, dtype=torch.long)  # (P, T): id 1 = the mask id; ids 0 / 1 code / mask
    ids[:, [0, -1]] = 2  # one text slot each side
    attn = torch.ones_like(ids, dtype=torch.bool)
    batch = T2IBatch(ids, attn, ids, attn, torch.arange(1, n + 1), code_offset=0, codebook_size=1, mask_id=1)
    step = (torch.arange(n) % num_steps).expand(b, n)  # (B, N) every step commits
    rank = (step * n + torch.arange(n)).argsort(1).argsort(1) + 1  # (B, N) commit order, raster ties
    rollouts = Rollouts(batch, group_size, torch.zeros(b, n, dtype=torch.long), step, torch.zeros(b, n),
                        {"rank": rank})  # fmt: skip
    ctx = builder.build(rollouts, num_updates, torch.Generator().manual_seed(0))
    mb = micro_batch_prompts * group_size
    micro_batches = [torch.arange(s, min(s + mb, b)) for s in range(0, b, mb)]
    return ctx, [[g.rows for g in forward_groups(inp.rows, micro_batches, mb)] for inp in ctx.inputs]


def forward_rows(builder: ContextBuilder, prompts: int, micro_batch_prompts: int, group_size: int,
                 num_image_tokens: int, num_steps: int, num_updates: int) -> tuple[int, int]:  # fmt: skip
    """(update rows, old/ref rows): the most model-input rows one forward reads on a rank with ``prompts`` prompts,
    in an inner update and in an old / reference pass, as the trainer groups its micro-batches
    (``maskgrpo.forward_plan.forward_groups``: whole micro-batches merged while <= micro_batch_prompts * G rows).
    Measured by building ``builder``'s contexts on synthetic rollouts in which every one of ``num_steps`` sampler
    steps commits tokens (the most trajectory rows) and ranks follow the commit order. With 3 prompts per rank and
    one per micro-batch: MaskGRPO G; HT-GRPO 3 (one shared row per prompt); A5 1 + G; TraceGRPO G * ceil(T / shrink).
    """
    ctx, groups = _synthetic_round(builder, prompts, micro_batch_prompts, group_size, num_image_tokens, num_steps,
                                   num_updates)  # fmt: skip
    rows = [max(g) for g in groups]
    return max(rows[u.input_index] for u in ctx.updates), max(rows)


def round_rows(builder: ContextBuilder, prompts: int, micro_batch_prompts: int, group_size: int,
               num_image_tokens: int, num_steps: int, num_updates: int) -> tuple[int, int]:  # fmt: skip
    """(update rows, pass rows) of a whole round on a rank: model rows through forward + backward over the
    ``num_updates`` inner updates, and model rows of one no-grad pass over every distinct context (the old
    log-probs; the reference pass reads as many again). Same synthetic rollouts as :func:`forward_rows`. With 3
    prompts per rank, G = 9, mu = 8: MaskGRPO (8 x 27, 8 x 27), HT-GRPO (8 x 3, 3)."""
    ctx, groups = _synthetic_round(builder, prompts, micro_batch_prompts, group_size, num_image_tokens, num_steps,
                                   num_updates)  # fmt: skip
    return sum(sum(groups[u.input_index]) for u in ctx.updates), sum(sum(g) for g in groups)
