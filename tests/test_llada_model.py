"""Tests of the LLaDA backbone (docs/models.md 1): names, save/load, math hand cases, masks, sliced head, LoRA,
checkpointing."""

from __future__ import annotations

import math
import os
import re
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest
import torch

from maskgrpo.models import (
    ALL_BLOCK_LINEARS,
    MASKGRPO_EFFECTIVE_LINEARS,
    LLaDAConfig,
    LLaDAModelLM,
    LLaDAOutput,
    lora_target_regex,
)
from maskgrpo.models.modeling_llada import apply_rope, rms_norm, rope_inv_freq, rope_tables

VOCAB = 512
PAD = 0


def tiny_config(**overrides) -> LLaDAConfig:
    """docs/models.md 1.6 shape (d_model 64, 2 layers, 4 heads of 16, MLP 128) with a small vocabulary for speed."""
    kwargs = {
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 4,
        "mlp_hidden_size": 128,
        "embedding_size": VOCAB,
        "mask_token_id": VOCAB - 1,
        "rope_theta": 10000.0,
    }
    kwargs.update(overrides)
    return LLaDAConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    model = LLaDAModelLM(tiny_config(**overrides)).eval()
    # Norm weights start at ones; perturb them so a bug that ignores a norm weight changes the output.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "ln_f.weight")):
                p.add_(0.1 * torch.randn_like(p))
    return model


def random_ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (b, t), generator=g)


BLOCK_KEYS = (
    "attn_norm.weight",
    "q_proj.weight",
    "k_proj.weight",
    "v_proj.weight",
    "attn_out.weight",
    "ff_norm.weight",
    "ff_proj.weight",
    "up_proj.weight",
    "ff_out.weight",
)


def expected_keys(n_layers: int, tied: bool) -> set[str]:
    keys = {"model.transformer.wte.weight", "model.transformer.ln_f.weight"}
    keys |= {f"model.transformer.blocks.{i}.{k}" for i in range(n_layers) for k in BLOCK_KEYS}
    if not tied:
        keys.add("model.transformer.ff_out.weight")
    return keys


# ---------------------------------------------------------------------------------------------------------------
# State-dict layout (docs/models.md 1.4) and config
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_names_match_released_layout(tied: bool) -> None:
    model = tiny_model(weight_tying=tied)
    names = {n for n, _ in model.named_parameters()}
    assert names == expected_keys(2, tied)
    assert len(names) == 2 * 9 + 2 + (0 if tied else 1)  # 291 / 290 at 32 layers
    assert set(model.state_dict()) == names  # no buffers, no duplicate head key when tied
    assert list(model.named_buffers()) == []
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["model.transformer.wte.weight"] == (VOCAB, 64)
    assert shapes["model.transformer.blocks.1.ff_proj.weight"] == (128, 64)
    assert shapes["model.transformer.blocks.1.ff_out.weight"] == (64, 128)
    assert shapes["model.transformer.blocks.0.attn_out.weight"] == (64, 64)
    if not tied:
        assert shapes["model.transformer.ff_out.weight"] == (VOCAB, 64)
    assert model.head_weight is model.get_input_embeddings().weight if tied else model.head_weight.shape == (VOCAB, 64)


def test_init_weights_follow_config() -> None:
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config(initializer_range=0.05))
    w = model.model.transformer.blocks[0].ff_proj.weight
    assert abs(w.std().item() - 0.05) < 0.005
    assert abs(model.model.transformer.wte.weight.std().item() - 0.05) < 0.005
    assert torch.equal(model.model.transformer.ln_f.weight, torch.ones(64))


def test_config_defaults_are_llada_8b_and_extra_keys_round_trip(tmp_path) -> None:
    cfg = LLaDAConfig()
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden_size) == (4096, 32, 32, 32, 12288)
    assert (cfg.rope_theta, cfg.rms_norm_eps, cfg.weight_tying, cfg.attend_pads) == (500000.0, 1e-5, False, False)
    assert cfg.mask_token_id == 126336 and cfg.max_sequence_length == 4096 and cfg.head_dim == 128
    assert cfg.vocab_size == cfg.embedding_size == 126464
    assert cfg.hidden_size == 4096 and cfg.num_hidden_layers == 32  # generic aliases
    # OLMo keys from a released config.json: unknown ones are kept, supported switches accepted.
    cfg = tiny_config(mlp_ratio=4, init_fn="mitchell", alibi=False, rope=True, layer_norm_type="rms", rope_theta=10000)
    assert isinstance(cfg.rope_theta, float)
    cfg.save_pretrained(tmp_path)
    back = LLaDAConfig.from_pretrained(tmp_path)
    assert back.mlp_ratio == 4 and back.init_fn == "mitchell" and back.d_model == 64 and back.n_kv_heads == 4


