"""Which linears LoRA adapts in the LLaDA backbone (docs/models.md 1.5).

MaskGRPO lists Llama names (``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``); in this architecture only
q/k/v/up exist under those names, so its LoRA silently covers 4 of the 7 block linears. Worse, the block's down
projection is called ``ff_out``, the same name as the LM head ``model.transformer.ff_out``, so a bare ``ff_out``
target would also adapt the head. Our decision: all seven block linears, matched by a regex anchored at
``blocks.<n>.`` so neither the head nor ``wte`` can match. ``MASKGRPO_EFFECTIVE_LINEARS`` reproduces upstream.
"""

from __future__ import annotations

import re

ALL_BLOCK_LINEARS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
"""Every linear inside a block (q, k, v, attention output, gate, up, down): our default LoRA targets."""

MASKGRPO_EFFECTIVE_LINEARS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "up_proj")
"""The four linears MaskGRPO's Llama-named target list actually hits (option ``lora_targets: maskgrpo_effective``)."""

LORA_TARGETS: dict[str, tuple[str, ...]] = {"all": ALL_BLOCK_LINEARS, "maskgrpo_effective": MASKGRPO_EFFECTIVE_LINEARS}
"""``lora.targets`` -> the block linears it adapts."""


def lora_target_regex(names: tuple[str, ...]) -> str:
    """A peft ``target_modules`` regex matching ``<...>.blocks.<n>.<name>`` for the given block-linear names.

    peft full-matches a string ``target_modules`` against each module's dotted name, e.g.
    ``model.transformer.blocks.3.ff_out`` (matched) vs ``model.transformer.ff_out`` (the head: not matched,
    because ``blocks.<digits>.`` must directly precede the name). Names outside ``ALL_BLOCK_LINEARS`` raise, so a
    Llama-style name such as ``o_proj`` cannot silently match nothing.
    """
    if not names:
        raise ValueError(f"lora_target_regex needs at least one name from {ALL_BLOCK_LINEARS}.")
    unknown = [n for n in names if n not in ALL_BLOCK_LINEARS]
    if unknown:
        raise ValueError(f"unknown block linear(s) {unknown}; valid names: {list(ALL_BLOCK_LINEARS)}.")
    alternatives = "|".join(re.escape(n) for n in dict.fromkeys(names))
    return rf"(?:.*\.)?blocks\.\d+\.(?:{alternatives})"


__all__ = ["ALL_BLOCK_LINEARS", "MASKGRPO_EFFECTIVE_LINEARS", "lora_target_regex"]
