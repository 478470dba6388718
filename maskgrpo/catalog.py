"""Every built-in component of the baseline, by the name a config uses, as ``"module:attribute"``.

The registries below are the swap points: ``backbone.name``, ``rollout.name`` / ``eval.sampler.name``,
``rl.sampler_wrapper``, ``rl.context`` and ``rl.loss``. Entries are lazy (``maskgrpo.registry``): a module is imported
the first time its entry is looked up, so the config layer checks names against this file without importing any
runtime code, and a ShapesWorld run never imports the MMaDA or Lumina-DiMOO modules. A patch package registers its
own components into the same registries when a config asks for it (``patch: htgrpo`` imports ``htgrpo_patch``).
"""

from __future__ import annotations

from typing import Any

from maskgrpo.registry import Registry

BACKBONES: Registry[Any] = Registry("backbone", {
    "shapes": "maskgrpo.toy.backbone:load_shapes",
    "mmada": "maskgrpo.backbones.mmada:load_mmada",
    "lumina": "maskgrpo.backbones.lumina:load_lumina",
})  # fmt: skip
"""name -> loader(path, dtype=..., device=..., **options) -> Backbone (``maskgrpo.backbones.base``)."""

SAMPLERS: Registry[Any] = Registry("sampler", {
    "emerge": "maskgrpo.sampling.emerge:EmergeSampler",
    "maskgit": "maskgrpo.sampling.maskgit:MaskGITSampler",
    "lumina": "maskgrpo.sampling.lumina:LuminaSampler",
})  # fmt: skip
"""name -> sampler class, built from its config (``maskgrpo.sampling.base.build_sampler``)."""

SAMPLER_WRAPPERS: Registry[Any] = Registry("sampler wrapper", {"none": "maskgrpo.sampling.base:no_wrapper"})
"""name -> wrapper(sampler, cfg, options) -> sampler; HT-GRPO registers ``ranked``."""

CONTEXTS: Registry[Any] = Registry("context builder", {
    "random_remask": "maskgrpo.algo.contexts:random_remask",
    "trace": "maskgrpo.algo.trace:trace_context",
})  # fmt: skip
"""name -> factory(cfg: TrainRun, options: the preset's typed patch options or None) -> ContextBuilder."""

LOSSES: Registry[Any] = Registry("policy loss", {"grpo": "maskgrpo.algo.losses:grpo_loss"})
"""name -> factory(cfg: TrainRun, options: the preset's typed patch options or None) -> PolicyLoss."""