def test_olmo_style_config_json_loads(tmp_path) -> None:
    """A config.json with the OLMo-style keys the released LLaDA checkpoints carry (sizes of LLaDA-8B)."""
    import json

    released = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "block_group_size": 1, "block_type": "llama", "d_model": 4096, "embedding_dropout": 0.0,
        "embedding_size": 126464, "flash_attention": False, "include_bias": False, "include_qkv_bias": False,
        "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
        "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": 126336,
        "max_sequence_length": 4096, "mlp_hidden_size": 12288, "mlp_ratio": 4, "model_type": "llada",
        "multi_query_attention": None, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "precision": "amp_bf16",
        "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
        "rope_theta": 500000.0, "scale_logits": False, "torch_dtype": "bfloat16", "use_cache": False,
        "vocab_size": 126464, "weight_tying": False,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(released))
    cfg = LLaDAConfig.from_pretrained(tmp_path)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.mlp_hidden_size, cfg.embedding_size) == (
        4096, 32, 32, 12288, 126464
    )  # fmt: skip
    assert cfg.head_dim == 128 and cfg.rope_theta == 500000.0 and cfg.dtype == torch.bfloat16
    assert cfg.mlp_ratio == 4 and not cfg.weight_tying and not cfg.attend_pads


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"d_model": 60, "n_heads": 8}, "divisible by n_heads"),
        ({"d_model": 60, "n_heads": 4}, "must be even"),
        ({"n_kv_heads": 2}, "n_kv_heads"),
        ({"block_type": "sequential"}, "block_type"),
        ({"include_bias": True}, "include_bias"),
        ({"alibi": True}, "alibi"),
        ({"rope": False}, "rope"),
        ({"residual_dropout": 0.1}, "residual_dropout"),
        ({"vocab_size": VOCAB + 1}, "vocab_size"),
    ],
)
def test_config_rejects_unsupported_architectures(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.mark.parametrize("tied", [False, True])
def test_save_pretrained_from_pretrained_round_trip(tmp_path, tied: bool) -> None:
    from transformers import AutoModel

    model = tiny_model(weight_tying=tied)
    ids = random_ids(2, 9)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()

    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == expected_keys(2, tied)

    loaded, info = LLaDAModelLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded.eval()
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), n1
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
        auto = AutoModel.from_pretrained(tmp_path).eval()
        assert isinstance(auto, LLaDAModelLM)
        assert torch.equal(model(ids).logits, auto(ids).logits)


# ---------------------------------------------------------------------------------------------------------------
# Math hand cases (docs/models.md 1.2)
# ---------------------------------------------------------------------------------------------------------------


def test_rms_norm_hand_case() -> None:
    # x = [3, 4]: mean(x^2) = (9 + 16) / 2 = 12.5; rms = sqrt(12.5 + 1e-5) = 3.5355353...
    # -> [3, 4] / 3.5355353 = [0.848528, 1.131371]; weight [2, 0.5] -> [1.697056, 0.565685].
    x = torch.tensor([[3.0, 4.0]])
    out = rms_norm(x, torch.ones(2), 1e-5)
    torch.testing.assert_close(out, torch.tensor([[0.848528, 1.131371]]), atol=1e-6, rtol=0)
    out = rms_norm(x, torch.tensor([2.0, 0.5]), 1e-5)
    torch.testing.assert_close(out, torch.tensor([[1.697056, 0.565685]]), atol=1e-6, rtol=0)
    # bf16: the normalised value is rounded to bf16 *before* the weight multiply. With weight 1.5:
    #   bf16(0.848528) = 0.84765625, * 1.5 = 1.27148 -> bf16 1.2734375;
    #   bf16(1.131371) = 1.1328125,  * 1.5 = 1.69921875 (a tie) -> bf16 1.703125 (round to even).
    # Multiplying in fp32 first would give bf16(1.697056) = 1.6953125 for the second entry.
    out = rms_norm(x.bfloat16(), torch.tensor([1.5, 1.5]).bfloat16(), 1e-5)
    assert out.dtype == torch.bfloat16
    assert out.float().tolist() == [[1.2734375, 1.703125]]


