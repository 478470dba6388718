"""MAGVIT-v2 tokenizer (docs/models.md 4, 7.7, 7.8): LFQ bit order, architecture sizes, key names, strict loading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from maskgrpo.models.magvit2 import (
    FULL_DECODER_PARAMS,
    FULL_ENCODER_PARAMS,
    FULL_NUM_PARAMS,
    LFQ,
    AttnBlock,
    Downsample,
    MagvitV2,
    MagvitV2Config,
    count_parameters,
    load_magvit2,
    save_magvit2,
)

#: docs/models.md 4 tiny configs: ch 32, one block per level, real 13-bit codes; 4x and 2x downsampling.
TINY_4X = {"ch": 32, "encoder_ch_mult": (1, 1, 2), "encoder_num_res_blocks": (1, 1, 1), "decoder_ch_mult": (1, 1, 2),
           "decoder_num_res_blocks": (1, 1, 1), "z_channels": 13}  # fmt: skip
TINY_2X = {"ch": 32, "encoder_ch_mult": (1, 2), "encoder_num_res_blocks": (1, 1), "decoder_ch_mult": (1, 2),
           "decoder_num_res_blocks": (1, 1), "z_channels": 13}  # fmt: skip


def tiny_model(seed: int = 0, **kw: object) -> MagvitV2:
    torch.manual_seed(seed)
    return MagvitV2(MagvitV2Config(**{**TINY_4X, **kw})).eval()


# ---------------------------------------------------------------- LFQ


def test_lfq_index_hand_computed_msb_first() -> None:
    # z = 4, latents (+0.3, -1.0, +2.0, +0.1) -> bits [1, 0, 1, 1] -> 1*8 + 0*4 + 1*2 + 1*1 = 11.
    q = LFQ(4)
    z = torch.tensor([0.3, -1.0, 2.0, 0.1]).view(1, 4, 1, 1)
    assert q.codes_from_latents(z).item() == 11
    assert q.code_vectors(torch.tensor(11)).tolist() == [1.0, -1.0, 1.0, 1.0]
    assert q.power_vals.tolist() == [8, 4, 2, 1]
    # Channel 0 is the most significant bit, channel 3 the least; exactly 0 counts as a 0 bit (z_c > 0).
    one_hot = torch.eye(4).view(4, 4, 1, 1)  # row c: only channel c positive
    assert q.codes_from_latents(one_hot).flatten().tolist() == [8, 4, 2, 1]
    assert q.codes_from_latents(torch.zeros(1, 4, 1, 1)).item() == 0


def test_lfq_table_round_trip_full_codebook() -> None:
    # Every code vector of the 8192-entry table quantises back to its own index; the table is +-1, shape [8192, 13].
    q = LFQ(13)
    assert tuple(q.embedding.shape) == (8192, 13)
    assert set(q.embedding.unique().tolist()) == {-1.0, 1.0}
    z = q.embedding.t().reshape(1, 13, 64, 128)  # (1, z, h, w) with cell k = code vector k
    assert torch.equal(q.codes_from_latents(z).flatten(), torch.arange(8192))
    # Row 1 = only the last channel set; row 4096 = only channel 0 set (MSB first).
    assert q.embedding[1].tolist() == [-1.0] * 12 + [1.0]
    assert q.embedding[4096].tolist() == [1.0] + [-1.0] * 12


# ---------------------------------------------------------------- architecture


def test_full_size_param_counts_on_meta_device() -> None:
    # docs/models.md 4: 95,387,004 params = encoder 55,439,171 + decoder 39,947,833, in 380 tensors.
    with torch.device("meta"):
        model = MagvitV2(MagvitV2Config())
    assert count_parameters(model.encoder) == FULL_ENCODER_PARAMS == 55_439_171
    assert count_parameters(model.decoder) == FULL_DECODER_PARAMS == 39_947_833
    assert count_parameters(model) == FULL_NUM_PARAMS == 95_387_004
    assert len(list(model.parameters())) == 380
    assert len(model.state_dict()) == 380  # the LFQ buffers are regenerated, not part of the strict key set
    assert tuple(model.encoder.conv_out.weight.shape) == (13, 512, 3, 3)
    sd = model.state_dict()
    assert tuple(sd["decoder.conv_in.weight"].shape) == (512, 13, 3, 3)
    assert tuple(sd["decoder.up.4.upsample.conv.weight"].shape) == (512, 512, 3, 3)
    assert tuple(sd["decoder.up.3.block.0.nin_shortcut.weight"].shape) == (256, 512, 1, 1)
    assert tuple(sd["decoder.conv_out.weight"].shape) == (3, 128, 3, 3)
    assert "decoder.up.0.block.3.conv2.weight" in sd and "decoder.up.0.block.4.conv2.weight" not in sd
    assert "encoder.down.4.block.3.conv2.weight" in sd and "encoder.down.1.block.3.conv2.weight" not in sd


def test_tiny_key_names() -> None:
    keys = set(tiny_model().state_dict())
    expected = {
        "encoder.conv_in.weight",
        "encoder.down.0.block.0.norm1.weight",
        "encoder.down.0.block.0.conv1.bias",
        "encoder.down.2.block.0.nin_shortcut.weight",  # 32 -> 64 at level 2
        "encoder.down.0.downsample.conv.weight",
        "encoder.down.1.downsample.conv.bias",
        "encoder.mid.block_1.conv1.weight",
        "encoder.mid.attn_1.q.weight",
        "encoder.mid.attn_1.proj_out.bias",
        "encoder.mid.attn_1.norm.weight",
        "encoder.mid.block_2.norm2.bias",
        "encoder.norm_out.weight",
        "encoder.conv_out.weight",
        "encoder.quant_conv.weight",
        "decoder.post_quant_conv.weight",
        "decoder.conv_in.weight",
        "decoder.mid.attn_1.v.weight",
        "decoder.up.1.upsample.conv.weight",
        "decoder.up.2.upsample.conv.bias",
        "decoder.up.1.block.0.nin_shortcut.weight",  # 64 -> 32 entering level 1
        "decoder.norm_out.bias",
        "decoder.conv_out.weight",
    }
    assert expected <= keys, sorted(expected - keys)
    absent = {"decoder.up.0.upsample.conv.weight", "encoder.down.2.downsample.conv.weight",
              "encoder.down.0.block.0.nin_shortcut.weight", "quantize.embedding", "quantize.power_vals"}  # fmt: skip
    assert not (absent & keys), sorted(absent & keys)
    assert all(k.startswith(("encoder.", "decoder.")) for k in keys)


@pytest.mark.parametrize("cfg, factor", [(TINY_2X, 2), (TINY_4X, 4)])
def test_encode_decode_shapes(cfg: dict, factor: int) -> None:
    torch.manual_seed(0)
    model = MagvitV2(MagvitV2Config(**cfg)).eval()
    assert model.config.downsample_factor == factor
    pixels = torch.rand(2, 3, 32, 16) * 2 - 1
    codes = model.encode(pixels)
    h, w = 32 // factor, 16 // factor
    assert codes.shape == (2, h * w) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 8192
    assert model.decode(codes, grid=(h, w)).shape == (2, 3, 32, 16)
    square = model.decode(codes[:, :16])  # 16 codes -> 4 x 4 grid
    assert square.shape == (2, 3, 4 * factor, 4 * factor)
    with pytest.raises(ValueError, match="square"):
        model.decode(codes[:, :15])


def test_encode_is_row_major() -> None:
    # Force the encoder output: all channels negative except channel 12 (the LSB) at cell (row 0, col 1).
    # On a 4 x 4 grid code 1 must land at flat index 1 (row-major), not at index 4 (column-major).
    model = tiny_model()
    latents = torch.full((1, 13, 4, 4), -1.0)
    latents[0, 12, 0, 1] = 1.0
    model.encoder.register_forward_hook(lambda mod, inp, out: latents)
    codes = model.encode(torch.zeros(1, 3, 16, 16))
    assert codes[0].tolist() == [0, 1] + [0] * 14


def test_downsample_pads_right_and_bottom() -> None:
    # 3x3 stride-2 conv after padding (0, 1, 0, 1): output (i, j) reads padded rows 2i..2i+2, cols 2j..2j+2.
    # Top-left tap -> x[2i, 2j]; bottom-right tap -> x[2i+2, 2j+2], which is the zero pad for the last row/col.
    x = torch.arange(64.0).view(1, 1, 8, 8)
    down = Downsample(1)
    with torch.no_grad():
        down.conv.bias.zero_()
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 0, 0] = 1.0
        assert torch.equal(down(x)[0, 0], x[0, 0, 0::2, 0::2])
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 2, 2] = 1.0
        out = down(x)[0, 0]
    assert out.shape == (4, 4)
    assert torch.equal(out[:3, :3], x[0, 0, 2::2, 2::2][:3, :3])
    assert (out[3, :] == 0).all() and (out[:, 3] == 0).all()


def test_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(1)
    cfg = MagvitV2Config(**TINY_4X)
    attn = AttnBlock(cfg, 64).eval()
    x = torch.randn(2, 64, 3, 5)
    y = attn.norm(x)
    q, k, v = (m(y).flatten(2) for m in (attn.q, attn.k, attn.v))  # (B, C, N)
    weights = torch.softmax(torch.einsum("bcn,bcm->bnm", q, k) / 8.0, dim=-1)  # scale 64^-0.5 = 1/8
    ref = x + attn.proj_out(torch.einsum("bnm,bcm->bcn", weights, v).view(2, 64, 3, 5))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)


def test_config_rejects_bad_widths_and_levels() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MagvitV2Config(ch=48, encoder_ch_mult=(1,), encoder_num_res_blocks=(1,), decoder_ch_mult=(1,),
                       decoder_num_res_blocks=(1,))  # fmt: skip
    with pytest.raises(ValueError, match="levels"):
        MagvitV2Config(ch=32, encoder_ch_mult=(1, 2), encoder_num_res_blocks=(1, 1), decoder_ch_mult=(1,),
                       decoder_num_res_blocks=(1,))  # fmt: skip


# ---------------------------------------------------------------- decode checks and pixel helpers


@pytest.mark.parametrize("bad", [8192, -1, 126336])
def test_decode_rejects_out_of_range_codes(bad: int) -> None:
    model = tiny_model()
    codes = torch.zeros(1, 4, dtype=torch.long)
    codes[0, 2] = bad
    with pytest.raises(ValueError, match=r"\[0, 8192\)") as info:
        model.decode(codes)
    assert str(bad) in str(info.value)
    with pytest.raises(ValueError):
        model.decode_codes_to_uint8(codes)


def test_decode_codes_to_uint8_formula() -> None:
    model = tiny_model()
    codes = torch.randint(0, 8192, (2, 16))
    x = model.decode(codes)
    img = model.decode_codes_to_uint8(codes)
    assert img.dtype == np.uint8 and img.shape == (2, 16, 16, 3)
    ref = np.rint(np.clip((x.permute(0, 2, 3, 1).numpy() + 1) / 2, 0, 1) * 255)
    assert np.abs(img.astype(np.int64) - ref.astype(np.int64)).max() <= 1  # fp rounding only


def test_preprocess_centre_crop_and_range() -> None:
    # A 20 x 10 (H x W) image whose row r has value 10 r. Size 10: the shortest side is already 10, so no resize;
    # centre crop keeps rows round((20 - 10) / 2) = 5 .. 14, i.e. values 50 .. 140, mapped by v / 255 * 2 - 1.
    img = np.repeat(np.repeat((np.arange(20) * 10).astype(np.uint8)[:, None], 10, axis=1)[:, :, None], 3, axis=2)
    x = MagvitV2.preprocess([img], 10)
    assert x.shape == (1, 3, 10, 10) and x.dtype == torch.float32
    expected_rows = (torch.arange(5, 15) * 10).float() / 255 * 2 - 1
    torch.testing.assert_close(x[0, 0, :, 0], expected_rows)
    # Resize: shortest side 64 -> 32, both orientations, arrays and PIL, and a batched array.
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    from PIL import Image

    y = MagvitV2.preprocess([Image.fromarray(batch[0]), batch[1].transpose(1, 0, 2).copy()], 32)
    assert y.shape == (2, 3, 32, 32) and y.min() >= -1 and y.max() <= 1
    assert MagvitV2.preprocess(batch, 32).shape == (2, 3, 32, 32)


# ---------------------------------------------------------------- strict save / load (docs/models.md 7.7)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = tiny_model(seed=3)
    file = save_magvit2(model, tmp_path)
    stored = load_file(str(file))
    assert "quantize.embedding" in stored and "encoder.quant_conv.weight" in stored
    loaded = load_magvit2(tmp_path, config=model.config)
    assert not any(p.requires_grad for p in loaded.parameters())
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = model.encode(pixels)
    assert torch.equal(loaded.encode(pixels), codes)
    assert torch.equal(loaded.decode(codes), model.decode(codes))
    assert torch.equal(loaded.quantize.embedding, model.quantize.embedding)
    # Without the buffers, and under the other accepted file name, it loads too.
    other = tmp_path / "nobuf"
    save_magvit2(model, other, include_buffers=False).rename(other / "model.safetensors")
    assert torch.equal(load_magvit2(other, config=model.config).decode(codes), model.decode(codes))
    # A .bin checkpoint (torch.save of the state dict) in a directory.
    binary = tmp_path / "bin"
    binary.mkdir()
    torch.save(model.state_dict(), binary / "pytorch_model.bin")
    assert torch.equal(load_magvit2(binary, config=model.config).encode(pixels), codes)


def _tamper(tmp_path: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> Path:
    model = tiny_model()
    file = save_magvit2(model, tmp_path / "src")
    state = load_file(str(file))
    edit(state)
    out = tmp_path / "bad"
    out.mkdir()
    save_file(state, str(out / "pytorch_model.safetensors"))
    return out


def test_load_missing_key_fails_naming_it(tmp_path: Path) -> None:
    bad = _tamper(tmp_path, lambda s: s.pop("decoder.up.1.upsample.conv.weight"))
    with pytest.raises(ValueError, match=r"missing \(1\): \[decoder\.up\.1\.upsample\.conv\.weight\]") as info:
        load_magvit2(bad, config=MagvitV2Config(**TINY_4X))
    assert "pytorch_model.safetensors" in str(info.value)


def test_load_unexpected_key_fails_naming_it(tmp_path: Path) -> None:
    bad = _tamper(tmp_path, lambda s: s.update({"decoder.up.0.upsample.conv.weight": torch.zeros(32, 32, 3, 3)}))
    with pytest.raises(ValueError, match=r"unexpected \(1\): \[decoder\.up\.0\.upsample\.conv\.weight\]"):
        load_magvit2(bad, config=MagvitV2Config(**TINY_4X))


def test_load_shape_mismatch_fails_naming_key(tmp_path: Path) -> None:
    bad = _tamper(tmp_path, lambda s: s.update({"encoder.conv_out.weight": torch.zeros(12, 64, 3, 3)}))
    with pytest.raises(ValueError, match="encoder.conv_out.weight"):
        load_magvit2(bad, config=MagvitV2Config(**TINY_4X))


def test_load_wrong_embedding_table_fails(tmp_path: Path) -> None:
    # An LSB-first table (bit order reversed) must be rejected: it would silently scramble every image.
    bad = _tamper(tmp_path, lambda s: s.update({"quantize.embedding": s["quantize.embedding"].flip(1).contiguous()}))
    with pytest.raises(ValueError, match="quantize.embedding"):
        load_magvit2(bad, config=MagvitV2Config(**TINY_4X))


def test_tiny_checkpoint_rejected_by_default_config(tmp_path: Path) -> None:
    save_magvit2(tiny_model(), tmp_path)
    with pytest.raises(ValueError, match="missing"):
        load_magvit2(tmp_path)


def test_load_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pytorch_model.safetensors"):
        load_magvit2(tmp_path)
