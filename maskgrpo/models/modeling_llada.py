"""LLaDA-style bidirectional transformer (the backbone of LLaDA-8B, MMaDA-8B and Lumina-DiMOO-8B).

Forward, docs/models.md 1.2 (B rows, T positions, C = d_model, H heads of width D = C / H, V = embedding_size)::

    h = wte[ids]                                                   (B, T, C), no scaling
    per block:  a = rms(h) * attn_norm.w
                q, k, v = q_proj(a), k_proj(a), v_proj(a)          (B, H, T, D); q, k = rope(q), rope(k)
                h += attn_out(sdpa(q, k, v, key-padding mask, not causal, scale D^-0.5))
                m = rms(h) * ff_norm.w
                h += ff_out(silu(ff_proj(m)) * up_proj(m))         ff_proj = gate, up_proj = up, ff_out = down
    logits = head(rms(h) * ln_f.w)                                 head = transformer.ff_out (or wte if tied)

Parameter names are exactly the released checkpoints' (docs/models.md 1.4), so their safetensors load strictly:
``model.transformer.{wte, blocks.{i}.{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj, up_proj,
ff_out}, ln_f, ff_out}.weight``. There are no biases and no buffers; RoPE tables are computed per forward.

Two departures from the upstream remote code, both decided in docs/models.md 1.3: attention is always bidirectional
(upstream turns a lone ``attention_mask`` into a causal mask) and pads are hidden from every query by a key-padding
mask unless ``config.attend_pads`` asks for the MaskGRPO / Lumina behaviour of attending to them.

The head can be restricted to a few positions (``logits_at``) and a row range of the head weight (``vocab_slice``),
so a text-to-image caller gets (B, N, 8192) image-code logits without ever materialising (B, T, V) (docs/models.md 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_llada import LLaDAConfig

# --------------------------------------------------------------------------------------------------------------------
# Pure tensor functions (one formula each)
# --------------------------------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as in the checkpoints: y = cast(x * rsqrt(mean(x^2) + eps)) * weight.

    x: (..., C) any float dtype; weight: (C,). The statistic is taken in fp32 because bf16 squares lose too much
    precision at C = 4096; the normalised value is cast back to x's dtype *before* multiplying by the weight,
    which is the order the released models were trained with. Pinned by ``test_rms_norm_hand_case``.
    """
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def rope_inv_freq(head_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Rotary frequencies inv_freq_j = theta^(-2j / head_dim), j = 0 .. head_dim/2 - 1. Returns (head_dim/2,) fp32."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    return 1.0 / (theta**exponents)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos / sin tables for the given absolute positions.

    positions: (T,) or (B, T) integer. Returns cos, sin of shape (1 or B, 1, T, head_dim): the angle
    pos * inv_freq_j is laid out twice, [f, f], matching the half-split pairing (x_j, x_{j + D/2}) of
    ``rotate_half``; the singleton dim broadcasts over heads.
    """
    if positions.dim() == 1:
        positions = positions.unsqueeze(0)  # (1, T)
    inv_freq = rope_inv_freq(head_dim, theta, device=positions.device)
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq  # (B, T, D/2)
    angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)  # (B, 1, T, D)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """rot_half([x1, x2]) = [-x2, x1] on the last dim split into two halves of D/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_j, x_{j + D/2}) by angle pos * inv_freq_j: x*cos + rot_half(x)*sin, computed in fp32.

    x: (B, H, T, D) any float dtype; cos, sin: (1 or B, 1, T, D) fp32 from ``rope_tables``. Returns x's dtype.
    fp32 matters: bf16 angles at position ~1500 are off by whole radians. Pinned by ``test_rope_hand_case``.
    """
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def key_padding_mask(attention_mask: torch.Tensor | None, attend_pads: bool) -> torch.Tensor | None:
    """Boolean SDPA mask (B, 1, 1, T), True = this key may be attended, or None for "attend everywhere".

    attention_mask: (B, T), nonzero / True = real token. Only keys are masked; a pad *query* still attends to the
    row's real tokens, so no softmax row is empty. A row with no real token at all (degenerate input) is let
    attend everywhere rather than produce NaNs. None is returned when nothing is masked, so SDPA may use its
    fused no-mask kernels.
    """
    if attention_mask is None or attend_pads:
        return None
    keep = attention_mask.to(torch.bool)
    keep = keep | ~keep.any(dim=-1, keepdim=True)  # empty rows attend everywhere
    if bool(keep.all()):
        return None
    return keep[:, None, None, :]  # (B, 1, 1, T)


# --------------------------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------------------------


class LLaDARMSNorm(nn.Module):
    """Weight-only RMSNorm (no bias in the checkpoints); math in ``rms_norm``."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class LLaDABlock(GradientCheckpointingLayer):
    """One pre-norm block: bidirectional MHA with RoPE, then a SiLU-gated MLP. Attribute names = checkpoint keys.

    Subclassing ``GradientCheckpointingLayer`` lets ``model.gradient_checkpointing_enable()`` recompute the whole
    block in the backward pass; the tensors that need gradients are therefore passed positionally.
    """

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        c, f = config.d_model, config.mlp_hidden_size
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.attn_norm = LLaDARMSNorm(c, config.rms_norm_eps)
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.attn_out = nn.Linear(c, c, bias=False)
        self.ff_norm = LLaDARMSNorm(c, config.rms_norm_eps)
        self.ff_proj = nn.Linear(c, f, bias=False)  # gate
        self.up_proj = nn.Linear(c, f, bias=False)  # up
        self.ff_out = nn.Linear(f, c, bias=False)  # down

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """h: (B, T, C); cos, sin: (1 or B, 1, T, D) fp32; attn_mask: (B, 1, 1, T) bool or None. Returns (B, T, C)."""
        b, t, c = h.shape
        a = self.attn_norm(h)
        q = apply_rope(self._split_heads(self.q_proj(a)), cos, sin)  # (B, H, T, D)
        k = apply_rope(self._split_heads(self.k_proj(a)), cos, sin)  # (B, H, T, D)
        v = self._split_heads(self.v_proj(a))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=0.0, is_causal=False, scale=self.head_dim**-0.5
        )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
        h = h + self.attn_out(y)
        m = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class LLaDAHead(nn.Linear):
    """The LM head ``transformer.ff_out`` [V, C] that can apply only a contiguous row range of its weight.

    Restricting rows *inside* the module (rather than slicing ``.weight`` from outside) keeps the weight access in
    this module's forward, where DeepSpeed ZeRO-3 gathers it, and keeps a bare-name LoRA target on the head loud:
    a peft wrapper would not accept ``vocab_slice``.
    """

    def forward(self, h: torch.Tensor, vocab_slice: tuple[int, int] | None = None) -> torch.Tensor:
        """h: (B, P, C) -> (B, P, V) or (B, P, end - start) for vocab_slice = (start, end)."""
        return F.linear(h, _rows(self.weight, vocab_slice))


