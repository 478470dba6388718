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

from maskgrpo.layout import T2IBatch
from maskgrpo.registry import Registry


class Backbone(Protocol):
    model: torch.nn.Module
    """The LLaDA-style bidirectional transformer (call contract: see maskgrpo.models.modeling_llada)."""

    def prompt_batch(self, prompts: list[str]) -> T2IBatch:
        """Rows for B prompts with every image slot masked (and the matching unconditional rows)."""
        ...

    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """(B, N) codes in [0, K) -> (B, H, W, 3) uint8 images."""
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


BACKBONES: Registry[Any] = Registry("backbone")
"""name -> loader(path: str, **options) -> Backbone."""


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
