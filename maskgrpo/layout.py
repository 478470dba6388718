"""Text-to-image sequence layouts (MMaDA style) and the batch object every sampler and context builder reads.

MMaDA row (docs/models.md 2.2), text window W, N image slots::

    [pad]*(W - len(t)) + t + [soi] + [mask]*N + [eoi]      t = [t2i] + [bos] + text + [eos]

Image slot j (raster order) sits at W + 1 + j for every row, so ``image_positions`` is one (N,) index shared by
the batch. Padding is on the left and hidden from attention by the key-padding mask. The unconditional row (CFG,
caption dropout) is the empty prompt: ``[pad]*(W-3) + [t2i, bos, eos]`` with the same image region.

All special ids live in a layout object; presets: ``mmada_8b`` (the real ids), ``tiny_mmada`` (real ids, small
window and grid, for tests) and ShapesWorld's layout (built from its word vocabulary in ``maskgrpo.toy``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class T2IBatch:
    """Prompt rows ready for a sampler or a log-prob pass. B rows, sequence length T, N image slots.

    input_ids:       (B, T) long, conditional rows; image slots hold ``mask_id`` (or codes, for a context).
    attention_mask:  (B, T) bool, key-padding mask, True = real token.
    uncond_ids:      (B, T) long, unconditional rows with the same image region (used when cfg_scale > 0).
    uncond_mask:     (B, T) bool.
    image_positions: (N,) long, positions of the image slots in raster order, identical for every row.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    uncond_ids: torch.Tensor
    uncond_mask: torch.Tensor
    image_positions: torch.Tensor
    code_offset: int
    codebook_size: int
    mask_id: int

    @property
    def num_image_tokens(self) -> int:
        return int(self.image_positions.numel())

    def to(self, device: torch.device | str) -> T2IBatch:
        move = {k: getattr(self, k).to(device) for k in ("input_ids", "attention_mask", "uncond_ids", "uncond_mask")}
        return T2IBatch(**move, image_positions=self.image_positions.to(device), code_offset=self.code_offset,
                        codebook_size=self.codebook_size, mask_id=self.mask_id)  # fmt: skip

    def repeat_interleave(self, g: int) -> T2IBatch:
        """Each prompt row repeated g times in place: rows [k*g, (k+1)*g) are prompt k (a GRPO group)."""
        rep = {k: getattr(self, k).repeat_interleave(g, dim=0) for k in ("input_ids", "attention_mask", "uncond_ids",
                                                                         "uncond_mask")}  # fmt: skip
        return T2IBatch(**rep, image_positions=self.image_positions, code_offset=self.code_offset,
                        codebook_size=self.codebook_size, mask_id=self.mask_id)  # fmt: skip

    def with_image(self, image_ids: torch.Tensor) -> T2IBatch:
        """The same rows with the image slots set to ``image_ids`` (B, N) (vocabulary ids, mask id allowed)."""
        ids = self.input_ids.clone()
        ids[:, self.image_positions] = image_ids
        unc = self.uncond_ids.clone()
        unc[:, self.image_positions] = image_ids
        return T2IBatch(ids, self.attention_mask, unc, self.uncond_mask, self.image_positions, self.code_offset,
                        self.codebook_size, self.mask_id)  # fmt: skip


@dataclass(frozen=True)
class MMaDALayout:
    """Ids and sizes of an MMaDA-style T2I row. ``code_offset + k`` is the vocabulary id of image code k."""

    pad_id: int
    bos_id: int
    eos_id: int
    t2i_id: int
    soi_id: int
    eoi_id: int
    mask_id: int
    code_offset: int
    codebook_size: int
    text_window: int
    grid_h: int
    grid_w: int

    def __post_init__(self) -> None:
        if self.text_window < 3:
            raise ValueError(f"text_window must be >= 3 (t2i, bos, eos), got {self.text_window}")
        if min(self.grid_h, self.grid_w) < 1 or self.codebook_size < 2:
            raise ValueError(f"bad image grid {self.grid_h}x{self.grid_w} / codebook {self.codebook_size}")

    @property
    def num_image_tokens(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def seq_len(self) -> int:
        return self.text_window + self.num_image_tokens + 2

    @property
    def vocab_needed(self) -> int:
        """Smallest embedding size that holds every id of this layout."""
        ids = (self.pad_id, self.bos_id, self.eos_id, self.t2i_id, self.soi_id, self.eoi_id, self.mask_id)
        return max(max(ids) + 1, self.code_offset + self.codebook_size)

    def image_positions(self) -> torch.Tensor:
        start = self.text_window + 1
        return torch.arange(start, start + self.num_image_tokens)  # (N,)

    def text_part(self, text_ids: list[int]) -> list[int]:
        """[t2i] + [bos] + text + [eos], then left-padded or truncated to the text window (docs/models.md 2.2)."""
        ids = list(text_ids)
        ids = ids if ids and ids[0] == self.bos_id else [self.bos_id] + ids
        t = [self.t2i_id] + ids + [self.eos_id]
        if len(t) > self.text_window:
            t = t[: self.text_window - 1] + [self.eos_id]
        return [self.pad_id] * (self.text_window - len(t)) + t

    def build_batch(self, text_ids: list[list[int]], image_ids: torch.Tensor | None = None) -> T2IBatch:
        """Rows for B tokenised prompts; image slots = mask, or ``image_ids`` (B, N) vocabulary ids if given."""
        n = self.num_image_tokens
        tail = [self.soi_id] + [self.mask_id] * n + [self.eoi_id]
        cond = torch.tensor([self.text_part(t) + tail for t in text_ids], dtype=torch.long)  # (B, T)
        uncond_row = self.text_part([]) + tail
        uncond = torch.tensor([uncond_row] * len(text_ids), dtype=torch.long)  # (B, T)
        batch = T2IBatch(
            input_ids=cond,
            attention_mask=cond != self.pad_id,
            uncond_ids=uncond,
            uncond_mask=uncond != self.pad_id,
            image_positions=self.image_positions(),
            code_offset=self.code_offset,
            codebook_size=self.codebook_size,
            mask_id=self.mask_id,
        )
        return batch if image_ids is None else batch.with_image(image_ids)


def mmada_8b(text_window: int = 513, grid: int = 32) -> MMaDALayout:
    """The released MMaDA-8B ids (docs/models.md 2.1): code k -> 126349 + k, mask 126336, 32x32 grid at 512 px."""
    return MMaDALayout(pad_id=126093, bos_id=126080, eos_id=126081, t2i_id=126088, soi_id=126084, eoi_id=126085,
                       mask_id=126336, code_offset=126349, codebook_size=8192, text_window=text_window,
                       grid_h=grid, grid_w=grid)  # fmt: skip


def tiny_mmada(text_window: int = 17, grid: int = 4) -> MMaDALayout:
    """Real MMaDA ids with a small text window and grid, for tests (docs/models.md 1.6)."""
    return mmada_8b(text_window=text_window, grid=grid)
