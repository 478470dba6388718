"""MAGVIT-v2 image tokenizer (MMaDA's ``showlab/magvitv2``): conv encoder, LFQ quantizer, conv decoder.

Written from the facts in docs/models.md 4; parameter names follow the released checkpoint so it loads strictly::

    pixels (B,3,H,W) in [-1,1] --encoder--> z (B,13,H/16,W/16) --LFQ--> codes (B, h*w) in [0, 8192)
    codes --embedding (+-1 per bit)--> (B,13,h,w) --decoder--> pixels (B,3,H,W)

LFQ (lookup-free quantisation): each of the ``z_channels`` latent channels gives one bit, ``bit_c = z_c > 0``;
the code index reads the bits with channel 0 as the most significant bit, and the code vector of an index is
``+1`` where its bit is set and ``-1`` elsewhere. The two quantizer buffers are a deterministic function of
``z_channels`` and are regenerated, never trusted from a file (docs/models.md 7.7 checks a stored table instead).

The hub ``config.json`` holds no architecture fields, so :class:`MagvitV2Config`'s defaults are the released
architecture (95,387,004 parameters in 380 tensors); smaller values exist only for tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

#: Released-architecture invariants asserted at load time (docs/models.md 4 and 7.7).
FULL_NUM_PARAMS = 95_387_004
FULL_ENCODER_PARAMS = 55_439_171
FULL_DECODER_PARAMS = 39_947_833
FULL_NUM_PARAM_TENSORS = 380
FULL_CONV_OUT_SHAPE = (13, 512, 3, 3)

#: Weight files looked for in a checkpoint directory, in order of preference.
WEIGHT_FILES = ("pytorch_model.safetensors", "model.safetensors", "pytorch_model.bin")

#: Quantizer buffers: regenerable from ``z_channels``, optional in a checkpoint.
QUANT_BUFFER_KEYS = ("quantize.embedding", "quantize.power_vals")


@dataclass(frozen=True)
class MagvitV2Config:
    """Architecture of the MAGVIT-v2 tokenizer. Defaults = the released ``showlab/magvitv2`` (docs/models.md 4)."""

    ch: int = 128
    """Base width; level i of the encoder has ``ch * encoder_ch_mult[i]`` channels."""
    encoder_ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    """Width multipliers of the encoder levels, run in order 0..L-1; a 2x downsample follows every level but the
    last, so the image shrinks by ``2**(L-1)`` (16x for the default)."""
    encoder_num_res_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    """ResBlocks per encoder level."""
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    """Width multipliers of the decoder levels, indexed by level; levels run L-1..0 and a nearest 2x upsample
    follows every level but level 0."""
    decoder_num_res_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    """ResBlocks per decoder level, indexed by level (not run order)."""
    z_channels: int = 13
    """Latent channels = bits per code; the codebook has ``2**z_channels`` entries (8192)."""
    in_channels: int = 3
    """Image channels read by the encoder."""
    out_channels: int = 3
    """Image channels written by the decoder."""
    norm_groups: int = 32
    """GroupNorm groups; every ResBlock / attention width must be divisible by it."""
    norm_eps: float = 1e-6
    """GroupNorm epsilon."""

    def __post_init__(self) -> None:
        # Accept lists from YAML but store tuples so the frozen config stays hashable and comparable.
        for name in ("encoder_ch_mult", "encoder_num_res_blocks", "decoder_ch_mult", "decoder_num_res_blocks"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.encoder_ch_mult) != len(self.encoder_num_res_blocks) or not self.encoder_ch_mult:
            raise ValueError(
                f"encoder_ch_mult {self.encoder_ch_mult} and encoder_num_res_blocks {self.encoder_num_res_blocks} "
                "must be non-empty and of equal length (one entry per level)"
            )
        if len(self.decoder_ch_mult) != len(self.decoder_num_res_blocks):
            raise ValueError(
                f"decoder_ch_mult {self.decoder_ch_mult} and decoder_num_res_blocks {self.decoder_num_res_blocks} "
                "must be of equal length (one entry per level)"
            )
        if len(self.decoder_ch_mult) != len(self.encoder_ch_mult):
            raise ValueError(
                f"encoder has {len(self.encoder_ch_mult)} levels but decoder has {len(self.decoder_ch_mult)}; "
                "they must match so the decoder upsamples exactly as much as the encoder downsamples"
            )
        widths = [self.ch * m for m in (*self.encoder_ch_mult, *self.decoder_ch_mult)]
        bad = sorted({w for w in widths if w % self.norm_groups})
        if bad:
            raise ValueError(f"widths {bad} are not divisible by norm_groups={self.norm_groups}; change ch or ch_mult")
        if not 1 <= self.z_channels <= 30:
            raise ValueError(f"z_channels must be in [1, 30] (codebook 2**z_channels), got {self.z_channels}")

    @property
    def codebook_size(self) -> int:
        """Number of codes, ``2**z_channels``."""
        return 2**self.z_channels

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each side, ``2**(levels - 1)``."""
        return 2 ** (len(self.encoder_ch_mult) - 1)


