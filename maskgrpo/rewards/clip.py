"""CLIP text-image similarity reward (MaskGRPO ``reward_clip_score``; docs/benchmarks.md section 3).

score_i = cos(E_img(x_i), E_txt(p_i)) = <u, v> / (||u|| ||v||), with u, v the *projected* CLIP embeddings
(``visual_projection`` / ``text_projection`` of the pooled outputs). No x100 logit scale: raw values are about
0.2-0.35 for ViT-L/14 and the training scale is 1.

Preprocessing, as MaskGRPO does it (and as ``CLIPImageProcessorPil`` with ``do_center_crop=False`` does it):

1. uint8 RGB -> shortest edge resized to ``image_size`` (224 for ViT-L/14) with PIL bicubic; the long edge becomes
   ``int(image_size * long / short)``. **No centre crop**: a non-square image keeps its whole content, and the
   vision tower then interpolates its position embeddings.
2. x / 255, then (x - mean) / std with the OpenAI CLIP mean and std.
3. Prompts are tokenised with the model's tokenizer, padded, and truncated to 77 tokens.

Implemented with PIL + torch so that transformers' torchvision-based image processor is not needed. Works with
transformers 5 (``get_image_features`` returns an output object whose ``.pooler_output`` is the projected
embedding) and 4 (it returns the tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maskgrpo.errors import RunError, one_line
from maskgrpo.rewards.base import REWARDS

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_TEXT_TOKENS = 77
CLIP_FILES = ("*.json", "*.txt", "*.safetensors")
"""Files of a hub CLIP repository the reward loads (config, tokenizer, preprocessor, safetensors weights)."""
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resize_shortest_edge(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) -> (H', W') with min(H', W') = size and the long edge ``int(size * long / short)`` (transformers')."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def clip_preprocess(
    images: np.ndarray,
    image_size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H', W') float32 pixel values (shortest edge -> image_size, no crop)."""
    batch, height, width, _ = images.shape
    new_h, new_w = resize_shortest_edge(height, width, image_size)
    resized = (
        np.stack(
            [np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC)) for image in images]
        )
        if (new_h, new_w) != (height, width)
        else images
    )  # (B, H', W', 3) uint8
    pixels = torch.from_numpy(np.ascontiguousarray(resized)).float().div_(255.0)  # (B, H', W', 3) in [0, 1]
    pixels = (pixels - torch.tensor(mean)) / torch.tensor(std)
    return pixels.permute(0, 3, 1, 2).contiguous()  # (B, 3, H', W')


def _embedding(output: Any) -> torch.Tensor:
    """A ``get_*_features`` result -> the (B, D) projected embedding (tensor in transformers 4, object in 5)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"cannot find the embedding in a {type(output).__name__} (no tensor, no .pooler_output)")


class ClipReward:
    """Cosine similarity between CLIP image and prompt embeddings, batched on one device.

    ``__call__(images (B, H, W, 3) uint8, prompts [B], metadata [B]) -> (B,) float64`` raw cosines in [-1, 1].
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        image_size: int,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        name: str = "clip",
    ) -> None:
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.name = name
        vision = getattr(model.config, "vision_config", None)
        self.native_size = getattr(vision, "image_size", image_size)
        text = getattr(model.config, "text_config", None)
        self.max_tokens = min(MAX_TEXT_TOKENS, getattr(text, "max_position_embeddings", MAX_TEXT_TOKENS))

    def __repr__(self) -> str:
        return f"ClipReward(name={self.name!r}, image_size={self.image_size}, device={self.device})"

    @torch.inference_mode()
    def embed_images(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, D) float32 unit-norm projected image embeddings."""
        pixels = clip_preprocess(images, self.image_size)  # (B, 3, H', W')
        kwargs = (
            {} if pixels.shape[-2:] == (self.native_size, self.native_size) else {"interpolate_pos_encoding": True}
        )
        dtype = next(self.model.parameters()).dtype
        out = self.model.get_image_features(pixel_values=pixels.to(self.device, dtype), **kwargs)
        return F.normalize(_embedding(out).float(), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """B prompts -> (B, D) float32 unit-norm projected text embeddings (truncated to 77 tokens)."""
        tokens = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        out = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        )
        return F.normalize(_embedding(out).float(), dim=-1)

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        # A GRPO batch repeats each prompt G times: embed each distinct prompt once.
        unique = list(dict.fromkeys(prompts))
        index = {p: i for i, p in enumerate(unique)}
        text = (
            torch.cat(
                [self.embed_texts(unique[s : s + self.batch_size]) for s in range(0, len(unique), self.batch_size)]
            )
            if unique
            else None
        )  # (U, D)
        scores = []
        for start in range(0, len(images), self.batch_size):
            image_emb = self.embed_images(images[start : start + self.batch_size])  # (b, D)
            rows = torch.tensor([index[p] for p in prompts[start : start + self.batch_size]], device=text.device)
            scores.append((image_emb * text[rows]).sum(-1).double().cpu())  # (b,) cosine
        return torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float64)


@REWARDS.register("clip")
def clip(
    model_path: str = "openai/clip-vit-large-patch14",
    batch_size: int = 32,
    image_size: int | None = None,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    context: dict | None = None,
) -> ClipReward:
    """Load ``CLIPModel`` + tokenizer from a hub id or local directory (``HF_HUB_OFFLINE=1`` works with a local one).

    Args:
        model_path: hub id or directory; the paper uses ``openai/clip-vit-large-patch14``.
        batch_size: images (and distinct prompts) per forward.
        image_size: shortest-edge target; default the vision tower's ``image_size`` (224 for ViT-L/14).
        dtype: weights dtype, ``float32`` | ``bfloat16`` | ``float16`` (cosines are computed in float32).
        device: where the model runs (the trainer's device).
    """
    from transformers import AutoTokenizer, CLIPModel

    from maskgrpo.models.loading import looks_like_hub_id, resolve_checkpoint_dir

    if dtype not in _DTYPES:
        raise ValueError(f"clip: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    local = Path(model_path).expanduser()
    if not local.is_dir() and not looks_like_hub_id(str(model_path)):
        raise RunError(f"clip: model_path {model_path}: no such directory (and not a hub id of the form owner/name)")
    try:  # a hub id: local rank 0 fetches CLIP_FILES, the others read the cache; offline, a miss names the fetch
        source = str(local) if local.is_dir() else str(resolve_checkpoint_dir(model_path, CLIP_FILES))
        model = CLIPModel.from_pretrained(source, dtype=_DTYPES[dtype])
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as e:  # a hub id not in the offline cache, a directory without CLIP files, a damaged file
        where = "directory" if local.is_dir() else "not a local directory; as a hub id"
        raise RunError(f"clip: cannot load model_path {model_path} ({where}): {one_line(e)}") from e
    size = image_size if image_size is not None else model.config.vision_config.image_size
    return ClipReward(model, tokenizer, image_size=size, batch_size=batch_size, device=device)
