"""How the per-micro-batch metrics of a round become the round's logged values.

A loss reports its metrics per micro-batch (0-d tensors) and declares, in its ``reductions`` mapping, how a key
reduces over the micro-batches that reported it: ``mean`` (the rule for every key the mapping does not name) or
``max`` (e.g. ``policy/ratio_max``: the round's largest ratio, not the mean of per-micro-batch maxima). A key that
only some micro-batches report (HT-GRPO's ``stage/<stage>/*``, reported by that stage's updates only) is reduced
over those micro-batches alone. Values stay on the device until ``result`` (one sync per round).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Reduction:
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(accumulated, new value) -> accumulated."""
    finish: Callable[[torch.Tensor, int], torch.Tensor]
    """(accumulated, number of reports) -> the round's value."""


REDUCTIONS: dict[str, Reduction] = {
    "mean": Reduction(torch.add, lambda acc, n: acc / n),
    "max": Reduction(torch.maximum, lambda acc, n: acc),
}
"""Reduction name -> how it combines reports. A loss names one per key in ``reductions``; unnamed keys use mean."""


def check_reductions(reductions: Mapping[str, str], where: str) -> None:
    """Every reduction a loss names must be registered (ValueError naming the key and the valid names)."""
    for key, name in reductions.items():
        if name not in REDUCTIONS:
            raise ValueError(f"{where}: metric {key!r} reduces by {name!r}; valid reductions: {sorted(REDUCTIONS)}")


class RoundMetrics:
    """Accumulates the metrics of every micro-batch of a round; ``result`` reduces each key over its reports."""

    def __init__(self, reductions: Mapping[str, str]) -> None:
        check_reductions(reductions, "loss reductions")
        self.reductions = dict(reductions)
        self.acc: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}

    def add(self, metrics: Mapping[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            v = value.detach().float()
            if key in self.acc:
                self.acc[key] = REDUCTIONS[self.reductions.get(key, "mean")].combine(self.acc[key], v)
            else:
                self.acc[key] = v
            self.count[key] = self.count.get(key, 0) + 1

    def result(self) -> dict[str, float]:
        out = {k: REDUCTIONS[self.reductions.get(k, "mean")].finish(v, self.count[k]) for k, v in self.acc.items()}
        return {k: float(v) for k, v in out.items()}
