"""Samplers, one per class, selected by name: ``build_sampler("emerge" | "maskgit", **config)`` (models.md 3).

Importing this package registers every baseline sampler in ``SAMPLERS``.
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
from maskgrpo.sampling.lumina import LuminaSampler  # noqa: F401  (registers "lumina")
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
