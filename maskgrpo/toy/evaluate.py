"""Held-out ShapesEval of a ShapesWorld backbone: sample, decode, score with the GenEval rules, tabulate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskgrpo.backbones.base import generate_codes
from maskgrpo.config.schema import ShapesEvalConfig
from maskgrpo.observe import labelled_grid
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS, summarize_verdicts
from maskgrpo.toy.shapes_eval import ShapesEvaluator


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
    ``cfg.train_prompts_per_tag`` pick of training captions (present only when that is > 0), ``"_val"`` = the
    base's validation captions (only with ``cfg.val``, an RL run's option, and a base that has them). An RL run's
    ``heldout: false`` leaves the held-out captions out."""
    sets = {"": backbone.eval_prompts} if getattr(cfg, "heldout", True) else {}
    if cfg.train_prompts_per_tag:
        sets["_train"] = train_prompt_pick(backbone.train_prompts, cfg.train_prompts_per_tag, cfg.seed)
    if getattr(cfg, "val", False) and getattr(backbone, "val_prompts", None):
        sets["_val"] = list(backbone.val_prompts)
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
    out = summarize_verdicts(metas, [r.correct for r in results])
    for key in ("partial", "graded"):  # mean and per-image SD (the SD gives the eval-noise band of the mean)
        values = [getattr(r, key) for r in results]
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out["_images"] = images
    out["_metas"] = metas
    out["_correct"] = [bool(r.correct) for r in results]
    return out


def tag_sections(summary: dict, per_tag: int = 8) -> list[tuple[str, list[int]]]:
    """(header, image indices) per tag, GenEval tag order: the first sample of up to ``per_tag`` captions of the
    tag, under a header with the tag's accuracy. ``summary`` is :func:`evaluate_shapes`'s (prompt-major images)."""
    metas = summary["_metas"]
    stride = max(1, len(metas) // max(1, len({m["prompt"] for m in metas})))  # samples per caption
    firsts = range(0, len(metas), stride)
    tags = [t for t in GENEVAL_TAGS if any(metas[i]["tag"] == t for i in firsts)]
    tags += sorted({metas[i]["tag"] for i in firsts} - set(tags))
    sections = []
    for tag in tags:
        idx = [i for i in firsts if metas[i]["tag"] == tag]
        acc = f"accuracy {summary[tag]:.3f} over {summary['tag_images'][tag]} images; " if tag in summary else ""
        sections.append((f"{tag}: {acc}first sample of {min(per_tag, len(idx))} of {len(idx)} captions",
                         idx[:per_tag]))  # fmt: skip
    return sections


def sample_grid(summary: dict, sections: list[tuple[str, list[int]]], texts: list[str] | None = None,
                columns: int = 8, scale: int = 3, lines: int = 3) -> Image.Image:  # fmt: skip
    """The images of ``sections`` ((header, indices into ``summary["_images"]``) pairs, one block of rows each),
    every tile upscaled ``scale``x with its pass/fail mark (``summary["_correct"]``) and its text: ``texts`` (one
    per image of the summary; at most ``lines`` wrapped lines) or, by default, its caption
    (maskgrpo.observe.labelled_grid)."""
    images, metas, correct = summary["_images"], summary["_metas"], summary["_correct"]
    if texts is None:
        texts = [m["prompt"].removeprefix("a photo of ") for m in metas]
    order: list[int] = []  # the images in drawing order; each section then indexes its own slice of them
    local = []
    for head, idx in sections:
        local.append((head, list(range(len(order), len(order) + len(idx)))))
        order += idx
    return labelled_grid(images[order], [texts[i] for i in order], [correct[i] for i in order], local, columns,
                         scale, lines)  # fmt: skip


def write_eval(summary: dict, out_dir: str | Path, name: str) -> None:
    """``<name>.json`` (numbers), ``<name>.md`` (table) and ``<name>_samples.png``: per tag, the first image of up
    to 8 captions, each with its caption and pass/fail mark (:func:`tag_sections`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(
        json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}, indent=1)
    )
    (out / f"{name}.md").write_text(summary["table"] + "\n")
    images = summary.get("_images")
    if images is not None and len(images):
        sample_grid(summary, tag_sections(summary)).save(out / f"{name}_samples.png")
