"""Tiny stand-ins for the released checkpoints, written in the upstream on-disk formats (docs/models.md 1.6, 4).

Everything the real loaders read, nothing they would download:

- ``build_tiny_mmada(dir)``: ``dir/model`` = a 2-layer, 64-wide LLaDA with the **real** MMaDA vocabulary (134656 rows)
  and special ids, sharded bf16 safetensors + index + OLMo config.json (model_type mmada), plus a real
  ``PreTrainedTokenizerFast`` of exactly 126349 entries with the specials at their real ids; ``dir/vq`` = a tiny
  MAGVIT-v2 (4x downsampling, 13-bit codes) saved by ``save_magvit2``. Load it with
  ``load_mmada(dir/"model", vq_path=dir/"vq", vq_config=TINY_MAGVIT, text_window=17, grid=4)``.
- ``build_tiny_clip(dir)``: a random 2-layer CLIPModel + character-level CLIP tokenizer (for the ``clip`` reward).
- ``write_prompts(path)``: a small GenEval-style JSONL of training prompts.

Sizes are chosen for CPU speed: building the MMaDA pair takes about a second, loading it well under one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from maskgrpo.layout import MMaDALayout, tiny_mmada
from maskgrpo.models import LLaDAConfig, LLaDAModelLM
from maskgrpo.models.loading import save_llada_sharded
from maskgrpo.models.magvit2 import MagvitV2, MagvitV2Config, save_magvit2

MMADA_VOCAB = 134656
"""Embedding rows of MMaDA-8B (docs/models.md 1.1), kept in the tiny model so offsets and slices are real."""
MMADA_TEXT_VOCAB = 126349
"""len(tokenizer) of the LLaDA tokenizer = the image-code offset (docs/models.md 2.1)."""

TINY_LLADA = {"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 128}
"""docs/models.md 1.6: d_model 64, 2 layers, 4 heads (head dim 16), MLP 128."""

TINY_MAGVIT = {"ch": 32, "encoder_ch_mult": [1, 1, 2], "encoder_num_res_blocks": [1, 1, 1],
               "decoder_ch_mult": [1, 1, 2], "decoder_num_res_blocks": [1, 1, 1], "z_channels": 13}  # fmt: skip
"""docs/models.md 4 tiny MAGVIT-v2: 4x downsampling (a 4x4 grid decodes to 16x16 px), real 13-bit codes."""

TINY_TEXT_WINDOW = 17
TINY_GRID = 4

#: Special tokens of the LLaDA tokenizer at their real ids (models.md 2.1); the layout gives the BOS / EOS / mask ids.
_CHAT_TOKENS = {126346: "<|start_header_id|>", 126347: "<|end_header_id|>", 126348: "<|eot_id|>"}

WORDS = (
    "a photo of an the and on top left right below above next to one two three four red green blue yellow "
    "purple orange pink brown black white cat dog car bus apple banana cup clock bird giraffe"
).split()
"""Words with their own ids (1..len), so GenEval-style prompts tokenise to distinct ids."""


def tiny_llada(seed: int = 0, weight_tying: bool = False, layout: MMaDALayout | None = None) -> LLaDAModelLM:
    """A random tiny LLaDA with MMaDA's vocabulary and mask id; norm weights perturbed so a dropped norm shows."""
    layout = layout or tiny_mmada()
    torch.manual_seed(seed)
    config = LLaDAConfig(**TINY_LLADA, embedding_size=MMADA_VOCAB, mask_token_id=layout.mask_id,
                         weight_tying=weight_tying)  # fmt: skip
    model = LLaDAModelLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def tiny_magvit(seed: int = 0) -> MagvitV2:
    torch.manual_seed(seed)
    return MagvitV2(MagvitV2Config(**TINY_MAGVIT)).eval()


