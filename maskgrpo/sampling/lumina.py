"""Lumina-DiMOO's T2I sampler (models.md 5 "Sampler"; MaskGIT-style parallel decoding, Chang et al. 2022, Sec. 3.2).

Each step s = 0..T-1, with n0 = N slots masked at the start and n the slots still masked before the step::

    keep = max(1, floor(n0 * gamma((s+1)/T)))  if s < T-1  else 0         # gamma(r) = cos(pi r / 2), fp32
    z    = (1 + w) z_cond - w z_uncond  over the code slice                 # the shared MUSE form (docs/models.md 3.1)
    x    = argmax(z / tau + G)                                             # Gumbel-max draw at temperature tau
    conf = softmax(z)[x]                                                   # confidence WITHOUT temperature
    score = log(max(conf, 1e-20)) + tau * G'                               # constant ranking temperature
    re-mask the k = clamp(keep, 0, n - 1) lowest scores among the masked slots; commit the rest

Versus MMaDA's MaskGIT rule (``maskgrpo.sampling.maskgit``): temperature on the draw, a constant (not decaying)
ranking temperature, ranking among masked slots only, and every remaining slot committed at the last step.
The guidance formula of upstream's generator is (1 + w) z_cond - w z_uncond, identical to ``guided_code_logits``.
Behaviour log-prob at commit: log softmax(z / tau)(x).

Only the N code slots of ``batch.image_positions`` are touched: Lumina's newline tokens sit between image rows,
outside ``image_positions``, so they are never masked, sampled or ranked, and ranks cover image codes only.

Upstream stops early once nothing is masked, which can only happen when T exceeds N. This sampler keeps one
forward per step like the other samplers (the extra steps commit nothing, so the output is the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskgrpo.layout import T2IBatch
from maskgrpo.sampling.base import (
    CodeLogitsModel,
    CommitRecorder,
    SamplerOutput,
    StepHook,
    canvas_ids,
    check_sampler_config,
    code_log_prob,
    guided_code_logits,
)
from maskgrpo.sampling.maskgit import gumbel_noise, maskgit_scores
from maskgrpo.schedules import maskgit_masked_target


def lumina_keep_count(num_tokens: int, step: int, num_steps: int) -> int:
    """Slots left masked after 0-based step s (before the clamp to n - 1): max(1, floor(n0 gamma((s+1)/T))), 0 last.

    fp32 cosine, as upstream evaluates it. N = 1024, T = 64 gives commits 1, 1, 1, 2, 3, 4, ... and 25 at the last
    step; N = 4096: 2, 3, 7, 8, 11, 14, ... and 100 (docs/models.md 5). Test: tests/test_lumina_backbone.py.
    """
    if step >= num_steps - 1:
        return 0
    return max(1, maskgit_masked_target(num_tokens, step, num_steps))


def lumina_remask(score: torch.Tensor, masked: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The k = clamp(keep, 0, n - 1) lowest-scoring masked slots of each row, n = masked count of the row.

    score: (B, N) float; masked: (B, N) bool; keep: (B,) long. Unmasked slots never qualify. Exactly k slots per
    row (ties broken by position: stable sort). Returns (B, N) bool, the slots that stay masked.
    """
    n = masked.sum(dim=-1)  # (B,)
    k = torch.minimum(keep, n - 1).clamp(min=0)  # (B,)
    ranked = torch.where(masked, score, torch.inf)  # (B, N) unmasked last
    order = ranked.argsort(dim=-1, stable=True).argsort(dim=-1)  # (B, N) 0 = lowest score
    return masked & (order < k.unsqueeze(-1))


@dataclass(frozen=True)
class LuminaSampler:
    """Lumina-DiMOO's published T2I sampler (docs/models.md 5).

    num_steps:   T (upstream default for T2I: 64).
    cfg_scale:   w in z = (1 + w) z_cond - w z_uncond; 0 runs the conditional rows only (upstream: 4.0).
    temperature: tau > 0, of the Gumbel-max draw argmax(z / tau + G) and of the ranking noise tau * G' (upstream
                 uses the same constant tau for both; 1.0).
    probs_dtype: "float32" (decision, docs/models.md 3.1) or "model" (draw, softmax and scores in the model dtype).
    """

    num_steps: int = 64
    cfg_scale: float = 4.0
    temperature: float = 1.0
    probs_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_sampler_config(self.num_steps, self.cfg_scale, self.probs_dtype)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (Gumbel-max draw of z / tau), got {self.temperature}")

    @torch.no_grad()
    def sample(
        self,
        model: CodeLogitsModel,
        batch: T2IBatch,
        generator: torch.Generator,
        step_hook: StepHook | None = None,
    ) -> SamplerOutput:
        """Run T confidence-ranked steps; returns codes, commit steps, log softmax(z / tau)(code) and scores."""
        T, N, tau = self.num_steps, batch.num_image_tokens, self.temperature
        rec = CommitRecorder(batch, T, with_score=True, step_hook=step_hook)
        for s in range(T):
            masked = rec.masked()  # (B, N)
            ids = canvas_ids(rec.codes, batch)  # (B, N)
            z = guided_code_logits(model, batch, ids, self.cfg_scale, self.probs_dtype == "model")  # (B, N, K)
            z_m = z[masked]  # (M, K), M = slots masked over the batch: every draw happens only there
            x_m = (z_m / tau + gumbel_noise(z_m, generator)).argmax(dim=-1)  # (M,) Gumbel-max at temperature tau
            conf_m = torch.softmax(z_m, dim=-1).gather(-1, x_m.unsqueeze(-1)).squeeze(-1)  # (M,) no temperature
            x = torch.zeros_like(rec.codes).masked_scatter(masked, x_m)  # (B, N), 0 where already committed
            score = torch.full(masked.shape, torch.inf, dtype=conf_m.dtype, device=masked.device)  # (B, N)
            score = score.masked_scatter(masked, maskgit_scores(conf_m, tau, gumbel_noise(conf_m, generator)))
            keep = torch.full_like(masked[:, 0], lumina_keep_count(N, s, T), dtype=torch.long)  # (B,)
            new = masked & ~lumina_remask(score, masked, keep)  # (B, N)
            logp = torch.zeros(masked.shape, dtype=torch.float32, device=masked.device)  # (B, N)
            logp = logp.masked_scatter(masked, code_log_prob(z_m.unsqueeze(0) / tau, x_m.unsqueeze(0))[0])
            rec.commit(s, new, x, logp, score)
        return rec.output()


__all__ = ["LuminaSampler", "lumina_keep_count", "lumina_remask"]
