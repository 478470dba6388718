"""MMaDA backbone without weights: tiny checkpoints in the upstream on-disk format through the real loaders.

Covers docs/models.md 1.4 / 7.1-7.5 / 7.8 (strict key set, shapes, config, tokenizer, golden row, decode guard), the
meta-device bf16 load, both samplers on the tiny backbone, and one MaskGRPO round end to end via
``python -m maskgrpo.train``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file, save_file
from tiny_models import (
    MMADA_TEXT_VOCAB,
    MMADA_VOCAB,
    TINY_LLADA,
    TinyMMaDA,
    build_mmada_tokenizer,
    build_tiny_clip,
    build_tiny_mmada,
    tiny_llada,
    write_prompts,
)

from maskgrpo.backbones import BACKBONES
from maskgrpo.backbones.mmada import MMaDABackbone, check_tokenizer, load_mmada
from maskgrpo.layout import tiny_mmada
from maskgrpo.models import LLaDAConfig, LLaDAModelLM
from maskgrpo.models.loading import (
    HEAD_KEY,
    INDEX_FILE,
    _expected_shapes,
    load_llada,
    read_llada_config,
    resolve_checkpoint_dir,
    save_llada_sharded,
)
from maskgrpo.sampling import build_sampler


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyMMaDA:
    return build_tiny_mmada(tmp_path_factory.mktemp("tiny_mmada"))


@pytest.fixture(scope="module")
def backbone(tiny) -> MMaDABackbone:
    return BACKBONES.get("mmada")(str(tiny.model_dir), dtype=torch.float32, **tiny.options)


def _copy_model_dir(tiny: TinyMMaDA, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in tiny.model_dir.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _index(d: Path) -> dict:
    return json.loads((d / INDEX_FILE).read_text())


def _shard_of(d: Path, key: str) -> Path:
    return d / _index(d)["weight_map"][key]


def _edit_shard(d: Path, key: str, edit, update_index: bool) -> Path:
    """Apply ``edit(state)`` to the shard that holds ``key``; optionally rewrite the index to match the shards."""
    shard = _shard_of(d, key)
    state = load_file(str(shard))
    edit(state)
    save_file(state, str(shard), metadata={"format": "pt"})
    if update_index:
        index = _index(d)
        wm = {k: v for k, v in index["weight_map"].items() if v != shard.name}
        wm.update(dict.fromkeys(state, shard.name))
        index["weight_map"] = wm
        (d / INDEX_FILE).write_text(json.dumps(index))
    return shard


def _edit_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


# ---------------------------------------------------------------------------------------------------------------
# Upstream format and strict loading (docs/models.md 1.4, 7.1-7.3)


def test_saved_format_is_upstream(tiny) -> None:
    d = tiny.model_dir
    index = _index(d)
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    # docs/models.md 1.4: 9 tensors per block + wte + ln_f + head = 9*2 + 3 = 21 for 2 layers (291 at 32 layers)
    assert len(index["weight_map"]) == 21 and HEAD_KEY in index["weight_map"]
    total = sum(t.numel() * t.element_size() for s in shards for t in load_file(str(d / s)).values())
    assert index["metadata"]["total_size"] == total
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "mmada" and cfg["d_model"] == 64 and cfg["embedding_size"] == MMADA_VOCAB
    assert cfg["block_type"] == "llama" and cfg["weight_tying"] is False and cfg["mask_token_id"] == 126336
    assert {t.dtype for s in shards for t in load_file(str(d / s)).values()} == {torch.bfloat16}


def test_released_key_count_and_param_count_on_meta() -> None:
    """docs/models.md 1.4 / 6: the MMaDA-8B config implies 291 tensors (290 tied) and 8,082,690,048 parameters."""
    cfg = LLaDAConfig(embedding_size=MMADA_VOCAB)  # the defaults are LLaDA-8B's sizes
    shapes = _expected_shapes(cfg)
    assert len(shapes) == 291 and shapes[HEAD_KEY] == (MMADA_VOCAB, 4096)
    assert shapes["model.transformer.blocks.31.ff_out.weight"] == (4096, 12288)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 8_082_690_048
    assert len(_expected_shapes(LLaDAConfig(embedding_size=MMADA_VOCAB, weight_tying=True))) == 290


def test_load_bf16_is_exact_with_no_meta_and_no_fp32(tiny) -> None:
    model = load_llada(tiny.model_dir, dtype=torch.bfloat16, expected_vocab=MMADA_VOCAB)
    reference = tiny_llada(0).to(torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert all(p.device.type == "cpu" for p in model.parameters())
    for (n1, p1), (n2, p2) in zip(reference.state_dict().items(), model.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1
    assert not model.training and model.config.num_vq_tokens == 256  # stale extra key kept, not used
    fp32 = load_llada(tiny.model_dir, dtype=torch.float32)
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}
    assert torch.equal(fp32.head_weight, reference.head_weight.float())


@pytest.mark.parametrize("update_index", [False, True])
def test_missing_key_in_a_shard_names_key_and_file(tiny, tmp_path, update_index: bool) -> None:
    d = _copy_model_dir(tiny, tmp_path / "m")
    key = "model.transformer.blocks.1.up_proj.weight"
    shard = _edit_shard(d, key, lambda s: s.pop(key), update_index=update_index)
    if update_index:  # index and shards agree; the key is simply not in the checkpoint
        match = rf"{INDEX_FILE}: the key set .* missing \(1\): \[{key}\]"
    else:  # the index still maps the key to the shard that lost it
        match = rf"{INDEX_FILE} disagrees with its shards. missing key\(s\): \[{key} \(mapped to {shard.name}, which"
    with pytest.raises(ValueError, match=match):
        load_llada(d)


def test_unexpected_key_names_key_and_file(tiny, tmp_path) -> None:
    d = _copy_model_dir(tiny, tmp_path / "m")
    key = "model.transformer.blocks.0.att_proj.weight"  # OLMo's fused projection: not in these checkpoints
    shard = _edit_shard(d, "model.transformer.ln_f.weight", lambda s: s.update({key: torch.zeros(3, 64)}),
                        update_index=True)  # fmt: skip
    with pytest.raises(ValueError, match=rf"unexpected \(1\): \[{key} \(in {shard.name}\)\]"):
        load_llada(d)


def test_extra_block_is_reported_with_block_indices(tiny, tmp_path) -> None:
    d = _copy_model_dir(tiny, tmp_path / "m")
    _edit_config(d, n_layers=1)
    with pytest.raises(ValueError, match=r"n_layers=1.*12 tensors expected, 21 found; block indices found: 0\.\.1\)"):
        load_llada(d)


def test_wrong_shape_names_key_file_and_shapes(tiny, tmp_path) -> None:
    d = _copy_model_dir(tiny, tmp_path / "m")
    key = "model.transformer.blocks.0.ff_proj.weight"
    shard = _edit_shard(d, key, lambda s: s.update({key: torch.zeros(96, 64, dtype=torch.bfloat16)}),
                        update_index=False)  # fmt: skip
    with pytest.raises(ValueError, match=rf"shape mismatch.*{key} in {shard.name}: \[96, 64\] != \[128, 64\]"):
        load_llada(d)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mask_token_id": 126335}, "mask_token_id 126335 != 126336"),
        ({"block_type": "sequential"}, "block_type"),
        ({"include_bias": True}, "include_bias"),
        ({"n_kv_heads": 2}, "n_kv_heads"),
        ({"weight_tying": True}, "weight_tying is true but"),
        ({"model_type": "llama"}, "model_type 'llama'"),
    ],
)
def test_config_checks_name_the_file(tiny, tmp_path, changes: dict, message: str) -> None:
    d = _copy_model_dir(tiny, tmp_path / "m")
    _edit_config(d, **changes)
    with pytest.raises(ValueError, match=message) as err:
        load_llada(d)
    assert "config.json" in str(err.value)


def test_expected_vocab_mismatch_prints_v(tiny) -> None:
    with pytest.raises(ValueError, match=r"config.json: embedding_size V = 134656, expected 126464"):
        load_llada(tiny.model_dir, expected_vocab=126464)


def test_a_4096_wide_config_must_be_llada_8b(tmp_path) -> None:
    cfg = {"model_type": "mmada", "d_model": 4096, "n_heads": 32, "n_layers": 30, "mlp_hidden_size": 12288,
           "embedding_size": MMADA_VOCAB, "rope_theta": 500000.0}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"n_layers=30 \(expected 32\)"):
        read_llada_config(tmp_path)
    cfg["n_layers"] = 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert read_llada_config(tmp_path).head_dim == 128


def test_absent_head_ties_to_wte(tiny, tmp_path) -> None:
    """docs/models.md 1.1: weight_tying unverified for MMaDA-8B-Base; no head key -> 290-style checkpoint, tied."""
    d = _copy_model_dir(tiny, tmp_path / "m")
    _edit_shard(d, HEAD_KEY, lambda s: s.pop(HEAD_KEY), update_index=True)
    with pytest.warns(UserWarning, match="tying the head to wte"):
        model = load_llada(d, dtype=torch.float32)
    assert model.config.weight_tying and "model.transformer.ff_out" not in dict(model.named_modules())
    assert len(model.state_dict()) == 20
    ids = torch.randint(0, 1000, (1, 7))
    with torch.no_grad():
        h = model(ids, return_hidden=True).hidden_states
        expected = model.model.transformer["ln_f"](h) @ model.model.transformer["wte"].weight.T
        torch.testing.assert_close(model(ids).logits, expected)

    saved_tied = save_llada_sharded(tiny_llada(1, weight_tying=True), tmp_path / "tied").parent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the config says tied: no warning
        assert load_llada(saved_tied).config.weight_tying


def test_single_file_checkpoint_and_missing_files(tiny, tmp_path) -> None:
    model = tiny_llada(2)
    d = tmp_path / "single"
    save_llada_sharded(model, d)
    (d / INDEX_FILE).unlink()
    (d / "model-00001-of-00001.safetensors").rename(d / "model.safetensors")
    assert torch.equal(load_llada(d, dtype=torch.float32).head_weight, model.head_weight)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors.index.json or model.safetensors"):
        load_llada(d)


def test_hub_id_goes_through_snapshot_download(tiny, monkeypatch) -> None:
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        return str(tiny.model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_checkpoint_dir("Gen-Verse/MMaDA-8B-Base") == tiny.model_dir
    with pytest.raises(FileNotFoundError, match="no such directory, and not a hub id"):
        resolve_checkpoint_dir("/no/such/checkpoint")
    assert len(calls) == 1  # a path-shaped string never reaches the hub
    bb = load_mmada("Gen-Verse/MMaDA-8B-Base", dtype=torch.float32, **tiny.options)
    assert calls[-1][0] == "Gen-Verse/MMaDA-8B-Base" and {"*.safetensors", "*.json"} <= set(calls[-1][1])
    assert bb.model.config.embedding_size == MMADA_VOCAB and len(bb.tokenizer) == MMADA_TEXT_VOCAB


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer, layout and the golden row (docs/models.md 2.1, 2.2, 7.4, 7.5)


def test_tokenizer_has_real_size_and_ids_and_builds_fast(tmp_path) -> None:
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    build_mmada_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert time.perf_counter() - t0 < 3.0
    assert len(tok) == MMADA_TEXT_VOCAB == tiny_mmada().code_offset
    assert tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|end_header_id|>"]) == [
        126080, 126081, 126336, 126347
    ]  # fmt: skip
    check_tokenizer(tok, tiny_mmada(), "test")


def test_golden_empty_prompt_row(backbone) -> None:
    """models.md 7.5 at W = 17, N = 16: [126093]*(W-3) + [126088, 126080, 126081, 126084] + [126336]*N + [126085]."""
    w, n = 17, 16
    golden = [126093] * (w - 3) + [126088, 126080, 126081, 126084] + [126336] * n + [126085]
    batch = backbone.prompt_batch([""])
    assert batch.input_ids.shape == (1, w + n + 2) == (1, len(golden))
    assert batch.input_ids[0].tolist() == golden and batch.uncond_ids[0].tolist() == golden
    assert batch.attention_mask[0].tolist() == [False] * (w - 3) + [True] * (3 + n + 2)
    assert batch.image_positions.tolist() == list(range(w + 1, w + 1 + n))


def test_prompt_row_has_one_bos_and_no_chat_template(backbone) -> None:
    # tiny tokenizer word ids (tests/tiny_models.WORDS, 1-based): a=1 photo=2 of=3 red=19 cat=29
    batch = backbone.prompt_batch(["a photo of a red cat"])
    text = [126088, 126080, 1, 2, 3, 1, 19, 29, 126081]  # <|t2i|> BOS a photo of a red cat EOS
    assert batch.input_ids[0, :17].tolist() == [126093] * (17 - len(text)) + text
    assert batch.uncond_ids[0, :17].tolist() == [126093] * 14 + [126088, 126080, 126081]


def test_long_prompt_is_truncated_to_the_window(backbone) -> None:
    row = backbone.prompt_batch([" ".join(["cat"] * 40)]).input_ids[0, :17].tolist()
    assert row == [126088, 126080] + [29] * 14 + [126081]  # t[:W-1] + [EOS]


def test_tokenizer_and_vocab_mismatches_fail_at_load(tiny, tmp_path) -> None:
    from transformers import AutoTokenizer

    tok_dir = tmp_path / "tok"
    tok = AutoTokenizer.from_pretrained(str(tiny.model_dir))
    tok.add_tokens(["<|new|>"])
    tok.save_pretrained(str(tok_dir))
    with pytest.raises(ValueError, match=r"len\(tokenizer\) = 126350 but the image codes start at 126349"):
        load_mmada(tiny.model_dir, tokenizer_path=tok_dir, **tiny.options)
    loose = load_mmada(tiny.model_dir, tokenizer_path=tok_dir, strict_tokenizer=False, **tiny.options)
    assert len(loose.tokenizer) == 126350

    small = tmp_path / "llada_vocab"  # LLaDA's V = 126464 cannot hold codes up to 126349 + 8191
    torch.manual_seed(0)
    save_llada_sharded(LLaDAModelLM(LLaDAConfig(**TINY_LLADA, embedding_size=126464)), small, model_type="llada")
    build_mmada_tokenizer(small)
    with pytest.raises(ValueError, match=r"embedding_size 126464 < 134541 needed by the layout"):
        load_mmada(small, **tiny.options)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['text_windw'\]; valid options: .*'text_window'"):
        load_mmada(tiny.model_dir, text_windw=17)


def test_backbone_fields_and_checkpointing(tiny, backbone) -> None:
    assert backbone.layout == tiny_mmada() and backbone.vq.codebook_size == 8192
    assert {p.dtype for p in backbone.model.parameters()} == {torch.float32}
    ck = load_mmada(tiny.model_dir, gradient_checkpointing=True, **tiny.options)
    assert {p.dtype for p in ck.model.parameters()} == {torch.bfloat16}  # the default dtype
    assert all(b.gradient_checkpointing for b in ck.model.model.transformer["blocks"])


# ---------------------------------------------------------------------------------------------------------------
# Sampling and decoding (docs/models.md 3, 7.8)


@pytest.mark.parametrize("name, steps, cfg", [("emerge", 12, 3.5), ("maskgit", 15, 3.5)])
def test_samplers_run_on_the_tiny_backbone(backbone, name: str, steps: int, cfg: float) -> None:
    sampler = build_sampler(name, num_steps=steps, cfg_scale=cfg)
    batch = backbone.prompt_batch(["a photo of a cat", "a red bus", ""])
    out = sampler.sample(backbone.model, batch, torch.Generator().manual_seed(0))
    assert out.codes.shape == (3, 16) and out.codes.dtype == torch.long
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < 8192
    assert out.n_commit.sum(1).tolist() == [16, 16, 16]
    images = backbone.decode(out.codes)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8  # 4x4 grid, 4x MAGVIT
    np.testing.assert_array_equal(images[:1], backbone.vq.decode_codes_to_uint8(out.codes[:1], (4, 4)))


def test_decode_refuses_mask_ids_and_vocabulary_ids(backbone) -> None:
    codes = torch.zeros(2, 16, dtype=torch.long)
    codes[1, 3] = 126336
    with pytest.raises(ValueError, match="1 image slot.*mask id 126336"):
        backbone.decode(codes)
    with pytest.raises(ValueError, match=r"16 code\(s\) outside \[0, 8192\) \(16 look like vocabulary ids"):
        backbone.decode(torch.full((1, 16), 126349 + 5))
    with pytest.raises(ValueError, match=r"codes must be \(B, 16\)"):
        backbone.decode(torch.zeros(1, 15, dtype=torch.long))
    assert backbone.decode(torch.zeros(0, 16, dtype=torch.long)).shape == (0, 16, 16, 3)


# ---------------------------------------------------------------------------------------------------------------
# One baseline round end to end through the trainer


def _tiny_run_config(tiny: TinyMMaDA, clip_dir: Path, prompts: Path, out: Path) -> dict:
    """P = 2 prompts x G = 3, mu = 2, emerge 4 steps with CFG, LoRA r = 4, the clip reward on a local tiny CLIP."""
    return {
        "run": {"output_dir": str(out), "seed": 0, "wandb_mode": "disabled"},
        "backbone": {"name": "mmada", "path": str(tiny.model_dir), "dtype": "float32", "options": tiny.options},
        "prompts": {"source": str(prompts), "per_round": 2},
        "rollout": {"name": "emerge", "num_steps": 4, "cfg_scale": 3.5},
        "rewards": {"clip": {"weight": 1.0, "scale": 1.0, "kwargs": {"model_path": str(clip_dir)}}},
        "rl": {"rounds": 1, "group_size": 3, "num_inner_updates": 2, "micro_batch_prompts": 1, "clip_eps": 0.2,
               "kl_beta": 0.01},
        "optim": {"lr": 1.0e-3},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0},
        "deepspeed": {"config": str(REPO / "configs/deepspeed/zero2.json"), "precision": "fp32"},
        "log": {"image_every": 1, "images_in_grid": 4},
        "eval": None,
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", ["maskgrpo", "htgrpo"])
def test_one_round_end_to_end(tiny, tmp_path, method) -> None:
    """One round per method on the tiny MMaDA: decode -> CLIP reward -> update (LoRA), through the real CLI."""
    import yaml

    clip_dir = build_tiny_clip(tmp_path / "clip")
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "run"
    cfg_file = tmp_path / "tiny_mmada.yaml"
    cfg = _tiny_run_config(tiny, clip_dir, prompts, out)
    if method == "htgrpo":  # the patch section of configs/mmada_htgrpo.yaml, budgets scaled to mu = 2
        cfg.update(patch="htgrpo", patch_options={"budgets": [1, 1, 0]})
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "maskgrpo.train", "--config", str(cfg_file)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [m["round"] for m in metrics] == [1]
    m = metrics[0]
    assert np.isfinite(m["loss/policy"]) and np.isfinite(m["reward/clip/mean"]), m
    components = json.loads((out / "components.json").read_text())
    if method == "htgrpo":  # P = 2 prompts, G = 3, mu = 2: one shared row per prompt
        assert (components["context"], components["loss"]) == ("fully_masked", "ht_staged")
        assert m["perf/forwards_update"] == 2 * 2 and m["perf/forwards_old_ref"] == 2 * 2
    else:
        assert components["context"] == "random_remask" and m["perf/forwards_update"] == 2 * 2 * 3
    assert (out / "images" / "round_00001.png").is_file()
    meta = json.loads((out / "final" / "backbone.json").read_text())
    assert meta["name"] == "mmada" and meta["options"]["text_window"] == 17
    adapter = load_file(str(out / "final" / "adapter" / "adapter_model.safetensors"))
    lora_b = [k for k in adapter if "lora_B" in k]
    assert len(lora_b) == 2 * 7  # 2 blocks x 7 block linears (docs/models.md 1.5), never the head
    assert all(adapter[k].abs().sum() > 0 for k in lora_b), "a LoRA B matrix stayed at its zero init"
