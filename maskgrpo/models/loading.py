"""Strict loading of released LLaDA / MMaDA checkpoints into ``LLaDAModelLM`` without remote code (models.md 1, 7).

On-disk format of the released checkpoints (docs/models.md 1.4), which ``save_llada_sharded`` also writes::

    config.json                          OLMo field names (d_model, n_heads, ...), model_type "mmada" or "llada"
    model.safetensors.index.json         {"metadata": {"total_size": ...}, "weight_map": {key: shard file}}
    model-00001-of-0000N.safetensors     bf16 tensors under model.transformer.* (a single model.safetensors also works)

``load_llada`` checks, before reading any tensor data (every error names the file and the keys):

- 7.1 key set: exactly the 9 * n_layers + 3 names of docs/models.md 1.4 (291 at 32 layers), or one fewer (290)
  when the head ``model.transformer.ff_out.weight`` is absent; then the head is tied to ``wte`` (weight_tying);
- 7.2 shapes from the safetensors headers against the shapes the config implies, and ``embedding_size`` against
  ``expected_vocab`` (134656 MMaDA, 126464 LLaDA; the error prints the V it found);
- 7.3 config: llama block, no biases, n_kv_heads == n_heads (LLaDAConfig rejects anything else), the mask id, and for
  a 4096-wide network every LLaDA-8B value of docs/models.md 1.1; weight_tying consistent with the head key.

Memory: the model is built on the meta device in the target dtype and each tensor is assigned as it is read, cast
on its own, so an 8B bf16 load peaks at ~16.2 GB plus one tensor (never a full fp32 copy, never a random init).
RoPE tables are computed per forward and the model has no buffers, so nothing stays on meta (asserted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from maskgrpo.hub import (  # noqa: F401  (re-exported: the loaders' entry points)
    WeightsNotCached,
    fetch_hint,
    local_rank_first,
    looks_like_hub_id,
    resolve_hub_dir,
)
from maskgrpo.layout import mmada_8b

if TYPE_CHECKING:  # loaded where used: the backbones' option signatures (the dry run) need no transformers
    from .configuration_llada import LLaDAConfig
    from .modeling_llada import LLaDAModelLM

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
HEAD_KEY = "model.transformer.ff_out.weight"
"""The LM head; absent from a checkpoint with tied embeddings (then logits use ``wte``)."""

MODEL_TYPES = ("mmada", "llada")
"""``model_type`` values of the released config.json files (LLaDA-8B and Lumina-DiMOO: llada; MMaDA: mmada)."""

#: config.json keys that describe the file, not the network; dropped before building LLaDAConfig.
_METADATA_KEYS = ("architectures", "auto_map", "model_type", "transformers_version", "_name_or_path")

#: models.md 1.1: every LLaDA-8B / MMaDA-8B / Lumina-DiMOO-8B hyper-parameter that config.json carries. A network of
#: width 4096 claims to be one of the released models and must match all of them (tiny test networks are exempt).
REFERENCE_8B: dict[str, Any] = {
    "d_model": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 32,
    "mlp_hidden_size": 12288,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
}

RELEASED_MASK_ID = mmada_8b().mask_id
"""``<|mdm_mask|>``: the same id in LLaDA-8B, MMaDA-8B and Lumina-DiMOO (docs/models.md 1.1); the layout owns it."""

#: Files fetched from the hub for an LLaDA checkpoint (a local directory is used as is).
WEIGHT_PATTERNS = (CONFIG_FILE, INDEX_FILE, "*.safetensors")


def resolve_checkpoint_dir(
    path_or_hub_id: str | os.PathLike, allow_patterns: tuple[str, ...] | None = WEIGHT_PATTERNS
) -> Path:
    """A local directory as is; a hub id fetched (or found in the cache) with ``allow_patterns`` (None: the whole
    repository), local rank 0 first; offline, a miss is one line naming the fetch command (``maskgrpo.hub``)."""
    return resolve_hub_dir(path_or_hub_id, allow_patterns)


def read_json(file: str | os.PathLike) -> Any:
    """A JSON file of a checkpoint; a garbled one is a ValueError naming file and line (never a bare decode error)."""
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not a UTF-8 JSON file (byte {e.start}); the file is damaged") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno}); the file is damaged") from e


@contextlib.contextmanager
def open_safetensors(file: str | os.PathLike, device: str = "cpu") -> Iterator[Any]:
    """``safe_open`` whose errors (a truncated or damaged file) are ValueErrors naming the file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device=device) as f:
            yield f
    except SafetensorError as e:
        raise ValueError(f"{file}: not a readable safetensors file, truncated or damaged? ({e})") from e


