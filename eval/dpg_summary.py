"""Summarize ELLA's DPG-Bench output: ``python -m eval.dpg_summary RESULTS_TXT [--csv CSV --detail DETAIL_TXT]``.

Input: the ``--res-path`` file of ELLA's ``compute_dpg_bench.py`` (docs/benchmarks.md section 2, "Output")::

    <image path>, <crop 1>, ..., <crop k>, <image mean>     one line per scored image, any order (all ranks)
    Model: <folder name>
    L1 category scores:
    \t<l1>: <score x 100>
    L2 category scores:
    \t<l2>: <score x 100>
    Image path: ... / Save results to: ...
    DPG-Bench score: <score x 100>

What it reports:
- ``dpg``: mean over the per-image lines x 100, recomputed, next to the reported value (they should agree); each
  line's mean is also recomputed from its crops. ``dpg_missing_as_zero`` divides by 1065 instead.
- Scored images against 1065 and the missing ids (from ``--prompts``, else from the image folder when it is
  readable). ELLA skips failed or stray files instead of scoring them 0; ``partiprompts97`` fails by ELLA
  issue #61 (its first CSV row is dropped), which is flagged.
- L1 / L2 category scores as reported, labelled for what they are: **last crop only, answers before dependency
  zeroing** (ELLA issue #60). With ``--csv`` (ELLA's dpg_bench.csv) and ``--detail`` (the ``_detail.txt`` next to
  the results), an all-crops recompute: per crop, 'yes' = 1, a question is zeroed when a parent scored 0 (CSV
  order, so chains propagate); categories averaged over every crop, both before and after zeroing.
- The grid check: every PNG of the image folder must be 2R x 2R (R from ``--resolution`` or the ``OUT.json``
  sidecar written by ``eval.dpg_generate``); a wrong R makes the scorer crop black padding.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

DPG_ITEMS = 1065
"""Prompts in DPG-Bench."""
ISSUE_61_ID = "partiprompts97"
"""The item ELLA's ``prepare_dpg_data`` breaks by skipping CSV row 0 (issue #61)."""
CATEGORY_NOTE = "last crop only, answers before dependency zeroing (ELLA issue #60)"


@dataclass(frozen=True)
class ImageLine:
    """One per-image line: the path as written, its key (``basename.split('.')[0]``), crop scores and mean."""

    path: str
    key: str
    crops: tuple[float, ...]
    mean: float


def image_key(path: str) -> str:
    """ELLA's item key of an image path: the basename up to its first dot."""
    return path.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_results(path: str | Path) -> dict:
    """Parse a results txt: ``{"images": [ImageLine], "l1": {cat: x100}, "l2": {...}, "reported": float | None,
    "model", "image_path", "unparsed": [lines]}``."""
    out: dict = {"images": [], "l1": {}, "l2": {}, "reported": None, "model": None, "image_path": None,
                 "unparsed": []}  # fmt: skip
    section = None
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("L1 category scores:"):
            section = "l1"
        elif line.startswith("L2 category scores:"):
            section = "l2"
        elif line.startswith("\t") and section is not None and ": " in line:
            cat, value = line.strip().rsplit(": ", 1)
            out[section][cat] = float(value)
        elif line.startswith("DPG-Bench score:"):
            out["reported"] = float(line.split(":", 1)[1])
            section = None
        elif line.startswith(("Model: ", "Image path: ", "Save results to: ")):
            key = {"Model": "model", "Image path": "image_path", "Save results to": None}[line.split(": ", 1)[0]]
            if key:
                out[key] = line.split(": ", 1)[1].strip()
            section = None
        else:
            parts = line.split(", ")
            nums: list[float] = []
            while len(parts) > 1 and (v := _float(parts[-1])) is not None:
                nums.insert(0, v)
                parts.pop()
            if len(nums) >= 2:
                p = ", ".join(parts)
                out["images"].append(ImageLine(path=p, key=image_key(p), crops=tuple(nums[:-1]), mean=nums[-1]))
            else:
                out["unparsed"].append(line)
    return out


# ----------------------------------------------------------------------------------------------------------------
# All-crops recompute from the CSV and the detail file
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ItemQuestions:
    """The questions of one item in CSV order: qid -> question text, parent qids (0 = none), L2 category."""

    question: dict[int, str]
    parents: dict[int, list[int]]
    category: dict[int, str]


