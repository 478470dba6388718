"""Backbone models. ``LLaDAModelLM`` is the LLaDA / MMaDA / Lumina-DiMOO mask predictor (docs/models.md 1).

The package itself is light: ``LLaDAConfig`` / ``LLaDAModelLM`` / ``LLaDAOutput`` load (with transformers) on first
use, so what needs only the pure submodules (``lora_targets``, ``fetch``) starts in a fraction of the time, e.g.
the launchers' dry run. Loading ``modeling_llada`` registers ``model_type = "llada"`` with ``AutoConfig`` /
``AutoModel``, so ``AutoModel.from_pretrained(<saved tiny model dir>)`` works offline after any of them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .lora_targets import ALL_BLOCK_LINEARS, MASKGRPO_EFFECTIVE_LINEARS, lora_target_regex

if TYPE_CHECKING:
    from .configuration_llada import LLaDAConfig
    from .modeling_llada import LLaDAModelLM, LLaDAOutput

_LAZY = {"LLaDAConfig": ".configuration_llada", "LLaDAModelLM": ".modeling_llada", "LLaDAOutput": ".modeling_llada"}
"""Name -> the submodule that defines it, imported when the name is first asked for."""


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(".modeling_llada", __name__)  # registers the auto classes whichever name comes first
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ALL_BLOCK_LINEARS",
    "MASKGRPO_EFFECTIVE_LINEARS",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LLaDAOutput",
    "lora_target_regex",
]