def _short(items: list[str], limit: int = 12) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# --------------------------------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------------------------------


def read_llada_config(directory: str | os.PathLike, expected_mask_id: int | None = RELEASED_MASK_ID) -> LLaDAConfig:
    """``config.json`` (OLMo names) -> LLaDAConfig, with the checks of docs/models.md 7.3 that need no weights.

    Unknown extra keys (``mlp_ratio``, ``llm_vocab_size``, a stale ``num_vq_tokens``, ...) are kept as attributes
    and otherwise ignored. ``expected_mask_id`` None skips the mask-id check.
    """
    file = Path(directory) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: an LLaDA / MMaDA checkpoint directory needs its config.json")
    raw = read_json(file)
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("model_type") not in MODEL_TYPES:
        raise ValueError(f"{file}: model_type {raw.get('model_type')!r} is not one of {list(MODEL_TYPES)}")
    from .configuration_llada import LLaDAConfig

    kwargs = {k: v for k, v in raw.items() if k not in _METADATA_KEYS}
    try:
        config = LLaDAConfig(**kwargs)
    except (ValueError, TypeError) as e:  # block_type, biases, n_kv_heads, OLMo switches: message names the key
        raise ValueError(f"{file}: {e}") from e
    if expected_mask_id is not None and config.mask_token_id != expected_mask_id:
        raise ValueError(f"{file}: mask_token_id {config.mask_token_id} != {expected_mask_id} (the <|mdm_mask|> id)")
    if config.d_model == REFERENCE_8B["d_model"]:
        wrong = [f"{k}={getattr(config, k)!r} (expected {v!r})" for k, v in REFERENCE_8B.items()
                 if getattr(config, k) != v]  # fmt: skip
        if wrong:
            raise ValueError(f"{file}: a 4096-wide config must be LLaDA-8B's (models.md 1.1); differs in: {wrong}")
    return config


