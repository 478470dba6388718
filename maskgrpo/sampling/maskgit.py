"""MaskGIT sampler with MMaDA's ``t2i_generate`` rule (docs/models.md 3.3; Chang et al. 2022, MaskGIT, Sec. 3.2).

Each step draws a code x ~ p_s at every masked slot, ranks the masked slots by score = log p_s(x) + tau_s * G
(G standard Gumbel), keeps the m lowest masked and commits the rest, with m = floor(N * gamma((s+1)/T)) in fp32
clamped to [1, unknown - 1]. The draw of the last step fills the one slot left over (commit step T-1).
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
    sample_categorical,
)
from maskgrpo.schedules import maskgit_masked_target

TAU_SCHEDULES = ("compounding", "maskgit")
LOG_EPS = 1e-20


def maskgit_temperatures(tau0: float, num_steps: int, schedule: str) -> list[float]:
    """Gumbel temperature tau_s of each step s = 0..T-1, with r_s = (s + 1) / T (docs/models.md 3.3).

    compounding (MMaDA, default): tau_s = tau0 * prod_{j<=s} (1 - r_j), e.g. T=15: .933 .809 .647 ... 0.
    maskgit (MaskGIT proper):     tau_s = tau0 * (1 - r_s).
    Test: tests/test_samplers.py::test_maskgit_temperatures_match_models_md_3_3.
    """
    if schedule not in TAU_SCHEDULES:
        raise ValueError(f"unknown tau_schedule {schedule!r}; valid: {list(TAU_SCHEDULES)}")
    taus, tau = [], tau0
    for s in range(num_steps):
        r = (s + 1) / num_steps
        tau = tau * (1.0 - r) if schedule == "compounding" else tau0 * (1.0 - r)
        taus.append(tau)
    return taus


def gumbel_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """G = -log(-log u), u ~ U(0, 1) from ``generator``, both logs clamped at 1e-20.

    Same shape and dtype as ``like``.
    """
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log((-torch.log(u.clamp(min=LOG_EPS))).clamp(min=LOG_EPS))


def maskgit_scores(conf: torch.Tensor, tau: float, gumbel: torch.Tensor) -> torch.Tensor:
    """score = log(max(conf, 1e-20)) + tau * G (docs/models.md 3.3). conf, gumbel: (B, N). Returns (B, N)."""
    return torch.log(conf.clamp(min=LOG_EPS)) + tau * gumbel


def maskgit_remask(score: torch.Tensor, num_masked: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """Slots that stay masked: score < sort_ascending(score)[m], i.e. the m lowest-scoring (docs/models.md 3.3).

    score: (B, N); num_masked: (B,) long m, in [1, unknown - 1] whenever a row has >= 2 unknown slots; unknown:
    (B, N) bool. Committed slots score log(FLT_MAX) + tau * G, above every unknown slot, so ``& unknown`` changes
    nothing upstream-reachable; it guarantees a committed slot is never re-masked (and m is clamped to N - 1 for N=1).
    Ties at the cutoff commit (strict <). Returns (B, N) bool.
    """
    ranked = torch.sort(score, dim=-1).values  # (B, N)
    idx = num_masked.clamp(max=score.shape[-1] - 1).unsqueeze(-1)  # (B, 1)
    cutoff = ranked.gather(-1, idx)  # (B, 1)
    return unknown & (score < cutoff)  # (B, N)


@dataclass(frozen=True)
class MaskGITSampler:
    """MMaDA's published T2I sampler (docs/models.md 3.3).

    num_steps:    T (MMaDA README: 15; function default 18; MaskGRPO eval: 32).
    cfg_scale:    w in z = (1 + w) z_cond - w z_uncond; 0 runs the conditional rows only (README: 3.5).
    tau0:         initial Gumbel temperature of the ranking noise ("choice temperature"); 0 = pure confidence.
    tau_schedule: "compounding" (MMaDA, decision) or "maskgit" (tau0 * (1 - r)); see ``maskgit_temperatures``.
    probs_dtype:  "float32" (decision, models.md 3.1) or "model" (upstream: softmax, draw and scores in model dtype).
    """

    num_steps: int = 15
    cfg_scale: float = 3.5
    tau0: float = 1.0
    tau_schedule: str = "compounding"
    probs_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_sampler_config(self.num_steps, self.cfg_scale, self.probs_dtype)
        if self.tau_schedule not in TAU_SCHEDULES:
            raise ValueError(f"unknown tau_schedule {self.tau_schedule!r}; valid: {list(TAU_SCHEDULES)}")
        if self.tau0 < 0:
            raise ValueError(f"tau0 must be >= 0, got {self.tau0}")

    @torch.no_grad()
    def sample(
        self,
        model: CodeLogitsModel,
        batch: T2IBatch,
        generator: torch.Generator,
        step_hook: StepHook | None = None,
    ) -> SamplerOutput:
        """Run T confidence-ranked steps; returns codes, commit steps, log p_s(code) and scores at commit."""
        T, N = self.num_steps, batch.num_image_tokens
        taus = maskgit_temperatures(self.tau0, T, self.tau_schedule)
        rec = CommitRecorder(batch, T, with_score=True, step_hook=step_hook)
        for s in range(T):
            ids = canvas_ids(rec.codes, batch)  # (B, N)
            z = guided_code_logits(model, batch, ids, self.cfg_scale, self.probs_dtype == "model")  # (B, N, K)
            p = torch.softmax(z, dim=-1)  # (B, N, K)
            unknown = rec.masked()  # (B, N)
            x = torch.where(unknown, sample_categorical(p, generator), rec.codes)  # (B, N), no temperature
            conf = p.gather(-1, x.unsqueeze(-1)).squeeze(-1)  # (B, N)
            conf = torch.where(unknown, conf, torch.finfo(conf.dtype).max)
            score = maskgit_scores(conf, taus[s], gumbel_noise(conf, generator))  # (B, N)
            if s < T - 1:
                target = maskgit_masked_target(N, s, T)  # relative to N, not to the unknown count
                num_masked = (unknown.sum(dim=-1) - 1).clamp(max=target).clamp(min=1)  # (B,)
                new = unknown & ~maskgit_remask(score, num_masked, unknown)  # (B, N)
            else:
                new = unknown  # the returned draw fills the leftover slot(s), commit step T-1
            rec.commit(s, new, x, code_log_prob(z, x), score)
        return rec.output()
