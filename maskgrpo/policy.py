"""Policy and reference: LoRA (reference = adapter disabled) or full fine-tuning (frozen reference copy)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch

from maskgrpo.config.schema import LoraSettings
from maskgrpo.models import ALL_BLOCK_LINEARS, MASKGRPO_EFFECTIVE_LINEARS, lora_target_regex

LORA_TARGETS = {"all": ALL_BLOCK_LINEARS, "maskgrpo_effective": MASKGRPO_EFFECTIVE_LINEARS}


def build_policy(model: torch.nn.Module, lora: LoraSettings, need_reference: bool):
    """Returns (policy module, reference_context).

    ``reference_context()`` is a context manager yielding the module that computes reference log-probs: the policy
    with its LoRA adapter disabled, or a frozen copy of the base weights for full fine-tuning. With
    ``need_reference`` false (kl_beta = 0) no copy is made and it yields None.
    """
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=lora_target_regex(LORA_TARGETS[lora.targets]))  # fmt: skip
        policy = get_peft_model(model, cfg)

        @contextlib.contextmanager
        def reference() -> Iterator[torch.nn.Module | None]:
            if not need_reference:
                yield None
                return
            with policy.disable_adapter():
                yield policy

        return policy, reference
    ref = None
    if need_reference:
        ref = copy.deepcopy(model).eval()
        ref.requires_grad_(False)

    @contextlib.contextmanager
    def frozen() -> Iterator[torch.nn.Module | None]:
        yield ref

    return model, frozen


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


ReferenceContext = Callable[[], contextlib.AbstractContextManager]
