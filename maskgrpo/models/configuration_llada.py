"""Configuration of the LLaDA-style bidirectional transformer shared by LLaDA-8B, MMaDA-8B and Lumina-DiMOO-8B.

Field names follow the OLMo-style ``config.json`` that the released checkpoints ship (``d_model``, ``n_heads``,
``mlp_hidden_size``, ...), so a downloaded config loads as-is (docs/models.md 1.1). Only the one architecture those
checkpoints use is implemented: a Llama-style block (separate q/k/v, SiLU-gated MLP), RMSNorm without bias, RoPE,
no biases, no dropout. Settings that would select anything else are rejected at construction time, so a config that
asks for a different architecture fails loudly instead of silently running the wrong math.

Unknown extra keys (``mlp_ratio``, ``init_fn``, ``precision``, ...) are accepted and stored as attributes, the way
``PreTrainedConfig`` treats any extra keyword, so the released ``config.json`` round-trips.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PreTrainedConfig

# OLMo switches that exist in the released config.json files. Each entry is (key, the value(s) this implementation
# computes). A config carrying one of these keys with another value would describe a different network, so it is
# rejected rather than ignored. Keys that are absent are fine.
_SUPPORTED_OLMO_SWITCHES: dict[str, tuple[Any, ...]] = {
    "rope": (True,),
    "alibi": (False, None),
    "attention_layer_norm": (False, None),
    "input_emb_norm": (False, None),
    "scale_logits": (False, None),
    "include_qkv_bias": (False, None),
    "bias_for_layer_norm": (False, None),
    "multi_query_attention": (False, None),
    "clip_qkv": (None,),
    "layer_norm_type": ("rms",),
    "layer_norm_with_affine": (True, None),
    "activation_type": ("silu", "swiglu"),
    "attention_dropout": (0, 0.0, None),
    "residual_dropout": (0, 0.0, None),
    "embedding_dropout": (0, 0.0, None),
}


class LLaDAConfig(PreTrainedConfig):
    """Hyper-parameters of the LLaDA backbone (docs/models.md 1.1). Defaults are LLaDA-8B's values.

    Tests build tiny networks by passing small ``d_model`` / ``n_layers`` / ``mlp_hidden_size``; real checkpoints
    carry their own values in config.json.
    """

    model_type = "llada"
    # The generic names some transformers / DeepSpeed utilities read (e.g. ``hidden_size`` for "auto" buckets).
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "num_key_value_heads": "n_kv_heads",
        "intermediate_size": "mlp_hidden_size",
        "tie_word_embeddings": "weight_tying",
    }

    d_model: int = 4096
    """Residual width C (4096 in the 8B models)."""
    n_layers: int = 32
    """Number of transformer blocks (32 in the 8B models)."""
    n_heads: int = 32
    """Attention heads; head dim = d_model / n_heads must be even because RoPE rotates pairs (128 in the 8B)."""
    n_kv_heads: int | None = None
    """Key/value heads. Only multi-head attention exists in these checkpoints, so it must equal ``n_heads``
    (None means ``n_heads``)."""
    mlp_hidden_size: int = 12288
    """Hidden width of the SiLU-gated MLP (12288 in the 8B models; OLMo's ``mlp_ratio`` is ignored)."""
    embedding_size: int = 126464
    """Rows of ``wte`` and of the head ``ff_out`` (134656 for MMaDA-8B, 126464 for LLaDA-8B)."""
    vocab_size: int | None = None
    """Tokenizer-side vocabulary size; may be smaller than ``embedding_size`` (None means ``embedding_size``).
    The network itself only uses ``embedding_size``."""
    rope_theta: float = 500000.0
    """RoPE base theta: inv_freq_j = theta^(-2j / head_dim)."""
    rms_norm_eps: float = 1e-5
    """eps inside the RMSNorm square root: x * rsqrt(mean(x^2) + eps)."""
    weight_tying: bool = False
    """If true there is no separate head: logits = h @ wte.weight^T and the key ``model.transformer.ff_out.weight``
    does not exist (290 tensors instead of 291 at 32 layers)."""
    mask_token_id: int = 126336
    """Id of ``<|mdm_mask|>`` in the released tokenizers (docs/models.md 1.1); the layout object owns all other ids."""
    max_sequence_length: int = 4096
    """Longest row the released models were trained on; RoPE is computed on the fly, so this only documents it."""
    block_type: str = "llama"
    """OLMo block flavour; only ``"llama"`` (separate q/k/v projections, gated MLP) is implemented."""
    include_bias: bool = False
    """Linear biases; the checkpoints have none and only ``False`` is implemented."""
    attend_pads: bool = False
    """False: honour the key-padding ``attention_mask`` (MMaDA behaviour, our decision in docs/models.md 1.3).
    True: ignore it and attend to pads, reproducing the MaskGRPO / Lumina-DiMOO copies of the model."""
    initializer_range: float = 0.02
    """Std of the normal init of linears and the embedding (only used for weights not loaded from a checkpoint)."""

    def __post_init__(self, **kwargs: Any) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.vocab_size is None:
            self.vocab_size = self.embedding_size
        self.rope_theta = float(self.rope_theta)  # JSON may hold an int; RoPE tables are fp32 anyway
        self.rms_norm_eps = float(self.rms_norm_eps)
        self._check_olmo_switches(kwargs)
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def _check_olmo_switches(self, extra: dict[str, Any]) -> None:
        for key, allowed in _SUPPORTED_OLMO_SWITCHES.items():
            if key in extra and extra[key] not in allowed:
                raise ValueError(
                    f"LLaDAConfig: {key}={extra[key]!r} is not implemented (only {allowed!r}); the released LLaDA / "
                    "MMaDA / Lumina-DiMOO checkpoints use those values, so this config describes another network."
                )

    def validate_architecture(self) -> None:
        """Reject shapes and flags this implementation does not compute (also re-run by ``save_pretrained``)."""
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "embedding_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LLaDAConfig: {name} must be a positive int, got {value!r}.")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"LLaDAConfig: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                "change one of them so the head dim is an integer."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"LLaDAConfig: head dim d_model / n_heads = {self.head_dim} must be even, because RoPE rotates "
                "pairs (x_j, x_{j + head_dim/2}); change d_model or n_heads."
            )
        if self.n_kv_heads != self.n_heads:
            raise ValueError(
                f"LLaDAConfig: n_kv_heads ({self.n_kv_heads}) must equal n_heads ({self.n_heads}); only multi-head "
                "attention is implemented (the released checkpoints are MHA)."
            )
        if self.vocab_size > self.embedding_size:
            raise ValueError(
                f"LLaDAConfig: vocab_size ({self.vocab_size}) exceeds embedding_size ({self.embedding_size}); the "
                "embedding table must have a row for every token id."
            )
        if self.block_type != "llama":
            raise ValueError(f"LLaDAConfig: block_type {self.block_type!r} is not implemented; use 'llama'.")
        if self.include_bias:
            raise ValueError("LLaDAConfig: include_bias=True is not implemented; the checkpoints have no biases.")
        if self.rope_theta <= 0 or self.rms_norm_eps < 0 or self.initializer_range < 0:
            raise ValueError(
                f"LLaDAConfig: need rope_theta > 0, rms_norm_eps >= 0, initializer_range >= 0; got "
                f"{self.rope_theta}, {self.rms_norm_eps}, {self.initializer_range}."
            )

    @property
    def head_dim(self) -> int:
        """Per-head width d_model / n_heads (128 in the 8B models)."""
        return self.d_model // self.n_heads


__all__ = ["LLaDAConfig"]
