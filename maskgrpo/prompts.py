"""The training prompt stream: a seeded permutation per epoch, read P prompts per round, split across ranks.

Two orders, both a pure function of (seed, position), so a resumed run reads exactly the prompts it would have read:

- ``uniform``: every prompt once per epoch (:class:`PromptStream`); tags appear in proportion to their prompt counts.
- ``tag``: tags take turns (:class:`TagBalancedStream`), each tag reading its own prompt stream; use it when one tag
  dominates the prompt list (ShapesWorld's training captions are 84% color_attr).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskgrpo.jsonl import iter_jsonl
from maskgrpo.registry import Registry


def load_prompt_metadata(path: str | Path) -> list[dict]:
    """GenEval-style metadata lines ({"prompt", "tag", "include", ...}); a bad line names file and line number."""
    return [meta for _, meta, _ in iter_jsonl(path, required=("prompt",))]


class PromptStream:
    """Position p of the stream = prompt perm_e[p mod n] with e = p // n; deterministic from (seed, position)."""

    def __init__(self, prompts: list[dict], seed: int | list[int]) -> None:
        if not prompts:
            raise ValueError("the prompt list is empty")
        self.prompts, self.seed = prompts, seed

    def _perm(self, epoch: int) -> np.ndarray:
        seed = self.seed if isinstance(self.seed, list) else [self.seed]
        return np.random.default_rng([*seed, epoch]).permutation(len(self.prompts))

    def take(self, position: int, count: int) -> list[dict]:
        n = len(self.prompts)
        return [self.prompts[int(self._perm(p // n)[p % n])] for p in range(position, position + count)]


class TagBalancedStream:
    """Tags take turns: position p is in cycle c = p // n_tags, whose tag order is a seeded permutation; the tag at
    p reads position c of its own :class:`PromptStream`. Every window of n_tags positions that starts at a cycle
    boundary holds each tag once. Prompts without a ``tag`` form the tag ``""``."""

    def __init__(self, prompts: list[dict], seed: int) -> None:
        if not prompts:
            raise ValueError("the prompt list is empty")
        by_tag: dict[str, list[dict]] = {}
        for meta in prompts:
            by_tag.setdefault(str(meta.get("tag", "")), []).append(meta)
        self.tags = sorted(by_tag)
        self.seed = seed
        self.streams = [PromptStream(by_tag[t], [seed, 1 + i]) for i, t in enumerate(self.tags)]

    def take(self, position: int, count: int) -> list[dict]:
        k = len(self.tags)
        out = []
        for p in range(position, position + count):
            cycle = p // k
            tag = int(np.random.default_rng([self.seed, 0, cycle]).permutation(k)[p % k])
            out.extend(self.streams[tag].take(cycle, 1))
        return out


PROMPT_ORDERS = Registry("prompt order")
PROMPT_ORDERS.register("uniform")(PromptStream)
PROMPT_ORDERS.register("tag")(TagBalancedStream)
