"""The sampler swap point: protocol, output dataclasses, registry and the pieces every sampler shares (models.md 3.1).

A sampler turns a ``T2IBatch`` of B prompt rows into B grids of N image codes in T steps and records, for every
slot, the step at which it was committed (docs/models.md 3.4). Notation used across ``maskgrpo.sampling``:

    B rows, N image slots (raster order), K codebook size, T steps, s the 0-based step,
    w the classifier-free guidance scale, p_s the guided code distribution at step s.

A code value >= K means "still masked". Every random draw comes from the explicit ``generator`` argument, which must
live on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from maskgrpo.catalog import SAMPLERS
from maskgrpo.layout import T2IBatch

PROBS_DTYPES = ("float32", "model")


class CodeLogitsModel(Protocol):
    """The model call contract (docs/models.md 1.2): logits only at ``logits_at`` and over ``vocab_slice``.

    ``model(input_ids=(B, T) long, attention_mask=(B, T) bool, logits_at=(P,) long, vocab_slice=(start, end))``
    returns an object whose ``.logits`` is (B, P, end - start).
    """

    def __call__(
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_at: torch.Tensor,
        vocab_slice: tuple[int, int],
    ) -> Any: ...


@dataclass(frozen=True)
class StepInfo:
    """What a step hook sees after step ``step`` has committed its slots.

    step:      s, 0-based.
    num_steps: T.
    committed: (B, N) bool, slots committed at this step (masked before it, not after).
    codes:     (B, N) long, the canvas after this step; value K where a slot is still masked.
    logp:      (B, N) float32, log p_s(x) of the code drawn at this step, where ``committed``; 0 elsewhere.
    score:     (B, N) float32 MaskGIT ranking score of this step at every slot, or None (emerge).
    """

    step: int
    num_steps: int
    committed: torch.Tensor
    codes: torch.Tensor
    logp: torch.Tensor
    score: torch.Tensor | None


StepHook = Callable[[StepInfo], None]


@dataclass(frozen=True)
class SamplerOutput:
    """Result of one ``Sampler.sample`` call (docs/models.md 3.1, 3.4).

    codes:           (B, N) long in [0, K), the final image codes.
    commit_step:     (B, N) long in [0, T-1], the step at which each slot was committed (leftovers: T-1).
                     The state before step s is "slot masked iff commit_step >= s".
    logp_at_commit:  (B, N) float32, log p_s(code) under the guided code distribution at the commit step
                     (schedule / selection terms excluded).
    n_commit:        (B, T) long, slots committed per step; each row sums to N.
    score_at_commit: (B, N) float32 MaskGIT ranking score at the commit step, or None.
    extras:          (B, N) tensors added by sampler wrappers, e.g. "rank" (generation ranks); empty by default.
    """

    codes: torch.Tensor
    commit_step: torch.Tensor
    logp_at_commit: torch.Tensor
    n_commit: torch.Tensor
    score_at_commit: torch.Tensor | None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Sampler(Protocol):
    """A T2I sampler: a frozen dataclass whose constructor arguments are its config (swapped by name)."""

    @property
    def num_steps(self) -> int: ...

    @property
    def cfg_scale(self) -> float: ...

    def sample(
        self,
        model: CodeLogitsModel,
        batch: T2IBatch,
        generator: torch.Generator,
        step_hook: StepHook | None = None,
    ) -> SamplerOutput: ...


def no_wrapper(sampler: Any, cfg: Any, options: Any) -> Any:
    """``rl.sampler_wrapper: none``: the rollout sampler as it is (a wrapper adds to its output, e.g. ranks)."""
    return sampler


def build_sampler(name: str, **kwargs: Any) -> Sampler:
    """The sampler registered as ``name`` built from its config, e.g. ``build_sampler("emerge", num_steps=12)``."""
    return SAMPLERS.get(name)(**kwargs)


def check_sampler_config(num_steps: int, cfg_scale: float, probs_dtype: str) -> None:
    """Shared ``__post_init__`` checks; the messages say what to change."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0 (0 disables the unconditional row), got {cfg_scale}")
    if probs_dtype not in PROBS_DTYPES:
        raise ValueError(f"unknown probs_dtype {probs_dtype!r}; valid: {list(PROBS_DTYPES)}")


def canvas_ids(codes: torch.Tensor, batch: T2IBatch) -> torch.Tensor:
    """Vocabulary ids of the image slots: masked (code >= K) -> mask_id, else code_offset + code. (B, N) long."""
    masked = codes >= batch.codebook_size  # (B, N)
    return torch.where(masked, torch.full_like(codes, batch.mask_id), codes + batch.code_offset)


