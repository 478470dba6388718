"""Ready-made scorers for ``python -m maskgrpo.rewards.serve`` (the server's scorer signature).

A scorer is ``fn(images: list[PIL.Image.Image], prompts: list[str] | None, metadata: list[dict] | None)
-> list[float]``; the ``make_*`` functions are factories for ``--scorer-kwargs`` (they load a model once). Each is
answered over JSON (``POST /score``) and, with ``--allow-pickle``, over the public pickle protocol (``POST /``)::

    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:make_hpsv3 \\
        --scorer-kwargs '{"device": "cuda:0"}' --port 18087 --allow-pickle
    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:make_unifiedreward \\
        --scorer-kwargs '{"device": "cuda:0"}' --port 18088 --allow-pickle
    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:make_clip \\
        --scorer-kwargs '{"model_path": "openai/clip-vit-large-patch14", "device": "cuda:0"}' --port 18089
    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:mean_intensity   # a smoke test

GenEval has no factory here: its detector (mmdet 2.x) runs in its own environment behind the public reward-server.
"""

from __future__ import annotations

import math
import re
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


# ------------------------------------------------------------------------------------------------ UnifiedReward

UNIFIEDREWARD_MODEL = "CodeGoat24/UnifiedReward-qwen-7b"
"""The judge of the HT-GRPO and MaskGRPO configs (Qwen2.5-VL-7B fine-tuned as a reward model)."""
UNIFIEDREWARD_INSTRUCTION = (
    "Judge the image below against the caption it was generated from, on two things:\n"
    "1. Caption alignment: are the objects, their attributes and their relations the ones the caption asks for?\n"
    "2. Image quality: is the image clear, detailed, well coloured and pleasing to look at?\n"
    "Weigh both, then end your answer with 'Final Score:' followed by a score from 1 to 5.\n"
    "Caption: [{caption}]"
)
"""Our own wording of the pointwise judge instruction (the facts it carries: one image and its caption, two
criteria - alignment and quality - and a 1-5 score after "Final Score:", benchmarks.md section 3). Public GRPO code
words it differently; scores can shift slightly with the wording, so for parity with another codebase pass that
codebase's instruction text through ``make_unifiedreward(instruction=...)`` (a string with ``{caption}``)."""
FINAL_SCORE = re.compile(r"Final Score:\s*([1-5](?:\.\d+)?)")
"""The judge's answer pattern (docs/benchmarks.md section 3)."""
_TORCH_DTYPES = ("float32", "bfloat16", "float16")


def unifiedreward_question(caption: str, instruction: str = UNIFIEDREWARD_INSTRUCTION) -> str:
    """The judge's instruction for one caption (``instruction`` holds ``{caption}``)."""
    return instruction.format(caption=caption)


def parse_final_score(text: str) -> float:
    """The 1-5 score after "Final Score:" in the judge's answer; NaN when absent (upstream writes 0: here a failed
    judgement is never a score, see ``allow_nan``)."""
    match = FINAL_SCORE.search(text)
    return float(match.group(1)) if match else math.nan


def load_qwen_vl(model_path: str, device: str, dtype: str) -> tuple[Any, Any]:
    """Qwen2.5-VL model (eval mode, on ``device``) and its processor with left padding (batched generation)."""
    import torch
    import transformers
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, **{dtype_key: getattr(torch, dtype)})
    processor = AutoProcessor.from_pretrained(model_path)
    processor.tokenizer.padding_side = "left"
    return model.to(device).eval(), processor


def judge_texts(
    model: Any, processor: Any, images: list[Image.Image], questions: list[str], max_new_tokens: int
) -> list[str]:
    """One greedy generation per (image, question) pair, batched; returns the new text of each row."""
    import torch

    messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}] for q in questions]
    texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # (B, L_in + L_new)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]  # (B, L_new): left padding aligns every prompt's end
    return processor.batch_decode(new_tokens, skip_special_tokens=True)


Generator = Callable[[list[Image.Image], list[str]], list[str]]
"""The judge's generate step: ``generate(images, questions) -> answers``, one answer text per (image, question) row,
all rows in one batched call."""


def unifiedreward_scorer(
    generate: Generator,
    image_size: int = 512,
    batch_size: int = 32,
    instruction: str = UNIFIEDREWARD_INSTRUCTION,
) -> ServerScorer:
    """The UnifiedReward scorer around any generate step (the model's, or a stub in tests and benchmarks).

    Each image is resized to ``image_size`` squared, paired with its caption's question, and judged in generate
    calls of at most ``batch_size`` rows (the server merges concurrent requests, so one call can hold several ranks'
    images); the 1-5 after "Final Score:" is returned raw, NaN where an answer has none.
    """
    if "{caption}" not in instruction:
        raise ValueError("instruction must contain '{caption}'")
    if image_size < 28 or batch_size < 1:
        raise ValueError(f"need image_size >= 28 and batch_size >= 1; got {image_size}, {batch_size}")

    def score(images: list[Image.Image], prompts: list[str] | None, metadata: list[dict] | None) -> list[float]:
        if prompts is None:
            raise ValueError("the unifiedreward scorer needs prompts")
        resized = [image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC) for image in images]
        questions = [unifiedreward_question(p, instruction) for p in prompts]
        answers: list[str] = []
        for start in range(0, len(resized), batch_size):
            answers += generate(resized[start : start + batch_size], questions[start : start + batch_size])
        if len(answers) != len(images):
            raise ValueError(f"the judge gave {len(answers)} answers for {len(images)} images")
        return [parse_final_score(text) for text in answers]

    return score


def make_unifiedreward(
    model_path: str = UNIFIEDREWARD_MODEL,
    device: str = "cuda",
    dtype: str = "bfloat16",
    image_size: int = 512,
    batch_size: int = 32,
    max_new_tokens: int = 256,
    instruction: str = UNIFIEDREWARD_INSTRUCTION,
) -> ServerScorer:
    """UnifiedReward judge behind the server: each image resized to ``image_size`` squared (512, as MaskGRPO),
    judged greedily (temperature 0) against its caption, the 1-5 after "Final Score:" returned raw (train with
    ``scale: 0.2``); NaN where the answer has no score. ``batch_size``: rows per generate call (32; 8 in MaskGRPO's
    server: raise it with the server's ``--batch-images`` so that concurrent ranks share one call, lower it if the
    GPU runs out of memory). ``instruction``: the judge's text with ``{caption}``. Needs a transformers with
    Qwen2.5-VL (>= 4.49)."""
    if "{caption}" not in instruction:
        raise ValueError("instruction must contain '{caption}'")
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {_TORCH_DTYPES}, got {dtype!r}")
    if image_size < 28 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"need image_size >= 28, batch_size >= 1, max_new_tokens >= 1; got {image_size}, {batch_size}, "
            f"{max_new_tokens}"
        )
    model, processor = load_qwen_vl(model_path, device, dtype)

    def generate(images: list[Image.Image], questions: list[str]) -> list[str]:
        return judge_texts(model, processor, images, questions, max_new_tokens)

    return unifiedreward_scorer(generate, image_size, batch_size, instruction)
