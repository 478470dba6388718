"""Lumina-DiMOO text-to-image row layout (docs/models.md 5) and its batching into a ``T2IBatch``.

Upstream row for one prompt P (batch size 1, no padding)::

    SYS    = "<system>Generate an image according to the text prompt.</system>"
    text   = tok(SYS + "<user>" + P + "</user>")
    answer = [<answer>, <IMAGE>] + Ht x ([MASK] * Wt + [newline]) + [</IMAGE>, </answer>]
    row    = text + answer;   code_start = len(text) + 2;   code (r, c) at code_start + r * (Wt + 1) + c

with Ht = height / 16 and Wt = width / 16 (one code per 16 x 16 pixels). The unconditional row (CFG) is
``tok(SYS + "<user><uncondition></user>") + answer``. The newline token ends every image row; it is never masked,
never sampled and never ranked: ``image_positions`` holds the N = Ht * Wt code slots only, in raster order.

Deliberate deviation from upstream (batching). Upstream generates one prompt at a time with unmasked attention and
runs the conditional and unconditional rows as two separate forwards of different lengths. Here B prompts and
their unconditional rows are batched together: every row is LEFT-padded with ``pad_id`` up to a common text
prefix length, and a key-padding mask (``attention_mask`` False on pads) hides the pads. The image region then sits
at the same positions in every conditional and unconditional row, so one ``image_positions`` (N,) serves the whole
batch, exactly as for MMaDA. Because attention is bidirectional over real tokens only and RoPE depends only on
relative offsets, each row's logits equal its upstream batch-1 logits up to float rounding (tested in fp32).
docs/models.md 5 suggests right padding; left padding is used instead because right padding would move the image
region per row. The pad id (``<|endoftext|>``, 126081) is arbitrary: pads are never attended to, and their own
outputs are never read.

All ids live in the layout object; ``lumina_dimoo_8b(height, width)`` is the preset with the released ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskgrpo.layout import T2IBatch

SYSTEM_PROMPT = "<system>Generate an image according to the text prompt.</system>"
"""The T2I system prompt of Lumina-DiMOO (docs/models.md 5)."""


@dataclass(frozen=True)
class LuminaLayout:
    """Ids and image size of a Lumina-DiMOO T2I row. ``code_offset + k`` is the vocabulary id of image code k."""

    mask_id: int
    """``<|mdm_mask|>``, the value of a masked image slot."""
    newline_id: int
    """Token that ends every row of the image grid (never masked, never sampled)."""
    image_start_id: int
    """``<IMAGE>``."""
    image_end_id: int
    """``</IMAGE>``."""
    uncond_id: int
    """``<uncondition>``: the unconditional prompt's only user token."""
    answer_start_id: int
    """``<answer>``."""
    answer_end_id: int
    """``</answer>``."""
    pad_id: int
    """Left-padding id; hidden by the key-padding mask, so its value never reaches a logit."""
    code_offset: int
    """Vocabulary id of image code 0."""
    codebook_size: int
    """K, image codes (8192)."""
    height: int
    """Image height in pixels (a multiple of ``patch``)."""
    width: int
    """Image width in pixels (a multiple of ``patch``)."""
    patch: int = 16
    """Pixels per code side of the released VQ tokenizer (16x downsampling)."""
    max_aspect: float = 4.0
    """Largest accepted long-side / short-side ratio."""
    system_prompt: str = SYSTEM_PROMPT
    """Text before ``<user>`` in every row."""

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < self.patch or v % self.patch:
                raise ValueError(f"Lumina {name} must be a positive multiple of {self.patch} pixels, got {v!r}")
        if max(self.height, self.width) > self.max_aspect * min(self.height, self.width):
            raise ValueError(f"Lumina image {self.height}x{self.width}: aspect ratio above {self.max_aspect:g}:1")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")

    # ---- sizes -----------------------------------------------------------------------------------------------
    @property
    def grid_h(self) -> int:
        """Ht = height / patch, rows of codes."""
        return self.height // self.patch

    @property
    def grid_w(self) -> int:
        """Wt = width / patch, codes per row (each row is followed by one newline token)."""
        return self.width // self.patch

    @property
    def num_image_tokens(self) -> int:
        """N = Ht * Wt code slots (newlines excluded)."""
        return self.grid_h * self.grid_w

    @property
    def vocab_needed(self) -> int:
        """Smallest embedding size that holds every id of this layout."""
        ids = (self.mask_id, self.newline_id, self.image_start_id, self.image_end_id, self.uncond_id,
               self.answer_start_id, self.answer_end_id, self.pad_id)  # fmt: skip
        return max(max(ids) + 1, self.code_offset + self.codebook_size)

    def seq_len(self, text_tokens: int) -> int:
        """Row length for a text prefix of ``text_tokens`` tokens: text + 2 + Ht * (Wt + 1) + 2."""
        return text_tokens + len(self.answer_ids())

    # ---- text ------------------------------------------------------------------------------------------------
    def prompt_text(self, prompt: str) -> str:
        """SYS + "<user>" + P + "</user>" (tokenised by the backbone)."""
        return f"{self.system_prompt}<user>{prompt}</user>"

    def uncond_text(self) -> str:
        """SYS + "<user><uncondition></user>": the classifier-free-guidance row's text."""
        return f"{self.system_prompt}<user><uncondition></user>"

    # ---- rows ------------------------------------------------------------------------------------------------
    def answer_ids(self, image_ids: list[int] | None = None) -> list[int]:
        """[<answer>, <IMAGE>] + Ht x (Wt code slots + [newline]) + [</IMAGE>, </answer>].

        ``image_ids``: N vocabulary ids in raster order for the code slots; None = every slot masked.
        """
        n, wt = self.num_image_tokens, self.grid_w
        codes = [self.mask_id] * n if image_ids is None else list(image_ids)
        if len(codes) != n:
            raise ValueError(f"expected {n} image ids, got {len(codes)}")
        grid = [t for r in range(self.grid_h) for t in (*codes[r * wt : (r + 1) * wt], self.newline_id)]
        return [self.answer_start_id, self.image_start_id, *grid, self.image_end_id, self.answer_end_id]

    def upstream_row(self, text_ids: list[int]) -> list[int]:
        """The unpadded batch-1 row of upstream: tokenised text + ``answer_ids()``."""
        return list(text_ids) + self.answer_ids()

    def code_positions(self, code_start: int) -> torch.Tensor:
        """(N,) long: code (r, c) at code_start + r * (Wt + 1) + c, raster order, newline slots skipped."""
        r = torch.arange(self.grid_h).unsqueeze(1)  # (Ht, 1)
        c = torch.arange(self.grid_w).unsqueeze(0)  # (1, Wt)
        return (code_start + r * (self.grid_w + 1) + c).reshape(-1)  # (N,)

    def build_batch(
        self, text_ids: list[list[int]], uncond_text_ids: list[int], image_ids: torch.Tensor | None = None
    ) -> T2IBatch:
        """B tokenised prompts (+ the tokenised unconditional text) -> left-padded rows of one length T.

        T = max(longest prompt, unconditional text) + 2 + Ht * (Wt + 1) + 2. Image slots = mask, or ``image_ids``
        (B, N) vocabulary ids if given. ``attention_mask`` / ``uncond_mask`` are False exactly on the left pads.
        """
        prefix = max([len(t) for t in text_ids] + [len(uncond_text_ids)])
        answer = self.answer_ids()

        def pad(t: list[int]) -> tuple[list[int], list[bool]]:
            n_pad = prefix - len(t)
            return [self.pad_id] * n_pad + list(t) + answer, [False] * n_pad + [True] * (len(t) + len(answer))

        cond = [pad(t) for t in text_ids]
        unc_row, unc_mask = pad(uncond_text_ids)
        shape = (len(text_ids), prefix + len(answer))  # (B, T)
        batch = T2IBatch(
            input_ids=torch.tensor([r for r, _ in cond], dtype=torch.long).view(shape),  # (B, T)
            attention_mask=torch.tensor([m for _, m in cond], dtype=torch.bool).view(shape),  # (B, T)
            uncond_ids=torch.tensor([unc_row] * shape[0], dtype=torch.long).view(shape),  # (B, T)
            uncond_mask=torch.tensor([unc_mask] * shape[0], dtype=torch.bool).view(shape),  # (B, T)
            image_positions=self.code_positions(prefix + 2),  # (N,)
            code_offset=self.code_offset,
            codebook_size=self.codebook_size,
            mask_id=self.mask_id,
        )
        return batch if image_ids is None else batch.with_image(image_ids)


def lumina_dimoo_8b(height: int = 1024, width: int = 1024) -> LuminaLayout:
    """The released Lumina-DiMOO ids (docs/models.md 5): code k -> 126356 + k, newline 126084, default 1024 x 1024."""
    return LuminaLayout(mask_id=126336, newline_id=126084, image_start_id=126349, image_end_id=126350,
                        uncond_id=126351, answer_start_id=126354, answer_end_id=126355, pad_id=126081,
                        code_offset=126356, codebook_size=8192, height=height, width=width)  # fmt: skip


__all__ = ["SYSTEM_PROMPT", "LuminaLayout", "lumina_dimoo_8b"]
