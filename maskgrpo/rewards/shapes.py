"""ShapesWorld GenEval rewards, registered like every other reward so the toy and the 8B runs share one code path.

- ``shapes_geneval``: the clipped partial-credit reward (benchmarks.md section 1, variant ``clipped``; every term in
  [0, 1], so the score is in [0, 1]) of :class:`maskgrpo.toy.shapes_eval.ShapesEvaluator`. It ignores exclude
  clauses and reads all detections of a class (see :mod:`maskgrpo.scoring.geneval_graded`).
- ``shapes_geneval_strict``: 1.0 if GenEval's official rules call the image correct, else 0.0.
- ``shapes_geneval_graded``: GenEval's own checks each graded in [0, 1] and averaged, exclude clauses (the surplus
  count of counting prompts) charged; 1.0 exactly when GenEval calls the image correct
  (:func:`maskgrpo.scoring.geneval_graded.graded_verdict`).

All need the run's ShapesWorld spec, passed by the trainer as ``context["world_spec"]``
(a :class:`maskgrpo.toy.world.WorldSpec`), and GenEval-style metadata per prompt: the keys in
:data:`REQUIRED_METADATA` (``exclude`` is optional).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from maskgrpo.rewards.base import REWARDS
from maskgrpo.toy.text_tokenizer import world_vocabulary

REQUIRED_METADATA: tuple[str, ...] = ("tag", "include")
"""Metadata keys every ShapesWorld reward reads from each prompt (GenEval's format; ``exclude`` is optional)."""

SCORE_FIELDS: dict[str, Callable[[Any], float]] = {
    "partial": lambda r: float(r.partial),
    "strict": lambda r: float(r.correct),
    "graded": lambda r: float(r.graded),
}
"""Which field of a :class:`maskgrpo.toy.shapes_eval.ImageResult` each reward kind returns."""


class ShapesGenEvalReward:
    """``__call__(images (B, H, W, 3) uint8, prompts [B], metadata [B]) -> (B,) float64`` in [0, 1]."""

    required_metadata = REQUIRED_METADATA

    def __init__(self, evaluator: Any, kind: str, name: str) -> None:
        if kind not in SCORE_FIELDS:
            raise ValueError(f"unknown ShapesWorld reward kind {kind!r}; valid kinds: {sorted(SCORE_FIELDS)}")
        self.evaluator = evaluator
        self.kind = kind
        self.name = name
        self.vocabulary = world_vocabulary(evaluator.spec)
        """Caption words this reward can score: the world's (a word outside it names nothing it can detect)."""

    def __repr__(self) -> str:
        return f"ShapesGenEvalReward(name={self.name!r}, kind={self.kind!r})"

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> np.ndarray:
        field = SCORE_FIELDS[self.kind]
        results = self.evaluator.score(np.asarray(images), list(metadata))
        return np.asarray([field(r) for r in results], dtype=np.float64)  # (B,)


def _evaluator(context: dict | None, name: str) -> Any:
    from maskgrpo.toy.shapes_eval import ShapesEvaluator

    spec = (context or {}).get("world_spec")
    if spec is None:
        raise ValueError(
            f"reward {name!r} needs context['world_spec'] (the run's ShapesWorld WorldSpec); "
            f"the trainer passes it to build_rewards(..., context=...)"
        )
    return ShapesEvaluator(spec)


def _register(name: str, kind: str, doc: str) -> None:
    """Register the factory ``name`` -> ShapesGenEvalReward of ``kind``; the factory carries ``required_metadata``."""

    def factory(device: Any = None, context: dict | None = None) -> ShapesGenEvalReward:
        return ShapesGenEvalReward(_evaluator(context, name), kind=kind, name=name)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    factory.required_metadata = REQUIRED_METADATA  # type: ignore[attr-defined]
    REWARDS.register(name)(factory)


_register("shapes_geneval", "partial", "ShapesWorld partial credit in [0, 1] (clipped variant).")
_register("shapes_geneval_strict", "strict", "1.0 where GenEval's rules accept the ShapesWorld image, else 0.0.")
_register("shapes_geneval_graded", "graded", "GenEval's checks graded in [0, 1], excludes charged; 1.0 iff it passes.")