def build_mmada_tokenizer(directory: str | Path, layout: MMaDALayout | None = None) -> Path:
    """Save a real fast tokenizer with exactly ``layout.code_offset`` (126349) entries and the specials at their ids.

    WordLevel model over whitespace-split words: id 0 is ``<|unk|>``, ids 1.. are :data:`WORDS`, BOS / EOS / mask
    and the chat tokens sit at the real LLaDA ids, every other id is a filler ``<|tok_i|>``. Its post-processor
    prepends BOS (as a Llama-3-style tokenizer does), which ``MMaDABackbone`` must not rely on: it tokenises with
    ``add_special_tokens=False``. Takes about 0.4 s.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    layout = layout or tiny_mmada()
    specials = {layout.bos_id: "<|startoftext|>", layout.eos_id: "<|endoftext|>", layout.mask_id: "<|mdm_mask|>"}
    names = {0: "<|unk|>", **{i + 1: w for i, w in enumerate(WORDS)}, **_CHAT_TOKENS, **specials}
    vocab = {names.get(i, f"<|tok_{i}|>"): i for i in range(layout.code_offset)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos = [("<|startoftext|>", layout.bos_id)]
    tok.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A", special_tokens=bos)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|unk|>",
        pad_token="<|endoftext|>",
        mask_token="<|mdm_mask|>",
    )
    out = Path(directory)
    fast.save_pretrained(str(out))
    return out


@dataclass(frozen=True)
class TinyMMaDA:
    """Paths of a tiny MMaDA written by :func:`build_tiny_mmada` and the options that load it."""

    model_dir: Path
    vq_dir: Path

    @property
    def options(self) -> dict:
        """``backbone.options`` / ``load_mmada`` keyword arguments for this tiny checkpoint."""
        return {"vq_path": str(self.vq_dir), "vq_config": TINY_MAGVIT, "text_window": TINY_TEXT_WINDOW,
                "grid": TINY_GRID}  # fmt: skip


def build_tiny_mmada(
    directory: str | Path,
    seed: int = 0,
    weight_tying: bool = False,
    max_shard_bytes: int = 12 * 2**20,
    dtype: torch.dtype = torch.bfloat16,
) -> TinyMMaDA:
    """Write ``directory/model`` (sharded safetensors, index, config.json, tokenizer) and ``directory/vq``.

    bf16 like the release; 12 MiB shards split the 17 MB ``wte``/head and the blocks into 3 files.
    """
    d = Path(directory)
    model = tiny_llada(seed, weight_tying).to(dtype)
    stale = {"num_vq_tokens": 256, "llm_vocab_size": 126464, "codebook_size": 8192}  # MMaDA extras, ignored
    save_llada_sharded(model, d / "model", max_shard_bytes=max_shard_bytes, model_type="mmada", extra_config=stale)
    build_mmada_tokenizer(d / "model")
    save_magvit2(tiny_magvit(seed), d / "vq")
    return TinyMMaDA(d / "model", d / "vq")


def build_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """A random 2-layer CLIPModel (vision 32 px, patch 8, projection 16) + a character-level CLIP tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["\u0120"]  # printable ASCII + GPT-2's space marker
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    out = Path(directory)
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={"vocab_size": len(tokens), "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **layers},
        vision_config={"image_size": 32, "patch_size": 8, **layers},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


GENEVAL_STYLE_PROMPTS = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
    {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "car", "count": 1}],
     "prompt": "a photo of a dog and a car"},
    {"tag": "counting", "include": [{"class": "apple", "count": 2}], "prompt": "a photo of two apple"},
    {"tag": "colors", "include": [{"class": "bus", "count": 1, "color": "red"}], "prompt": "a photo of a red bus"},
    {"tag": "position", "include": [{"class": "cup", "count": 1}, {"class": "clock", "count": 1,
                                                                    "position": ["left of", 0]}],
     "prompt": "a photo of a clock left of a cup"},
    {"tag": "color_attr", "include": [{"class": "bird", "count": 1, "color": "blue"},
                                      {"class": "giraffe", "count": 1, "color": "yellow"}],
     "prompt": "a photo of a blue bird and a yellow giraffe"},
]  # fmt: skip
"""Six GenEval-style metadata lines (one per tag) built from :data:`WORDS`."""


def write_prompts(path: str | Path, prompts: list[dict] | None = None) -> Path:
    """Write GenEval-style metadata as JSONL (the ``prompts.source`` format of the trainer)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(m) + "\n" for m in (prompts or GENEVAL_STYLE_PROMPTS)))
    return p
