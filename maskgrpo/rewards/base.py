"""Reward interface, registry, YAML specs, and the reward combination of the MaskGRPO trainer.

A reward is anything with a ``name`` that maps decoded images (plus prompts and per-prompt metadata) to one float
per image. Rewards are chosen in YAML by registry name, each with a weight ``w_f`` and a scale ``c_f``::

    rewards:
      hpsv3: {weight: 1.0, scale: 0.2}           # HPSv3 mu / 5
      clip: {weight: 1.0, scale: 1.0, model_path: openai/clip-vit-large-patch14}
      unifiedreward: {weight: 1.0, scale: 0.2, url: "http://127.0.0.1:18088/score"}

The trainer calls three stages, in order (docs/benchmarks.md section 4):

1. :func:`score_all` on its local rollouts -> ``R_f = c_f * raw_f``, shape (N_local, F);
2. an all-gather of that matrix across ranks (the trainer's job) -> (N_global, F);
3. :func:`combine_rewards` -> ``R = nansum_f(w_f * R_f)``, shape (N_global,), plus ``reward/`` metrics.

Failure policy. NaN is the one marker of a failed score; a failure is never silently turned into 0. By default
:func:`score_all` raises :class:`RewardError` when a reward returns NaN or +-inf (remote clients raise earlier, on
transport failures, see :mod:`maskgrpo.rewards.client`). ``allow_nan: true`` on a spec opts into the upstream
MaskGRPO semantics instead: the non-finite score is kept as NaN, the term drops out of the nansum, the fraction is
logged as ``reward/nan_frac/<name>``, and a warning is issued. A row whose every term is NaN gets R = 0, with a
warning and the ``reward/all_nan_frac`` metric.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Union, runtime_checkable

import numpy as np
import torch

from maskgrpo.registry import Registry

REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward")
"""Reward factories by name. Each is called as ``factory(**spec.kwargs, device=..., context=...)``."""


class RewardError(RuntimeError):
    """A reward could not produce a usable score (non-finite values, wrong shape, bad options)."""


@runtime_checkable
class RewardFn(Protocol):
    """One reward function.

    ``__call__(images, prompts, metadata)``:
        images: (B, H, W, 3) uint8 RGB, the decoded rollouts.
        prompts: B caption strings, one per image.
        metadata: B dicts, the per-prompt metadata (GenEval ``include``/``exclude`` clauses, tags, ...).
        returns: (B,) float64 **raw** scores (before the spec's scale); NaN marks a failed score, never 0.
    """

    name: str

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> np.ndarray: ...


SPEC_KEYS = ("weight", "scale", "allow_nan", "entry")
"""Keys of one YAML reward entry that belong to :class:`RewardSpec`; every other key is a factory kwarg."""


@dataclass(frozen=True)
class RewardSpec:
    """One YAML reward entry, e.g. ``hpsv3: {weight: 1.0, scale: 0.2, url: ...}``."""

    name: str
    """Name of the reward in logs (``reward/<name>/mean``) and, unless ``entry`` is set, its registry name."""
    weight: float = 1.0
    """w_f in R = sum_f w_f * R_f (docs/benchmarks.md section 4; 1 for every reward in MaskGRPO and HT-GRPO)."""
    scale: float = 1.0
    """c_f in R_f = c_f * raw_f: the training scale of the table in docs/benchmarks.md section 3 (0.2 = "/5")."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments of the registered factory (``url``, ``model_path``, ``timeout``, ...)."""
    allow_nan: bool = False
    """False (default): a NaN/inf score raises :class:`RewardError`. True: keep it as NaN, drop the term from the
    nansum of that row and log it (MaskGRPO's behaviour)."""
    entry: str | None = None
    """Registry name when it differs from ``name`` (two CLIP models: ``clip_b32: {entry: clip, ...}``)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("RewardSpec.name must be a non-empty string")
        for key in ("weight", "scale"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"reward {self.name!r}: {key} must be a finite number, got {value!r}")
        if not isinstance(self.kwargs, dict):
            raise ValueError(f"reward {self.name!r}: kwargs must be a dict, got {type(self.kwargs).__name__}")
        reserved = {"device", "context"} & set(self.kwargs)
        if reserved:
            raise ValueError(f"reward {self.name!r}: {sorted(reserved)} are set by the trainer, not in YAML")

    @property
    def registry_name(self) -> str:
        """The name looked up in :data:`REWARDS`."""
        return self.entry or self.name


def parse_reward_specs(config: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[RewardSpec]:
    """Turn the YAML ``rewards:`` block into specs, keeping the YAML order.

    Accepts a mapping ``{name: {weight, scale, allow_nan, entry, **factory_kwargs}}`` (the documented form; an
    entry may also nest its factory kwargs under ``kwargs:``) or a list of mappings that each carry ``name``.
    An empty value (``clip:`` or ``clip: {}``) means all defaults.
    """
    if isinstance(config, Mapping):
        items = [(name, body) for name, body in config.items()]
    else:
        items = []
        for body in config:
            if not isinstance(body, Mapping) or "name" not in body:
                raise ValueError(f"each reward in a list needs a 'name' key, got {body!r}")
            items.append((body["name"], {k: v for k, v in body.items() if k != "name"}))
    specs = []
    for name, body in items:
        body = dict(body or {})
        kwargs = dict(body.pop("kwargs", None) or {})
        spec_fields = {k: body.pop(k) for k in SPEC_KEYS if k in body}
        clash = set(kwargs) & set(body)
        if clash:
            raise ValueError(f"reward {name!r}: {sorted(clash)} given both flat and under 'kwargs'")
        kwargs.update(body)
        specs.append(RewardSpec(name=str(name), kwargs=kwargs, **spec_fields))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"reward names must be unique, got {names}")
    return specs


def option_matches(annotation: Any, value: Any) -> bool:
    """Does a YAML value fit a factory parameter's annotation? bool is not an int, an int is a float (finite), None
    fits only an Optional; containers are checked by their outer type; ``Any`` and unknown types accept anything."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(option_matches(arg, value) for arg in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    outer = origin or annotation
    return isinstance(value, outer) if isinstance(outer, type) else True


def check_option_types(spec: RewardSpec, factory: Callable[..., Any]) -> None:
    """Raise TypeError naming the reward and option when a kwarg does not fit the factory's annotation
    (``only_strict: null`` where a boolean is needed, a string timeout, ...)."""
    try:
        hints = typing.get_type_hints(factory)
    except (NameError, TypeError):  # annotations that cannot be resolved: nothing to check against
        return
    for key, value in spec.kwargs.items():
        if key in hints and not option_matches(hints[key], value):
            expected = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            raise TypeError(f"reward {spec.name!r}: option {key!r} must be {expected}, got {value!r}")


def checked_factory(spec: RewardSpec) -> Callable[..., RewardFn]:
    """The registered factory of ``spec``, after checking its options without building anything: KeyError for an
    unknown reward, TypeError naming the reward for an unknown option (with the valid ones) or a value that does not
    fit the factory's annotation."""
    factory = REWARDS.get(spec.registry_name)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = set(spec.kwargs) - set(params)
    if unknown and not takes_any:
        valid = sorted(k for k in params if k not in ("device", "context"))
        raise TypeError(
            f"reward {spec.name!r} ({spec.registry_name}) got unknown option(s) {sorted(unknown)}; "
            f"valid options: {valid}"
        )
    check_option_types(spec, factory)
    return factory


def build_rewards(
    specs: Sequence[RewardSpec], device: str | torch.device = "cpu", context: dict | None = None
) -> list[RewardFn]:
    """Instantiate every spec through its registered factory, in order (the config's order).

    ``context`` carries run-level values some rewards need: ``context["world_spec"]`` for ``shapes_geneval``,
    ``context["max_outage_s"]`` (the run's ``reward.max_outage_s``) for every HTTP reward. Options a factory does not
    accept, or whose value does not fit the factory's annotation, fail here with a TypeError naming the reward (and
    its valid options); see :func:`checked_factory`.
    """
    fns = []
    for spec in specs:
        factory = checked_factory(spec)
        fn = factory(**spec.kwargs, device=device, context=context or {})
        fn.name = spec.name
        fns.append(fn)
    return fns


def score_all(
    fns: Sequence[RewardFn],
    specs: Sequence[RewardSpec],
    images: np.ndarray,
    prompts: Sequence[str],
    metadata: Sequence[dict],
) -> np.ndarray:
    """Score one batch with every reward and apply the scales: ``R[:, f] = c_f * raw_f``.

    Args:
        fns, specs: the output of :func:`build_rewards` and its input, same order (F of each).
        images: (B, H, W, 3) uint8 RGB.
        prompts, metadata: B entries each.
    Returns:
        (B, F) float64 scaled scores; NaN only where ``spec.allow_nan`` (then with a warning).
    Raises:
        RewardError: a reward returned the wrong shape, or a NaN/inf without ``allow_nan``.
    """
    if len(fns) != len(specs):
        raise ValueError(f"{len(fns)} reward functions for {len(specs)} specs")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
    batch = images.shape[0]
    if len(prompts) != batch or len(metadata) != batch:
        raise ValueError(f"{batch} images but {len(prompts)} prompts and {len(metadata)} metadata entries")
    out = np.empty((batch, len(fns)), dtype=np.float64)  # (B, F)
    for f, (fn, spec) in enumerate(zip(fns, specs)):
        raw = np.asarray(fn(images, list(prompts), list(metadata)), dtype=np.float64)
        if raw.shape != (batch,):
            raise RewardError(f"reward {spec.name!r} returned shape {raw.shape}, expected ({batch},)")
        bad = ~np.isfinite(raw)
        if bad.any():
            where = np.flatnonzero(bad).tolist()
            msg = f"reward {spec.name!r} ({fn!r}) gave non-finite scores {raw[bad].tolist()} at images {where}"
            if not spec.allow_nan:
                raise RewardError(msg + "; fix the reward or set allow_nan: true to drop these terms")
            warnings.warn(msg + "; kept as NaN (allow_nan), dropped from the reward sum", RuntimeWarning, stacklevel=2)
            raw = np.where(bad, np.nan, raw)
        out[:, f] = spec.scale * raw
    return out


def _nan_stats(values: np.ndarray) -> tuple[float, float]:
    """Mean and population std (ddof=0) over the finite entries; (nan, nan) when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std())


def combine_rewards(
    scaled: np.ndarray, weights: Sequence[float] | np.ndarray, names: Sequence[str] | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Weighted sum of the scaled rewards, ``R_i = nansum_f(w_f * R_{i,f})`` (docs/benchmarks.md section 4).

    Pure numpy, so the trainer gathers the (N_local, F) matrices across ranks first and calls this on the result.

    Args:
        scaled: (N, F) float, the gathered output of :func:`score_all`; NaN = a dropped (failed) term.
        weights: (F,) w_f.
        names: F reward names for the metric keys (``[s.name for s in specs]``); default ``"0"``, ``"1"``, ...
    Returns:
        R: (N,) float64. A row whose every term is NaN gets 0 (MaskGRPO), with a warning.
        metrics: ``reward/<name>/mean`` and ``reward/<name>/std`` (mean and population std of R_f = c_f * raw_f
        over its finite entries), ``reward/nan_frac/<name>`` (fraction of NaN in column f),
        ``reward/mean`` and ``reward/std`` (of R), ``reward/all_nan_frac`` (fraction of rows set to 0).
    """
    scaled = np.asarray(scaled, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if scaled.ndim != 2 or weights.shape != (scaled.shape[1],):
        raise ValueError(f"scaled must be (N, F) and weights (F,), got {scaled.shape} and {weights.shape}")
    names = [str(f) for f in range(scaled.shape[1])] if names is None else list(names)
    if len(names) != scaled.shape[1]:
        raise ValueError(f"{len(names)} names for {scaled.shape[1]} reward columns")
    nan = np.isnan(scaled)  # (N, F)
    total = np.where(nan, 0.0, scaled * weights).sum(axis=1)  # (N,) nansum_f(w_f * R_f)
    all_nan = nan.all(axis=1) if scaled.shape[1] else np.ones(scaled.shape[0], dtype=bool)  # (N,)
    if all_nan.any():
        warnings.warn(
            f"{int(all_nan.sum())} of {len(all_nan)} rollouts have no finite reward term; their "
            f"reward is set to 0 (MaskGRPO semantics)",
            RuntimeWarning,
            stacklevel=2,
        )
    metrics: dict[str, float] = {}
    for f, name in enumerate(names):
        mean, std = _nan_stats(scaled[:, f])
        metrics[f"reward/{name}/mean"] = mean
        metrics[f"reward/{name}/std"] = std
        metrics[f"reward/nan_frac/{name}"] = float(nan[:, f].mean()) if len(nan) else 0.0
    metrics["reward/mean"], metrics["reward/std"] = _nan_stats(total)
    metrics["reward/all_nan_frac"] = float(all_nan.mean()) if len(all_nan) else 0.0
    return total, metrics
