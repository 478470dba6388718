"""Policy and reference: LoRA (reference = adapter disabled) or full fine-tuning (frozen reference copy)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch

from maskgrpo.config.schema import LoraSettings
from maskgrpo.layout import T2IBatch
from maskgrpo.models.lora_targets import LORA_TARGETS, lora_target_regex


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
        if disable_dropout(policy) and _is_rank0():
            print(
                f"[train] note: lora.dropout={lora.dropout} is not applied: RL runs every log-prob pass without "
                "dropout, so pi_old and pi_theta are the same function (ratio 1 before the first step)",
                flush=True,
            )

        @contextlib.contextmanager
        def reference() -> Iterator[torch.nn.Module | None]:
            if not need_reference:
                yield None
                return
            with policy.disable_adapter():
                yield policy

        return policy, reference
    disable_dropout(model)  # full fine-tuning: the same rule (the LLaDA blocks have no dropout of their own)
    ref = None
    if need_reference:
        ref = copy.deepcopy(model).eval()
        ref.requires_grad_(False)

    @contextlib.contextmanager
    def frozen() -> Iterator[torch.nn.Module | None]:
        yield ref

    return model, frozen


def disable_dropout(module: torch.nn.Module) -> list[str]:
    """Set p = 0 on every dropout layer of ``module``; returns the names of those that had p > 0.

    RL runs without dropout (the usual choice for RL on LLMs): rollouts and old / reference log-probs run the policy
    in eval mode, the inner updates in train mode (gradient checkpointing recomputes only in train mode), and with
    dropout active the two would be different functions: the ratio would not be 1 before the first step and the clip
    would act on dropout noise. With p = 0 every pass of a round computes the same pi. Test:
    tests/test_round_cost.py::test_first_update_ratio_is_exactly_one_with_lora_dropout_configured.
    """
    changed = []
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.dropout._DropoutNd) and sub.p > 0:
            sub.p = 0.0
            changed.append(name)
    return changed


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


ReferenceContext = Callable[[], contextlib.AbstractContextManager]


def code_logits(model: torch.nn.Module, batch: T2IBatch, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """(R, N, K) logits of input rows ``input_ids`` (R, T) at ``batch``'s image slots, over the K image codes only
    (docs/method.md 1: the LM head is computed only there). The one code-logit pass of the trainer and the eval tools;
    gradients flow (wrap in ``torch.no_grad()`` for old / reference / diagnostic passes)."""
    vocab = (batch.code_offset, batch.code_offset + batch.codebook_size)
    return model(input_ids=input_ids, attention_mask=attention_mask,
                 logits_at=batch.image_positions.to(input_ids.device), vocab_slice=vocab).logits  # fmt: skip
