"""Lumina-DiMOO backbone without weights: a tiny checkpoint in the upstream on-disk layout through the real loaders.

The tiny checkpoint (built once per module, ~1 s): model files at the root (a 2-layer, 64-wide LLaDA with the real
Lumina vocabulary, 134548 rows, sharded bf16 safetensors + index + config.json with model_type llada), a real fast
tokenizer of 126356 entries with the Lumina special tokens at their real ids, and ``vqvae/`` = a tiny random diffusers
``VQModel`` (block_out_channels (32, 64): 2x downsampling, latent_channels 4, 8192 codes, codebook lookup).

Image size in the tiny case: the layout keeps the real rule (one code per 16 x 16 pixels), so height x width = 32 x 64
gives a 2 x 4 code grid (N = 8, plus one newline token per row); the tiny VQ decodes that grid at ITS factor 2, i.e.
to 4 x 8 pixels (``vq_downsample=2``, read from and asserted against vqvae/config.json).

Covers models.md 5 and 7.6: layout golden row, non-square sizes and their validation, left-padded batching equal to
upstream's batch-1 rows, the Lumina sampler (commit counts of docs/models.md 5, contract on the Lumina layout, newline
slots untouched), VQ decode / encode through the codebook, the load-time assertions, the dry-run launcher, and one
MaskGRPO and one HT-GRPO round end to end through ``python -m maskgrpo.train``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from forward_counts import max_rollout_forwards
from tiny_models import TINY_LLADA, WORDS, build_tiny_clip, write_prompts

from maskgrpo.backbones import BACKBONES
from maskgrpo.backbones.lumina import LuminaBackbone, load_lumina
from maskgrpo.layout_lumina import LuminaLayout, lumina_dimoo_8b
from maskgrpo.models import LLaDAConfig, LLaDAModelLM
from maskgrpo.models.loading import save_llada_sharded
from maskgrpo.sampling import SAMPLERS, StepInfo, build_sampler, canvas_ids, guided_code_logits

HEIGHT, WIDTH = 32, 64  # layout pixels: 2 x 4 codes at 16 px per code (real rule)
TINY_VQ_FACTOR = 2  # block_out_channels (32, 64) -> 2^(2 - 1)
N = (HEIGHT // 16) * (WIDTH // 16)  # 8 code slots

LUMINA_V = 134548  # docs/models.md 5: 126356 + 8192
TEXT_VOCAB = 126356  # tiny tokenizer size = the image-code offset
#: Real Lumina ids (docs/models.md 5) + LLaDA BOS / EOS / mask (docs/models.md 1.1, 2.1).
REAL_SPECIALS = {126080: "<|startoftext|>", 126081: "<|endoftext|>", 126336: "<|mdm_mask|>", 126349: "<IMAGE>",
                 126350: "</IMAGE>", 126351: "<uncondition>", 126354: "<answer>", 126355: "</answer>"}  # fmt: skip
#: The ids of the template tags are unverified upstream: the tiny tokenizer puts them at arbitrary text ids.
TAG_IDS = {"<system>": 126340, "</system>": 126341, "<user>": 126342, "</user>": 126343}
TEMPLATE_WORDS = ["Generate", "image", "according", "text", "prompt", "."]
VOCAB_WORDS = WORDS + [w for w in TEMPLATE_WORDS if w not in WORDS]
WORD_ID = {w: i + 1 for i, w in enumerate(VOCAB_WORDS)}  # id 0 = <|unk|>
TINY_VQ = {"block_out_channels": (32, 64), "down_block_types": ("DownEncoderBlock2D",) * 2,
           "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "latent_channels": 4,
           "norm_num_groups": 8, "num_vq_embeddings": 8192, "lookup_from_codebook": True}  # fmt: skip
"""docs/models.md 5 tiny VQ (diffusers 0.42 needs one down / up block type per entry of block_out_channels)."""


def build_lumina_tokenizer(directory: Path, with_uncondition: bool = True) -> Path:
    """A real fast tokenizer of exactly 126356 entries: WordLevel words, the Lumina specials at their real ids as
    whole-string special tokens, and a post-processor that prepends BOS (upstream tokenises with the defaults)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {**REAL_SPECIALS, **{i: t for t, i in TAG_IDS.items()}}
    if not with_uncondition:
        specials[126351] = "<uncond>"
    names = {0: "<|unk|>", **{i: w for w, i in WORD_ID.items()}, **specials}
    tok = Tokenizer(models.WordLevel(vocab={names.get(i, f"<|tok_{i}|>"): i for i in range(TEXT_VOCAB)},
                                     unk_token="<|unk|>"))  # fmt: skip
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A",
                                                       special_tokens=[("<|startoftext|>", 126080)])  # fmt: skip
    tok.add_special_tokens(list(specials.values()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|unk|>", pad_token="<|endoftext|>",
                                   mask_token="<|mdm_mask|>")  # fmt: skip
    fast.save_pretrained(str(directory))
    return directory


def tiny_lumina_llada(seed: int = 0, vocab: int = LUMINA_V) -> LLaDAModelLM:
    torch.manual_seed(seed)
    model = LLaDAModelLM(LLaDAConfig(**TINY_LLADA, embedding_size=vocab, mask_token_id=126336)).eval()
    with torch.no_grad():  # perturbed norms, so a dropped norm would show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def build_tiny_lumina(directory: Path, seed: int = 0) -> Path:
    """The upstream layout: model files and tokenizer at the root, the diffusers VQModel in ``vqvae/``."""
    from diffusers import VQModel

    save_llada_sharded(tiny_lumina_llada(seed).to(torch.bfloat16), directory, max_shard_bytes=12 * 2**20,
                       model_type="llada")  # fmt: skip
    build_lumina_tokenizer(directory)
    torch.manual_seed(seed)
    VQModel(**TINY_VQ).save_pretrained(str(directory / "vqvae"))
    return directory


def tiny_options(**extra: object) -> dict:
    return {"height": HEIGHT, "width": WIDTH, "vq_downsample": TINY_VQ_FACTOR, **extra}


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of a checkpoint directory whose files are symlinks (edit a file by replacing its link)."""
    for f in src.rglob("*"):
        if f.is_file():
            (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / f.relative_to(src)).symlink_to(f)
    return dst


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    path.unlink()
    path.write_text(json.dumps({**data, **changes}))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_lumina(tmp_path_factory.mktemp("tiny_lumina"))


@pytest.fixture(scope="module")
def backbone(tiny) -> LuminaBackbone:
    return BACKBONES.get("lumina")(str(tiny), dtype=torch.float32, **tiny_options())


def template_ids(user: list[int]) -> list[int]:
    """tok(SYS + "<user>" + P + "</user>") in the tiny tokenizer, built by hand: BOS + tags + words."""
    sys_words = "Generate an image according to the text prompt .".split()
    return ([126080, TAG_IDS["<system>"]] + [WORD_ID[w] for w in sys_words]
            + [TAG_IDS["</system>"], TAG_IDS["<user>"]] + user + [TAG_IDS["</user>"]])  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Loading and load-time assertions (docs/models.md 7.6)


def test_loads_upstream_layout_through_the_real_loaders(tiny, backbone, caplog) -> None:
    assert json.loads((tiny / "config.json").read_text())["model_type"] == "llada"
    assert (tiny / "model.safetensors.index.json").is_file() and (tiny / "vqvae" / "config.json").is_file()
    assert backbone.model.config.embedding_size == LUMINA_V and len(backbone.tokenizer) == TEXT_VOCAB
    assert {p.dtype for p in backbone.model.parameters()} == {torch.float32}
    assert backbone.vq.config.num_vq_embeddings == 8192 and backbone.vq_downsample == TINY_VQ_FACTOR
    assert backbone.vq_embed_dim == 4  # latent_channels read from vqvae/config.json
    assert backbone.image_size == (HEIGHT // 16 * TINY_VQ_FACTOR, WIDTH // 16 * TINY_VQ_FACTOR) == (4, 8)
    assert backbone.uncond_text_ids == template_ids([126351])
    with caplog.at_level(logging.INFO, logger="maskgrpo.backbones.lumina"):
        load_lumina(tiny, dtype=torch.float32, **tiny_options())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "uncond template (15 tokens)" in logged and "'<uncondition>'" in logged  # the template is logged


def test_vocabulary_mismatch_fails_and_prints_v(tiny, tmp_path) -> None:
    d = linked_copy(tiny, tmp_path / "m")
    edit_json(d / "config.json", embedding_size=134656)  # MMaDA's V
    with pytest.raises(ValueError, match=r"config.json: embedding_size V = 134656, but Lumina-DiMOO needs V - 8192 "
                                         r"== 126356 \(V = 134548\)"):  # fmt: skip
        load_lumina(d, **tiny_options())


def test_vq_config_assertions_name_the_file(tiny, tmp_path) -> None:
    factor = r"vqvae/config.json: downsampling 2\^\(len\(block_out_channels\) - 1\) = 2 "
    with pytest.raises(ValueError, match=factor + r"\(block_out_channels \[32, 64\]\), expected vq_downsample = 16"):
        load_lumina(tiny, **tiny_options(vq_downsample=16))
    d = linked_copy(tiny, tmp_path / "m")
    edit_json(d / "vqvae" / "config.json", num_vq_embeddings=4096)
    with pytest.raises(ValueError, match=r"vqvae/config.json: num_vq_embeddings = 4096, the Lumina layout needs 8192"):
        load_lumina(d, **tiny_options())
    edit_json(d / "vqvae" / "config.json", num_vq_embeddings=8192, lookup_from_codebook=False)
    with pytest.raises(ValueError, match=r"lookup_from_codebook must be true"):
        load_lumina(d, **tiny_options())


def test_tokenizer_and_option_assertions(tiny, tmp_path) -> None:
    tok_dir = build_lumina_tokenizer(tmp_path / "tok", with_uncondition=False)
    with pytest.raises(ValueError, match=r"'<uncondition>' tokenises to \[0, 0, 0\], expected \[126351\]"):
        load_lumina(tiny, tokenizer_path=tok_dir, **tiny_options())
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['heigth'\]; valid options: .*'height'"):
        load_lumina(tiny, heigth=32)
    with pytest.raises(ValueError, match="multiple of 16"):
        load_lumina(tiny, **tiny_options(height=40))


def test_separate_vq_path_and_hub_id_path(tiny, tmp_path, monkeypatch) -> None:
    import huggingface_hub

    vq_only = linked_copy(tiny / "vqvae", tmp_path / "vq")  # a directory holding the VQ's own config.json
    assert load_lumina(tiny, vq_path=vq_only, **tiny_options()).vq_embed_dim == 4
    calls = []

    def fake_snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        return str(tiny)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    bb = load_lumina("Alpha-VLLM/Lumina-DiMOO", dtype=torch.float32, **tiny_options())
    assert calls[-1][0] == "Alpha-VLLM/Lumina-DiMOO" and {"*.safetensors", "vqvae/*"} <= set(calls[-1][1])
    assert bb.model.config.embedding_size == LUMINA_V


# ---------------------------------------------------------------------------------------------------------------
# Layout (docs/models.md 5)


def test_golden_row_and_left_padded_uncond_row(backbone) -> None:
    """2 x 4 grid. Prompt "a red cat": 17 text ids; the unconditional text has 15, so it gets 2 left pads."""
    text = template_ids([WORD_ID["a"], WORD_ID["red"], WORD_ID["cat"]])
    assert len(text) == 17
    m, nl = 126336, 126084
    answer = [126354, 126349, m, m, m, m, nl, m, m, m, m, nl, 126350, 126355]
    batch = backbone.prompt_batch(["a red cat"])
    assert batch.input_ids[0].tolist() == text + answer
    assert batch.attention_mask[0].tolist() == [True] * (17 + 14)
    uncond = template_ids([126351])
    assert batch.uncond_ids[0].tolist() == [126081, 126081] + uncond + answer
    assert batch.uncond_mask[0].tolist() == [False, False] + [True] * (15 + 14)
    # code_start = len(text) + 2 = 19; code (r, c) at 19 + r * 5 + c; newlines at 23 and 28 are not image slots
    assert batch.image_positions.tolist() == [19, 20, 21, 22, 24, 25, 26, 27]
    assert (batch.code_offset, batch.codebook_size, batch.mask_id) == (126356, 8192, 126336)


def test_sizes_and_validation() -> None:
    real = lumina_dimoo_8b()
    assert (real.grid_h, real.grid_w, real.num_image_tokens) == (64, 64, 4096)
    assert real.seq_len(30) == 30 + 2 + 64 * 65 + 2 == 4194  # 4096 codes + 64 newlines + 4 tags
    wide = lumina_dimoo_8b(512, 1024)
    assert (wide.grid_h, wide.grid_w) == (32, 64)
    assert wide.code_positions(10)[:3].tolist() == [10, 11, 12] and wide.code_positions(10)[64].item() == 10 + 65
    assert lumina_dimoo_8b(16, 64).num_image_tokens == 4  # 4:1 is allowed
    for h, w, msg in [(40, 64, "height must be a positive multiple of 16"), (0, 64, "height"),
                      (64, 1000, "width must be"), (16, 80, r"aspect ratio above 4:1")]:  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            lumina_dimoo_8b(h, w)


def _code_logits(model: LLaDAModelLM, ids: list[int] | torch.Tensor, mask: torch.Tensor | None,
                 at: torch.Tensor) -> torch.Tensor:  # fmt: skip
    ids = torch.as_tensor(ids).reshape(-1, len(ids) if isinstance(ids, list) else ids.shape[-1])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, logits_at=at, vocab_slice=(126356, 126356 + 8192)).logits


def test_batched_rows_equal_upstream_batch1_rows(backbone) -> None:
    """Left padding + key-padding mask: each row's logits at its code slots equal the unpadded upstream row's."""
    prompts = ["a cat", "a photo of a red bus next to a dog and two green apple"]
    batch = backbone.prompt_batch(prompts)
    batched = _code_logits(backbone.model, batch.input_ids, batch.attention_mask, batch.image_positions)  # (2, N, K)
    texts = backbone.tokenize([backbone.layout.prompt_text(p) for p in prompts])
    assert len(texts[0]) != len(texts[1]) and bool((~batch.attention_mask[0]).any())
    for b, text in enumerate(texts):
        alone = _code_logits(backbone.model, backbone.layout.upstream_row(text), None,
                             backbone.layout.code_positions(len(text) + 2))  # fmt: skip
        torch.testing.assert_close(batched[b], alone[0], atol=1e-4, rtol=1e-4)
    unc = _code_logits(backbone.model, batch.uncond_ids, batch.uncond_mask, batch.image_positions)
    unc_text = backbone.uncond_text_ids
    alone = _code_logits(backbone.model, backbone.layout.upstream_row(unc_text), None,
                         backbone.layout.code_positions(len(unc_text) + 2))  # fmt: skip
    torch.testing.assert_close(unc[0], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(unc[1], alone[0], atol=1e-4, rtol=1e-4)
    backbone.model.config.attend_pads = True  # upstream's unmasked attention: the pads now change the short row
    try:
        leaky = _code_logits(backbone.model, batch.input_ids, batch.attention_mask, batch.image_positions)
    finally:
        backbone.model.config.attend_pads = False
    assert not torch.allclose(leaky[0], batched[0], atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# The Lumina sampler (docs/models.md 5)


class ConstantCodes(torch.nn.Module):
    """Ignores its input: the same code logits (K,) at every row and image position."""

    def __init__(self, code_logits: torch.Tensor) -> None:
        super().__init__()
        self.code_logits = code_logits

    def forward(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_at: torch.Tensor,
                vocab_slice: tuple[int, int]) -> SimpleNamespace:  # fmt: skip
        return SimpleNamespace(logits=self.code_logits.expand(input_ids.shape[0], logits_at.numel(), -1).clone())


@pytest.mark.parametrize(
    "side, first, last",
    [(512, [1, 1, 1, 2, 3, 4], 25), (1024, [2, 3, 7, 8, 11, 14], 100)],  # docs/models.md 5: N = 1024 / 4096, T = 64
)
def test_commit_counts_match_models_md_5(side: int, first: list[int], last: int) -> None:
    k = 16  # small codebook and made-up ids: only the counts matter here
    lay = LuminaLayout(mask_id=1, newline_id=2, image_start_id=3, image_end_id=4, uncond_id=5, answer_start_id=6,
                       answer_end_id=7, pad_id=0, code_offset=8, codebook_size=k, height=side, width=side)  # fmt: skip
    batch = lay.build_batch([[9, 10, 11]], [9, 10])
    out = build_sampler("lumina", num_steps=64, cfg_scale=4.0).sample(
        ConstantCodes(torch.linspace(-1, 1, k)), batch, torch.Generator().manual_seed(0)
    )
    n = lay.num_image_tokens
    assert out.n_commit[0, :6].tolist() == first and out.n_commit[0, -1].item() == last
    # keep_s = max(1, floor(N cos(pi (s+1) / 128))) masked after step s < 63, none after the last
    keep = [max(1, math.floor(n * math.cos(math.pi * (s + 1) / 128))) for s in range(63)] + [0]
    assert out.n_commit[0].tolist() == [a - b for a, b in zip([n] + keep[:-1], keep)]


class Recording(torch.nn.Module):
    """Wraps a model and keeps every input_ids it is called with."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, **kwargs: torch.Tensor) -> object:
        self.inputs.append(kwargs["input_ids"].clone())
        return self.model(**kwargs)


def test_lumina_sampler_contract_on_the_lumina_layout(backbone) -> None:
    """Every code slot committed once; newline and text slots never written; the k lowest scores stay masked;
    log-prob at commit = log softmax(z / tau)(code) in the replayed state; decodes to (B, 4, 8, 3) uint8."""
    T, w, tau = 5, 4.0, 0.7
    batch = backbone.prompt_batch(["a cat", "a photo of a red bus"])
    model = Recording(backbone.model)
    infos: list[StepInfo] = []
    out = build_sampler("lumina", num_steps=T, cfg_scale=w, temperature=tau).sample(
        model, batch, torch.Generator().manual_seed(0), step_hook=infos.append
    )
    assert out.codes.shape == out.commit_step.shape == (2, N) and int(out.codes.max()) < 8192
    assert out.n_commit.sum(-1).tolist() == [N, N]
    # N = 8, T = 5: keep = max(1, floor(8 cos(pi (s+1) / 10))) = 7, 6, 4, 2, then 0 -> commits 1, 1, 2, 2, 2
    assert out.n_commit.tolist() == [[1, 1, 2, 2, 2]] * 2
    image = torch.zeros(batch.input_ids.shape[1], dtype=torch.bool)
    image[batch.image_positions] = True
    assert len(model.inputs) == T
    assert len(model.inputs[0]) == 3  # fully masked canvases: the 2 prompts and one shared unconditional row
    for s, ids in enumerate(model.inputs):  # one forward per step of the distinct cond + uncond rows
        before = torch.where(out.commit_step >= s, 8192, out.codes)  # state before step s (docs/models.md 3.4)
        b = batch.with_image(canvas_ids(before, batch))
        # (2B, T): text, tags and newlines untouched, the same canvas in the cond and the uncond row
        full = torch.cat([b.input_ids, b.uncond_ids])
        assert torch.equal(full[:2, ~image], batch.input_ids[:, ~image]) and torch.equal(
            full[:2, image], full[2:, image]
        )
        assert torch.equal(torch.unique(ids, dim=0), torch.unique(full, dim=0))
        slots = ids[:, image]
        assert bool(((slots == 126336) | ((slots >= 126356) & (slots < 126356 + 8192))).all())
    for s, info in enumerate(infos):
        still = out.commit_step > s  # masked after step s
        for b in range(2):
            if bool(still[b].any()):
                assert float(info.score[b][info.committed[b]].min()) >= float(info.score[b][still[b]].max())
        before = torch.where(out.commit_step >= s, 8192, out.codes)  # state before step s (docs/models.md 3.4)
        z = guided_code_logits(backbone.model, batch, canvas_ids(before, batch), w)  # (B, N, K)
        logp = torch.log_softmax(z / tau, -1).gather(-1, out.codes.unsqueeze(-1)).squeeze(-1)
        at = out.commit_step == s
        torch.testing.assert_close(out.logp_at_commit[at], logp[at], atol=1e-5, rtol=1e-5)
    images = backbone.decode(out.codes)
    assert images.shape == (2, 4, 8, 3) and images.dtype == np.uint8


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_registered_sampler_runs_on_the_lumina_layout(backbone, name: str) -> None:
    from htgrpo_patch.ranked_sampler import RankedSampler

    batch = backbone.prompt_batch(["a cat", "a photo of a red bus next to a dog"]).repeat_interleave(2)
    out = RankedSampler(build_sampler(name, num_steps=3, cfg_scale=2.0)).sample(
        backbone.model, batch, torch.Generator().manual_seed(1)
    )
    rank = out.extras["rank"]  # (B, N): a permutation of 1..N ordered by commit step
    assert torch.equal(rank.sort(-1).values, torch.arange(1, N + 1).expand(4, N))
    for b in range(4):
        order = rank[b].argsort()
        assert bool((out.commit_step[b, order].diff() >= 0).all())


def test_sampler_validation() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build_sampler("lumina", temperature=0.0)
    assert build_sampler("lumina") == build_sampler("lumina", num_steps=64, cfg_scale=4.0, temperature=1.0)


# ---------------------------------------------------------------------------------------------------------------
# VQ through the codebook


def test_decode_goes_through_the_codebook_in_raster_order(backbone) -> None:
    codes = torch.randint(0, 8192, (3, N), generator=torch.Generator().manual_seed(0))
    images = backbone.decode(codes)
    assert images.shape == (3, 4, 8, 3) and images.dtype == np.uint8
    vq = backbone.vq
    with torch.no_grad():  # by hand: codebook rows laid out as (B, h, w, C) -> (B, C, h, w) -> decoder
        z = vq.quantize.embedding.weight[codes].view(3, 2, 4, 4).permute(0, 3, 1, 2)
        x = vq.decoder(vq.post_quant_conv(z)).clip(0, 1)
    np.testing.assert_array_equal(images, (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    again = backbone.encode(images)
    assert again.shape == (3, N) and again.dtype == torch.long and int(again.max()) < 8192
    with pytest.raises(ValueError, match="mask id 126336"):
        backbone.decode(torch.full((1, N), 126336))
    with pytest.raises(ValueError, match=r"look like vocabulary ids: subtract the offset 126356"):
        backbone.decode(torch.full((1, N), 126356 + 3))
    with pytest.raises(ValueError, match=r"images must be \(B, 4, 8, 3\)"):
        backbone.encode(np.zeros((1, 8, 8, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Configs and launchers


def test_configs_differ_only_in_the_patch_section() -> None:
    ht = yaml.safe_load((REPO / "configs/dimoo_htgrpo.yaml").read_text())
    mg = yaml.safe_load((REPO / "configs/dimoo_maskgrpo.yaml").read_text())
    assert set(ht) - set(mg) == {"patch", "patch_options"} and ht["patch"] == "htgrpo"
    assert {k: v for k, v in ht.items() if k not in ("patch", "patch_options")} == mg
    assert mg["backbone"]["name"] == "lumina" and mg["rollout"]["name"] == "lumina"
    assert sum(ht["patch_options"]["budgets"]) == mg["rl"]["num_inner_updates"]


@pytest.mark.slow
def test_dry_run_plans_a_lumina_launch(tiny, tmp_path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DRY_RUN": "1", "MODEL_PATH": str(tiny),
           "PROMPTS": str(prompts), "HEIGHT": "512", "WIDTH": "256", "NUM_GPUS": "6"}  # fmt: skip
    r = subprocess.run(["bash", "launch/dimoo_htgrpo.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "launch plan: lumina backbone, 6 GPUs" in out and "configs/dimoo_htgrpo.yaml" in out
    assert "backbone.options.height=512 backbone.options.width=256" in out and "options.vq_path=" not in out
    assert re.search(r"backbone VQ \(vq_path null\)\s+local dir\s+" + re.escape(str(tiny / "vqvae")), out)
    # 32 x 16 codes: T = 128 (text allowance) + 2 + 32 * 17 + 2 = 676; tiny config.json: 2 * 41088 +
    # 2 * 134548 * 64 + 64 = 17,304,384 params
    assert "T=676" in out and "17,304,384 params" in out and "dry run OK" in out
    from maskgrpo.launch_plan import main

    bad = main(["--config", str(REPO / "configs/dimoo_maskgrpo.yaml"), f"prompts.source={prompts}",
                "backbone.options.height=1000"])  # fmt: skip
    assert bad == 2


# ---------------------------------------------------------------------------------------------------------------
# One baseline round and one HT-GRPO round end to end (python -m maskgrpo.train, single process, concurrently)

P, G, MU = 2, 3, 3


def _run_config(name: str, tiny: Path, clip_dir: Path, prompts: Path, out: Path) -> dict:
    """configs/dimoo_<name>.yaml with tiny sizes: P = 2 x G = 3, mu = 3 (HT budgets 1:1:1), the lumina sampler at 4
    steps with CFG, LoRA r = 4, fp32, and the clip reward on a local tiny CLIP instead of the three paper rewards."""
    cfg = yaml.safe_load((REPO / f"configs/dimoo_{name}.yaml").read_text())
    cfg["run"].update({"output_dir": str(out), "wandb_mode": "disabled"})
    cfg["backbone"].update({"path": str(tiny), "dtype": "float32"})
    cfg["backbone"]["options"].update(tiny_options())
    cfg["prompts"].update({"source": str(prompts), "per_round": P})
    cfg["rollout"]["num_steps"] = 4
    cfg["rewards"] = {"clip": {"weight": 1.0, "scale": 1.0, "kwargs": {"model_path": str(clip_dir)}}}
    cfg["rl"].update({"rounds": 1, "group_size": G, "num_inner_updates": MU, "rollout_batch_size": P * G})
    cfg["optim"]["lr"] = 1.0e-3
    cfg["lora"].update({"r": 4, "alpha": 8, "dropout": 0.0})
    cfg["deepspeed"].update({"config": str(REPO / "configs/deepspeed/zero2.json"), "precision": "fp32"})
    cfg["checkpoint"]["every"] = 0
    cfg["log"].update({"image_every": 1, "images_in_grid": 4})
    if name == "htgrpo":
        cfg["patch_options"]["budgets"] = [1, 1, 1]
    return cfg


@pytest.fixture(scope="module")
def rounds(tiny, tmp_path_factory) -> dict[str, Path]:
    """Both runs started together (each single-threaded) to halve the wall time; returns their run directories."""
    d = tmp_path_factory.mktemp("rounds")
    clip_dir, prompts = build_tiny_clip(d / "clip"), write_prompts(d / "prompts.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    procs = {}
    for name in ("maskgrpo", "htgrpo"):
        cfg_file = d / f"dimoo_{name}.yaml"
        cfg_file.write_text(yaml.safe_dump(_run_config(name, tiny, clip_dir, prompts, d / name)))
        cmd = [sys.executable, "-m", "maskgrpo.train", "--config", str(cfg_file)]  # one plain process, no launcher
        procs[name] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)  # fmt: skip
    for name, proc in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}:\n{log[-6000:]}"
    return {name: d / name for name in procs}


def _metrics(run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [m["round"] for m in lines] == [1]
    m = lines[0]
    assert np.isfinite(m["loss/policy"]) and np.isfinite(m["reward/clip/mean"]), m  # decode -> reward -> update
    assert (run / "images" / "round_00001.png").is_file()
    assert json.loads((run / "final" / "backbone.json").read_text())["name"] == "lumina"
    return m


@pytest.mark.slow
def test_one_maskgrpo_round_end_to_end(rounds) -> None:
    m = _metrics(rounds["maskgrpo"])
    names = json.loads((rounds["maskgrpo"] / "components.json").read_text())
    assert (names["backbone"], names["sampler"], names["sampler_wrapper"], names["context"]) == (
        "lumina", "lumina", "none", "random_remask")  # fmt: skip
    assert m["perf/forwards_update"] == MU * P * G  # one context row per rollout and update
    assert 4 * 2 <= m["perf/forwards_rollout"] <= max_rollout_forwards(4, P, P * G)  # T x distinct (cond + uncond)


@pytest.mark.slow
def test_one_htgrpo_round_end_to_end(rounds) -> None:
    m = _metrics(rounds["htgrpo"])
    names = json.loads((rounds["htgrpo"] / "components.json").read_text())
    assert (names["preset"], names["sampler"], names["sampler_wrapper"], names["context"], names["loss"]) == (
        "htgrpo", "lumina", "ranked", "fully_masked", "ht_staged")  # fmt: skip
    assert m["perf/forwards_update"] == MU * P  # one shared fully masked row per prompt and update
    assert m["perf/forwards_old_ref"] == 2 * P
    assert m["stage/structure/support_frac"] > 0  # the staged loss read the rollouts' ranks
