"""GenEval's decision rules and the reward-server partial-credit reward, numpy-only and detector-agnostic.

Both the official GenEval path (Mask2Former boxes + CLIP colours, run elsewhere) and the ShapesWorld evaluator
(colour-segmentation "detector", nearest-palette colours) feed :class:`Detection` lists into the same functions, so
the two report the same table. Source of every rule: docs/benchmarks.md section 1.

Pipeline for one image::

    det = filter_detections(raw, metadata)              # per class: score > T, sort, top max_objects, NMS, drop empty
    correct, reason = evaluate(metadata, raw, colours)  # official yes/no (calls filter_detections itself)
    pc = partial_credit(metadata, raw, colours)         # reward-server partial credit (mean of terms)
    summarize_tags([(tag, correct), ...])               # per-tag accuracy + overall = unweighted mean of tags

Conventions: boxes are ``(x0, y0, x1, y1)`` in pixels with y pointing down, so "above" means a smaller y.
``classify_colors(cls, dets)`` returns one colour name per detection; how it gets the pixels (CLIP on a masked
crop, nearest palette colour) is the caller's business, typically a closure over the image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GENEVAL_TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""The six GenEval tags in the canonical (table) order."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
"""Every relation :func:`relpos` can report; the ``rel`` of a ``position`` clause is one of these."""

PARTIAL_CREDIT_VARIANTS: tuple[str, ...] = ("reward_server", "clipped")
"""``reward_server``: upstream terms exactly (unclipped count term, stray 1 after a position check).
``clipped``: every term in [0, 1] and no stray 1 (ShapesWorld uses this)."""


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected object of one class.

    box:   (x0, y0, x1, y1) floats, pixels, y down. A reversed box (x1 < x0) is read as the official code reads
           it: sizes are |x1 - x0| in :func:`relpos` (its ``abs()``), IoU uses the raw corners.
    score: detector confidence; compared with the thresholds by strict ``>``.
    mask:  (H, W) bool instance mask, or None (only the colour classifier may use it).
    dtype: the detector's float dtype, read from ``box`` and ``score`` (a row of a float32 detector array gives
           float32; Python numbers give float64). Thresholds, IoU and relative positions are computed in it, as
           the official code does on the detector's arrays; ``box`` and ``score`` hold the values exactly.

    ``eq=False``: equality and hashing are by identity, so a detection can key a dict (e.g. in a test's colour
    table) even though it holds an array.
    """

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None
    dtype: np.dtype = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.box) != 4:
            raise ValueError(f"Detection.box must be (x0, y0, x1, y1), got {self.box!r}")
        object.__setattr__(self, "dtype", float_dtype(self.box, self.score))
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))


def float_dtype(*values: object) -> np.dtype:
    """The float dtype numpy computes ``values`` in (float32 for float32 detector arrays); float64 if not a float."""
    dt = np.result_type(*(np.asarray(v).dtype for v in values))
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64)


@dataclass(frozen=True)
class GenEvalThresholds:
    """The knobs of GenEval's ``evaluate_images.py`` (its ``--options``), with the official defaults."""

    threshold: float = 0.3
    """Keep a detection iff ``score > threshold`` (strict), for prompts whose tag is not ``counting``."""
    counting_threshold: float = 0.9
    """Replaces ``threshold`` for every class of a ``counting`` prompt."""
    max_objects: int = 16
    """Per class, keep at most this many detections (the highest-scoring ones)."""
    max_overlap: float = 1.0
    """Greedy box-IoU NMS drops a detection whose IoU (official +1 pixel areas) with a kept one is >= max_overlap;
    skipped when >= 1."""
    position_threshold: float = 0.1
    """The shift ``s`` of :func:`relpos`: each axis offset is shrunk by s * (sum of the two box sizes)."""

    def __post_init__(self) -> None:
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1 (GenEval uses 16), got {self.max_objects}")
        if self.max_overlap < 0:
            raise ValueError(f"max_overlap must be >= 0 (1.0 disables NMS), got {self.max_overlap}")
        if self.position_threshold < 0:
            raise ValueError(f"position_threshold must be >= 0 (GenEval uses 0.1), got {self.position_threshold}")


ClassifyColors = Callable[[str, list[Detection]], list[str]]
"""``(class name, detections) -> colour name per detection`` (same length and order as the detections)."""


@dataclass(frozen=True)
class PartialCredit:
    """The reward-server GenEval reward for one image.

    score:          mean of ``terms`` (0.0 if there are none).
    strict_correct: upstream's ``correct``: no failure of any kind (count, colour or position) in any clause.
    terms:          the individual terms in the order they were added (see :func:`partial_credit`).
    """

    score: float
    strict_correct: bool
    terms: tuple[float, ...]


