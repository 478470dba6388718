"""The MMaDA-8B backbone: LLaDA mask predictor + LLaDA text tokenizer + MAGVIT-v2, MMaDA's text-to-image layout.

Sources (all local directories or hub ids; the same code loads the 8B release and the tiny test checkpoints):

    path          Gen-Verse/MMaDA-8B-Base   config.json, sharded safetensors (loaded by ``load_llada``), tokenizer
    vq_path       showlab/magvitv2          pytorch_model.safetensors (loaded by ``load_magvit2``)
    tokenizer_path                          defaults to ``path``

Row layout (docs/models.md 2.2), text window W, N = grid^2 image slots, built by ``MMaDALayout``::

    [iPAD]*(W - len(t)) + t + [<|soi|>] + [MASK]*N + [<|eoi|>],   t = [<|t2i|>, BOS] + tokenize(prompt) + [EOS]

The prompt is tokenised as a plain string (no chat template, no special tokens added by the tokenizer); the layout
adds BOS / EOS, pads on the left and truncates. Load-time assertions (models.md 7.4, 7.8): every layout id fits the
checkpoint's embedding table, ``len(tokenizer)`` equals the image-code offset, the BOS / EOS / mask tokens sit at the
layout's ids, and ``decode`` refuses codes outside [0, 8192) (a mask id left in the canvas) instead of clamping.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from maskgrpo.backbones.base import check_loader_options, tokenizer_unknown_words
from maskgrpo.layout import MMaDALayout, T2IBatch, mmada_8b
from maskgrpo.models.loading import WEIGHT_PATTERNS, load_llada, resolve_checkpoint_dir
from maskgrpo.models.magvit2 import MagvitV2, MagvitV2Config, load_magvit2

if TYPE_CHECKING:
    from maskgrpo.models import LLaDAModelLM

logger = logging.getLogger(__name__)

#: Token strings of the LLaDA tokenizer that must sit at the layout's ids (docs/models.md 2.1, 7.4).
TOKEN_NAMES: dict[str, str] = {"bos_id": "<|startoftext|>", "eos_id": "<|endoftext|>", "mask_id": "<|mdm_mask|>"}
#: A chat-template token that must already exist in the tokenizer (checks that nothing was added, docs/models.md 7.4).
REQUIRED_TOKENS: tuple[str, ...] = ("<|end_header_id|>",)
#: Tokenizer files fetched with the weights when ``path`` is a hub id.
TOKENIZER_PATTERNS: tuple[str, ...] = ("*.json", "*.model", "*.txt", "*.tiktoken")


@dataclass
class MMaDABackbone:
    """The ``Backbone`` of maskgrpo.backbones.base for MMaDA-8B (prompt rows in, uint8 images out)."""

    model: LLaDAModelLM
    """Bidirectional mask predictor with the released parameter names."""
    tokenizer: Any
    """The LLaDA text tokenizer (``len`` = image-code offset, 126349 for the release)."""
    vq: MagvitV2
    """MAGVIT-v2 image tokenizer (13-bit LFQ codes, 16x downsampling for the release)."""
    layout: MMaDALayout
    """Ids, text window and image grid of a T2I row."""
    decode_batch_size: int = 8
    """Images per MAGVIT decoder call (a 512 px decode holds several GB of activations per 8 images)."""

    def tokenize(self, prompts: list[str]) -> list[list[int]]:
        """B prompts -> B lists of text ids, plain strings without chat template or tokenizer-added specials."""
        return [list(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]

    def prompt_batch(self, prompts: list[str]) -> T2IBatch:
        """Rows (B, W + N + 2) for B prompts, every image slot masked, plus the matching unconditional rows."""
        return self.layout.build_batch(self.tokenize(prompts))

    def unknown_words(self, captions: list[str]) -> list[str]:
        """Words of ``captions`` the tokenizer encodes as its unknown token (none for the released BPE)."""
        return tokenizer_unknown_words(self.tokenizer, captions)

    def check_codes(self, codes: torch.Tensor) -> None:
        """docs/models.md 7.8: (B, N) integer codes in [0, K); a mask id or a vocabulary id is named, never clamped."""
        lay = self.layout
        if codes.dim() != 2 or codes.shape[1] != lay.num_image_tokens:
            raise ValueError(f"codes must be (B, {lay.num_image_tokens}), got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        n_mask = int((codes == lay.mask_id).sum())
        if n_mask:
            raise ValueError(f"{n_mask} image slot(s) still hold the mask id {lay.mask_id}: the canvas is unfinished")
        bad = (codes < 0) | (codes >= lay.codebook_size)
        if bool(bad.any()):
            shifted = int(((codes >= lay.code_offset) & (codes < lay.code_offset + lay.codebook_size)).sum())
            hint = f" ({shifted} look like vocabulary ids: subtract the offset {lay.code_offset})" if shifted else ""
            raise ValueError(f"{int(bad.sum())} code(s) outside [0, {lay.codebook_size}){hint}")

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """(B, N) codes in [0, 8192), raster order -> (B, H, W, 3) uint8, H = grid_h * 16 (512 for the release)."""
        codes = torch.as_tensor(codes)
        self.check_codes(codes)
        grid = (self.layout.grid_h, self.layout.grid_w)
        chunks = [self.vq.decode_codes_to_uint8(codes[s : s + self.decode_batch_size], grid)
                  for s in range(0, codes.shape[0], self.decode_batch_size)]  # fmt: skip
        if not chunks:
            f = self.vq.config.downsample_factor
            return np.zeros((0, grid[0] * f, grid[1] * f, 3), dtype=np.uint8)
        return np.concatenate(chunks)  # (B, H, W, 3)


def check_layout_against_model(layout: MMaDALayout, model: LLaDAModelLM, where: str) -> None:
    """Every layout id and the whole image-code slice fit the embedding table; the mask ids agree (models.md 7.4)."""
    v = model.config.embedding_size
    if layout.vocab_needed > v:
        raise ValueError(f"{where}: embedding_size {v} < {layout.vocab_needed} needed by the layout (code offset "
                         f"{layout.code_offset} + {layout.codebook_size} codes, special ids)")  # fmt: skip
    if model.config.mask_token_id != layout.mask_id:
        raise ValueError(f"{where}: mask_token_id {model.config.mask_token_id} != layout mask id {layout.mask_id}")


def check_tokenizer(tokenizer: Any, layout: MMaDALayout, where: str) -> None:
    """models.md 7.4: len(tokenizer) == image-code offset; BOS / EOS / mask at the layout's ids; chat tokens present.

    The reserved ids of the layout (``[iPAD]``, ``<|t2i|>``, ``<|soi|>``, ``<|eoi|>``) must lie inside the text
    vocabulary: they are LLaDA reserved tokens, not added ones.
    """
    n = len(tokenizer)
    if n != layout.code_offset:
        raise ValueError(
            f"{where}: len(tokenizer) = {n} but the image codes start at {layout.code_offset}; code k must be id "
            "len(tokenizer) + k (docs/models.md 2.1). Wrong tokenizer, or tokens were added?"
        )
    unk = getattr(tokenizer, "unk_token_id", None)
    for field, token in TOKEN_NAMES.items():
        got, want = tokenizer.convert_tokens_to_ids(token), getattr(layout, field)
        if got != want:
            raise ValueError(f"{where}: {token} has id {got}, the layout expects {want} ({field})")
    for token in REQUIRED_TOKENS:
        got = tokenizer.convert_tokens_to_ids(token)
        if got is None or got == unk or not 0 <= got < n:
            raise ValueError(f"{where}: {token} is not in the tokenizer vocabulary (got id {got})")
    reserved = {f: getattr(layout, f) for f in ("pad_id", "t2i_id", "soi_id", "eoi_id")}
    outside = {f: i for f, i in reserved.items() if not 0 <= i < n}
    if outside:
        raise ValueError(f"{where}: layout ids {outside} are not inside the text vocabulary of size {n}")


def _enable_checkpointing(model: LLaDAModelLM) -> None:
    """Whole-block activation checkpointing (non-reentrant), through whichever name this transformers has."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def load_mmada(
    path: str | os.PathLike,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    vq_path: str | os.PathLike = "showlab/magvitv2",
    text_window: int = 513,
    tokenizer_path: str | os.PathLike | None = None,
    grid: int = 32,
    gradient_checkpointing: bool = False,
    strict_tokenizer: bool = True,
    attend_pads: bool = False,
    expected_vocab: int | None = None,
    vq_config: dict | None = None,
    vq_dtype: str = "float32",
    decode_batch_size: int = 8,
    **options: Any,
) -> MMaDABackbone:
    """Load MMaDA (model, tokenizer, MAGVIT-v2) and check them against each other and the layout.

    Args:
        path: MMaDA checkpoint directory or hub id (``Gen-Verse/MMaDA-8B-Base``).
        dtype: LLaDA weight dtype (bf16 for 8B runs).
        device: device of the LLaDA model and of MAGVIT-v2.
        vq_path: MAGVIT-v2 weights (directory, file or hub id ``showlab/magvitv2``).
        text_window: W, prompt columns of a row (513 = MMaDA inference; MaskGRPO RL used 257, docs/models.md 2.3).
        tokenizer_path: text tokenizer directory or hub id; default ``path``.
        grid: image codes per side (32 at 512 px).
        gradient_checkpointing: recompute each block in the backward pass (~0.4 GB instead of ~8 GB of activations
            per 1539-token row, docs/models.md 6).
        strict_tokenizer: run the docs/models.md 7.4 tokenizer checks (length == code offset, special ids).
        attend_pads: MaskGRPO's "attend to pads" reproduction option (docs/models.md 1.3).
        expected_vocab: V the checkpoint must have (134656 for MMaDA-8B); None only asserts V >= offset + 8192.
        vq_config: MagvitV2Config fields for a non-released MAGVIT-v2 (tiny test tokenizers); None = the release.
        vq_dtype: MAGVIT-v2 dtype, "float32" (default; the decoder is 40 M params) or "bfloat16".
        decode_batch_size: images per MAGVIT decoder call.
    """
    vq_torch_dtype = check_loader_options("mmada", load_mmada, options, vq_dtype)
    t0 = time.perf_counter()
    model_dir = resolve_checkpoint_dir(path, (*WEIGHT_PATTERNS, *TOKENIZER_PATTERNS))
    layout = mmada_8b(text_window=text_window, grid=grid)
    model = load_llada(model_dir, dtype=dtype, device=device, expected_vocab=expected_vocab,
                       expected_mask_id=layout.mask_id, attend_pads=attend_pads)  # fmt: skip
    check_layout_against_model(layout, model, str(model_dir / "config.json"))

    from transformers import AutoTokenizer

    tok_src = model_dir if tokenizer_path is None else resolve_checkpoint_dir(tokenizer_path, TOKENIZER_PATTERNS)
    # config= skips AutoTokenizer's re-read of config.json (model_type "mmada" is no transformers class).
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src), config=model.config)
    if strict_tokenizer:
        check_tokenizer(tokenizer, layout, str(tok_src))
    else:
        logger.warning("strict_tokenizer=false: docs/models.md 7.4 tokenizer checks skipped for %s", tok_src)

    vq_cfg = MagvitV2Config(**vq_config) if vq_config is not None else None
    vq = load_magvit2(vq_path, config=vq_cfg, dtype=vq_torch_dtype, device=device)
    if vq.codebook_size != layout.codebook_size:
        raise ValueError(f"{vq_path}: MAGVIT-v2 has {vq.codebook_size} codes, the layout {layout.codebook_size}")

    if gradient_checkpointing:
        _enable_checkpointing(model)
    logger.info("MMaDA backbone from %s (+ %s) in %.2f s: W=%d, grid %dx%d, V=%d", model_dir, vq_path,
                time.perf_counter() - t0, text_window, grid, grid, model.config.embedding_size)  # fmt: skip
    return MMaDABackbone(model=model, tokenizer=tokenizer, vq=vq, layout=layout, decode_batch_size=decode_batch_size)


def describe_options() -> dict[str, Any]:
    """The options of ``load_mmada`` with their defaults (``backbone.options`` keys), for plans and docs."""
    skip = ("path", "dtype", "device", "options")
    return {k: p.default for k, p in inspect.signature(load_mmada).parameters.items() if k not in skip}


__all__ = ["MMaDABackbone", "check_layout_against_model", "check_tokenizer", "describe_options", "load_mmada"]
