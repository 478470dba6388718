"""The backbone contract the samplers, the RL loop and the evaluators rely on.

A backbone turns prompts into a ``T2IBatch`` (its sequence layout), holds the LLaDA-style model, and decodes image
codes (B, N) into uint8 pixels (B, H, W, 3). ShapesWorld, MMaDA and Lumina-DiMOO differ only here.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from maskgrpo.catalog import BACKBONES
from maskgrpo.errors import RunError, one_line
from maskgrpo.layout import T2IBatch


class Backbone(Protocol):
    model: torch.nn.Module
    """The LLaDA-style bidirectional transformer (call contract: see maskgrpo.models.modeling_llada)."""

    def prompt_batch(self, prompts: list[str]) -> T2IBatch:
        """Rows for B prompts with every image slot masked (and the matching unconditional rows)."""
        ...

    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """(B, N) codes in [0, K) -> (B, H, W, 3) uint8 images."""
        ...

    def unknown_words(self, captions: list[str]) -> list[str]:
        """Sorted distinct words of ``captions`` the prompt encoder maps to an unknown token ([] for subwords)."""
        ...


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Config names of the weight dtypes a backbone (and its image tokenizer) can load in."""


def check_loader_options(name: str, loader: Any, options: dict, vq_dtype: str) -> torch.dtype:
    """Shared checks of a backbone loader's ``**options`` and ``vq_dtype``; returns the VQ's torch dtype."""
    if options:
        valid = [p for p in inspect.signature(loader).parameters if p not in ("path", "options")]
        raise ValueError(f"backbone {name!r} got unknown option(s) {sorted(options)}; valid options: {valid}")
    if vq_dtype not in DTYPES:
        raise ValueError(f"backbone {name!r}: vq_dtype must be one of {sorted(DTYPES)}, got {vq_dtype!r}")
    return DTYPES[vq_dtype]


def tokenizer_unknown_words(tokenizer: Any, captions: list[str]) -> list[str]:
    """Sorted distinct whitespace-separated words of ``captions`` that a Hugging Face tokenizer encodes with its
    unknown token (none for byte-level BPE, which has no ``unk_token_id``)."""
    unk = tokenizer.unk_token_id
    words = sorted({w for c in captions for w in c.split()})
    if unk is None or not words:
        return []
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    return [w for w, i in zip(words, ids) if unk in i]


def load_backbone(name: str, path: str, dtype: torch.dtype, device: str | torch.device, options: dict) -> Backbone:
    """The registered loader ``name`` on ``path``; a bad base (missing, truncated or garbled file, wrong keys or
    shapes, unknown option) is a :class:`RunError` whose one line names the backbone, the path and the loader's
    message (which names the file). Every loader validates what it reads and raises ValueError / OSError for it."""
    from safetensors import SafetensorError

    loader = BACKBONES.get(name)
    try:
        return loader(path, dtype=dtype, device=device, **options)
    except (ValueError, OSError, SafetensorError) as e:
        raise RunError(f"cannot load backbone {name!r} from {path}: {one_line(e)}") from e


@torch.no_grad()
def generate_codes(
    backbone: Backbone,
    prompts: list[str],
    sampler: Any,
    generator: torch.Generator,
    batch_size: int,
    desc: str | None = None,
) -> torch.Tensor:
    """Sample one image per prompt entry (repeat a prompt to get several) in chunks; returns (len(prompts), N)."""
    device = next(backbone.model.parameters()).device
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for s in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        batch = backbone.prompt_batch(prompts[s : s + batch_size]).to(device)
        chunks.append(sampler.sample(backbone.model, batch, generator).codes.cpu())
    return torch.cat(chunks)  # (P, N)


def loader_defaults(loader: Any) -> dict[str, Any]:
    """The default options of a backbone loader (its keyword arguments besides path, dtype and device)."""
    skip = ("path", "dtype", "device")
    params = inspect.signature(loader).parameters
    return {k: p.default for k, p in params.items() if k not in skip and p.kind is not inspect.Parameter.VAR_KEYWORD}