def read_question_csv(path: str | Path) -> dict[str, ItemQuestions]:
    """ELLA's ``dpg_bench.csv`` (every row, row 0 included) -> item_id -> :class:`ItemQuestions`.

    L2 category = ``tuple.split('(')[0].strip()``; L1 = the L2 up to its first ``-``.
    """
    items: dict[str, ItemQuestions] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            item = items.setdefault(row["item_id"], ItemQuestions({}, {}, {}))
            qid = int(row["proposition_id"])
            item.question[qid] = row["question_natural_language"]
            item.parents[qid] = [int(p.strip()) for p in str(row["dependency"]).split(",") if p.strip()]
            item.category[qid] = row["tuple"].split("(")[0].strip()
    return items


_DETAIL_RE = re.compile(r"^(?P<path>.*?), \((?P<crop>\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*)\), (?P<rest>.*)$")


def parse_detail(path: str | Path) -> dict[str, dict[tuple[int, ...], list[tuple[str, str]]]]:
    """``_detail.txt`` lines ``path, (x0, y0, x1, y1), question, answer`` -> image path -> crop -> [(q, a)]."""
    out: dict[str, dict[tuple[int, ...], list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = _DETAIL_RE.match(line)
        if m is None or ", " not in m.group("rest"):
            raise ValueError(f"{path}:{n}: not a detail line 'path, (x0, y0, x1, y1), question, answer'")
        crop = tuple(int(v) for v in m.group("crop").split(","))
        question, answer = m.group("rest").rsplit(", ", 1)
        out[m.group("path")][crop].append((question, answer))
    return out


def score_crop(item: ItemQuestions, qa: list[tuple[str, str]]) -> tuple[dict[int, float], dict[int, float], int]:
    """One crop: (raw scores, zeroed scores, unmatched questions), each keyed by qid of the questions asked.

    raw[q] = 1 iff the answer is exactly 'yes'. zeroed: walk the asked qids in CSV order and set a question to 0
    when any asked parent (id != 0) is 0 by then, so zeros propagate down chains. A detail question is matched to
    the first unused qid with the same text; parents that were not asked are ignored.
    """
    raw: dict[int, float] = {}
    unmatched = 0
    for question, answer in qa:
        qid = next((q for q, text in item.question.items() if text == question and q not in raw), None)
        if qid is None:
            unmatched += 1
            continue
        raw[qid] = float(answer == "yes")
    zeroed = dict(raw)
    for qid in [q for q in item.question if q in raw]:  # CSV order
        if any(p != 0 and p in zeroed and zeroed[p] == 0 for p in item.parents[qid]):
            zeroed[qid] = 0.0
    return raw, zeroed, unmatched


def all_crops_recompute(questions: dict[str, ItemQuestions], detail: dict, scored: dict[str, int]) -> dict:
    """DPG and L1 / L2 category scores (x100) over every crop of the images that have a results line.

    scored: image path -> number of crops of its results line (images with fewer detail crops are skipped and
    listed). Returns ``{"dpg", "images", "l1_raw", "l2_raw", "l1_zeroed", "l2_zeroed", "skipped", "unmatched"}``.
    """
    per_image: list[float] = []
    cats_raw: dict[str, list[float]] = defaultdict(list)
    cats_zero: dict[str, list[float]] = defaultdict(list)
    skipped, unmatched = [], 0
    for path, n_crops in sorted(scored.items()):
        crops = detail.get(path, {})
        key = image_key(path)
        if key not in questions or len(crops) < n_crops:
            skipped.append(key)
            continue
        item = questions[key]
        crop_scores = []
        for qa in crops.values():
            raw, zeroed, bad = score_crop(item, qa)
            unmatched += bad
            crop_scores.append(sum(zeroed.values()) / len(zeroed) if zeroed else 0.0)
            for qid in raw:
                cats_raw[item.category[qid]].append(raw[qid])
                cats_zero[item.category[qid]].append(zeroed[qid])
        per_image.append(sum(crop_scores) / len(crop_scores))

    def level(cats: dict[str, list[float]], l1: bool) -> dict[str, float]:
        groups: dict[str, list[float]] = defaultdict(list)
        for cat, v in cats.items():
            groups[cat.split("-")[0].strip() if l1 else cat].extend(v)
        return {c: 100 * sum(v) / len(v) for c, v in sorted(groups.items())}

    return {
        "dpg": 100 * sum(per_image) / len(per_image) if per_image else math.nan,
        "images": len(per_image),
        "l1_raw": level(cats_raw, True),
        "l2_raw": level(cats_raw, False),
        "l1_zeroed": level(cats_zero, True),
        "l2_zeroed": level(cats_zero, False),
        "skipped": skipped,
        "unmatched": unmatched,
    }


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------


def check_grids(image_dir: Path, tile: int) -> dict:
    """Every file of the scored folder: PNGs must be (2R, 2R); anything else is a stray the scorer would skip."""
    from PIL import Image

    wrong, stray = {}, []
    for f in sorted(image_dir.iterdir()):
        if f.name.startswith(".") or f.is_dir():
            continue
        if f.suffix.lower() != ".png":
            stray.append(f.name)
            continue
        with Image.open(f) as im:
            if im.size != (2 * tile, 2 * tile):
                wrong[f.name] = list(im.size)
    return {"tile_size": tile, "grid_size": 2 * tile, "wrong_size": wrong, "stray_files": stray}


def summarize_dpg(
    results: str | Path,
    expected_ids: list[str] | None = None,
    image_dir: str | Path | None = None,
    resolution: int | None = None,
    csv_path: str | Path | None = None,
    detail_path: str | Path | None = None,
) -> dict:
    """Everything the module docstring lists, as a JSON-ready dict (scores x 100, like ELLA's output)."""
    parsed = parse_results(results)
    images: list[ImageLine] = parsed["images"]
    warnings: list[str] = []
    if not images:
        raise ValueError(f"{results}: no per-image lines found (is this ELLA's dpg-bench_*_results.txt?)")
    keys = Counter(im.key for im in images)
    dpg = 100 * sum(im.mean for im in images) / len(images)
    line_diff = max(abs(sum(im.crops) / len(im.crops) - im.mean) for im in images)
    crops_per_image = sorted({len(im.crops) for im in images})
    if crops_per_image != [4]:
        warnings.append(f"crops per image {crops_per_image}: dist_eval.sh scores 4 (PIC_NUM=4); the Python "
                        f"default --pic-num 1 scores the top-left tile only")  # fmt: skip

    if image_dir is None and parsed["image_path"] and Path(parsed["image_path"]).is_dir():
        image_dir = parsed["image_path"]
    folder_ids = None
    if image_dir is not None and Path(image_dir).is_dir():
        folder_ids = sorted({image_key(f.name) for f in Path(image_dir).glob("*.png")})
    reference = expected_ids if expected_ids is not None else folder_ids
    n_expected = len(expected_ids) if expected_ids is not None else DPG_ITEMS
    missing = sorted(set(reference) - set(keys)) if reference is not None else None
    if len(keys) != n_expected:
        warnings.append(f"{len(keys)} distinct images scored, expected {n_expected}: ELLA skips failed or stray "
                        f"files instead of scoring them 0, so the DPG score is over {len(images)} images")  # fmt: skip
    dupes = {k: c for k, c in keys.items() if c > 1}
    if dupes:
        warnings.append(f"items scored more than once (two files with the same key): {dict(list(dupes.items())[:10])}")
    if expected_ids is not None:
        stray = sorted(set(keys) - set(expected_ids))
        if stray:
            warnings.append(f"scored keys that are not DPG items: {stray[:10]}")
    if ISSUE_61_ID not in keys:
        issue61 = (
            f"{ISSUE_61_ID} was not scored: ELLA issue #61 (prepare_dpg_data skips CSV row 0, the first "
            f"question of {ISSUE_61_ID}; when it is a parent the item raises 'Failed filename' and is skipped)"
        )
    else:
        issue61 = f"{ISSUE_61_ID} was scored without its first question (ELLA issue #61: CSV row 0 is skipped)"
    warnings.append(issue61)

    reported = parsed["reported"]
    summary = {
        "results_file": str(results),
        "scored_images": len(images),
        "distinct_items": len(keys),
        "expected_images": n_expected,
        "missing_ids": missing,
        "crops_per_image": crops_per_image,
        "dpg": dpg,
        "dpg_reported": reported,
        "dpg_abs_diff": abs(dpg - reported) if reported is not None else None,
        "dpg_missing_as_zero": 100 * sum(im.mean for im in images) / n_expected,
        "line_mean_max_abs_diff": line_diff,
        "l1": parsed["l1"],
        "l2": parsed["l2"],
        "category_note": CATEGORY_NOTE,
        "partiprompts97": issue61,
        "grid_check": None,
        "all_crops": None,
        "unparsed_lines": parsed["unparsed"],
        "warnings": warnings,
    }
    if reported is None:
        warnings.append("no 'DPG-Bench score:' line: the run did not finish, or this is not a results file")
    elif summary["dpg_abs_diff"] > 1e-6:
        warnings.append(f"recomputed DPG {dpg:.6f} differs from the reported {reported:.6f}")
    if line_diff > 1e-9:
        warnings.append(f"a per-image mean differs from the mean of its crops by up to {line_diff:.3g}")

    if resolution is None and image_dir is not None:
        sidecar = Path(image_dir).parent / f"{Path(image_dir).name}.json"
        if sidecar.is_file():
            resolution = int(json.loads(sidecar.read_text())["tile_size"])
    if resolution is not None and image_dir is not None and Path(image_dir).is_dir():
        summary["grid_check"] = check_grids(Path(image_dir), resolution)
        if summary["grid_check"]["wrong_size"]:
            warnings.append(f"images that are not {2 * resolution}x{2 * resolution} (a wrong R crops black padding):"
                            f" {list(summary['grid_check']['wrong_size'])[:10]}")  # fmt: skip
        if summary["grid_check"]["stray_files"]:
            warnings.append(f"non-PNG files in the image folder: {summary['grid_check']['stray_files'][:10]}")

    if csv_path is not None and detail_path is not None:
        detail = parse_detail(detail_path)
        if resolution is not None:
            bad = {c for crops in detail.values() for c in crops if c[2] - c[0] != resolution}
            if bad:
                warnings.append(f"detail crops {sorted(bad)[:4]} are not {resolution} wide: scored with another R")
        scored = {im.path: len(im.crops) for im in images}
        summary["all_crops"] = all_crops_recompute(read_question_csv(csv_path), detail, scored)
        ac = summary["all_crops"]
        if ac["images"] == len(images) and abs(ac["dpg"] - dpg) > 1e-6:
            warnings.append(f"DPG recomputed from the detail file ({ac['dpg']:.4f}) differs from the per-image "
                            f"lines ({dpg:.4f})")  # fmt: skip
    return summary


def format_summary(s: dict) -> str:
    """Human-readable report of :func:`summarize_dpg`."""
    rep = "n/a" if s["dpg_reported"] is None else f"{s['dpg_reported']:.4f}"
    lines = [
        f"DPG-Bench: {s['dpg']:.4f} (recomputed from {s['scored_images']} per-image lines; reported {rep})",
        f"Scored images: {s['distinct_items']} / {s['expected_images']} "
        f"(DPG with missing images as 0: {s['dpg_missing_as_zero']:.4f})",
    ]
    if s["missing_ids"]:
        lines.append(f"Missing ids ({len(s['missing_ids'])}): {', '.join(s['missing_ids'][:20])}"
                     f"{' ...' if len(s['missing_ids']) > 20 else ''}")  # fmt: skip
    for level in ("l1", "l2"):
        if s[level]:
            lines += [
                "",
                f"{level.upper()} category scores ({CATEGORY_NOTE}):",
                "| category | score |",
                "| --- | ---: |",
            ]
            lines += [f"| {c} | {v:.2f} |" for c, v in s[level].items()]
    ac = s["all_crops"]
    if ac:
        lines += ["", f"All-crops recompute from CSV + detail ({ac['images']} images): DPG {ac['dpg']:.4f}",
                  "| L1 category | raw answers | after zeroing |", "| --- | ---: | ---: |"]  # fmt: skip
        lines += [f"| {c} | {v:.2f} | {ac['l1_zeroed'][c]:.2f} |" for c, v in ac["l1_raw"].items()]
        lines += ["", "| L2 category | raw answers | after zeroing |", "| --- | ---: | ---: |"]
        lines += [f"| {c} | {v:.2f} | {ac['l2_zeroed'][c]:.2f} |" for c, v in ac["l2_raw"].items()]
    if s["grid_check"]:
        g = s["grid_check"]
        lines.append(f"\nGrid check: R = {g['tile_size']}, {len(g['wrong_size'])} images not {g['grid_size']}px")
    lines += [""] + [f"warning: {w}" for w in s["warnings"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="ELLA's dpg-bench_<timestamp>_results.txt")
    ap.add_argument("--prompts", default=None, help="dpg_bench.jsonl, for the list of expected item ids")
    ap.add_argument("--images", default=None, help="the scored image folder (default: 'Image path:' of the file)")
    ap.add_argument("--resolution", type=int, default=None, help="tile size R (default: from the OUT.json sidecar)")
    ap.add_argument("--csv", default=None, help="ELLA's dpg_bench.csv, for the all-crops recompute (with --detail)")
    ap.add_argument("--detail", default=None, help="the _detail.txt next to the results (with --csv)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a report")
    args = ap.parse_args(argv)
    if (args.csv is None) != (args.detail is None):
        ap.error("--csv and --detail go together")
    expected = None
    if args.prompts:
        expected = [json.loads(x)["item_id"] for x in Path(args.prompts).read_text().splitlines() if x.strip()]
    s = summarize_dpg(args.results, expected, args.images, args.resolution, args.csv, args.detail)
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
