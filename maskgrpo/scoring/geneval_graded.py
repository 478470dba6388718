"""A graded GenEval verdict: GenEval's own checks, each scored in [0, 1], exclude clauses charged.

The reward-server partial credit (``geneval_rules.partial_credit``) tracks GenEval's verdict badly in two ways
(docs/benchmarks.md section 1): it ignores exclude clauses, so a counting image with one object too many still earns
1 - 1/n of its count term although GenEval fails it; and it counts ALL detections of a class where GenEval reads
only the top-``count`` ones, so an extra object of a named class zeroes the colour / position terms of an image
GenEval accepts. The graded verdict scores exactly the checks of ``geneval_rules.evaluate`` instead:

    include clause (class, n, [colour], [position (rel, g)]), found = det[class][:n] (top-n by score):
        count term     len(found) / n                   1 iff GenEval's "found >= n"
        colour term    (# of found with the colour) / n  1 iff GenEval's colour check passes
        position term  fraction of pairs (obj in found, t in found of clause g) with rel in relpos(obj, t);
                       0 when either side is empty      1 iff every pair passes (GenEval's rule)
    exclude clause (class, n): term = 1 if len(det[class]) < n else 0   (GenEval's rule 3: the surplus count)
    score = mean of the terms

Every term is 1 exactly when its GenEval check passes, so score == 1 if and only if GenEval calls the image
correct (tests/test_geneval_graded.py checks the equivalence on rendered and broken ShapesWorld scenes); below 1
the score says how many checks pass. The position term grades against the target clause's found objects even when
that clause failed (GenEval then reports "no target"; the failed clause already holds the score below 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from maskgrpo.scoring.geneval_rules import (
    ClassifyColors,
    Detection,
    GenEvalThresholds,
    filter_detections,
    relpos,
)


@dataclass(frozen=True)
class GradedVerdict:
    """score: mean of ``terms`` in [0, 1]; terms: one per check, in clause order (includes, then excludes)."""

    score: float
    terms: tuple[float, ...]


def graded_verdict(
    metadata: dict,
    detections: dict[str, list[Detection]],
    classify_colors: ClassifyColors,
    thresholds: GenEvalThresholds = GenEvalThresholds(),
) -> GradedVerdict:
    """GenEval's checks graded in [0, 1] (formula in the module docstring); ``detections`` are raw (unfiltered).

    Example, counting "two circles" (exclude circle >= 3) with three confident circles: count 2/2 = 1, exclude 0
    -> score 0.5 (partial credit: 1 - 1/2 = 0.5 and no exclude term); GenEval: incorrect.
    Test: tests/test_geneval_graded.py::test_graded_verdict_hand_computed.
    """
    det = filter_detections(detections, metadata, thresholds)
    terms: list[float] = []
    groups: list[list[Detection]] = []
    for clause in metadata["include"]:
        cls, n = clause["class"], int(clause["count"])
        if n < 1:
            raise ValueError(f"clause count must be >= 1, got {clause!r}")
        found = det.get(cls, [])[:n]
        terms.append(len(found) / n)
        if "color" in clause:
            colours = list(classify_colors(cls, found)) if found else []
            if len(colours) != len(found):
                raise ValueError(f"classify_colors returned {len(colours)} colours for {len(found)} {cls!r} objects")
            terms.append(colours.count(clause["color"]) / n)
        if "position" in clause:
            rel, g = clause["position"]
            targets = groups[g]
            pairs = [rel in relpos(o.box, t.box, thresholds.position_threshold) for o in found for t in targets]
            terms.append(sum(pairs) / len(pairs) if pairs else 0.0)
        groups.append(found)
    for clause in metadata.get("exclude", []):
        terms.append(1.0 if len(det.get(clause["class"], [])) < int(clause["count"]) else 0.0)
    return GradedVerdict(score=sum(terms) / len(terms) if terms else 0.0, terms=tuple(terms))
