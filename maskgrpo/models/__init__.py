"""Backbone models. ``LLaDAModelLM`` is the LLaDA / MMaDA / Lumina-DiMOO mask predictor (docs/models.md 1).

Importing this package registers ``model_type = "llada"`` with ``AutoConfig`` / ``AutoModel`` so that
``AutoModel.from_pretrained(<saved tiny model dir>)`` works offline; registration is skipped if already done.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel

from .configuration_llada import LLaDAConfig
from .lora_targets import ALL_BLOCK_LINEARS, MASKGRPO_EFFECTIVE_LINEARS, lora_target_regex
from .modeling_llada import LLaDAModelLM, LLaDAOutput


def _register_auto_classes() -> None:
    """Register once; a second import (or another package that registered "llada") must not raise."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if LLaDAConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig)
    try:
        AutoModel.register(LLaDAConfig, LLaDAModelLM)
    except ValueError:  # already registered for this config class
        pass


_register_auto_classes()

__all__ = [
    "ALL_BLOCK_LINEARS",
    "MASKGRPO_EFFECTIVE_LINEARS",
    "LLaDAConfig",
    "LLaDAModelLM",
    "LLaDAOutput",
    "lora_target_regex",
]
