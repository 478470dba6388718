"""The training prompt stream: a seeded permutation per epoch, read P prompts per round, split across ranks.

Two orders, both a pure function of (seed, position), so a resumed run reads exactly the prompts it would have read:

- ``uniform``: every prompt once per epoch (:class:`PromptStream`); tags appear in proportion to their prompt counts.
- ``tag``: tags take turns (:class:`TagBalancedStream`), each tag reading its own prompt stream; use it when one tag
  dominates the prompt list (ShapesWorld's training captions are 84% color_attr).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgrpo.errors import RunError
from maskgrpo.jsonl import iter_jsonl
from maskgrpo.registry import Registry


@dataclass(frozen=True)
class PromptSet:
    """Training prompts and where each came from, so a later check can name the file and line of a bad one."""

    prompts: list[dict]
    """GenEval-style metadata, one dict per prompt (``prompt`` always; ``tag``, ``include``, ... as rewards need)."""
    source: str
    """The JSONL path, or ``backbone <name>`` for a backbone's built-in prompts."""
    lines: list[int] | None
    """1-based line of each prompt in ``source`` (None for built-in prompts)."""

    def where(self, i: int) -> str:
        """``file:line`` of prompt ``i`` (or ``backbone <name>, prompt i``)."""
        return f"{self.source}:{self.lines[i]}" if self.lines is not None else f"{self.source}, prompt {i}"


def read_prompt_file(path: str | Path) -> PromptSet:
    """A JSONL prompt file -> :class:`PromptSet`. Every bad input is a :class:`RunError` naming the file (and line):
    missing or unreadable file, not UTF-8, a line that is not a JSON object, a prompt without a non-empty string
    ``prompt``, a file without any prompt."""
    lines, prompts = [], []
    try:
        for n, meta, _ in iter_jsonl(path, required=("prompt",)):
            if not isinstance(meta["prompt"], str) or not meta["prompt"].strip():
                raise RunError(f"{path}:{n}: 'prompt' must be a non-empty string, got {meta['prompt']!r}")
            lines.append(n)
            prompts.append(meta)
    except OSError as e:
        raise RunError(f"prompt file {path}: cannot read: {e.strerror or e}") from e
    except ValueError as e:  # iter_jsonl's "FILE:LINE: ..." messages; a decoding error gets its line here
        cause = e if isinstance(e, UnicodeDecodeError) else e.__cause__
        if isinstance(cause, UnicodeDecodeError):
            line = cause.object[: cause.start].count(b"\n") + 1
            raise RunError(f"{path}:{line}: not UTF-8 text (byte {cause.object[cause.start]:#04x}); save the file "
                           f"as UTF-8") from e  # fmt: skip
        raise RunError(str(e)) from e
    if not prompts:
        raise RunError(f"{path}: no prompts (the file is empty); write one JSON object per line with a 'prompt' key")
    return PromptSet(prompts, str(path), lines)


def load_prompt_metadata(path: str | Path) -> list[dict]:
    """GenEval-style metadata lines ({"prompt", "tag", "include", ...}); a bad line names file and line number."""
    return read_prompt_file(path).prompts


def caption_words(text: str) -> list[str]:
    """The words of a caption as a word-level tokenizer sees them (lowercased, split on whitespace)."""
    return text.lower().split()


def check_prompts(prompts: PromptSet, rewards: Sequence[Any], backbone: Any) -> None:
    """Refuse prompts a reward cannot score; warn once about caption words the backbone cannot encode.

    What a reward needs is declared on the reward itself (its :class:`maskgrpo.rewards.base.RewardFn` object):
    ``required_metadata`` (keys every prompt must carry, e.g. ``("tag", "include")`` for GenEval-style rewards) and
    ``vocabulary`` (the caption words it can score, e.g. the ShapesWorld words; ``None`` = any caption). A reward
    that declares neither needs neither. The backbone declares ``unknown_words(captions)``: the words its prompt
    encoder maps to an unknown token (always none for a subword tokenizer).

    Raises:
        RunError: ``FILE:LINE: missing metadata key 'tag' needed by reward 'shapes_geneval'``, or caption words
        outside a reward's vocabulary (the file, the first line that has one, and every such word).
    """
    captions = [m["prompt"] for m in prompts.prompts]
    for fn in rewards:
        for key in getattr(fn, "required_metadata", ()):
            missing = [i for i, m in enumerate(prompts.prompts) if key not in m]
            if missing:
                raise RunError(f"{prompts.where(missing[0])}: missing metadata key {key!r} needed by reward "
                               f"{fn.name!r} ({len(missing)} of {len(captions)} prompts lack it)")  # fmt: skip
        vocabulary = getattr(fn, "vocabulary", None)
        if vocabulary is None:
            continue
        outside = [i for i, c in enumerate(captions) if any(w not in vocabulary for w in caption_words(c))]
        if outside:
            words = sorted({w for i in outside for w in caption_words(captions[i]) if w not in vocabulary})
            raise RunError(f"{prompts.where(outside[0])}: reward {fn.name!r} cannot score caption word(s) {words} "
                           f"({len(outside)} of {len(captions)} prompts, first: {captions[outside[0]]!r}); it "
                           f"scores only its own vocabulary - use prompts it knows or another reward")  # fmt: skip
    unknown = backbone.unknown_words(captions)
    if unknown:
        warnings.warn(f"{prompts.source}: {len(unknown)} caption word(s) are not in the backbone's vocabulary and "
                      f"are encoded as an unknown token: {unknown}", UserWarning, stacklevel=2)  # fmt: skip


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