def swish(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)`` (SiLU)."""
    return x * torch.sigmoid(x)


def _norm(config: MagvitV2Config, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(config.norm_groups, channels, eps=config.norm_eps, affine=True)


class ResBlock(nn.Module):
    """norm1, swish, conv1 3x3, norm2, swish, conv2 3x3, plus a 1x1 ``nin_shortcut`` when the width changes."""

    def __init__(self, config: MagvitV2Config, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = _norm(config, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(config, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))  # (B, out, H, W)
        h = self.conv2(swish(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head softmax self-attention over the h*w cells (scale c^-0.5), 1x1 q/k/v/proj_out, residual."""

    def __init__(self, config: MagvitV2Config, ch: int) -> None:
        super().__init__()
        self.norm = _norm(config, ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, C, h, w) -> (B, h*w, C): one token per cell, one head of width C.
        q, k, v = (proj(y).reshape(b, c, h * w).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, scale=c**-0.5)  # (B, h*w, C)
        out = out.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one pixel, then a 3x3 stride-2 conv without padding: (H, W) -> (H/2, W/2)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # pad order: (left, right, top, bottom)


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv: (H, W) -> (2H, 2W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResBlock, attention, ResBlock at the top width (keys ``block_1``, ``attn_1``, ``block_2``)."""

    def __init__(self, config: MagvitV2Config, ch: int) -> None:
        super().__init__()
        self.block_1 = ResBlock(config, ch, ch)
        self.attn_1 = AttnBlock(config, ch)
        self.block_2 = ResBlock(config, ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: ``block.{b}`` ResBlocks and an optional ``downsample`` or ``upsample``."""

    def __init__(self, blocks: list[ResBlock], downsample: nn.Module | None, upsample: nn.Module | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if downsample is not None:
            self.downsample = downsample
        if upsample is not None:
            self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class Encoder(nn.Module):
    """Pixels (B, in_ch, H, W) -> pre-quantisation latents (B, z, H/f, W/f), f = ``config.downsample_factor``.

    conv_in, levels 0..L-1 (downsample after all but the last), mid, norm_out, swish, conv_out (3x3), quant_conv
    (1x1; it lives inside the encoder in the released checkpoint).
    """

    def __init__(self, config: MagvitV2Config) -> None:
        super().__init__()
        ch, mults = config.ch, config.encoder_ch_mult
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        levels, in_ch = [], ch
        for i, (mult, n_blocks) in enumerate(zip(mults, config.encoder_num_res_blocks)):
            out_ch = ch * mult
            blocks = [ResBlock(config, in_ch if b == 0 else out_ch, out_ch) for b in range(n_blocks)]
            in_ch = out_ch
            down = Downsample(out_ch) if i < len(mults) - 1 else None
            levels.append(Level(blocks, downsample=down, upsample=None))
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(config, in_ch)
        self.norm_out = _norm(config, in_ch)
        self.conv_out = nn.Conv2d(in_ch, config.z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, ch, H, W)
        for level in self.down:
            h = level(h)
        h = self.mid(h)  # (B, top, h, w)
        h = self.conv_out(swish(self.norm_out(h)))  # (B, z, h, w)
        return self.quant_conv(h)


class Decoder(nn.Module):
    """Code vectors (B, z, h, w) -> pixels (B, out_ch, h*f, w*f).

    post_quant_conv (1x1), conv_in to the top width, mid, levels L-1..0 (upsample after all but level 0),
    norm_out, swish, conv_out. ``up`` is indexed by level, so ``up[0]`` runs last.
    """

    def __init__(self, config: MagvitV2Config) -> None:
        super().__init__()
        ch, mults = config.ch, config.decoder_ch_mult
        top = ch * mults[-1]
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 1)
        self.conv_in = nn.Conv2d(config.z_channels, top, 3, padding=1)
        self.mid = MidBlock(config, top)
        by_level: list[Level | None] = [None] * len(mults)
        in_ch = top
        for i in reversed(range(len(mults))):
            out_ch = ch * mults[i]
            n_blocks = config.decoder_num_res_blocks[i]
            blocks = [ResBlock(config, in_ch if b == 0 else out_ch, out_ch) for b in range(n_blocks)]
            in_ch = out_ch
            by_level[i] = Level(blocks, downsample=None, upsample=Upsample(out_ch) if i > 0 else None)
        self.up = nn.ModuleList(by_level)
        self.norm_out = _norm(config, in_ch)
        self.conv_out = nn.Conv2d(in_ch, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.post_quant_conv(z))  # (B, top, h, w)
        h = self.mid(h)
        for level in reversed(self.up):  # run order L-1..0
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))  # (B, out_ch, H, W)