# ----------------------------------------------------------------------------------------------------------------
# Step 1: filtering
# ----------------------------------------------------------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float], dtype: np.dtype) -> float:
    """GenEval's IoU of two (x0, y0, x1, y1) boxes in ``dtype``: pixel-inclusive areas (w + 1)(h + 1), each side
    clamped at 0; 0 when the union is 0. Test: [0,0,9,9] vs [5,0,14,9] -> 50 / 150 = 1/3."""
    x, y = np.asarray(a[:4], dtype), np.asarray(b[:4], dtype)  # (4,) each

    def area(x0, y0, x1, y1):  # noqa: ANN001, ANN202  (numpy scalars of dtype)
        return max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)

    inter = area(max(x[0], y[0]), max(x[1], y[1]), min(x[2], y[2]), min(x[3], y[3]))
    union = area(*x) + area(*y) - inter
    return float(inter / union) if union else 0.0


def _greedy_nms(dets: list[Detection], max_overlap: float) -> list[Detection]:
    """Walk ``dets`` (already sorted by score, descending); keep one unless IoU >= max_overlap with a kept one
    (official rule: survivors have IoU < max_overlap), computed in the detections' dtype."""
    kept: list[Detection] = []
    for det in dets:
        dt = det.dtype
        if all(dt.type(box_iou(det.box, o.box, dt)) < dt.type(max_overlap) for o in kept):
            kept.append(det)
    return kept


def filter_detections(
    detections: dict[str, list[Detection]],
    metadata: dict,
    thresholds: GenEvalThresholds = GenEvalThresholds(),
) -> dict[str, list[Detection]]:
    """GenEval step 1: per class keep ``score > T``, sort descending, keep ``max_objects``, NMS, drop empty classes.

    T = ``counting_threshold`` for every class when ``metadata["tag"] == "counting"``, else ``threshold``; the
    comparison is in the detection's dtype (a float32 score of 0.3 is not > 0.3). NMS (greedy, box IoU) runs only
    when ``max_overlap < 1``. The sort is stable, so equal scores keep input order.
    Returns a new dict; the input lists are not modified.
    """
    t = thresholds.counting_threshold if metadata["tag"] == "counting" else thresholds.threshold
    out: dict[str, list[Detection]] = {}
    for cls, dets in detections.items():
        kept = sorted((d for d in dets if d.dtype.type(d.score) > d.dtype.type(t)), key=lambda d: d.score,
                      reverse=True)  # fmt: skip
        kept = kept[: thresholds.max_objects]
        if thresholds.max_overlap < 1:
            kept = _greedy_nms(kept, thresholds.max_overlap)
        if kept:
            out[cls] = kept
    return out


# ----------------------------------------------------------------------------------------------------------------
# Relative position
# ----------------------------------------------------------------------------------------------------------------