@torch.no_grad()
def guided_code_logits(
    model: CodeLogitsModel,
    batch: T2IBatch,
    image_ids: torch.Tensor,
    cfg_scale: float,
    keep_model_dtype: bool = False,
) -> torch.Tensor:
    """Classifier-free-guided code logits z = (1 + w) z_cond - w z_uncond (MUSE form, docs/models.md 3.1).

    image_ids: (B, N) long vocabulary ids on the canvas, written into the image slots of the conditional and the
    unconditional rows. With w > 0 one forward runs over the 2B stacked rows; with w = 0 only the B conditional rows.
    The head is evaluated only at the image positions over the code slice [off, off + K): the combination is
    elementwise, so slicing first is exact. Identical rows are forwarded once (``distinct_row_logits``: at the first
    step every canvas is fully masked, so a prompt's G rollouts are one row, and all unconditional rows one more).
    Returns (B, N, K), float32 (the model's dtype if ``keep_model_dtype``, the upstream bf16 arithmetic of
    ``probs_dtype: model``). Runs under ``torch.no_grad``: it serves rollouts and eval; the trainer recomputes RL
    log-probs without CFG (docs/method.md).
    """
    b = batch.with_image(image_ids)
    rows = b.input_ids.shape[0]
    vocab = (b.code_offset, b.code_offset + b.codebook_size)
    if cfg_scale > 0:
        ids = torch.cat([b.input_ids, b.uncond_ids], dim=0)  # (2B, T)
        mask = torch.cat([b.attention_mask, b.uncond_mask], dim=0)  # (2B, T)
    else:
        ids, mask = b.input_ids, b.attention_mask  # (B, T)
    z = distinct_row_logits(model, ids, mask, b.image_positions, vocab)  # (rows of ids, N, K)
    expected = (ids.shape[0], b.num_image_tokens, b.codebook_size)
    if tuple(z.shape) != expected:
        raise ValueError(f"model returned logits of shape {tuple(z.shape)}, expected {expected} (rows, N, K)")
    z = z if keep_model_dtype else z.float()
    if cfg_scale == 0:
        return z  # (B, N, K)
    z_cond, z_uncond = z[:rows], z[rows:]  # (B, N, K) each
    return (1.0 + cfg_scale) * z_cond - cfg_scale * z_uncond  # (B, N, K)


def distinct_row_logits(
    model: CodeLogitsModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    logits_at: torch.Tensor,
    vocab: tuple[int, int],
) -> torch.Tensor:
    """The model's logits for every row of ``ids`` (R, T) / ``mask`` (R, T), each distinct (ids, mask) row forwarded
    once and its logits given to all its copies: (R, P, end - start). The forward is row-wise (no row sees another),
    so this equals forwarding all R rows; on CPU bit for bit (tests/test_samplers.py). At a sampler's first step a
    rollout batch of P prompts x G rollouts with CFG holds P + 1 distinct rows out of 2 P G, and a canvas that has
    committed nothing yet stays shared at later steps (emerge commits few slots early)."""
    key = torch.cat([ids, mask.to(ids.dtype)], dim=1)  # (R, 2T)
    distinct, inverse = torch.unique(key, dim=0, return_inverse=True)  # (U, 2T), (R,)
    if distinct.shape[0] == key.shape[0]:  # nothing repeats: the usual case once the canvases differ
        return model(input_ids=ids, attention_mask=mask, logits_at=logits_at, vocab_slice=vocab).logits
    rows = torch.arange(key.shape[0], device=ids.device)
    first = torch.full((distinct.shape[0],), key.shape[0], device=ids.device).scatter_reduce(0, inverse, rows, "amin")
    z = model(input_ids=ids[first], attention_mask=mask[first], logits_at=logits_at, vocab_slice=vocab).logits
    return z[inverse]  # (R, P, end - start)


def code_log_prob(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log softmax(z)[x] in float32: z (B, N, K) logits, x (B, N) long in [0, K). Returns (B, N) float32."""
    z32 = z.float()
    return z32.gather(-1, x.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z32, dim=-1)  # (B, N)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row of ``probs`` (..., C) (unnormalised weights allowed) from ``generator``. Returns (...) long."""
    flat = probs.reshape(-1, probs.shape[-1])  # (B*N, C)
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


class CommitRecorder:
    """Records commit steps on the fly (docs/models.md 3.4) and calls the step hook; one instance per ``sample`` call.

    codes: (B, N) long, K where masked. commit_step: (B, N) long, -1 until committed. n_commit: (B, T) long.
    """

    def __init__(self, batch: T2IBatch, num_steps: int, with_score: bool, step_hook: StepHook | None) -> None:
        rows, n, k = batch.input_ids.shape[0], batch.num_image_tokens, batch.codebook_size
        device = batch.input_ids.device
        self.num_steps = num_steps
        self.codebook_size = k
        self.step_hook = step_hook
        self.codes = torch.full((rows, n), k, dtype=torch.long, device=device)  # (B, N)
        self.commit_step = torch.full((rows, n), -1, dtype=torch.long, device=device)  # (B, N)
        self.logp = torch.zeros(rows, n, dtype=torch.float32, device=device)  # (B, N)
        self.score = torch.zeros(rows, n, dtype=torch.float32, device=device) if with_score else None  # (B, N)
        self.n_commit = torch.zeros(rows, num_steps, dtype=torch.long, device=device)  # (B, T)

    def masked(self) -> torch.Tensor:
        """(B, N) bool, slots still masked."""
        return self.codes >= self.codebook_size

    def commit(
        self, step: int, new: torch.Tensor, x: torch.Tensor, logp: torch.Tensor, score: torch.Tensor | None
    ) -> None:
        """Commit slots ``new`` (B, N) bool (all masked) to codes ``x`` (B, N) at step s.

        ``logp`` (B, N) = log p_s(x).
        """
        self.codes = torch.where(new, x, self.codes)
        self.commit_step = torch.where(new, step, self.commit_step)
        logp = torch.where(new, logp.float(), 0.0)  # (B, N)
        self.logp = torch.where(new, logp, self.logp)
        if self.score is not None and score is not None:
            self.score = torch.where(new, score.float(), self.score)
        self.n_commit[:, step] = new.sum(dim=-1)
        if self.step_hook is not None:
            score32 = None if score is None else score.float()
            self.step_hook(StepInfo(step, self.num_steps, committed=new, codes=self.codes, logp=logp, score=score32))

    def output(self) -> SamplerOutput:
        if bool((self.commit_step < 0).any()):
            raise RuntimeError("sampler finished with uncommitted slots; every slot must be committed exactly once")
        return SamplerOutput(codes=self.codes, commit_step=self.commit_step, logp_at_commit=self.logp,
                             n_commit=self.n_commit, score_at_commit=self.score)  # fmt: skip
