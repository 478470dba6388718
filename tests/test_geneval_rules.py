"""GenEval decision rules and the partial-credit reward on hand-made detections (docs/benchmarks.md section 1).

No images: ``classify_colors`` reads each detection's colour from a dict keyed by the detection itself
(``Detection`` hashes by identity). Every expected number is worked out in a comment next to it.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from maskgrpo.scoring.geneval_rules import (
    GENEVAL_TAGS,
    PARTIAL_CREDIT_VARIANTS,
    Detection,
    GenEvalThresholds,
    evaluate,
    filter_detections,
    partial_credit,
    relpos,
    summarize_tags,
)

METADATA_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "geneval" / "evaluation_metadata.jsonl"


def colours_from(table: dict[Detection, str]):
    """A ClassifyColors that looks each detection up in ``table`` (missing -> "gray")."""

    def classify(cls: str, dets: list[Detection]) -> list[str]:
        return [table.get(d, "gray") for d in dets]

    return classify


def no_colours(cls: str, dets: list[Detection]) -> list[str]:
    return ["gray"] * len(dets)


def box_at(x: float, y: float, size: float = 10.0) -> tuple[float, float, float, float]:
    return (x, y, x + size, y + size)


SINGLE_BENCH = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
RED_CAR = {
    "tag": "colors",
    "include": [{"class": "car", "count": 1, "color": "red"}],
    "prompt": "a photo of a red car",
}
# "a photo of a dog left of a cat": include[0] = target cat (B), include[1] = dog (A) with ["left of", 0].
DOG_LEFT_OF_CAT = {
    "tag": "position",
    "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
    "prompt": "a photo of a dog left of a cat",
}
THREE_DOGS = {
    "tag": "counting",
    "include": [{"class": "dog", "count": 3}],
    "exclude": [{"class": "dog", "count": 4}],
    "prompt": "a photo of three dogs",
}


# ---------------------------------------------------------------------------------------------------------------
# filter_detections
# ---------------------------------------------------------------------------------------------------------------


def test_filter_threshold_is_strict_and_sorted_and_drops_empty_classes():
    at = Detection(box_at(0, 0), 0.3)  # exactly T = 0.3 -> dropped (strict >)
    above = Detection(box_at(20, 0), 0.31)
    best = Detection(box_at(40, 0), 0.8)
    out = filter_detections({"bench": [at, above, best], "cow": [Detection(box_at(0, 0), 0.1)]}, SINGLE_BENCH)
    # bench keeps 0.8 then 0.31 (descending); cow keeps nothing and disappears.
    assert list(out) == ["bench"]
    assert out["bench"] == [best, above]
    # And so a single detection at exactly 0.3 does not count as a bench.
    correct, reason = evaluate(SINGLE_BENCH, {"bench": [at]}, no_colours)
    assert not correct and reason == "expected bench>=1, found 0"


def test_counting_prompt_uses_counting_threshold_for_every_class():
    dets = {
        "dog": [Detection(box_at(0, 0), 0.95), Detection(box_at(20, 0), 0.9), Detection(box_at(40, 0), 0.5)],
        "cat": [Detection(box_at(0, 50), 0.85)],  # not mentioned by the prompt, still filtered at 0.9
    }
    out = filter_detections(dets, THREE_DOGS)
    # 0.95 > 0.9 kept; 0.9 is not > 0.9; 0.5 and the 0.85 cat are dropped -> only one dog, no cat.
    assert list(out) == ["dog"] and [d.score for d in out["dog"]] == [0.95]
    # The same detections under a non-counting tag use 0.3: dogs 0.95, 0.9, 0.5 and the cat 0.85 survive.
    out = filter_detections(dets, {**THREE_DOGS, "tag": "two_object"})
    assert [d.score for d in out["dog"]] == [0.95, 0.9, 0.5] and len(out["cat"]) == 1
    # Hence three dogs at 0.95, 0.9, 0.5 fail the counting prompt: only 1 passes the 0.9 threshold.
    correct, reason = evaluate(THREE_DOGS, dets, no_colours)
    assert not correct and reason == "expected dog>=3, found 1"


def test_filter_keeps_max_objects_highest():
    dets = {"bench": [Detection(box_at(12 * i, 0), 0.4 + 0.01 * i) for i in range(20)]}  # scores 0.40 .. 0.59
    out = filter_detections(dets, SINGLE_BENCH)["bench"]
    # Top 16 of 20: i = 19 .. 4, i.e. scores 0.59 down to 0.44.
    assert len(out) == 16
    assert out[0].score == pytest.approx(0.59) and out[-1].score == pytest.approx(0.44)
    assert len(filter_detections(dets, SINGLE_BENCH, GenEvalThresholds(max_objects=3))["bench"]) == 3


def test_nms_runs_only_below_one():
    hi = Detection((0, 0, 10, 10), 0.9)
    lo = Detection((5, 0, 15, 10), 0.8)
    # IoU with +1 pixel areas: intersection 6 * 11 = 66, union 121 + 121 - 66 = 176 -> 0.375.
    dets = {"bench": [lo, hi]}
    assert filter_detections(dets, SINGLE_BENCH)["bench"] == [hi, lo]  # default 1.0: no NMS
    assert filter_detections(dets, SINGLE_BENCH, GenEvalThresholds(max_overlap=0.5))["bench"] == [hi, lo]  # .375 < .5
    assert filter_detections(dets, SINGLE_BENCH, GenEvalThresholds(max_overlap=0.3))["bench"] == [hi]  # .375 >= .3
    dup = Detection((0, 0, 10, 10), 0.7)  # IoU 1 with hi: survives only because NMS is off at 1.0
    assert len(filter_detections({"bench": [hi, dup]}, SINGLE_BENCH)["bench"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# relpos
# ---------------------------------------------------------------------------------------------------------------


def test_relpos_worked_example():
    # off = centre(A) - centre(B) = (5, 5) - (35, 5) = (-30, 0); s(dA + dB) = 0.1 * (20, 20) = (2, 2)
    # rev = (-(30 - 2), 0) = (-28, 0); dx = -28 / 30 = -0.93 < -0.5 -> left of; dy = 0.
    assert relpos([0, 0, 10, 10], [30, 0, 40, 10]) == {"left of"}
    assert relpos([30, 0, 40, 10], [0, 0, 10, 10]) == {"right of"}  # mirror: dx = +0.93
    # Vertical, y down: A centre y 5, B centre y 35 -> dy = -0.93 -> A is above B.
    assert relpos([0, 0, 10, 10], [0, 30, 10, 40]) == {"above"}
    assert relpos([0, 30, 10, 40], [0, 0, 10, 10]) == {"below"}
    # Detector rows [x0, y0, x1, y1, score] are accepted: only the first four entries are read.
    assert relpos([0, 0, 10, 10, 0.9], [30, 0, 40, 10, 0.8]) == {"left of"}


def test_relpos_shift_removes_weak_diagonal_component():
    a, b = [0, 0, 10, 10], [8, 6, 18, 16]
    # off = (5, 5) - (13, 11) = (-8, -6), ||off|| = 10; shift (2, 2) -> rev = (-6, -4)
    # (dx, dy) = (-0.6, -0.4): left of only. Without the shift (dx, dy) = (-0.8, -0.6): left of AND above.
    assert relpos(a, b) == {"left of"}
    assert relpos(a, b, shift=0.0) == {"left of", "above"}


def test_relpos_heavily_overlapping_stack_gives_empty_set():
    a, b = [0, 0, 10, 20], [0, 3, 10, 23]
    # off = (5, 10) - (5, 13) = (0, -3); shift 0.1 * (20, 40) = (2, 4); rev = (0, -max(3 - 4, 0)) = (0, 0)
    # -> all |rev| < 1e-3 -> no relation at all (not "above"). Without the shift dy = -3/3 = -1 -> above.
    assert relpos(a, b) == set()
    assert relpos(a, b, shift=0.0) == {"above"}
    assert relpos(a, a) == set()  # identical boxes: off = 0 -> empty, no division by zero


# ---------------------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------------------


def test_colour_sees_only_top_count():
    red = Detection(box_at(0, 0), 0.9)
    blue = Detection(box_at(30, 0), 0.5)
    classify = colours_from({red: "red", blue: "blue"})
    # Top-1 car is the red one; the lower-scored blue car is beyond count and ignored.
    assert evaluate(RED_CAR, {"car": [blue, red]}, classify) == (True, "")
    # Swap the scores: top-1 is now blue, so it fails although a red car was detected.
    red2, blue2 = Detection(red.box, 0.5), Detection(blue.box, 0.9)
    correct, reason = evaluate(RED_CAR, {"car": [red2, blue2]}, colours_from({red2: "red", blue2: "blue"}))
    assert not correct
    assert reason.startswith("expected red car>=1, found 0 red")


def test_classify_colors_is_called_with_top_count_only():
    seen: list[int] = []

    def classify(cls: str, dets: list[Detection]) -> list[str]:
        seen.append(len(dets))
        return ["red"] * len(dets)

    dets = {"car": [Detection(box_at(30 * i, 0), 0.9 - 0.1 * i) for i in range(3)]}
    assert evaluate(RED_CAR, dets, classify)[0]
    assert seen == [1]  # count 1 -> only the best car is classified
    with pytest.raises(ValueError, match="returned 0 colours for 1"):
        evaluate(RED_CAR, dets, lambda cls, ds: [])


def test_position_sees_only_top_count():
    cat = Detection((50, 0, 60, 10), 0.9)
    dog = Detection((0, 0, 10, 10), 0.9)  # centre x 5 vs 55: clearly left of the cat
    stray = Detection((100, 0, 110, 10), 0.4)  # right of the cat, but second-best dog: ignored (count 1)
    assert evaluate(DOG_LEFT_OF_CAT, {"cat": [cat], "dog": [dog, stray]}, no_colours) == (True, "")
    # If the stray dog scores higher it is the one checked, and the position fails.
    stray_hi = Detection(stray.box, 0.95)
    correct, reason = evaluate(DOG_LEFT_OF_CAT, {"cat": [cat], "dog": [dog, stray_hi]}, no_colours)
    assert not correct
    # off = (105, 5) - (55, 5) = (50, 0) -> rev (48, 0) -> dx = 0.96 -> right of.
    assert reason.startswith("expected dog left of target") and "found right of" in reason


def test_position_needs_every_pair():
    two_cats = {
        "tag": "position",
        "include": [{"class": "cat", "count": 2}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
        "prompt": "synthetic",
    }
    dog = Detection((40, 0, 50, 10), 0.9)
    right_cat = Detection((100, 0, 110, 10), 0.9)  # dog is left of this one
    left_cat = Detection((0, 0, 10, 10), 0.8)  # but right of this one
    assert not evaluate(two_cats, {"cat": [right_cat, left_cat], "dog": [dog]}, no_colours)[0]
    far_cat = Detection((200, 0, 210, 10), 0.8)
    assert evaluate(two_cats, {"cat": [right_cat, far_cat], "dog": [dog]}, no_colours) == (True, "")


def test_no_target_reason_and_reasons_joined_by_newline():
    dog = Detection((0, 0, 10, 10), 0.9)
    correct, reason = evaluate(DOG_LEFT_OF_CAT, {"dog": [dog]}, no_colours)
    assert not correct
    # The cat clause fails (group 0 = None), so the dog clause has no target; one reason per line.
    assert reason.split("\n") == ["expected cat>=1, found 0", "no target for dog to be left of"]


def test_exclude_fails_counting_when_one_too_many():
    dets = [Detection(box_at(20 * i, 0), 0.95) for i in range(4)]
    assert evaluate(THREE_DOGS, {"dog": dets[:3]}, no_colours) == (True, "")
    # 4 dogs: the include (>= 3) holds, but the exclude says 4 >= 4 -> fail.
    correct, reason = evaluate(THREE_DOGS, {"dog": dets}, no_colours)
    assert not correct and reason == "expected dog<4, found 4"
    # The exclude counts all filtered detections: a 5th dog at 0.9 (not > 0.9) does not count.
    assert evaluate(THREE_DOGS, {"dog": dets[:3] + [Detection(box_at(100, 0), 0.9)]}, no_colours)[0]


# ---------------------------------------------------------------------------------------------------------------
# partial_credit
# ---------------------------------------------------------------------------------------------------------------


def test_partial_credit_count_term_is_unclipped():
    dets = {"bench": [Detection(box_at(20 * i, 0), 0.9) for i in range(3)]}
    pc = partial_credit(SINGLE_BENCH, dets, no_colours)
    # n = 1, k = 3: 1 - |1 - 3| / 1 = -1.
    assert pc.terms == (-1.0,) and pc.score == -1.0 and not pc.strict_correct
    clipped = partial_credit(SINGLE_BENCH, dets, no_colours, variant="clipped")
    assert clipped.terms == (0.0,) and clipped.score == 0.0  # clip(-1) = 0


def test_partial_credit_failed_position():
    cat = Detection((0, 0, 10, 10), 0.9)
    dog = Detection((50, 0, 60, 10), 0.9)  # right of the cat, the prompt wants left of
    dets = {"cat": [cat], "dog": [dog]}
    pc = partial_credit(DOG_LEFT_OF_CAT, dets, no_colours)
    # cat count 1 - 0/1 = 1; dog count 1; failed pair 0; then the always-added 1 -> (1, 1, 0, 1), mean 3/4.
    assert pc.terms == (1.0, 1.0, 0.0, 1.0) and pc.score == 0.75
    assert not pc.strict_correct  # upstream's correct: the relation failed, although both counts are exact
    clipped = partial_credit(DOG_LEFT_OF_CAT, dets, no_colours, variant="clipped")
    # No stray 1: (1, 1, 0), mean 2/3.
    assert clipped.terms == (1.0, 1.0, 0.0) and clipped.score == pytest.approx(2 / 3)
    # Mirrored (the prompt holds): (1, 1, 1) = 1 in both variants.
    good = {"cat": [dog], "dog": [cat]}
    for variant in PARTIAL_CREDIT_VARIANTS:
        pc = partial_credit(DOG_LEFT_OF_CAT, good, no_colours, variant=variant)
        assert pc.terms == (1.0, 1.0, 1.0) and pc.score == 1.0


def test_partial_credit_position_without_target_and_with_wrong_count():
    dog = Detection((0, 0, 10, 10), 0.9)
    # No cat: cat count 1 - 1/1 = 0, not strict, group None; dog count 1, None target adds 0 -> (0, 1, 0) = 1/3.
    pc = partial_credit(DOG_LEFT_OF_CAT, {"dog": [dog]}, no_colours)
    assert pc.terms == (0.0, 1.0, 0.0) and pc.score == pytest.approx(1 / 3) and not pc.strict_correct
    # Two dogs, one cat: dog count 1 - |1 - 2| / 1 = 0 and the position adds 0 without being checked -> (1, 0, 0).
    cat = Detection((50, 0, 60, 10), 0.9)
    dogs = [dog, Detection((0, 20, 10, 30), 0.8)]
    pc = partial_credit(DOG_LEFT_OF_CAT, {"cat": [cat], "dog": dogs}, no_colours)
    assert pc.terms == (1.0, 0.0, 0.0) and pc.score == pytest.approx(1 / 3) and not pc.strict_correct


def test_partial_credit_colour_fraction():
    two_red_cars = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}], "prompt": "synthetic"}
    red, blue = Detection(box_at(0, 0), 0.9), Detection(box_at(30, 0), 0.8)
    classify = colours_from({red: "red", blue: "blue"})
    pc = partial_credit(two_red_cars, {"car": [red, blue]}, classify)
    # k = n = 2: count term 1; m = 1 red of n = 2 -> 1/2; mean (1 + 0.5) / 2 = 0.75. A colour failed -> not strict.
    assert pc.terms == (1.0, 0.5) and pc.score == 0.75 and not pc.strict_correct
    # k = 1 != n = 2: count 1 - 1/2 = 0.5 and the colour adds 0 unchecked -> (0.5, 0), mean 0.25.
    pc = partial_credit(two_red_cars, {"car": [red]}, classify)
    assert pc.terms == (0.5, 0.0) and pc.score == 0.25 and not pc.strict_correct


def test_partial_credit_ignores_excludes_and_uses_all_detections():
    dets = {"dog": [Detection(box_at(20 * i, 0), 0.95) for i in range(4)]}
    pc = partial_credit(THREE_DOGS, dets, no_colours)
    # n = 3, k = 4 (all filtered, not top-3): 1 - 1/3 = 2/3; the exclude adds no term.
    assert pc.terms == pytest.approx((2 / 3,)) and not pc.strict_correct


def test_partial_credit_unknown_variant_lists_valid_ones():
    with pytest.raises(ValueError, match="reward_server.*clipped"):
        partial_credit(SINGLE_BENCH, {}, no_colours, variant="clip")


# ---------------------------------------------------------------------------------------------------------------
# Details checked against the official evaluate_images.py / reward-server gen_eval.py
# ---------------------------------------------------------------------------------------------------------------


def test_8a_strict_correct_is_false_on_colour_or_position_failure():
    red, blue = Detection(box_at(0, 0), 0.9), Detection(box_at(30, 0), 0.8)
    two_red = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}], "prompt": "synthetic"}
    # counts exact (k = n = 2) but one car is blue: upstream's correct is False
    assert not partial_credit(two_red, {"car": [red, blue]}, colours_from({red: "red", blue: "blue"})).strict_correct
    cat, dog = Detection((0, 0, 10, 10), 0.9), Detection((50, 0, 60, 10), 0.9)  # dog right of cat: relation fails
    assert not partial_credit(DOG_LEFT_OF_CAT, {"cat": [cat], "dog": [dog]}, no_colours).strict_correct
    assert partial_credit(DOG_LEFT_OF_CAT, {"cat": [dog], "dog": [cat]}, no_colours).strict_correct  # all holds


def test_8b_wrong_count_with_colour_and_position_adds_one_zero():
    dog_clause = {"class": "dog", "count": 1, "color": "red", "position": ["left of", 0]}
    meta = {"tag": "position", "prompt": "synthetic", "include": [{"class": "cat", "count": 1}, dog_clause]}
    cat = Detection((50, 0, 60, 10), 0.9)
    dogs = [Detection((0, 0, 10, 10), 0.9), Detection((0, 20, 10, 30), 0.8)]
    pc = partial_credit(meta, {"cat": [cat], "dog": dogs}, no_colours)
    # cat count 1; dog count 1 - |1 - 2| / 1 = 0, then ONE 0 for its colour-and-position -> (1, 0, 0), mean 1/3
    assert pc.terms == (1.0, 0.0, 0.0) and pc.score == pytest.approx(1 / 3)


def test_8c_float32_detector_arrays_get_the_official_verdict():
    # the official code compares the detector's float32 scores with 0.3 in float32: float32(0.3) > 0.3 is False
    row = np.array([0, 0, 10, 10, 0.3], dtype=np.float32)
    det = Detection(row[:4], row[4])
    assert evaluate(SINGLE_BENCH, {"bench": [det]}, no_colours) == (False, "expected bench>=1, found 0")
    assert float(det.score) > 0.3  # while the float64 view of the same value is > 0.3
    # relpos in float32: dog A = [0, 0, 2, 2], cat B = [2, 2.497999, 4, 4.497999]; off_x = -2, shift 0.1 * 4 = 0.4,
    # rev_x = -1.6, ||off|| = 3.2: dx = -0.5 exactly in float32 (not left of), -0.50000002 in float64 (left of)
    rows = np.array([[0, 0, 2, 2, 0.9], [2.0, 2.4979989528656006, 4.0, 4.49799919128418, 0.9]], dtype=np.float32)
    dog, cat = Detection(rows[0, :4], rows[0, 4]), Detection(rows[1, :4], rows[1, 4])
    assert relpos(rows[0].astype(np.float64), rows[1].astype(np.float64)) == {"left of", "above"}
    assert relpos(rows[0], rows[1]) == {"above"}
    correct, reason = evaluate(DOG_LEFT_OF_CAT, {"cat": [cat], "dog": [dog]}, no_colours)
    assert not correct and "found above" in reason


def test_8d_overlap_removal_uses_official_iou_and_drops_at_the_threshold():
    hi = Detection((0, 0, 9, 9), 0.9)
    lo = Detection((5, 0, 14, 9), 0.8)
    # official IoU (+1 pixel): inter 5 * 10 = 50, areas 100 each, union 150 -> 1/3 >= 0.3: dropped
    # (without the +1 it would be 4 * 9 / (81 + 81 - 36) = 0.286 < 0.3: kept)
    assert filter_detections({"bench": [hi, lo]}, SINGLE_BENCH, GenEvalThresholds(max_overlap=0.3))["bench"] == [hi]
    half = Detection((0, 0, 9, 4), 0.8)  # inter 10 * 5 = 50, union 100 + 50 - 50 = 100 -> IoU 0.5 exactly
    at = GenEvalThresholds(max_overlap=0.5)
    assert filter_detections({"bench": [hi, half]}, SINGLE_BENCH, at)["bench"] == [hi]  # IoU >= 0.5: dropped
    above = GenEvalThresholds(max_overlap=0.51)
    assert filter_detections({"bench": [hi, half]}, SINGLE_BENCH, above)["bench"] == [hi, half]


def test_8e_reversed_boxes_are_read_as_normalised():
    # the boxes of test_relpos_shift_removes_weak_diagonal_component with x0 > x1 and y0 > y1: sizes are |x1 - x0|
    a, b = [10, 10, 0, 0], [18, 16, 8, 6]
    assert relpos(a, b) == relpos([0, 0, 10, 10], [8, 6, 18, 16]) == {"left of"}
    # (signed sizes would give dA + dB = (-20, -20), rev = (-10, -8) / 10 -> left of AND above)


# ---------------------------------------------------------------------------------------------------------------
# summarize_tags
# ---------------------------------------------------------------------------------------------------------------


def test_summarize_tags_overall_is_unweighted_mean_of_tags():
    results = [(tag, True) for tag in GENEVAL_TAGS]  # one correct image for each tag -> 1.0 each
    results += [("counting", False)] * 3  # counting: 1 of 4 -> 0.25
    summary = summarize_tags(results)
    assert list(summary) == [*GENEVAL_TAGS, "overall"]
    assert summary["counting"] == 0.25
    # (5 * 1.0 + 0.25) / 6 = 0.875; an image-weighted mean would be 6 / 9 = 0.667.
    assert summary["overall"] == pytest.approx(0.875)


def test_summarize_tags_missing_tag_warns_and_averages_present_tags():
    # single_object 1 of 1 image -> 1.0; colors 1 of 2 images -> 0.5; four tags missing.
    results = [("colors", True), ("single_object", True), ("colors", False)]
    with pytest.warns(UserWarning, match="missing tags"):
        summary = summarize_tags(results)
    # Canonical order (single_object before colors); overall (1 + 0.5) / 2 = 0.75, not the image mean 2/3.
    assert list(summary) == ["single_object", "colors", "overall"]
    assert summary["overall"] == 0.75
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize_tags([(tag, False) for tag in GENEVAL_TAGS])  # all tags present: no warning
    with pytest.raises(ValueError, match="valid tags"):
        summarize_tags([("spatial", True)])
    with pytest.warns(UserWarning):
        assert math.isnan(summarize_tags([])["overall"])


# ---------------------------------------------------------------------------------------------------------------
# The official metadata file
# ---------------------------------------------------------------------------------------------------------------


def load_metadata() -> list[dict]:
    if not METADATA_PATH.exists():
        pytest.skip(f"{METADATA_PATH} not available")
    return [json.loads(line) for line in METADATA_PATH.read_text().splitlines() if line.strip()]


def satisfying_detections(meta: dict) -> tuple[dict[str, list[Detection]], dict[Detection, str]]:
    """Detections that meet every clause: clause i in row y = 300 i, positioned clauses 100 px from their target."""
    step = {"left of": (-100, 0), "right of": (100, 0), "above": (0, -100), "below": (0, 100)}
    dets: dict[str, list[Detection]] = {}
    colours: dict[Detection, str] = {}
    for i, clause in enumerate(meta["include"]):
        assert clause["class"] not in dets, "a class repeated across clauses would change the counts"
        if "position" in clause:
            rel, g = clause["position"]
            anchor = dets[meta["include"][g]["class"]][0].box
            dx, dy = step[rel]
            origins = [(anchor[0] + dx, anchor[1] + dy)]
        else:
            origins = [(1000 + 30 * j, 300 * i) for j in range(clause["count"])]
        dets[clause["class"]] = [Detection(box_at(x, y), 0.95) for x, y in origins]
        for d in dets[clause["class"]]:
            colours[d] = clause.get("color", "gray")
    return dets, colours


def test_official_metadata_parses_and_fails_on_empty_detections():
    metas = load_metadata()
    assert len(metas) == 553
    # Tag counts from docs/benchmarks.md section 1.
    assert Counter(m["tag"] for m in metas) == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    for meta in metas:
        assert meta["tag"] in GENEVAL_TAGS
        correct, reason = evaluate(meta, {}, no_colours)
        assert not correct and reason
        # No detections: every count term is 1 - n/n = 0 and colour/position terms are 0 -> score 0.
        pc = partial_credit(meta, {}, no_colours)
        assert pc.score == 0.0 and not pc.strict_correct


def test_official_metadata_satisfied_by_constructed_detections():
    for meta in load_metadata():
        dets, colours = satisfying_detections(meta)
        classify = colours_from(colours)
        assert evaluate(meta, dets, classify) == (True, ""), meta["prompt"]
        for variant in PARTIAL_CREDIT_VARIANTS:
            pc = partial_credit(meta, dets, classify, variant=variant)
            assert pc.score == 1.0 and pc.strict_correct, (meta["prompt"], variant, pc)