def _rows(weight: torch.Tensor, vocab_slice: tuple[int, int] | None) -> torch.Tensor:
    if vocab_slice is None:
        return weight
    start, end = (int(v) for v in vocab_slice)
    if not 0 <= start < end <= weight.shape[0]:
        raise ValueError(f"vocab_slice {vocab_slice} must satisfy 0 <= start < end <= {weight.shape[0]} (head rows).")
    return weight[start:end]


class LLaDAModel(nn.Module):
    """Holds ``transformer = ModuleDict(wte, blocks, ln_f[, ff_out])`` so that state-dict keys read
    ``model.transformer.*`` exactly as in the released checkpoints. ``forward`` runs embedding + blocks only."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        modules: dict[str, nn.Module] = {
            "wte": nn.Embedding(config.embedding_size, config.d_model),
            "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
            "ln_f": LLaDARMSNorm(config.d_model, config.rms_norm_eps),
        }
        if not config.weight_tying:
            modules["ff_out"] = LLaDAHead(config.d_model, config.embedding_size, bias=False)
        self.transformer = nn.ModuleDict(modules)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embedding + all blocks. input_ids (B, T) -> last hidden state before ``ln_f``, (B, T, C)."""
        _, t = input_ids.shape
        if positions is None:
            positions = torch.arange(t, device=input_ids.device)  # (T,)
        elif positions.shape[-1] != t or positions.dim() not in (1, 2):
            raise ValueError(f"positions must be (T,) or (B, T) with T = {t}, got {tuple(positions.shape)}.")
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta)  # (1|B, 1, T, D) each
        attn_mask = key_padding_mask(attention_mask, self.config.attend_pads)
        h = self.transformer["wte"](input_ids)  # (B, T, C)
        for block in self.transformer["blocks"]:
            h = block(h, cos, sin, attn_mask)
        return h


