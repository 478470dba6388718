"""The compute a run has spent, in the units its accuracy is plotted against (``budget/*`` in metrics.jsonl).

Convention (docs/run_folder.md):

- a *forward* is one sequence (an input row) through the network, counted by ``maskgrpo.observe.ForwardCounter``
  per phase of a round: ``rollout`` (conditional and CFG rows, each distinct row once per sampler step),
  ``old_ref`` (no-grad log-prob passes) and ``update`` (forwards that are also back-propagated);
- a *forward-equivalent* counts a backward pass as two forwards: FE = rollout + old_ref + 3 * update;
- *seconds* are the wall seconds of the rounds' phases (rollout, reward, old/ref, update, optimizer steps):
  evaluation, logging and checkpoints are not counted.

Forwards and FE are summed over the ranks and exact (the same on a resumed run); seconds are the slowest rank's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

PHASES = ("rollout", "old_ref", "update")
"""Phases whose forwards are training compute (evaluation forwards are not)."""
BACKWARD_FORWARDS = 2.0
"""A backward pass costs about two forwards (the FE convention)."""
ROUND_SECONDS = ("rollout", "reward", "old_ref", "update")
"""Top-level phases of a round whose wall seconds are training time (``optimizer`` is inside ``update``)."""


def round_spend(metrics: Mapping[str, float]) -> np.ndarray:
    """(4,) float64 [rollout, old_ref, update forwards, wall seconds] of one round on one rank, from its metrics."""
    forwards = [metrics.get(f"perf/forwards_{p}", 0) for p in PHASES]
    seconds = sum(metrics.get(f"perf/seconds_{p}", 0.0) for p in ROUND_SECONDS)
    return np.array([*forwards, seconds], dtype=np.float64)


def add_spend(total: Mapping[str, float], per_rank: np.ndarray) -> dict[str, float]:
    """The run's budget after one more round: ``per_rank`` is (world, 4) from :func:`round_spend` on every rank.

    Test: two ranks [[10, 4, 2, 1.5], [10, 4, 2, 2.0]] on an empty total -> forwards 32, FE 20 + 8 + 3 * 4 = 40,
    seconds 2.0 (the slowest rank).
    """
    rollout, old_ref, update = (float(x) for x in per_rank[:, :3].sum(0))  # Python floats: checkpointed
    fe = rollout + old_ref + (1.0 + BACKWARD_FORWARDS) * update
    return {
        "forwards": total.get("forwards", 0.0) + rollout + old_ref + update,
        "forward_equivalents": total.get("forward_equivalents", 0.0) + fe,
        "seconds": total.get("seconds", 0.0) + float(per_rank[:, 3].max()),
    }


def budget_metrics(total: Mapping[str, float]) -> dict[str, float]:
    """``budget/<name>`` keys of a metrics line."""
    return {f"budget/{k}": round(v, 3) if k == "seconds" else int(v) for k, v in total.items()}
