"""Ready-made scorers for ``python -m maskgrpo.rewards.serve`` (the server's scorer signature).

A scorer is ``fn(images: list[PIL.Image.Image], prompts: list[str] | None, metadata: list[dict] | None)
-> list[float]``; the ``make_*`` functions are factories for ``--scorer-kwargs`` (they load a model once)::

    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:make_hpsv3 \\
        --scorer-kwargs '{"device": "cuda:0"}' --port 18087
    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:make_clip \\
        --scorer-kwargs '{"model_path": "openai/clip-vit-large-patch14", "device": "cuda:0"}' --port 18089
    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:mean_intensity   # a smoke test
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ServerScorer = Callable[[list[Image.Image], list[str] | None, list[dict] | None], list[float]]


def mean_intensity(images: list[Image.Image], prompts: list[str] | None, metadata: list[dict] | None) -> list[float]:
    """Mean RGB value / 255 of each image, in [0, 1]: a deterministic scorer for smoke tests and examples."""
    return [float(np.asarray(image.convert("RGB"), dtype=np.float64).mean() / 255.0) for image in images]


def make_clip(model_path: str = "openai/clip-vit-large-patch14", device: str = "cuda", **kwargs: Any) -> ServerScorer:
    """The ``clip`` reward behind the server (raw cosine); kwargs go to :func:`maskgrpo.rewards.clip.clip`."""
    from maskgrpo.rewards.clip import clip

    reward = clip(model_path=model_path, device=device, **kwargs)

    def score(images: list[Image.Image], prompts: list[str] | None, metadata: list[dict] | None) -> list[float]:
        if prompts is None:
            raise ValueError("the clip scorer needs prompts")
        arrays = [np.asarray(image.convert("RGB")) for image in images]
        if len({a.shape for a in arrays}) <= 1:
            return reward(np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8), prompts, []).tolist()
        return [float(reward(a[None], [p], [])[0]) for a, p in zip(arrays, prompts)]  # mixed sizes: one by one

    return score


def make_hpsv3(device: str = "cuda", **kwargs: Any) -> ServerScorer:
    """HPSv3 (PyPI ``hpsv3``, 7B Qwen2-VL) in its own environment; returns mu of its (mu, sigma) per image (raw,
    about 8-13; train with ``scale: 0.2``). kwargs go to ``HPSv3RewardInferencer``."""
    from hpsv3 import HPSv3RewardInferencer  # only in the HPSv3 environment (it pins transformers 4.45.2)

    inferencer = HPSv3RewardInferencer(device=device, **kwargs)

    def score(images: list[Image.Image], prompts: list[str] | None, metadata: list[dict] | None) -> list[float]:
        if prompts is None:
            raise ValueError("the hpsv3 scorer needs prompts")
        with tempfile.TemporaryDirectory(prefix="hpsv3-") as tmp:
            paths = []
            for i, image in enumerate(images):  # HPSv3's inferencer reads image files
                path = Path(tmp) / f"{i:05d}.png"
                image.save(path)
                paths.append(str(path))
            out = inferencer.reward(paths, list(prompts))  # [N, 2]: (mu, sigma) per image
        if len(out) != len(images):
            raise ValueError(f"HPSv3 returned {len(out)} rows for {len(images)} images")
        return [float(row[0]) for row in out]  # mu; works for a tensor, a list of tensors or nested lists

    return score