class LFQ(nn.Module):
    """Lookup-free quantiser: sign bits of the latent channels, channel 0 = most significant bit.

    Buffers (non-persistent; rebuilt by :meth:`reset_buffers`):
        power_vals: (z,) long, ``2**(z-1-c)`` for channel c.
        embedding:  (2**z, z) float, row k = the code vector of index k, ``+1`` where bit c of k is set, else -1.
    """

    def __init__(self, z_channels: int) -> None:
        super().__init__()
        self.z_channels = z_channels
        self.register_buffer("power_vals", torch.empty(z_channels, dtype=torch.long), persistent=False)
        self.register_buffer("embedding", torch.empty(2**z_channels, z_channels), persistent=False)
        self.reset_buffers()

    @staticmethod
    def make_buffers(z_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(power_vals (z,) long, embedding (2**z, z) float32) on the CPU: the reference tables."""
        power_vals = 2 ** torch.arange(z_channels - 1, -1, -1, dtype=torch.long)  # (z,) MSB first
        idx = torch.arange(2**z_channels, dtype=torch.long)  # (K,)
        bits = (idx[:, None] // power_vals[None, :]) % 2  # (K, z) bit c of index k
        return power_vals, bits.float() * 2.0 - 1.0

    def reset_buffers(self) -> None:
        """Rebuild both buffers in place (e.g. after ``to_empty``), keeping their device and dtype."""
        power_vals, embedding = self.make_buffers(self.z_channels)
        with torch.no_grad():
            self.power_vals.copy_(power_vals)
            self.embedding.copy_(embedding)

    def codes_from_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, z, h, w) -> code indices (B, h, w) long: ``sum_c [z_c > 0] * 2**(z-1-c)``."""
        bits = (z > 0).long()  # (B, z, h, w)
        return (bits * self.power_vals.view(1, -1, 1, 1)).sum(dim=1)  # (B, h, w)

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices (...,) long -> code vectors (..., z) of +-1 (MSB first)."""
        return self.embedding[codes]


class MagvitV2(nn.Module):
    """MAGVIT-v2 tokenizer with the released parameter names (``encoder.*``, ``decoder.*``, ``quantize.*``)."""

    def __init__(self, config: MagvitV2Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else MagvitV2Config()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quantize = LFQ(self.config.z_channels)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> codes (B, h*w) long in [0, 2**z), raster (row-major) order.

        H and W must be multiples of ``config.downsample_factor`` (16 for the released model).
        """
        f = self.config.downsample_factor
        if pixels.dim() != 4 or pixels.shape[-2] % f or pixels.shape[-1] % f:
            raise ValueError(f"encode expects (B, C, H, W) with H, W multiples of {f}, got {tuple(pixels.shape)}")
        param = self.encoder.conv_in.weight
        z = self.encoder(pixels.to(device=param.device, dtype=param.dtype))  # (B, z, h, w)
        codes = self.quantize.codes_from_latents(z)  # (B, h, w)
        return codes.flatten(1)  # (B, h*w)

    def check_codes(self, codes: torch.Tensor) -> None:
        """Raise ValueError unless every code is in [0, codebook_size) (docs/models.md 7.8; never clamp silently)."""
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.numel() == 0:
            return
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= self.codebook_size:
            bad = int(((codes < 0) | (codes >= self.codebook_size)).sum())
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}) but range over [{lo}, {hi}] ({bad} out of range); "
                "a mask id or an unshifted vocabulary id was left in the image region"
            )

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Codes (B, N) long in raster order -> pixels (B, 3, h*f, w*f), roughly in [-1, 1] (not clamped).

        ``grid`` = (h, w) with h*w == N; None means a square grid (N must be a perfect square).
        """
        if codes.dim() != 2:
            raise ValueError(f"decode expects codes of shape (B, N), got {tuple(codes.shape)}")
        n = codes.shape[1]
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{n} codes do not form a square grid; pass grid=(h, w)")
            grid = (side, side)
        h, w = grid
        if h * w != n:
            raise ValueError(f"grid {grid} holds {h * w} codes but got {n}")
        self.check_codes(codes)
        param = self.decoder.conv_in.weight
        vecs = self.quantize.code_vectors(codes.to(self.quantize.embedding.device))  # (B, N, z)
        vecs = vecs.reshape(codes.shape[0], h, w, -1).permute(0, 3, 1, 2)  # (B, z, h, w)
        return self.decoder(vecs.to(device=param.device, dtype=param.dtype).contiguous())  # (B, 3, H, W)

    @torch.no_grad()
    def decode_codes_to_uint8(self, codes: torch.Tensor, grid: tuple[int, int] | None = None) -> np.ndarray:
        """Codes (B, N) -> uint8 images (B, H, W, 3) via ``round(clamp((x + 1) / 2, 0, 1) * 255)`` (models.md 2.4)."""
        x = self.decode(codes, grid).float()  # (B, 3, H, W)
        x = ((x + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0
        return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)

    @staticmethod
    def preprocess(images: Sequence[Image.Image | np.ndarray] | np.ndarray, size: int) -> torch.Tensor:
        """Images -> (B, 3, size, size) float32 in [-1, 1] (docs/models.md 2.4).

        Bicubic resize of the shortest side to ``size`` (PIL), centre crop to ``size`` x ``size``, then
        ``x / 255 * 2 - 1``. ``images``: a list of PIL images or (H, W, 3) uint8 arrays, or one (B, H, W, 3) uint8
        array.
        """
        if isinstance(images, np.ndarray):
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4:
                raise ValueError(f"expected (B, H, W, 3) or (H, W, 3) uint8 array, got shape {images.shape}")
            images = list(images)
        out = []
        for img in images:
            if isinstance(img, np.ndarray):
                if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
                    raise ValueError(f"expected (H, W, 3) uint8 array, got {img.dtype} {img.shape}")
                img = Image.fromarray(img)
            img = img.convert("RGB")
            w, h = img.size
            # The shortest side becomes exactly `size`; the other is truncated like torchvision's Resize.
            new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
            img = img.resize((new_w, new_h), Image.BICUBIC)
            left = round((new_w - size) / 2.0)
            top = round((new_h - size) / 2.0)
            img = img.crop((left, top, left + size, top + size))
            out.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()))  # (size, size, 3)
        x = torch.stack(out).permute(0, 3, 1, 2).float()  # (B, 3, size, size)
        return x / 255.0 * 2.0 - 1.0


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def _find_weight_file(path_or_dir: str | os.PathLike) -> Path:
    """A local weight file, a local directory holding one of :data:`WEIGHT_FILES`, or a hub id to download."""
    path = Path(path_or_dir)
    if path.is_file():
        return path
    if not path.is_dir():  # a hub id: local rank 0 fetches, a miss offline is one line (models/loading.py)
        from maskgrpo.models.loading import resolve_checkpoint_dir

        path = resolve_checkpoint_dir(path_or_dir, (*WEIGHT_FILES, "*.json"))
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no MAGVIT-v2 weights in {path}: expected one of {list(WEIGHT_FILES)}")


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file), device="cpu")
    state = torch.load(str(file), map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return dict(state)


def _check_quant_buffers(state: dict[str, torch.Tensor], config: MagvitV2Config, file: Path) -> None:
    """A stored LFQ table must equal the regenerated one (docs/models.md 7.7): it pins the bit order."""
    power_vals, embedding = LFQ.make_buffers(config.z_channels)
    for key, ref in zip(QUANT_BUFFER_KEYS, (embedding, power_vals)):
        if key not in state:
            continue
        stored = state[key]
        if tuple(stored.shape) != tuple(ref.shape) or not torch.equal(stored.double(), ref.double()):
            raise ValueError(
                f"{file}: stored {key} (shape {tuple(stored.shape)}) differs from the regenerated MSB-first "
                f"+-1 table (shape {tuple(ref.shape)}); the checkpoint uses another bit order or codebook"
            )


def _short(keys: Sequence[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_magvit2(
    path_or_dir: str | os.PathLike,
    config: MagvitV2Config | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MagvitV2:
    """Load MAGVIT-v2 weights strictly; returns the model in eval mode with gradients off.

    ``path_or_dir``: a weight file, a directory with ``pytorch_model.safetensors`` / ``model.safetensors`` /
    ``pytorch_model.bin``, or a hub id (e.g. ``showlab/magvitv2``) fetched with ``snapshot_download``.
    The parameter key set and shapes must equal the model's exactly; the two ``quantize`` buffers may be absent,
    and if ``quantize.embedding`` is stored it must equal the regenerated table. For the default config the
    released sizes are asserted too (docs/models.md 7.7). Every error names the file and the offending keys.
    """
    config = config if config is not None else MagvitV2Config()
    file = _find_weight_file(path_or_dir)
    state = _read_state_dict(file)
    _check_quant_buffers(state, config, file)
    state = {k: v for k, v in state.items() if k not in QUANT_BUFFER_KEYS}

    with torch.device("meta"):  # no random init of ~95M parameters that are about to be overwritten
        model = MagvitV2(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{file}: MAGVIT-v2 key set differs from the model's. missing ({len(missing)}): [{_short(missing)}]; "
            f"unexpected ({len(unexpected)}): [{_short(unexpected)}]"
        )
    wrong = [f"{k} {tuple(state[k].shape)} != {s}" for k, s in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise ValueError(f"{file}: MAGVIT-v2 shape mismatch: {_short(wrong)}")
    if config == MagvitV2Config():
        n_params = sum(state[k].numel() for k in expected)
        conv_out = tuple(state["encoder.conv_out.weight"].shape)
        if conv_out != FULL_CONV_OUT_SHAPE or n_params != FULL_NUM_PARAMS or len(expected) != FULL_NUM_PARAM_TENSORS:
            raise ValueError(
                f"{file}: expected the released MAGVIT-v2 (encoder.conv_out.weight {FULL_CONV_OUT_SHAPE}, "
                f"{FULL_NUM_PARAMS} params in {FULL_NUM_PARAM_TENSORS} tensors), got {conv_out}, {n_params} params "
                f"in {len(expected)} tensors"
            )

    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)
    model.quantize.reset_buffers()
    model = model.to(dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def save_magvit2(model: MagvitV2, directory: str | os.PathLike, include_buffers: bool = True) -> Path:
    """Write ``pytorch_model.safetensors`` with the upstream key names; returns the file path.

    The 380 (for the released config) parameter tensors are always written; ``include_buffers`` also writes
    ``quantize.embedding`` and ``quantize.power_vals`` as the hub file may.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if include_buffers:
        state["quantize.embedding"] = model.quantize.embedding.detach().cpu().float().contiguous()
        state["quantize.power_vals"] = model.quantize.power_vals.detach().cpu().contiguous()
    file = out / WEIGHT_FILES[0]
    save_file(state, str(file))
    return file