def test_rope_hand_case() -> None:
    # head_dim 4, theta 100: inv_freq = [100^0, 100^(-2/4)] = [1, 0.1]. Pairs are (x0, x2) and (x1, x3).
    # Position 0: identity. Position 1: (x0, x2) rotated by 1 rad, (x1, x3) by 0.1 rad:
    #   y0 = x0 cos1 - x2 sin1, y2 = x2 cos1 + x0 sin1, y1 = x1 cos.1 - x3 sin.1, y3 = x3 cos.1 + x1 sin.1.
    torch.testing.assert_close(rope_inv_freq(4, 100.0), torch.tensor([1.0, 0.1]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4).expand(1, 1, 2, 4)  # (B, H, T=2, D)
    cos, sin = rope_tables(torch.arange(2), 4, 100.0)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    c1, s1, c2, s2 = math.cos(1.0), math.sin(1.0), math.cos(0.1), math.sin(0.1)
    expected = torch.tensor([1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2])
    torch.testing.assert_close(y[0, 0, 1], expected)
    # The released base: inv_freq_1 at head_dim 128 is 500000^(-2/128).
    torch.testing.assert_close(rope_inv_freq(128, 500000.0)[1], torch.tensor(500000.0 ** (-2 / 128)))
    # bf16 input comes back as bf16 (computed in fp32).
    assert apply_rope(x.bfloat16(), cos, sin).dtype == torch.bfloat16


def reference_forward(model: LLaDAModelLM, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Loop reference of docs/models.md 1.2 written from the formulas: explicit softmax(q k^T / sqrt(D)) per row and
    head, -inf on pad keys, RoPE via explicit 2-D rotations of the pairs (x_j, x_{j+D/2})."""
    cfg = model.config
    sd = {k.removeprefix("model.transformer."): v.double() for k, v in model.state_dict().items()}
    head_w = sd["wte.weight"] if cfg.weight_tying else sd["ff_out.weight"]
    nh, d = cfg.n_heads, cfg.head_dim
    b, t = ids.shape

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w

    half = d // 2
    freqs = torch.tensor([cfg.rope_theta ** (-2 * j / d) for j in range(half)], dtype=torch.float64)

    def rope(x):  # x: (T, D); rotate pair (x_j, x_{j+D/2}) at position pos by angle pos * freq_j
        out = torch.empty_like(x)
        for pos in range(t):
            cos, sin = torch.cos(pos * freqs), torch.sin(pos * freqs)
            a, c = x[pos, :half], x[pos, half:]
            out[pos, :half] = a * cos - c * sin
            out[pos, half:] = c * cos + a * sin
        return out

    logits = []
    for r in range(b):
        h = sd["wte.weight"][ids[r]]  # (T, C)
        for i in range(cfg.n_layers):
            p = f"blocks.{i}."
            a = rms(h, sd[p + "attn_norm.weight"])
            q, k, v = (a @ sd[p + n + ".weight"].T for n in ("q_proj", "k_proj", "v_proj"))
            heads = []
            for hh in range(nh):
                sl = slice(hh * d, (hh + 1) * d)
                qh, kh, vh = rope(q[:, sl]), rope(k[:, sl]), v[:, sl]
                scores = qh @ kh.T / math.sqrt(d)  # (T, T), no causal mask
                if mask is not None:
                    scores = scores.masked_fill(~mask[r].bool()[None, :], float("-inf"))
                heads.append(torch.softmax(scores, dim=-1) @ vh)
            h = h + torch.cat(heads, dim=-1) @ sd[p + "attn_out.weight"].T
            m = rms(h, sd[p + "ff_norm.weight"])
            gate = torch.nn.functional.silu(m @ sd[p + "ff_proj.weight"].T)
            h = h + (gate * (m @ sd[p + "up_proj.weight"].T)) @ sd[p + "ff_out.weight"].T
        logits.append(rms(h, sd["ln_f.weight"]) @ head_w.T)
    return torch.stack(logits)


@pytest.mark.parametrize("tied", [False, True])
def test_forward_matches_loop_reference(tied: bool) -> None:
    model = tiny_model(weight_tying=tied)
    ids = random_ids(2, 7)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :3] = False  # left padding on row 1
    ids[1, :3] = PAD
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    want = reference_forward(model, ids, mask).float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Attention masks (docs/models.md 1.3)
# ---------------------------------------------------------------------------------------------------------------


def test_attention_is_bidirectional() -> None:
    model = tiny_model()
    ids = random_ids(1, 8)
    changed = ids.clone()
    changed[0, -1] = ids[0, -1] % (VOCAB - 1) + 1  # ids are in [1, V-1]: v -> v+1, and V-1 -> 1; always differs
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    # A later token changes the logits at position 0: no causal mask.
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4


def test_left_padding_with_mask_matches_unpadded_row() -> None:
    """A left-padded, masked row equals the unpadded row at the real positions, with default positions.

    RoPE makes q_i . k_j depend only on i - j (a rotation by pos_i*f minus one by pos_j*f), so shifting every real
    token by the pad count k leaves attention among real tokens unchanged; the mask removes the pads. The claim is
    checked two ways: default positions (offset k) and positions shifted back so real tokens sit at 0..L-1.
    """
    model = tiny_model()
    length, k = 6, 4
    real = random_ids(1, length)
    padded = torch.cat([torch.full((1, k), PAD), real], dim=1)  # (1, k + L)
    mask = torch.cat([torch.zeros(1, k, dtype=torch.bool), torch.ones(1, length, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        ref = model(real).logits  # (1, L, V)
        default_pos = model(padded, attention_mask=mask).logits[:, k:]
        shifted_pos = model(padded, attention_mask=mask, positions=torch.arange(k + length) - k).logits[:, k:]
        no_mask = model(padded).logits[:, k:]
    torch.testing.assert_close(default_pos, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shifted_pos, ref, atol=1e-5, rtol=1e-5)
    # Without the mask the pads are attended and the real positions change.
    assert (no_mask - ref).abs().max() > 1e-3


def test_attend_pads_option_ignores_the_mask() -> None:
    ids = random_ids(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, :3] = False
    honour = tiny_model()
    attend = tiny_model(attend_pads=True)
    attend.load_state_dict(honour.state_dict())
    with torch.no_grad():
        a = honour(ids, attention_mask=mask).logits
        b = attend(ids, attention_mask=mask).logits
        c = attend(ids).logits
    torch.testing.assert_close(b, c, atol=0, rtol=0)  # attend_pads: mask has no effect at all
    assert (a[0] - b[0]).abs().max() > 1e-3  # the padded row differs
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=1e-6)  # the unpadded row does not


def test_pad_queries_and_all_pad_rows_are_finite() -> None:
    model = tiny_model()
    ids = random_ids(2, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :2] = False
    mask[1] = False  # degenerate: no real token at all
    with torch.no_grad():
        out = model(ids, attention_mask=mask).logits
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------------------
# Restricted head (docs/models.md 6), positions argument, output object
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_logits_at_and_vocab_slice_equal_slices_of_full_logits(tied: bool) -> None:
    model = tiny_model(weight_tying=tied)
    ids = random_ids(3, 10)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[2, :2] = False
    at = torch.tensor([9, 2, 5, 6])
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits  # (B, T, V)
        only_at = model(ids, attention_mask=mask, logits_at=at).logits
        sliced = model(ids, attention_mask=mask, logits_at=at, vocab_slice=(100, 356)).logits
        per_row_at = torch.tensor([[1, 2], [3, 4], [9, 0]])
        gathered = model(ids, attention_mask=mask, logits_at=per_row_at, vocab_slice=(0, 7)).logits
        vocab_only = model(ids, attention_mask=mask, vocab_slice=(VOCAB - 3, VOCAB)).logits
    assert sliced.shape == (3, 4, 256)
    torch.testing.assert_close(only_at, full[:, at], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sliced, full[:, at, 100:356], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gathered, torch.stack([full[r, per_row_at[r], :7] for r in range(3)]), atol=1e-6,
                               rtol=1e-5)  # fmt: skip
    torch.testing.assert_close(vocab_only, full[..., VOCAB - 3 :], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="vocab_slice"):
        model(ids, vocab_slice=(10, VOCAB + 1))


def test_positions_and_hidden_output() -> None:
    model = tiny_model()
    ids = random_ids(2, 5)
    with torch.no_grad():
        out = model(ids, return_hidden=True)
        batched = model(ids, positions=torch.arange(5).expand(2, 5) + 7).logits  # common offset: same output
        different = model(ids, positions=torch.tensor([0, 1, 2, 4, 3])).logits  # a swap changes the output
    assert isinstance(out, LLaDAOutput) and out.hidden_states.shape == (2, 5, 64)
    assert model(ids).hidden_states is None
    torch.testing.assert_close(batched, out.logits, atol=1e-5, rtol=1e-5)
    assert (different - out.logits).abs().max() > 1e-4
    with pytest.raises(ValueError, match="positions"):
        model(ids, positions=torch.arange(4))


def test_bf16_forward_is_close_to_fp32() -> None:
    model = tiny_model()
    ids = random_ids(2, 12)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :3] = False
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        low = model.to(torch.bfloat16)(ids, attention_mask=mask).logits
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    err = (low.float() - ref).abs().max().item()
    assert err < 0.05 * ref.abs().max().item(), err


# ---------------------------------------------------------------------------------------------------------------
# Training machinery: gradient checkpointing and LoRA (docs/models.md 1.5)
# ---------------------------------------------------------------------------------------------------------------


def _grads(model: LLaDAModelLM, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits = model(ids, attention_mask=mask, logits_at=torch.arange(2, 8)).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 2:8].flatten())
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", ["gradient_checkpointing_enable", "activation_checkpointing_enable"])
def test_gradient_checkpointing_gives_identical_gradients(method: str) -> None:
    model = tiny_model().train()
    if not hasattr(model, method):
        pytest.skip(f"{method} not in this transformers version")
    ids = random_ids(2, 10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :2] = False
    calls = []
    model.model.transformer.blocks[0].q_proj.register_forward_hook(lambda *_: calls.append(1))

    plain = _grads(model, ids, mask)
    assert len(calls) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # gradient_checkpointing_enable is a deprecated alias in v5
        getattr(model, method)()
    assert all(block.gradient_checkpointing for block in model.model.transformer.blocks)
    calls.clear()
    ckpt = _grads(model, ids, mask)
    assert len(calls) == 2  # the block ran again during backward: checkpointing is really on
    assert plain.keys() == ckpt.keys()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-7, rtol=1e-6, msg=name)


def test_lora_target_regex_matches_block_linears_only() -> None:
    pattern = lora_target_regex(ALL_BLOCK_LINEARS)
    for name in ALL_BLOCK_LINEARS:
        assert re.fullmatch(pattern, f"model.transformer.blocks.31.{name}")
        assert re.fullmatch(pattern, f"base_model.model.model.transformer.blocks.0.{name}")
    for name in ("model.transformer.ff_out", "model.transformer.wte", "model.transformer.blocks.0.attn_norm",
                 "model.transformer.blocks.0.ff_out.lora_A", "model.transformer.xblocks.0.q_proj"):  # fmt: skip
        assert not re.fullmatch(pattern, name), name
    effective = lora_target_regex(MASKGRPO_EFFECTIVE_LINEARS)
    assert re.fullmatch(effective, "model.transformer.blocks.2.up_proj")
    assert not re.fullmatch(effective, "model.transformer.blocks.2.ff_out")
    with pytest.raises(ValueError, match="o_proj"):
        lora_target_regex(("q_proj", "o_proj"))


@pytest.mark.parametrize("names, n_wrapped", [(ALL_BLOCK_LINEARS, 14), (MASKGRPO_EFFECTIVE_LINEARS, 8)])
def test_lora_wrapper_adapts_block_linears_not_the_head(names: tuple[str, ...], n_wrapped: int) -> None:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    base = tiny_model()
    ids = random_ids(2, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 0] = False
    with torch.no_grad():
        before = base(ids, attention_mask=mask).logits
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_regex(names)))
    wrapped = {n for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    assert len(wrapped) == n_wrapped
    assert all(re.search(r"\.blocks\.\d+\.(" + "|".join(names) + r")$", n) for n in wrapped)
    head = peft_model.get_base_model().model.transformer.ff_out
    assert not isinstance(head, LoraLayer) and not isinstance(peft_model.get_base_model().get_input_embeddings(),
                                                               LoraLayer)  # fmt: skip
    assert not any("transformer.ff_out.lora" in n or "wte.lora" in n for n, _ in peft_model.named_parameters())

    out = peft_model(input_ids=ids, attention_mask=mask, logits_at=torch.tensor([1, 3]), vocab_slice=(5, 50))
    assert out.logits.shape == (2, 2, 45)
    with torch.no_grad():
        # lora_B starts at zero, so the adapted model equals the base model.
        torch.testing.assert_close(peft_model(input_ids=ids, attention_mask=mask).logits, before)
    out.logits.float().pow(2).mean().backward()
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if "lora_B" in n)