@dataclass
class LLaDAOutput(ModelOutput):
    """Result of ``LLaDAModelLM.forward``.

    logits:        (B, T, V) by default; (B, P, V) with ``logits_at`` of P positions; last dim end - start with
                   ``vocab_slice``. In the model's compute dtype (cast to fp32 before a log-softmax).
    hidden_states: (B, T, C) final hidden state before ``ln_f`` (all positions), only if ``return_hidden``.
    """

    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None


class LLaDAModelLM(PreTrainedModel):
    """The bidirectional mask predictor p_theta(x_0 | x_t) with the released checkpoints' parameter names.

    Loads the released safetensors strictly via ``from_pretrained`` and round-trips with ``save_pretrained``.
    With ``config.weight_tying`` there is no ``ff_out`` head module at all (so no ``_tied_weights_keys``): the
    logits use ``wte.weight`` directly, which matches a checkpoint that lacks the head key (docs/models.md 1.4).
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["LLaDABlock"]
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    # ---- embedding accessors used by transformers (input-grad hooks for checkpointing / adapters) ----
    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer["wte"] = value

    def get_output_embeddings(self) -> nn.Module | None:
        return None if self.config.weight_tying else self.model.transformer["ff_out"]

    @property
    def head_weight(self) -> torch.Tensor:
        """The [V, C] matrix that produces logits: ``ff_out.weight``, or ``wte.weight`` when tied."""
        t = self.model.transformer
        return t["wte"].weight if self.config.weight_tying else t["ff_out"].weight

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """N(0, initializer_range) for linears and the embedding, ones for norm weights (only for weights a
        checkpoint did not provide; ``torch.nn.init`` calls are guarded by transformers during loading)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, LLaDARMSNorm):
            nn.init.ones_(module.weight)

    def _logits(self, h: torch.Tensor, vocab_slice: tuple[int, int] | None) -> torch.Tensor:
        """ln_f then the head on (B, P, C) hidden states -> (B, P, V or end - start)."""
        t = self.model.transformer
        h = t["ln_f"](h)
        if self.config.weight_tying:
            return F.linear(h, _rows(t["wte"].weight, vocab_slice))
        return t["ff_out"](h, vocab_slice)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        logits_at: torch.Tensor | None = None,
        vocab_slice: tuple[int, int] | None = None,
        return_hidden: bool = False,
    ) -> LLaDAOutput:
        """Logits of the mask predictor.

        input_ids:      (B, T) long.
        attention_mask: (B, T) bool / int, True or 1 = real token (keys of pads are hidden unless
                        ``config.attend_pads``). None = all real.
        positions:      (T,) or (B, T) long absolute positions for RoPE; default arange(T). Attention depends only
                        on position differences, so a shared offset does not change the output.
        logits_at:      (P,) or (B, P) long sequence positions; ln_f and the head run only there. None = all T.
        vocab_slice:    (start, end): only head rows [start, end) are applied, e.g. the 8192 image-code rows.
        return_hidden:  also return the final hidden state (B, T, C) before ln_f.
        """
        h = self.model(input_ids, attention_mask=attention_mask, positions=positions)  # (B, T, C)
        hp = h
        if logits_at is not None:
            if logits_at.dim() == 1:
                hp = h[:, logits_at]  # (B, P, C)
            elif logits_at.dim() == 2:
                hp = torch.gather(h, 1, logits_at.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # (B, P, C)
            else:
                raise ValueError(f"logits_at must be (P,) or (B, P), got shape {tuple(logits_at.shape)}.")
        logits = self._logits(hp, vocab_slice)
        return LLaDAOutput(logits=logits, hidden_states=h if return_hidden else None)


def _register_auto_classes() -> None:
    """Register ``model_type = "llada"`` with AutoConfig / AutoModel once; a second registration (another package
    that registered "llada", or a reload) must not raise."""
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if LLaDAConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig)
    try:
        AutoModel.register(LLaDAConfig, LLaDAModelLM)
    except ValueError:  # already registered for this config class
        pass


_register_auto_classes()

__all__ = [
    "LLaDABlock",
    "LLaDAHead",
    "LLaDAModel",
    "LLaDAModelLM",
    "LLaDAOutput",
    "LLaDARMSNorm",
    "apply_rope",
    "key_padding_mask",
    "rms_norm",
    "rope_inv_freq",
    "rope_tables",
    "rotate_half",
]
