"""Samplers, one per class, selected by name: ``build_sampler("emerge" | "maskgit", **config)`` (docs/models.md 3).

The names are registered in ``maskgrpo.catalog.SAMPLERS`` (``SAMPLERS`` here is the same registry).
"""

from maskgrpo.sampling.base import (
    SAMPLERS,
    CodeLogitsModel,
    Sampler,
    SamplerOutput,
    StepHook,
    StepInfo,
    build_sampler,
    canvas_ids,
    guided_code_logits,
)
from maskgrpo.sampling.emerge import EmergeSampler
from maskgrpo.sampling.maskgit import MaskGITSampler

__all__ = [
    "SAMPLERS",
    "CodeLogitsModel",
    "EmergeSampler",
    "MaskGITSampler",
    "Sampler",
    "SamplerOutput",
    "StepHook",
    "StepInfo",
    "build_sampler",
    "canvas_ids",
    "guided_code_logits",
]
