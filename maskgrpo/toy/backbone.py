"""The ShapesWorld backbone (``backbone.name: shapes``): toy LLaDA + word tokenizer + patch-codebook image tokenizer,
saved as one directory.

Directory layout (written by ``maskgrpo.toy.pretrain``)::

    model/                 LLaDAModelLM.save_pretrained (config.json + model.safetensors)
    text_tokenizer.json    WordTokenizer
    image_tokenizer/       PatchTokenizer (k-means patch codebook)
    world.json             world config, text window, train / held-out prompt metadata
    manifest.json          recipe + SHA-256 of every file (maskgrpo.toy.base_manifest), checked at load
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from maskgrpo.config import config_from_dict, to_dict
from maskgrpo.config.schema import ShapesWorldConfig
from maskgrpo.layout import MMaDALayout, T2IBatch
from maskgrpo.models.loading import load_llada, read_json
from maskgrpo.toy.base_manifest import verify_base
from maskgrpo.toy.image_tokenizer import PatchTokenizer
from maskgrpo.toy.text_tokenizer import WordTokenizer, shapes_layout
from maskgrpo.toy.world import WorldSpec, spec_for

if TYPE_CHECKING:
    from maskgrpo.models import LLaDAModelLM

REQUIRED_FILES = ("model/config.json", "text_tokenizer.json", "image_tokenizer", "world.json")
WORLD_KEYS = ("world", "text_window", "train_prompts", "eval_prompts")
"""Keys of world.json."""


def world_spec(cfg: ShapesWorldConfig) -> WorldSpec:
    """The world of a base's config: the default world at its canvas, with its classes when it names them."""
    return spec_for(cfg)


@dataclass
class ShapesBackbone:
    model: LLaDAModelLM
    text_tokenizer: WordTokenizer
    image_tokenizer: PatchTokenizer
    layout: MMaDALayout
    world: ShapesWorldConfig
    train_prompts: list[dict]
    """GenEval-style metadata of the training captions."""
    eval_prompts: list[dict]
    """GenEval-style metadata of the held-out ShapesEval captions (disjoint from training)."""
    val_prompts: list[dict] = field(default_factory=list)
    """Validation captions (world.json ``val_prompts``, bases made with ``split.val_per_tag``): training-distribution
    captions kept out of the RL prompts and disjoint from the held-out ones, for choosing RL settings."""

    @property
    def spec(self) -> WorldSpec:
        return world_spec(self.world)

    def prompt_batch(self, prompts: list[str]) -> T2IBatch:
        return self.layout.build_batch([self.text_tokenizer.encode(p) for p in prompts])

    def decode(self, codes: torch.Tensor) -> np.ndarray:
        return self.image_tokenizer.decode(codes)

    def unknown_words(self, captions: list[str]) -> list[str]:
        """Caption words outside the world's word vocabulary (each would be encoded as ``<unk>``)."""
        return self.text_tokenizer.unknown_words(captions)

    def save(self, directory: str | Path, model: bool = True) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if model:
            self.model.save_pretrained(d / "model")
        self.text_tokenizer.save(d / "text_tokenizer.json")
        self.image_tokenizer.save(d / "image_tokenizer")
        meta = {
            "world": {k: v for k, v in to_dict(self.world).items() if v is not None},  # an unset shapes: the default
            "text_window": self.layout.text_window,
            "train_prompts": self.train_prompts,
            "eval_prompts": self.eval_prompts,
        }
        if self.val_prompts:
            meta["val_prompts"] = self.val_prompts
        (d / "world.json").write_text(json.dumps(meta, indent=1))


def load_shapes(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                **_: object) -> ShapesBackbone:  # fmt: skip
    """Load a toy base saved by ``python -m maskgrpo.toy.pretrain`` (the error names the missing file)."""
    d = Path(path)
    missing = [f for f in REQUIRED_FILES if not (d / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{d} is not a ShapesWorld base (missing {missing}); create one with "
            f"`python -m maskgrpo.toy.pretrain run.output_dir={d}`"
        )
    verify_base(d)  # manifest.json, when present: every file's SHA-256 (one-line RunError naming a changed file)
    meta = read_json(d / "world.json")
    absent = [k for k in WORLD_KEYS if not isinstance(meta, dict) or k not in meta]
    if absent:
        raise ValueError(f"{d / 'world.json'}: missing key(s) {absent}; the base is damaged, re-create it")
    world = config_from_dict(ShapesWorldConfig, meta["world"], where=str(d / "world.json"))
    text_tok = WordTokenizer.load(d / "text_tokenizer.json")
    image_tok = PatchTokenizer.load(d / "image_tokenizer")
    layout = shapes_layout(text_tok, image_tok.codebook_size, world.canvas // world.patch, meta["text_window"])
    # strict: config.json and every safetensors key and shape checked (no silently re-initialised weight)
    model = load_llada(d / "model", dtype=dtype, device=device, expected_mask_id=layout.mask_id)
    if model.config.embedding_size < layout.vocab_needed:
        raise ValueError(f"{d / 'model/config.json'}: embedding_size {model.config.embedding_size} < "
                         f"{layout.vocab_needed} ids of the saved tokenizers")  # fmt: skip
    return ShapesBackbone(model, text_tok, image_tok, layout, world, meta["train_prompts"], meta["eval_prompts"],
                          meta.get("val_prompts", []))  # fmt: skip
