"""Summarize the official GenEval evaluator's ``results.jsonl``: ``python -m eval.geneval_summary RESULTS [--json]``.

Computes what GenEval's ``evaluation/summary_scores.py`` computes (docs/benchmarks.md section 1, "Summary")::

    images          = number of lines (one per image)
    prompts         = number of distinct ``metadata`` strings
    correct_images  = mean over images of ``correct``
    correct_prompts = mean over prompts of any(correct of its images)
    acc[tag]        = mean of ``correct`` over the images of that tag
    overall         = unweighted mean of acc[tag] over the tags present (each tag counts once, whatever its size)

Differences from upstream, all reporting only: tags come in the canonical order (single_object, two_object,
counting, colors, position, color_attr), and a warning is printed for a missing tag (overall then averages fewer
tags, as upstream does silently), for a prompt count other than 553 and for prompts without exactly 4 images.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from maskgrpo.jsonl import iter_jsonl
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS, summarize_tags

OFFICIAL_PROMPTS = 553
"""Prompts in the official ``evaluation_metadata.jsonl``."""
OFFICIAL_IMAGES_PER_PROMPT = 4
"""Images per prompt in the official protocol."""


def _as_bool(value: object, where: str) -> bool:
    """``correct`` as written by the evaluator (a JSON bool); 0/1 and "true"/"false" are accepted too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{where}: 'correct' must be a boolean, got {value!r}")


def read_results(path: str | Path) -> list[dict]:
    """The records of a ``results.jsonl`` (needs ``tag``, ``correct`` and ``metadata`` on every line)."""
    records = []
    for n, rec, _ in iter_jsonl(path):
        missing = [k for k in ("tag", "correct", "metadata") if k not in rec]
        if missing:
            raise ValueError(f"{path}:{n}: missing keys {missing} (is this GenEval's results.jsonl?)")
        rec["correct"] = _as_bool(rec["correct"], f"{path}:{n}")
        records.append(rec)
    return records


def summarize_results(records: list[dict]) -> dict:
    """The official summary numbers of :func:`read_results` records, plus per-tag counts and warnings.

    Returns ``{"images", "prompts", "correct_images", "correct_prompts", "tags": {tag: {"accuracy", "correct",
    "images", "prompts"}}, "overall", "warnings"}`` with fractions in [0, 1]; tags in canonical order.
    """
    by_prompt: dict[str, list[bool]] = defaultdict(list)
    tag_of_prompt: dict[str, str] = {}
    for rec in records:
        by_prompt[rec["metadata"]].append(rec["correct"])
        tag_of_prompt[rec["metadata"]] = rec["tag"]
    with warnings.catch_warnings():  # the missing-tag warning is issued below, in the returned list
        warnings.simplefilter("ignore")
        acc = summarize_tags((rec["tag"], rec["correct"]) for rec in records)
    tags = {}
    for tag in GENEVAL_TAGS:
        if tag in acc:
            hits = [rec["correct"] for rec in records if rec["tag"] == tag]
            n_prompts = sum(1 for t in tag_of_prompt.values() if t == tag)
            tags[tag] = {"accuracy": acc[tag], "correct": sum(hits), "images": len(hits), "prompts": n_prompts}
    n_images = len(records)
    summary = {
        "images": n_images,
        "prompts": len(by_prompt),
        "correct_images": sum(r["correct"] for r in records) / n_images if n_images else float("nan"),
        "correct_prompts": sum(any(v) for v in by_prompt.values()) / len(by_prompt) if by_prompt else float("nan"),
        "tags": tags,
        "overall": acc["overall"],
        "warnings": [],
    }
    missing = [t for t in GENEVAL_TAGS if t not in tags]
    if missing:
        summary["warnings"].append(f"missing tags {missing}: overall averages only the {len(tags)} present")
    if len(by_prompt) != OFFICIAL_PROMPTS:
        summary["warnings"].append(f"{len(by_prompt)} prompts, the official set has {OFFICIAL_PROMPTS}")
    per_prompt = Counter(len(v) for v in by_prompt.values())
    odd = {k: v for k, v in sorted(per_prompt.items()) if k != OFFICIAL_IMAGES_PER_PROMPT}
    if odd:
        summary["warnings"].append(
            f"{sum(odd.values())} prompts do not have {OFFICIAL_IMAGES_PER_PROMPT} images "
            f"(images per prompt -> prompts: {odd})"
        )
    return summary


def format_summary(s: dict) -> str:
    """Human-readable report: totals, the per-tag table in canonical order, overall, warnings."""
    lines = [
        f"Images: {s['images']}",
        f"Prompts: {s['prompts']}",
        f"% correct images: {100 * s['correct_images']:.2f}%",
        f"% correct prompts: {100 * s['correct_prompts']:.2f}%",
        "",
        "| tag | accuracy | correct / images | prompts |",
        "| --- | ---: | ---: | ---: |",
    ]
    for tag, t in s["tags"].items():
        lines.append(f"| {tag} | {t['accuracy']:.4f} | {t['correct']} / {t['images']} | {t['prompts']} |")
    lines.append(f"| **overall** (mean of {len(s['tags'])} tags) | **{s['overall']:.4f}** | | |")
    lines += [f"warning: {w}" for w in s["warnings"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results.jsonl written by GenEval's evaluation/evaluate_images.py")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    args = ap.parse_args(argv)
    summary = summarize_results(read_results(args.results))
    if args.json:
        print(json.dumps(summary, indent=1))
        for w in summary["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
    else:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
