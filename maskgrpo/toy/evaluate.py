"""Held-out ShapesEval of a ShapesWorld backbone: sample, decode, score with the GenEval rules, tabulate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskgrpo.backbones.base import generate_codes
from maskgrpo.config.schema import ShapesEvalConfig
from maskgrpo.toy.shapes_eval import ShapesEvaluator, format_table


def train_prompt_pick(prompts: list[dict], per_tag: int, seed: int) -> list[dict]:
    """``per_tag`` captions of every tag (all of a tag with fewer), a seeded pick in tag order: the fixed
    in-distribution set of ``eval.train_prompts_per_tag``."""
    rng = np.random.default_rng(seed)
    out = []
    for tag in sorted({m["tag"] for m in prompts}):
        pool = [m for m in prompts if m["tag"] == tag]
        out += [pool[i] for i in sorted(rng.permutation(len(pool))[:per_tag])]
    return out


def eval_prompt_sets(backbone, cfg: ShapesEvalConfig) -> dict[str, list[dict]]:
    """File-name suffix -> captions of one ShapesEval: ``""`` = the held-out captions, ``"_train"`` = the
    ``cfg.train_prompts_per_tag`` pick of training captions (present only when that is > 0)."""
    sets = {"": backbone.eval_prompts}
    if cfg.train_prompts_per_tag:
        sets["_train"] = train_prompt_pick(backbone.train_prompts, cfg.train_prompts_per_tag, cfg.seed)
    return sets


def evaluate_shapes(backbone, prompts: list[dict], cfg: ShapesEvalConfig, desc: str | None = None) -> dict:
    """Generate ``cfg.samples_per_prompt`` images per metadata entry and score them (GenEval table + partial credit).

    Returns a JSON-ready dict: per-tag accuracies, ``overall`` (unweighted mean of tags), ``partial_mean``
    (mean clipped partial credit), ``graded_mean`` (mean graded verdict), ``partial_sd`` / ``graded_sd`` (their
    per-image sample SDs), ``num_images``, ``tag_images`` (images per tag), ``table`` (markdown) and, under
    ``_images``, the decoded images for grids.
    """
    sampler = cfg.sampler.build()
    generator = torch.Generator(device=next(backbone.model.parameters()).device).manual_seed(cfg.seed)
    metas = [m for m in prompts for _ in range(cfg.samples_per_prompt)]
    was_training = backbone.model.training
    backbone.model.eval()
    codes = generate_codes(backbone, [m["prompt"] for m in metas], sampler, generator, cfg.batch_size, desc)
    backbone.model.train(was_training)
    images = backbone.decode(codes)  # (P*S, H, W, 3) uint8
    evaluator = ShapesEvaluator(backbone.spec)
    results = evaluator.score(images, metas)
    summary = evaluator.summarize(results)
    out = {k: float(v) for k, v in summary.items()}
    for key in ("partial", "graded"):  # mean and per-image SD (the SD gives the eval-noise band of the mean)
        values = [getattr(r, key) for r in results]
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out["num_images"] = len(results)
    out["tag_images"] = {t: sum(r.tag == t for r in results) for t in summary if t != "overall"}
    captions: dict[str, list] = {}  # prompt -> [tag, correct images, images]: the eval-noise band per caption
    for r in results:
        entry = captions.setdefault(r.prompt, [r.tag, 0, 0])
        entry[1] += int(r.correct)
        entry[2] += 1
    out["caption_correct"] = captions
    out["table"] = format_table(summary)
    out["_images"] = images
    out["_metas"] = metas
    out["_correct"] = [bool(r.correct) for r in results]
    return out


def sample_grid(images: np.ndarray, columns: int = 8, scale: int = 2) -> Image.Image:
    """Tile (B, H, W, 3) uint8 images into one PIL image, upscaled by ``scale`` (nearest) for viewing."""
    b, h, w, _ = images.shape
    rows = -(-b // columns)
    grid = np.full((rows * (h + 2), columns * (w + 2), 3), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = im
    pil = Image.fromarray(grid)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def write_eval(summary: dict, out_dir: str | Path, name: str) -> None:
    """``<name>.json`` (numbers), ``<name>.md`` (table) and ``<name>_samples.png`` (first image of each prompt)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(
        json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}, indent=1)
    )
    (out / f"{name}.md").write_text(summary["table"] + "\n")
    images = summary.get("_images")
    if images is not None and len(images):
        per_prompt = len(images) // max(1, len({m["prompt"] for m in summary["_metas"]}))
        sample_grid(images[:: max(1, per_prompt)][:64]).save(out / f"{name}_samples.png")