# --------------------------------------------------------------------------------------------------------------------
# safetensors headers
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives and what its header says (no data read)."""

    file: Path
    shape: tuple[int, ...]
    dtype: str


def scan_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, TensorEntry], Path]:
    """Read the safetensors headers of a checkpoint: ``{key: TensorEntry}`` and the file that lists the keys.

    Sharded (``model.safetensors.index.json``) or single (``model.safetensors``). The shard headers are the truth;
    an index that disagrees with them (a key it maps to a shard that lacks it, a key a shard has that it does not
    list, a key in two shards) is an error naming both files.
    """
    d = Path(directory)
    index = d / INDEX_FILE
    if index.is_file():
        raw = read_json(index)
        if not isinstance(raw, dict) or not isinstance(raw.get("weight_map"), dict):
            raise ValueError(f"{index}: no 'weight_map' mapping of tensor names to shard files")
        weight_map: dict[str, str] = raw["weight_map"]
        files = sorted({d / name for name in weight_map.values()})
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{index} lists shard file(s) that do not exist: {absent}")
        source = index
    elif (d / SINGLE_FILE).is_file():
        weight_map, files, source = {}, [d / SINGLE_FILE], d / SINGLE_FILE
    else:
        raise FileNotFoundError(f"{d}: no {INDEX_FILE} or {SINGLE_FILE}; expected a safetensors checkpoint")

    entries: dict[str, TensorEntry] = {}
    for file in files:
        with open_safetensors(file) as f:
            for key in f.keys():
                if key in entries:
                    raise ValueError(f"key {key} is stored twice: in {entries[key].file} and in {file}")
                sl = f.get_slice(key)
                entries[key] = TensorEntry(file, tuple(int(s) for s in sl.get_shape()), str(sl.get_dtype()))
    if weight_map:
        stale = [f"{k} (mapped to {v}, which lacks it)" for k, v in weight_map.items()
                 if k not in entries or entries[k].file.name != v]  # fmt: skip
        unlisted = [f"{k} (in {entries[k].file.name})" for k in entries if k not in weight_map]
        if stale or unlisted:
            raise ValueError(
                f"{index} disagrees with its shards. missing key(s): [{_short(stale)}]; "
                f"unexpected key(s) not in the index: [{_short(unlisted)}]"
            )
    return entries, source


_FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
"""safetensors dtypes a weight may be stored in (cast to the target dtype on load)."""


def _expected_shapes(config: LLaDAConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape implied by the config (docs/models.md 1.4), read off a meta-device model so names never drift."""
    from .modeling_llada import LLaDAModelLM

    with torch.device("meta"):
        model = LLaDAModelLM(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_checkpoint(
    entries: dict[str, TensorEntry],
    source: Path,
    config: LLaDAConfig,
    config_file: Path,
    expected_vocab: int | None = None,
) -> LLaDAConfig:
    """docs/models.md 7.1 / 7.2 against the headers; returns the config with ``weight_tying`` set from the head key.

    A checkpoint without ``model.transformer.ff_out.weight`` is loaded tied (the head = ``wte``; a warning if the
    config said otherwise). A checkpoint with the head and ``weight_tying: true`` is contradictory and rejected.
    """
    has_head = HEAD_KEY in entries
    if has_head and config.weight_tying:
        raise ValueError(f"{config_file}: weight_tying is true but {entries[HEAD_KEY].file} holds {HEAD_KEY}")
    if not has_head and not config.weight_tying:
        warnings.warn(f"{source}: no {HEAD_KEY}; tying the head to wte (weight_tying=true, docs/models.md 1.1)",
                      UserWarning, stacklevel=3)  # fmt: skip
        config.weight_tying = True
    if expected_vocab is not None and config.embedding_size != expected_vocab:
        raise ValueError(f"{config_file}: embedding_size V = {config.embedding_size}, expected {expected_vocab}")

    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(entries))
    unexpected = sorted(set(entries) - set(expected))
    if missing or unexpected:
        blocks = sorted(
            {int(m.group(1)) for k in entries if (m := re.match(r"model\.transformer\.blocks\.(\d+)\.", k))}
        )
        raise ValueError(
            f"{source}: the key set is not docs/models.md 1.4 for n_layers={config.n_layers} "
            f"({len(expected)} tensors expected, {len(entries)} found; block indices found: "
            f"{f'{blocks[0]}..{blocks[-1]}' if blocks else 'none'}). missing ({len(missing)}): [{_short(missing)}]; "
            f"unexpected ({len(unexpected)}): [{_short([f'{k} (in {entries[k].file.name})' for k in unexpected])}]"
        )
    wrong = [f"{k} in {entries[k].file.name}: {list(entries[k].shape)} != {list(s)}" for k, s in expected.items()
             if entries[k].shape != s]  # fmt: skip
    if wrong:
        raise ValueError(f"{source}: shape mismatch against {config_file} (V={config.embedding_size}, "
                         f"d_model={config.d_model}, mlp={config.mlp_hidden_size}): {_short(wrong)}")  # fmt: skip
    not_float = [f"{k} ({e.dtype}) in {e.file.name}" for k, e in entries.items() if e.dtype not in _FLOAT_DTYPES]
    if not_float:
        raise ValueError(f"non-floating tensors in the checkpoint: {_short(not_float)}")
    return config


# --------------------------------------------------------------------------------------------------------------------
# load / save
# --------------------------------------------------------------------------------------------------------------------


def load_llada(
    path_or_hub_id: str | os.PathLike,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    expected_vocab: int | None = None,
    expected_mask_id: int | None = RELEASED_MASK_ID,
    attend_pads: bool | None = None,
) -> LLaDAModelLM:
    """Load a released LLaDA / MMaDA / Lumina-DiMOO checkpoint strictly into ``LLaDAModelLM`` (eval mode).

    Args:
        path_or_hub_id: checkpoint directory, or a hub id (e.g. ``Gen-Verse/MMaDA-8B-Base``) for ``snapshot_download``.
        dtype: parameter dtype; each tensor is cast as it is read (bf16 for 8B runs).
        device: where the parameters end up.
        expected_vocab: V the checkpoint must have (134656 MMaDA, 126464 LLaDA); None skips the check.
        expected_mask_id: ``mask_token_id`` the config must carry (126336 in every release); None skips it.
        attend_pads: override ``config.attend_pads`` (docs/models.md 1.3); None keeps the config's value.
    """
    t0 = time.perf_counter()
    d = resolve_checkpoint_dir(path_or_hub_id)
    config = read_llada_config(d, expected_mask_id)
    if attend_pads is not None:
        config.attend_pads = attend_pads
    entries, source = scan_checkpoint(d)
    config = check_checkpoint(entries, source, config, d / CONFIG_FILE, expected_vocab)
    config.dtype = dtype

    from .modeling_llada import LLaDAModelLM

    with torch.device("meta"):  # no memory, no random init: every parameter is assigned from the file below
        model = LLaDAModelLM(config)
    model.to(dtype=dtype)
    by_file: dict[Path, list[str]] = defaultdict(list)
    for key, entry in entries.items():
        by_file[entry.file].append(key)
    _assign_from_files(model, by_file, dtype, torch.device(device))
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{source}: tensors left on the meta device after loading: {_short(left)}")
    model.eval()
    logger.info("loaded %s (%d tensors, %d file(s), %s) in %.2f s", d, len(entries), len(by_file), dtype,
                time.perf_counter() - t0)  # fmt: skip
    return model