def relpos(box_a: Sequence[float], box_b: Sequence[float], shift: float = 0.1, dtype: np.dtype | None = None
           ) -> set[str]:  # fmt: skip
    """Relations of box A with respect to box B, GenEval's rule with the shift ``s``.

    Formula (per axis, x and y; y points down), computed in ``dtype`` (None: the boxes' own float dtype, float64
    for Python numbers; the official code computes in the detector's float32)::

        off = centre(A) - centre(B)                      # (2,)
        rev = sign(off) * max(|off| - s * (dA + dB), 0)  # dA, dB = (|x1 - x0|, |y1 - y0|) of each box
        if all(|rev| < 1e-3): return {}
        (dx, dy) = rev / ||off||                         # divided by the ORIGINAL offset's norm
        {"left of": dx < -.5, "right of": dx > .5, "above": dy < -.5, "below": dy > .5}

    Only the first four entries of each box are read, so ``[x0, y0, x1, y1, score]`` rows work too.
    Example: A = [0,0,10,10], B = [30,0,40,10]: off = (-30, 0), rev = (-28, 0), dx = -0.93 -> {"left of"}.
    """
    dt = float_dtype(box_a[:4], box_b[:4]) if dtype is None else np.dtype(dtype)
    a = np.asarray(box_a[:4], dtype=dt)  # (4,)
    b = np.asarray(box_b[:4], dtype=dt)  # (4,)
    off = (a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2  # (2,) centre(A) - centre(B)
    size_sum = np.abs(a[2:] - a[:2]) + np.abs(b[2:] - b[:2])  # (2,) dA + dB, reversed boxes read as the official
    rev = np.sign(off) * np.maximum(np.abs(off) - dt.type(shift) * size_sum, 0)  # (2,)
    if np.all(np.abs(rev) < 1e-3):
        return set()
    # rev != 0 implies off != 0, so the norm is positive here.
    dx, dy = rev / np.linalg.norm(off)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def _first_position_failure(
    found: list[Detection], targets: list[Detection], rel: str, shift: float
) -> tuple[Detection, Detection, set[str]] | None:
    """The first pair (obj, target) with ``rel not in relpos(obj, target)``, or None if every pair holds."""
    for obj in found:
        for target in targets:
            rels = relpos(obj.box, target.box, shift, np.result_type(obj.dtype, target.dtype))
            if rel not in rels:
                return obj, target, rels
    return None


def _colours(classify_colors: ClassifyColors, cls: str, found: list[Detection]) -> list[str]:
    """Call the colour classifier and check it answered once per detection."""
    colours = list(classify_colors(cls, found))
    if len(colours) != len(found):
        raise ValueError(f"classify_colors returned {len(colours)} colours for {len(found)} {cls!r} detections")
    return colours


def _count(clause: dict) -> int:
    """The clause's required count, which every rule divides by or slices with, so it must be >= 1."""
    n = int(clause["count"])
    if n < 1:
        raise ValueError(f"clause count must be >= 1, got {clause!r}")
    return n


# ----------------------------------------------------------------------------------------------------------------
# Steps 2-4: the official yes/no
# ----------------------------------------------------------------------------------------------------------------


def evaluate(
    metadata: dict,
    detections: dict[str, list[Detection]],
    classify_colors: ClassifyColors,
    thresholds: GenEvalThresholds = GenEvalThresholds(),
) -> tuple[bool, str]:
    """GenEval's verdict for one image: ``(correct, "\\n".join(reasons))``; reasons are empty when correct.

    ``detections`` are raw (unfiltered); :func:`filter_detections` is applied here.
    Include clauses are ANDed. For ``{"class", "count": n, ["color"], ["position": [rel, g]]}``:
      found = det[cls][:n] (top-n by score); fail if len(found) < n (extra detections are fine);
      with a colour, fail if fewer than n of ``found`` are classified as it;
      with a position and still matched: fail if group g is None ("no target"), else every pair
      (obj in found, t in group g) needs rel in relpos(obj, t).
      Group i = ``found`` of clause i, or None if clause i failed.
    Exclude clauses are ORed: fail if len(det[cls]) >= count, counting all filtered detections.
    """
    det = filter_detections(detections, metadata, thresholds)
    correct = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for clause in metadata["include"]:
        cls, n = clause["class"], _count(clause)
        found = det.get(cls, [])[:n]
        matched = True
        if len(found) < n:
            matched = False
            reasons.append(f"expected {cls}>={n}, found {len(found)}")
        elif "color" in clause:
            colours = _colours(classify_colors, cls, found)
            m = colours.count(clause["color"])
            if m < n:
                matched = False
                reasons.append(
                    f"expected {clause['color']} {cls}>={n}, found {m} {clause['color']} (colours {colours})"
                )
        if matched and "position" in clause:
            rel, g = clause["position"]
            targets = groups[g]
            if targets is None:
                matched = False
                reasons.append(f"no target for {cls} to be {rel}")
            else:
                failure = _first_position_failure(found, targets, rel, thresholds.position_threshold)
                if failure is not None:
                    matched = False
                    obj, target, rels = failure
                    got = ", ".join(sorted(rels)) or "no clear relation"
                    reasons.append(f"expected {cls} {rel} target {list(target.box)}, found {got} at {list(obj.box)}")
        correct = correct and matched
        groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        cls, n = clause["class"], _count(clause)
        k = len(det.get(cls, []))
        if k >= n:
            correct = False
            reasons.append(f"expected {cls}<{n}, found {k}")
    return correct, "\n".join(reasons)


# ----------------------------------------------------------------------------------------------------------------
# Partial-credit reward (reward-server)
# ----------------------------------------------------------------------------------------------------------------


def partial_credit(
    metadata: dict,
    detections: dict[str, list[Detection]],
    classify_colors: ClassifyColors,
    thresholds: GenEvalThresholds = GenEvalThresholds(),
    variant: str = "reward_server",
) -> PartialCredit:
    """The reward-server GenEval reward: the mean of per-clause terms. Exclude clauses are ignored.

    For each include clause with count n and k = len(det[cls]) (ALL filtered detections of the class):
      count term 1 - |n - k| / n (unclipped in ``reward_server``: n = 1, k = 3 gives -1);
      if k != n: not strict; add ONE 0 if the clause has a colour or a position (or both); group = None;
      else: with a colour add m / n (m = detections classified as the colour; fails the clause unless m = n);
            with a position and still matched: a None target group adds 0 (clause fails); otherwise add 0 if
            any pair (obj, t) fails relpos (clause fails), then ``reward_server`` ALWAYS adds 1, while ``clipped``
            adds the 1 only when every pair passed;
            group = the k = n detections, or None if the clause failed.
    ``clipped`` also clips every term into [0, 1]. ``strict_correct`` is upstream's ``correct``: false after any
    failure (count, colour, missing target or relation). Example, two-object position prompt, both counts right,
    relation wrong: reward_server terms (1, 1, 0, 1) -> 0.75, not strict; clipped (1, 1, 0) -> 2/3.
    """
    if variant not in PARTIAL_CREDIT_VARIANTS:
        raise ValueError(
            f"unknown partial-credit variant {variant!r}; valid variants: {list(PARTIAL_CREDIT_VARIANTS)}"
        )
    clipped = variant == "clipped"
    det = filter_detections(detections, metadata, thresholds)
    terms: list[float] = []
    strict = True
    groups: list[list[Detection] | None] = []
    for clause in metadata["include"]:
        cls, n = clause["class"], _count(clause)
        found = det.get(cls, [])
        k = len(found)
        count_term = 1.0 - abs(n - k) / n
        terms.append(min(max(count_term, 0.0), 1.0) if clipped else count_term)
        if k != n:
            strict = False
            if "color" in clause or "position" in clause:
                terms.append(0.0)
            groups.append(None)
            continue
        matched = True
        if "color" in clause:
            m = _colours(classify_colors, cls, found).count(clause["color"])
            terms.append(m / n)
            matched = m == n
        if matched and "position" in clause:
            rel, g = clause["position"]
            targets = groups[g]
            if targets is None:
                terms.append(0.0)
                matched = False
            else:
                matched = _first_position_failure(found, targets, rel, thresholds.position_threshold) is None
                if not matched:
                    terms.append(0.0)
                if matched or not clipped:
                    terms.append(1.0)  # reward_server adds this 1 even after a failed pair
        strict = strict and matched
        groups.append(found if matched else None)
    score = sum(terms) / len(terms) if terms else 0.0
    return PartialCredit(score=score, strict_correct=strict, terms=tuple(terms))


# ----------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------


def summarize_tags(results: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """Per-tag accuracy (canonical order, only tags present) plus ``"overall"`` = unweighted mean of those.

    results: one ``(tag, correct)`` per image. Each tag counts once in the overall however many images it has,
    as in GenEval's ``summary_scores.py``. A canonical tag with no images is left out of the mean (as upstream
    does) and triggers a warning; an unknown tag raises. With no results at all, overall is NaN.
    """
    hits: dict[str, list[bool]] = {}
    for tag, correct in results:
        if tag not in GENEVAL_TAGS:
            raise ValueError(f"unknown GenEval tag {tag!r}; valid tags: {list(GENEVAL_TAGS)}")
        hits.setdefault(tag, []).append(bool(correct))
    summary = {tag: sum(hits[tag]) / len(hits[tag]) for tag in GENEVAL_TAGS if tag in hits}
    missing = [tag for tag in GENEVAL_TAGS if tag not in hits]
    if missing:
        warnings.warn(
            f"GenEval summary is missing tags {missing}; overall averages only {list(summary)}",
            stacklevel=2,
        )
    summary["overall"] = sum(summary.values()) / len(summary) if summary else math.nan
    return summary


def format_table(summary: dict[str, float]) -> str:
    """A markdown table of a :func:`summarize_tags` dict (tags in its order, overall last)."""
    lines = ["| tag | accuracy |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.3f} |" for k, v in summary.items() if k != "overall"]
    if "overall" in summary:
        lines.append(f"| **overall** | **{summary['overall']:.3f}** |")
    return "\n".join(lines)


def summarize_verdicts(metas: list[dict], correct: list[bool]) -> dict[str, Any]:
    """One verdict per image (``metas[i]``: its ``tag`` and ``prompt``) -> per-tag accuracy, ``overall`` (unweighted
    mean of the tags), ``num_images``, ``tag_images``, ``caption_correct`` (prompt -> [tag, images passed, images]:
    the eval-noise band per caption) and the markdown ``table``. ShapesEval and the GenEval-server evaluation both
    report through it."""
    summary = summarize_tags((m["tag"], c) for m, c in zip(metas, correct))
    captions: dict[str, list] = {}
    for m, c in zip(metas, correct):
        entry = captions.setdefault(m["prompt"], [m["tag"], 0, 0])
        entry[1] += int(c)
        entry[2] += 1
    out: dict[str, Any] = {k: float(v) for k, v in summary.items()}
    out["num_images"] = len(correct)
    out["tag_images"] = {t: sum(m["tag"] == t for m in metas) for t in GENEVAL_TAGS if t in summary}
    out["caption_correct"] = captions
    out["table"] = format_table(summary)
    return out
