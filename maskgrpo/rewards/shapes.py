"""ShapesWorld GenEval rewards, registered like every other reward so the toy and the 8B runs share one code path.

- ``shapes_geneval``: the clipped partial-credit reward (benchmarks.md section 1, variant ``clipped``; every term in
  [0, 1], so the score is in [0, 1]) of :class:`maskgrpo.toy.shapes_eval.ShapesEvaluator` - the RL reward of
  toy_world.md.
- ``shapes_geneval_strict``: 1.0 if GenEval's official rules call the image correct, else 0.0.

Both need the run's ShapesWorld spec, passed by the trainer as ``context["world_spec"]``
(a :class:`maskgrpo.toy.world.WorldSpec`). Metadata entries are the GenEval-style dicts of the caption set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskgrpo.rewards.base import REWARDS


class ShapesGenEvalReward:
    """``__call__(images (B, H, W, 3) uint8, prompts [B], metadata [B]) -> (B,) float64`` in [0, 1]."""

    def __init__(self, evaluator: Any, strict: bool, name: str) -> None:
        self.evaluator = evaluator
        self.strict = strict
        self.name = name

    def __repr__(self) -> str:
        return f"ShapesGenEvalReward(name={self.name!r}, strict={self.strict})"

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> np.ndarray:
        results = self.evaluator.score(np.asarray(images), list(metadata))
        values = [float(r.correct) if self.strict else float(r.partial) for r in results]
        return np.asarray(values, dtype=np.float64)  # (B,)


def _evaluator(context: dict | None, name: str) -> Any:
    from maskgrpo.toy.shapes_eval import ShapesEvaluator

    spec = (context or {}).get("world_spec")
    if spec is None:
        raise ValueError(
            f"reward {name!r} needs context['world_spec'] (the run's ShapesWorld WorldSpec); "
            f"the trainer passes it to build_rewards(..., context=...)"
        )
    return ShapesEvaluator(spec)


@REWARDS.register("shapes_geneval")
def shapes_geneval(device: Any = None, context: dict | None = None) -> ShapesGenEvalReward:
    """ShapesWorld partial credit in [0, 1] (clipped variant); needs ``context["world_spec"]``."""
    return ShapesGenEvalReward(_evaluator(context, "shapes_geneval"), strict=False, name="shapes_geneval")


@REWARDS.register("shapes_geneval_strict")
def shapes_geneval_strict(device: Any = None, context: dict | None = None) -> ShapesGenEvalReward:
    """1.0 where GenEval's official rules accept the ShapesWorld image, else 0.0; needs ``context["world_spec"]``."""
    return ShapesGenEvalReward(_evaluator(context, "shapes_geneval_strict"), strict=True, name="shapes_geneval_strict")
