"""ShapesWorld text tokenizer: a word-level vocabulary built from the caption set (toy_world.md, "Tokenizers"),
and the MMaDA-style sequence layout over it and the image codebook.

Ids (V = len(tokenizer), K = codebook size)::

    0 <pad>, 1 <bos>, 2 <eos>, 3 <unk>, 4 .. V-1 words (sorted) | V t2i, V+1 soi, V+2 eoi, V+3 mask | V+4+k code k

so the embedding table needs V + 4 + K rows (``MMaDALayout.vocab_needed``). Text is lowercased and split on
spaces; ``encode`` returns the word ids only (the layout adds t2i / bos / eos around them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from maskgrpo.layout import MMaDALayout
from maskgrpo.prompts import caption_words
from maskgrpo.toy.world import WorldSpec, enumerate_prompts

SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
_FILE = "text_tokenizer.json"


class WordTokenizer:
    """Word <-> id table. ``max_words`` is the longest caption (in words) seen by :meth:`build`; the layout's
    default text window is derived from it."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: list[str], max_words: int) -> None:
        if len(set(words)) != len(words) or any(w in SPECIALS or not w or " " in w for w in words):
            raise ValueError("words must be distinct, non-empty, space-free and not special tokens")
        self.vocab: list[str] = list(SPECIALS) + list(words)
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        self.max_words = max_words

    @classmethod
    def build(cls, captions: Iterable[str]) -> WordTokenizer:
        """Vocabulary = the sorted distinct words of ``captions`` (lowercased, split on spaces)."""
        split = [caption_words(c) for c in captions]
        words = sorted({w for ws in split for w in ws})
        return cls(words, max((len(ws) for ws in split), default=0))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text`` (lowercased, split on spaces); unknown words -> ``unk_id``. No bos/eos added."""
        return [self.index.get(w, self.unk_id) for w in caption_words(text)]

    def unknown_words(self, texts: Iterable[str]) -> list[str]:
        """The sorted distinct words of ``texts`` that :meth:`encode` maps to ``<unk>``."""
        return sorted({w for t in texts for w in caption_words(t) if w not in self.index})

    def decode(self, ids: Iterable[int]) -> str:
        """Space-joined words; pad / bos / eos are skipped, unknown words come back as ``<unk>``."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"id {i} is outside the text vocabulary [0, {len(self.vocab)})")
            if i not in (self.pad_id, self.bos_id, self.eos_id):
                out.append(self.vocab[i])
        return " ".join(out)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (specials, words, max_words): to ``path`` itself if it ends in ``.json``,
        else to ``path/text_tokenizer.json``."""
        f = _json_path(path)
        f.parent.mkdir(parents=True, exist_ok=True)
        data = {"specials": list(SPECIALS), "words": self.vocab[len(SPECIALS) :], "max_words": self.max_words}
        f.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Inverse of :meth:`save` (same path convention)."""
        f = _json_path(path)
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{f}: not a valid JSON tokenizer file ({e}); the file is damaged") from e
        absent = [k for k in ("specials", "words", "max_words") if not isinstance(data, dict) or k not in data]
        if absent:
            raise ValueError(f"{f}: missing key(s) {absent}; the file is damaged")
        if tuple(data["specials"]) != SPECIALS:
            raise ValueError(f"{f}: specials {data['specials']} differ from {list(SPECIALS)}")
        return cls(data["words"], data["max_words"])


def world_vocabulary(spec: WorldSpec) -> frozenset[str]:
    """Every word of every caption ShapesWorld ``spec`` generates: the words its rewards can score (and the
    vocabulary :meth:`WordTokenizer.build` gets from the full caption set)."""
    return frozenset(w for meta in enumerate_prompts(spec) for w in caption_words(meta["prompt"]))


def _json_path(path: str | Path) -> Path:
    """``path`` if it names a .json file, else ``path / text_tokenizer.json``."""
    p = Path(path)
    return p if p.suffix == ".json" else p / _FILE


def shapes_layout(
    text_tok: WordTokenizer, codebook_size: int, grid: int, text_window: int | None = None
) -> MMaDALayout:
    """The layout for ``text_tok`` and a ``codebook_size``-code, grid x grid image tokenizer (ids in the module
    docstring). text_window: None -> ``text_tok.max_words + 3`` (the longest caption plus t2i, bos, eos)."""
    v = len(text_tok)
    window = text_tok.max_words + 3 if text_window is None else text_window
    return MMaDALayout(pad_id=text_tok.pad_id, bos_id=text_tok.bos_id, eos_id=text_tok.eos_id, t2i_id=v,
                       soi_id=v + 1, eoi_id=v + 2, mask_id=v + 3, code_offset=v + 4, codebook_size=codebook_size,
                       text_window=window, grid_h=grid, grid_w=grid)  # fmt: skip
