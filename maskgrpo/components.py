"""Resolve the run's components from the config by registered name (the only place names become objects).

A *preset* names the default component of each swap point: ``maskgrpo`` (the baseline) or one registered by a
patch package. ``patch: htgrpo`` imports ``htgrpo_patch`` (only then), which registers its components and its
preset; any single component can still be overridden in ``rl.*`` (ablations). The resolved names are written into
the run directory and every checkpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from maskgrpo.backbones.base import DTYPES, load_backbone
from maskgrpo.catalog import BACKBONES, CONTEXTS, LOSSES, SAMPLER_WRAPPERS
from maskgrpo.config import ConfigError
from maskgrpo.config.schema import TrainRun
from maskgrpo.errors import RunError
from maskgrpo.prompts import PromptSet, check_prompts, read_prompt_file
from maskgrpo.registry import Registry
from maskgrpo.rewards.base import RewardSpec, build_rewards


@dataclass(frozen=True)
class Preset:
    """Default component names of a method, plus how to type its ``patch_options``."""

    context: str
    loss: str
    sampler_wrapper: str = "none"
    options: Callable[[TrainRun], Any] = lambda cfg: None
    """cfg -> typed options handed to every factory of the run (None for the baseline)."""


PRESETS: Registry[Preset] = Registry("preset")
PRESETS.register("maskgrpo")(Preset(context="random_remask", loss="grpo"))


def load_preset(patch: str | None) -> Preset:
    """The baseline preset, or a patch's: ``patch: X`` imports the package ``X_patch`` if X is not registered."""
    if patch is None:
        return PRESETS.get("maskgrpo")
    if patch not in PRESETS:
        try:
            importlib.import_module(f"{patch}_patch")
        except ModuleNotFoundError as e:
            raise ConfigError(f"patch: {patch!r}: no preset registered and no package {patch}_patch ({e})") from e
    return PRESETS.get(patch)


def run_context(cfg: TrainRun, preset: str | None = None) -> tuple[str, str, Any]:
    """(method, context name, context builder) of a run: ``preset`` None = the run's own (``rl.context`` overrides
    included), else that preset's default context on the same config (the dry runs compare both methods)."""
    method = preset if preset is not None else (cfg.patch or "maskgrpo")
    p = load_preset(None if method == "maskgrpo" else method)
    name = (cfg.rl.context if preset is None else None) or p.context
    return method, name, _lookup(CONTEXTS, "rl.context", name)(cfg, p.options(cfg))


@dataclass
class Components:
    backbone: Any
    sampler: Any
    context: Any
    loss: Any
    reward_fns: list
    reward_specs: list[RewardSpec]
    prompts: list[dict]
    names: dict[str, str]


def _lookup(registry: Registry, key: str, name: str) -> Any:
    try:
        return registry.get(name)
    except KeyError as e:
        raise ConfigError(f"{key}: {e.args[0]}") from e


def resolve_components(cfg: TrainRun, device: torch.device) -> Components:
    preset = load_preset(cfg.patch)
    options = preset.options(cfg)
    names = {
        "preset": cfg.patch or "maskgrpo",
        "backbone": cfg.backbone.name,
        "sampler": cfg.rollout.name,
        "sampler_wrapper": cfg.rl.sampler_wrapper or preset.sampler_wrapper,
        "context": cfg.rl.context or preset.context,
        "loss": cfg.rl.loss or preset.loss,
        "rewards": ",".join(cfg.rewards),
    }
    sampler = cfg.rollout.build()
    sampler = _lookup(SAMPLER_WRAPPERS, "rl.sampler_wrapper", names["sampler_wrapper"])(sampler, cfg, options)
    context = _lookup(CONTEXTS, "rl.context", names["context"])(cfg, options)
    loss = _lookup(LOSSES, "rl.loss", names["loss"])(cfg, options)
    _lookup(BACKBONES, "backbone.name", cfg.backbone.name)  # a bad name fails before the prompt file is read
    from_file = cfg.prompts.source != "backbone"
    prompt_set = read_prompt_file(cfg.prompts.source) if from_file else None  # file errors before any model work
    backbone = load_backbone(cfg.backbone.name, cfg.backbone.path, DTYPES[cfg.backbone.dtype], device,
                             cfg.backbone.options)  # fmt: skip
    if not from_file:
        prompts = list(getattr(backbone, "train_prompts", []))
        if not prompts:
            raise ConfigError(f"prompts.source: backbone {cfg.backbone.name!r} has no built-in prompts; give a JSONL")
        prompt_set = PromptSet(prompts, f"backbone {cfg.backbone.name!r}", None)
    specs = [RewardSpec(n, e.weight, e.scale, dict(e.kwargs), e.allow_nan, e.entry) for n, e in cfg.rewards.items()]
    try:
        shared = {"world_spec": getattr(backbone, "spec", None), "max_outage_s": cfg.reward.max_outage_s}
        fns = build_rewards(specs, device=device, context=shared)
    except (KeyError, TypeError, ValueError, RunError) as e:  # unknown name or option, bad value, missing model
        raise ConfigError(f"rewards: {e.args[0] if e.args else e}") from e
    check_prompts(prompt_set, fns, backbone)  # metadata keys the rewards need; words they cannot score
    return Components(backbone, sampler, context, loss, fns, specs, prompt_set.prompts, names)
