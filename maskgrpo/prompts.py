"""The training prompt stream: a seeded permutation per epoch, read P prompts per round, split across ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskgrpo.jsonl import iter_jsonl


def load_prompt_metadata(path: str | Path) -> list[dict]:
    """GenEval-style metadata lines ({"prompt", "tag", "include", ...}); a bad line names file and line number."""
    return [meta for _, meta, _ in iter_jsonl(path, required=("prompt",))]


class PromptStream:
    """Position p of the stream = prompt perm_e[p mod n] with e = p // n; deterministic from (seed, position)."""

    def __init__(self, prompts: list[dict], seed: int) -> None:
        if not prompts:
            raise ValueError("the prompt list is empty")
        self.prompts, self.seed = prompts, seed

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.prompts))

    def take(self, position: int, count: int) -> list[dict]:
        n = len(self.prompts)
        out = []
        for p in range(position, position + count):
            out.append(self.prompts[int(self._perm(p // n)[p % n])])
        return out