def _assign_from_files(model: torch.nn.Module, by_file: dict[Path, list[str]], dtype: torch.dtype,
                       device: torch.device) -> None:  # fmt: skip
    """Read shard by shard; cast each tensor alone, then hand it to the module (``assign=True``: no second copy)."""
    for file, keys in sorted(by_file.items()):
        with open_safetensors(file) as f:
            shard = {k: f.get_tensor(k).to(device=device, dtype=dtype) for k in keys}
        result = model.load_state_dict(shard, strict=False, assign=True)
        if result.unexpected_keys:  # cannot happen after check_checkpoint; keep the guard cheap and loud
            raise ValueError(f"{file}: unexpected keys {result.unexpected_keys}")
        del shard


def llada_config_json(config: LLaDAConfig, model_type: str = "mmada", dtype: torch.dtype | None = None) -> dict:
    """The OLMo-style config.json of the released checkpoints for this config (fields of docs/models.md 1.1)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {list(MODEL_TYPES)}, got {model_type!r}")
    out = {
        "architectures": ["MMadaModelLM" if model_type == "mmada" else "LLaDAModelLM"],
        "model_type": model_type,
        "activation_type": "silu",
        "alibi": False,
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "block_type": "llama",
        "d_model": config.d_model,
        "embedding_dropout": 0.0,
        "embedding_size": config.embedding_size,
        "include_bias": False,
        "include_qkv_bias": False,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": config.mask_token_id,
        "max_sequence_length": config.max_sequence_length,
        "mlp_hidden_size": config.mlp_hidden_size,
        "mlp_ratio": 4,
        "n_heads": config.n_heads,
        "n_kv_heads": config.n_kv_heads,
        "n_layers": config.n_layers,
        "residual_dropout": 0.0,
        "rms_norm_eps": config.rms_norm_eps,
        "rope": True,
        "rope_theta": config.rope_theta,
        "scale_logits": False,
        "vocab_size": config.vocab_size,
        "weight_tying": bool(config.weight_tying),
    }
    if dtype is not None:
        out["torch_dtype"] = str(dtype).removeprefix("torch.")
    return out


def save_llada_sharded(
    model: LLaDAModelLM,
    directory: str | os.PathLike,
    max_shard_bytes: int = 5 * 2**30,
    model_type: str = "mmada",
    extra_config: dict | None = None,
) -> Path:
    """Write the upstream on-disk format: sharded safetensors + index + OLMo config.json. Returns the index path.

    Tensors keep their order and dtype; a shard is closed before it would exceed ``max_shard_bytes`` (a tensor larger
    than that gets a shard of its own). ``extra_config`` adds keys to config.json (e.g. MMaDA's stale
    ``num_vq_tokens``) to test that the loader ignores them.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = out / INDEX_FILE
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    dtype = next(iter(state.values())).dtype
    cfg = {**llada_config_json(model.config, model_type, dtype), **(extra_config or {})}
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    return index


__all__ = [
    "HEAD_KEY",
    "INDEX_FILE",
    "MODEL_TYPES",
    "REFERENCE_8B",
    "TensorEntry",
    "WeightsNotCached",
    "check_checkpoint",
    "fetch_hint",
    "llada_config_json",
    "load_llada",
    "local_rank_first",
    "open_safetensors",
    "read_json",
    "read_llada_config",
    "resolve_checkpoint_dir",
    "save_llada_sharded",
    "scan_checkpoint",
]
