"""Emerge sampler: MaskGRPO's ancestral MDLM-style rollout sampler (``t2i_generate_emerge``, docs/models.md 3.2).

At step s < T-1 every masked slot independently either commits a code x ~ p_s or stays masked, with the model-free
commit probability (a - b) / a, a = gamma(s/T), b = gamma((s+1)/T); at s = T-1 every remaining slot commits. So
commit times are random (each slot commits at step s with probability gamma(s/T) - gamma((s+1)/T), Binomial counts),
not ordered by confidence. No temperature, no top-k, no re-masking.
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
from maskgrpo.schedules import cosine_gamma


def emerge_transition_probs(p: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """The (K+1)-way reverse transition of a masked slot from time s/T to (s+1)/T (docs/models.md 3.2, [MG]).

    q = concat(p * (a - b) / a, b / a): class k < K commits code k, class K keeps the slot masked.
    p: (..., K) code probabilities p_s; a = gamma(s/T) > 0, b = gamma((s+1)/T) in [0, a]. Returns (..., K+1) in p's
    dtype; each row sums to 1 when p's does. Test: tests/test_samplers.py::test_emerge_transition_probs_hand_computed.
    """
    stay = torch.full_like(p[..., :1], b / a)  # (..., 1)
    return torch.cat([p * ((a - b) / a), stay], dim=-1)  # (..., K+1)


@dataclass(frozen=True)
class EmergeSampler:
    """MaskGRPO's rollout sampler (docs/models.md 3.2).

    num_steps:   T, denoising steps (MaskGRPO rollouts: 12; eval: 32).
    cfg_scale:   w in z = (1 + w) z_cond - w z_uncond; 0 runs the conditional rows only (rollouts: 3.0).
    probs_dtype: "float32" (decision, docs/models.md 3.1) or "model" (upstream: softmax and draws in the model dtype).
    """

    num_steps: int = 12
    cfg_scale: float = 3.0
    probs_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_sampler_config(self.num_steps, self.cfg_scale, self.probs_dtype)

    @torch.no_grad()
    def sample(
        self,
        model: CodeLogitsModel,
        batch: T2IBatch,
        generator: torch.Generator,
        step_hook: StepHook | None = None,
    ) -> SamplerOutput:
        """Run T ancestral steps; returns codes, commit steps and log p_s(code) at each slot's commit step."""
        T, K = self.num_steps, batch.codebook_size
        rec = CommitRecorder(batch, T, with_score=False, step_hook=step_hook)
        for s in range(T):
            ids = canvas_ids(rec.codes, batch)  # (B, N)
            z = guided_code_logits(model, batch, ids, self.cfg_scale, self.probs_dtype == "model")  # (B, N, K)
            p = torch.softmax(z, dim=-1)  # (B, N, K)
            if s < T - 1:
                q = emerge_transition_probs(p, cosine_gamma(s / T), cosine_gamma((s + 1) / T))  # (B, N, K+1)
            else:
                q = p  # last step: every remaining slot commits
            x = sample_categorical(q, generator)  # (B, N), K = stay masked; drawn for every slot, used where masked
            new = rec.masked() & (x < K)  # (B, N)
            logp = code_log_prob(z, x.clamp(max=K - 1))  # (B, N) fp32, log p_s(x); meaningful where new
            rec.commit(s, new, x, logp, None)
        return rec.output()
