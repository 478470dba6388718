"""The Lumina-DiMOO-8B backbone: LLaDA mask predictor + text tokenizer + diffusers ``VQModel``, Lumina's T2I layout.

Sources (one hub repo or local directory, the upstream layout; the same code loads the 8B release and the tiny test
checkpoints)::

    path              Alpha-VLLM/Lumina-DiMOO   config.json (model_type llada), sharded safetensors, tokenizer files
    path/vqvae/                                  the image tokenizer: diffusers VQModel (config.json + weights)
    vq_path                                      optional other VQ location (a directory holding vqvae/ or the VQ's
                                                 own config.json, or a hub id with a vqvae/ subfolder)

Row layout, batching and the left-padding deviation from upstream: ``maskgrpo.layout_lumina``. Load-time checks
(docs/models.md 7.6; every error names the file): V - 8192 == 126356 read from config.json before any weight is loaded
(the error prints V), the docs/models.md 1.4 key set and shapes (``load_llada``), ``<uncondition>`` tokenises to the
single id 126351, the tokenised template stays below the image-code offset and puts the first code at
``code_start = len(tok(prompt)) + 2``, and ``vqvae/config.json`` has ``num_vq_embeddings`` 8192,
``lookup_from_codebook`` true and a downsampling factor 2^(len(block_out_channels) - 1) equal to ``vq_downsample``
(16 for the release); ``latent_channels`` is read from it, never assumed.

Image tokenizer API (diffusers 0.42 ``VQModel``, verified against the installed source): pixels in [0, 1];
``encode(x).latents`` (B, C, h, w); ``quantize(latents)`` returns ``(z_q, loss, (perplexity, encodings, indices))``
with ``indices`` flat (B * h * w,) in row-major order; ``decode(indices, force_not_quantize=True,
shape=(B, h, w, C))`` looks the codes up in the codebook (this needs ``lookup_from_codebook``) and returns
``.sample`` (B, 3, H, W), clipped to [0, 1] here. C = ``vq_embed_dim`` if set, else ``latent_channels``.

Image size: the layout maps ``height`` x ``width`` pixels to a (height / 16) x (width / 16) code grid (real rule).
Decoded images are grid x ``vq_downsample`` pixels per side: height x width for the released VQ, smaller for a tiny
test VQ with a smaller factor (e.g. a 64 x 64 layout = 4 x 4 codes decodes to 8 x 8 pixels at factor 2).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from maskgrpo.backbones.base import check_loader_options, tokenizer_unknown_words
from maskgrpo.backbones.mmada import (
    TOKENIZER_PATTERNS,
    MMaDABackbone,
    _enable_checkpointing,
    check_layout_against_model,
)
from maskgrpo.layout import T2IBatch
from maskgrpo.layout_lumina import LuminaLayout, lumina_dimoo_8b
from maskgrpo.models.loading import (
    CONFIG_FILE,
    WEIGHT_PATTERNS,
    load_llada,
    read_llada_config,
    resolve_checkpoint_dir,
)

if TYPE_CHECKING:
    from maskgrpo.models import LLaDAModelLM

logger = logging.getLogger(__name__)

VQ_SUBFOLDER = "vqvae"
"""Folder of the diffusers ``VQModel`` inside the Lumina-DiMOO checkpoint."""
#: Token strings whose ids the layout fixes; only ``<uncondition>`` is asserted (models.md 7.6), the rest are logged.
SPECIAL_TOKENS: dict[str, str] = {"<uncondition>": "uncond_id", "<IMAGE>": "image_start_id",
                                  "</IMAGE>": "image_end_id", "<answer>": "answer_start_id",
                                  "</answer>": "answer_end_id"}  # fmt: skip


@dataclass
class LuminaBackbone:
    """The ``Backbone`` of maskgrpo.backbones.base for Lumina-DiMOO (prompt rows in, uint8 images out)."""

    model: LLaDAModelLM
    """Bidirectional mask predictor with the released parameter names (V = 134548)."""
    tokenizer: Any
    """The text tokenizer of the checkpoint directory (AutoTokenizer)."""
    vq: Any
    """diffusers ``VQModel`` (8192 codes; 16x downsampling for the release)."""
    layout: LuminaLayout
    """Ids and image size of a T2I row."""
    uncond_text_ids: list[int]
    """tok(SYS + "<user><uncondition></user>"), tokenised once at load."""
    vq_downsample: int
    """Pixels per code side of ``vq`` (read from its config)."""
    vq_embed_dim: int
    """Codebook vector width C (``vq_embed_dim`` or ``latent_channels`` of the VQ config)."""
    decode_batch_size: int = 4
    """Images per VQ decoder call."""

    check_codes = MMaDABackbone.check_codes
    """models.md 7.8: (B, N) integer codes in [0, K), no mask id left (shared with MMaDA; reads only ``layout``)."""

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) pixels of a decoded image: code grid x ``vq_downsample``."""
        return self.layout.grid_h * self.vq_downsample, self.layout.grid_w * self.vq_downsample

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """B strings -> B id lists with the tokenizer's own special-token behaviour (upstream: ``tokenizer(text)``)."""
        return [list(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    def prompt_batch(self, prompts: list[str]) -> T2IBatch:
        """Left-padded rows (B, T) for B prompts, every code slot masked, plus the unconditional rows."""
        text = self.tokenize([self.layout.prompt_text(p) for p in prompts])
        return self.layout.build_batch(text, self.uncond_text_ids)

    def unknown_words(self, captions: list[str]) -> list[str]:
        """Words of ``captions`` the tokenizer encodes as its unknown token (none for the released BPE)."""
        return tokenizer_unknown_words(self.tokenizer, captions)

    def _vq_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.vq.parameters())
        return p.device, p.dtype

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """(B, N) codes in [0, 8192), raster order -> (B, H, W, 3) uint8, (H, W) = ``image_size``."""
        codes = torch.as_tensor(codes)
        self.check_codes(codes)
        gh, gw = self.layout.grid_h, self.layout.grid_w
        device, dtype = self._vq_device_dtype()
        chunks = []
        for s in range(0, codes.shape[0], self.decode_batch_size):
            idx = codes[s : s + self.decode_batch_size].to(device).view(-1, gh, gw)  # (b, h, w)
            shape = (idx.shape[0], gh, gw, self.vq_embed_dim)
            pixels = self.vq.decode(idx, force_not_quantize=True, shape=shape).sample.clip(0, 1)  # (b, 3, H, W)
            chunks.append((pixels.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        if not chunks:
            return np.zeros((0, *self.image_size, 3), dtype=np.uint8)
        return np.concatenate(chunks)  # (B, H, W, 3)

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 with (H, W) = ``image_size`` -> (B, N) long codes in raster order (pixels in [0, 1])."""
        x = torch.as_tensor(np.asarray(images))
        h, w = self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (h, w, 3):
            raise ValueError(f"images must be (B, {h}, {w}, 3) uint8, got {tuple(x.shape)}")
        device, dtype = self._vq_device_dtype()
        pixels = x.to(device=device, dtype=torch.float32).div(255.0).permute(0, 3, 1, 2).to(dtype)  # (B, 3, H, W)
        latents = self.vq.encode(pixels).latents  # (B, C, h, w)
        indices = self.vq.quantize(latents)[2][2]  # (B * h * w,) row-major
        return indices.view(x.shape[0], -1).long().cpu()  # (B, N)


def check_vq_config(config: dict, layout: LuminaLayout, expected_downsample: int, where: str) -> tuple[int, int]:
    """docs/models.md 7.6 on the VQ config: 8192 codes, codebook lookup, the downsampling factor. Returns (factor, C).

    The factor of a diffusers VQModel is 2^(len(block_out_channels) - 1) (one stride-2 stage between blocks).
    """
    k = config.get("num_vq_embeddings")
    if k != layout.codebook_size:
        raise ValueError(f"{where}: num_vq_embeddings = {k}, the Lumina layout needs {layout.codebook_size}")
    if not config.get("lookup_from_codebook", False):
        raise ValueError(f"{where}: lookup_from_codebook must be true: decode(indices, force_not_quantize=True) "
                         "would otherwise feed the code indices to the decoder as latents")  # fmt: skip
    blocks = config.get("block_out_channels")
    if not blocks:
        raise ValueError(f"{where}: no block_out_channels, cannot read the downsampling factor")
    factor = 2 ** (len(blocks) - 1)
    if factor != expected_downsample:
        raise ValueError(f"{where}: downsampling 2^(len(block_out_channels) - 1) = {factor} (block_out_channels "
                         f"{list(blocks)}), expected vq_downsample = {expected_downsample}")  # fmt: skip
    if "latent_channels" not in config:
        raise ValueError(f"{where}: no latent_channels (the codebook width is read, never assumed)")
    embed_dim = int(config.get("vq_embed_dim") or config["latent_channels"])
    return factor, embed_dim


def check_lumina_vocab(model_dir: Path, layout: LuminaLayout) -> int:
    """docs/models.md 7.6: V - 8192 == 126356 from config.json, before any weight is read; the error prints V."""
    v = read_llada_config(model_dir, layout.mask_id).embedding_size
    if v - layout.codebook_size != layout.code_offset:
        raise ValueError(
            f"{model_dir / CONFIG_FILE}: embedding_size V = {v}, but Lumina-DiMOO needs V - {layout.codebook_size} "
            f"== {layout.code_offset} (V = {layout.code_offset + layout.codebook_size}): upstream's sampler takes the "
            f"code offset as V - {layout.codebook_size} and its decoder hard-codes {layout.code_offset}"
        )
    return v


def check_lumina_tokenizer(tokenizer: Any, layout: LuminaLayout, where: str) -> dict[str, Any]:
    """docs/models.md 7.6: ``<uncondition>`` -> [126351]; template ids below the code offset. Returns what was checked.

    The ids of ``<IMAGE>``, ``</IMAGE>``, ``<answer>``, ``</answer>`` as token strings and ``len(tokenizer)`` are
    (unverified) and only logged; a mismatch is a warning.
    """
    got = list(tokenizer("<uncondition>", add_special_tokens=False)["input_ids"])
    if got != [layout.uncond_id]:
        raise ValueError(f"{where}: '<uncondition>' tokenises to {got}, expected [{layout.uncond_id}] (models.md 7.6)")
    template = {"prompt": list(tokenizer(layout.prompt_text(""))["input_ids"]),
                "uncond": list(tokenizer(layout.uncond_text())["input_ids"])}  # fmt: skip
    for name, ids in template.items():
        high = [i for i in ids if i >= layout.code_offset]
        if high:
            raise ValueError(f"{where}: the {name} template tokenises to ids {high} >= the image-code offset "
                             f"{layout.code_offset}; text would collide with image codes")  # fmt: skip
    if layout.uncond_id not in template["uncond"]:
        raise ValueError(f"{where}: the unconditional text {layout.uncond_text()!r} does not contain id "
                         f"{layout.uncond_id}: {template['uncond']}")  # fmt: skip
    specials = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    for tok, field in SPECIAL_TOKENS.items():
        if specials[tok] != getattr(layout, field):
            logger.warning("%s: token %s has id %s, the layout uses %d (%s; unverified upstream fact)", where, tok,
                           specials[tok], getattr(layout, field), field)  # fmt: skip
    if len(tokenizer) > layout.code_offset:
        logger.warning("%s: len(tokenizer) = %d > the image-code offset %d: some text tokens share ids with image "
                       "codes", where, len(tokenizer), layout.code_offset)  # fmt: skip
    return {"template": template, "specials": specials, "len": len(tokenizer)}


def check_code_start(backbone: LuminaBackbone) -> None:
    """docs/models.md 7.6: in the unpadded row of a probe prompt the first code is at len(tok(prompt)) + 2, newlines
    close every image row, and the batched row is that row left-padded to the unconditional text's length."""
    lay = backbone.layout
    text = backbone.tokenize([lay.prompt_text("a")])[0]
    batch = backbone.prompt_batch(["a"])
    pad = batch.input_ids.shape[1] - len(lay.upstream_row(text))
    expected = lay.code_positions(len(text) + 2) + pad
    row = batch.input_ids[0]
    if not torch.equal(batch.image_positions, expected) or row[pad:].tolist() != lay.upstream_row(text):
        raise AssertionError(f"layout self-check failed: code slots {batch.image_positions[:4].tolist()}... vs "
                             f"code_start {len(text) + 2} + {pad} pads")  # fmt: skip
    newline = len(text) + 2 + pad + torch.arange(lay.grid_h) * (lay.grid_w + 1) + lay.grid_w  # (Ht,) row ends
    if not bool((row[newline] == lay.newline_id).all()) or bool((row[batch.image_positions] != lay.mask_id).any()):
        raise AssertionError("layout self-check failed: newline / mask slots are not where docs/models.md 5 puts them")


def load_lumina(
    path: str | os.PathLike = "Alpha-VLLM/Lumina-DiMOO",
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    height: int = 1024,
    width: int = 1024,
    vq_path: str | os.PathLike | None = None,
    vq_subfolder: str = VQ_SUBFOLDER,
    vq_downsample: int = 16,
    vq_dtype: str = "float32",
    tokenizer_path: str | os.PathLike | None = None,
    gradient_checkpointing: bool = False,
    strict_tokenizer: bool = True,
    attend_pads: bool = False,
    decode_batch_size: int = 4,
    **options: Any,
) -> LuminaBackbone:
    """Load Lumina-DiMOO (model, tokenizer, VQ) and check them against each other and the layout (docs/models.md 7.6).

    Args:
        path: checkpoint directory or hub id (``Alpha-VLLM/Lumina-DiMOO``); weights, tokenizer and ``vqvae/``.
        dtype: LLaDA weight dtype (bf16 for 8B runs).
        device: device of the LLaDA model and of the VQ.
        height, width: image size in pixels, multiples of 16, aspect ratio up to 4:1 (grid = size / 16).
        vq_path: VQ location if not ``path/vqvae``: a directory holding ``vq_subfolder`` or the VQ's own config.json,
            or a hub id (then ``vq_subfolder`` inside it). None = the ``vqvae`` subfolder of ``path``.
        vq_subfolder: folder of the VQ inside its repository.
        vq_downsample: the VQ's pixels per code, asserted against its config (16 for the release; tiny tests 2).
        vq_dtype: VQ dtype, "float32" (default) or "bfloat16".
        tokenizer_path: text tokenizer directory or hub id; default ``path``.
        gradient_checkpointing: recompute each block in the backward pass (~1.1 GB instead of ~25 GB of activations
            per 1024 x 1024 row, docs/models.md 6).
        strict_tokenizer: run the models.md 7.6 tokenizer checks (``<uncondition>`` id, template below the offset).
        attend_pads: upstream's "attend to pads" option (docs/models.md 1.3); left pads then reach the attention.
        decode_batch_size: images per VQ decoder call.
    """
    vq_torch_dtype = check_loader_options("lumina", load_lumina, options, vq_dtype)
    t0 = time.perf_counter()
    layout = lumina_dimoo_8b(height=height, width=width)
    model_dir = resolve_checkpoint_dir(path, (*WEIGHT_PATTERNS, *TOKENIZER_PATTERNS, f"{vq_subfolder}/*"))
    v = check_lumina_vocab(model_dir, layout)
    model = load_llada(model_dir, dtype=dtype, device=device, expected_vocab=v, expected_mask_id=layout.mask_id,
                       attend_pads=attend_pads)  # fmt: skip
    check_layout_against_model(layout, model, str(model_dir / CONFIG_FILE))

    from transformers import AutoTokenizer

    tok_src = model_dir if tokenizer_path is None else resolve_checkpoint_dir(tokenizer_path, TOKENIZER_PATTERNS)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src), config=model.config)
    if strict_tokenizer:
        checked = check_lumina_tokenizer(tokenizer, layout, str(tok_src))
        for name, ids in checked["template"].items():
            logger.info("Lumina %s template (%d tokens): %s", name, len(ids), tokenizer.convert_ids_to_tokens(ids))
    else:
        logger.warning("strict_tokenizer=false: docs/models.md 7.6 tokenizer checks skipped for %s", tok_src)

    vq, factor, embed_dim = _load_vq(model_dir, vq_path, vq_subfolder, layout, vq_downsample, vq_torch_dtype, device)
    if gradient_checkpointing:
        _enable_checkpointing(model)
    uncond = list(tokenizer(layout.uncond_text())["input_ids"])
    backbone = LuminaBackbone(model=model, tokenizer=tokenizer, vq=vq, layout=layout, uncond_text_ids=uncond,
                              vq_downsample=factor, vq_embed_dim=embed_dim,
                              decode_batch_size=decode_batch_size)  # fmt: skip
    check_code_start(backbone)
    logger.info("Lumina-DiMOO backbone from %s in %.2f s: %dx%d px, grid %dx%d (N=%d), V=%d, VQ %dx, C=%d",
                model_dir, time.perf_counter() - t0, height, width, layout.grid_h, layout.grid_w,
                layout.num_image_tokens, v, factor, embed_dim)  # fmt: skip
    return backbone


def _load_vq(model_dir: Path, vq_path: str | os.PathLike | None, subfolder: str, layout: LuminaLayout,
             expected_downsample: int, vq_dtype: torch.dtype,
             device: str | torch.device) -> tuple[Any, int, int]:  # fmt: skip
    """diffusers ``VQModel.from_pretrained(root, subfolder=...)``, its config checked before the weights load."""
    from diffusers import VQModel

    if vq_path is None:
        root, sub = str(model_dir), subfolder
    elif Path(vq_path).is_dir():
        root = str(vq_path)
        sub = None if (Path(vq_path) / CONFIG_FILE).is_file() else subfolder
    else:  # a hub id: local rank 0 fetches its subfolder, a miss offline is one line (models/loading.py)
        root, sub = str(resolve_checkpoint_dir(vq_path, (f"{subfolder}/*",))), subfolder
    where = str(Path(root) / (sub or "") / CONFIG_FILE)
    try:
        config = VQModel.load_config(root, subfolder=sub)
    except OSError as e:
        raise FileNotFoundError(f"{where}: cannot read the VQ config ({e})") from e
    factor, embed_dim = check_vq_config(dict(config), layout, expected_downsample, where)
    vq = VQModel.from_pretrained(root, subfolder=sub, torch_dtype=vq_dtype).to(device).eval()
    vq.requires_grad_(False)
    return vq, factor, embed_dim


def describe_options() -> dict[str, Any]:
    """The options of ``load_lumina`` with their defaults (``backbone.options`` keys), for plans and docs."""
    skip = ("path", "dtype", "device", "options")
    return {k: p.default for k, p in inspect.signature(load_lumina).parameters.items() if k not in skip}


__all__ = [
    "LuminaBackbone",
    "check_code_start",
    "check_lumina_tokenizer",
    "check_lumina_vocab",
    "check_vq_config",
    "describe_options",
    "load_lumina",
]
