"""The graded GenEval verdict (maskgrpo/scoring/geneval_graded.py) and the ``shapes_geneval_graded`` reward."""

from __future__ import annotations

import numpy as np
import pytest

from maskgrpo.rewards import REWARDS, RewardSpec, build_rewards
from maskgrpo.scoring.geneval_graded import graded_verdict
from maskgrpo.scoring.geneval_rules import Detection, evaluate, partial_credit
from maskgrpo.toy import ShapesEvaluator, WorldSpec, render, split_prompts

SPEC = WorldSpec()


def _colours(table: dict):
    """A ``classify_colors`` that looks each detection up in ``table`` (Detection -> colour name)."""
    return lambda cls, dets: [table[d] for d in dets]


def test_graded_verdict_hand_computed():
    # Counting "two circles", exclude circle >= 3; three circles above the 0.9 counting threshold.
    meta = {"tag": "counting", "include": [{"class": "circle", "count": 2}],
            "exclude": [{"class": "circle", "count": 3}], "prompt": "a photo of two circles"}  # fmt: skip
    three = {"circle": [Detection((x, 0, x + 8, 8), 0.95) for x in (0, 10, 20)]}
    g = graded_verdict(meta, three, _colours({}))
    # count: top-2 found, 2/2 = 1; exclude: 3 >= 3 -> 0; mean (1 + 0) / 2 = 0.5
    assert g.terms == (1.0, 0.0) and g.score == 0.5
    assert not evaluate(meta, three, _colours({}))[0]
    # one circle: count 1/2, exclude 1 -> 0.75 (GenEval: incorrect as well)
    one = {"circle": three["circle"][:1]}
    assert graded_verdict(meta, one, _colours({})).terms == (0.5, 1.0)

    # color_attr "a red circle and a blue square" with an extra, lower-scoring red square: GenEval reads only the
    # top-1 square (blue) and accepts; the partial credit counts both squares (k = 2 != 1) and zeroes that clause.
    meta = {"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"},
                                             {"class": "square", "count": 1, "color": "blue"}],
            "prompt": "a photo of a red circle and a blue square"}  # fmt: skip
    c, s_blue, s_red = Detection((0, 0, 8, 8), 0.9), Detection((10, 0, 18, 8), 0.8), Detection((20, 0, 28, 8), 0.5)
    dets = {"circle": [c], "square": [s_red, s_blue]}
    colours = _colours({c: "red", s_blue: "blue", s_red: "red"})
    assert evaluate(meta, dets, colours)[0]
    g = graded_verdict(meta, dets, colours)
    assert g.terms == (1.0, 1.0, 1.0, 1.0) and g.score == 1.0
    # clipped partial credit: circle (1, 1); square count 1 - |1 - 2| / 1 = 0 and colour 0 -> 2 / 4
    assert partial_credit(meta, dets, colours, variant="clipped").score == 0.5

    # position "a square left of a circle" (include[0] = circle B, include[1] = square A with ["left of", 0])
    meta = {"tag": "position", "include": [{"class": "circle", "count": 1},
                                           {"class": "square", "count": 1, "position": ["left of", 0]}],
            "prompt": "a photo of a square left of a circle"}  # fmt: skip
    circle = Detection((30, 0, 40, 10), 0.9)
    left, right = Detection((0, 0, 10, 10), 0.9), Detection((60, 0, 70, 10), 0.9)
    assert graded_verdict(meta, {"circle": [circle], "square": [left]}, _colours({})).terms == (1.0, 1.0, 1.0)
    wrong = graded_verdict(meta, {"circle": [circle], "square": [right]}, _colours({}))
    assert wrong.terms == (1.0, 1.0, 0.0) and wrong.score == pytest.approx(2 / 3)
    # no target circle: the square clause's position term is 0, the circle's count term is 0
    assert graded_verdict(meta, {"square": [left]}, _colours({})).terms == (0.0, 1.0, 0.0)
    # below GenEval's 0.3 threshold nothing counts
    faint = {"circle": [Detection((30, 0, 40, 10), 0.3)], "square": [Detection((0, 0, 10, 10), 0.3)]}
    assert graded_verdict(meta, faint, _colours({})).score == 0.0


def _broken(meta: dict, rng: np.random.Generator) -> dict:
    """Metadata whose rendering violates ``meta``: another count, colour, relation, or a missing object."""
    m = {**meta, "include": [dict(c) for c in meta["include"]]}
    last = m["include"][-1]
    if m["tag"] == "counting":
        last["count"] = last["count"] + int(rng.choice([-1, 1])) if last["count"] > 2 else 3
    elif "color" in last:
        last["color"] = next(c for c in SPEC.color_names if c != last["color"])
    elif "position" in last:
        rel = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[last["position"][0]]
        last["position"] = [rel, last["position"][1]]
    elif len(m["include"]) > 1:
        m["include"] = m["include"][:1]
    else:
        last["class"] = next(s for s in SPEC.shapes if s != last["class"])
    m.pop("exclude", None)
    return m


def test_graded_is_one_exactly_when_geneval_passes_on_rendered_scenes():
    """On ground-truth and broken renders of every held-out caption: graded == 1 iff GenEval's verdict is True."""
    _, evals = split_prompts(SPEC, seed=0, num_eval=24)
    rng = np.random.default_rng(3)
    metas = evals * 2
    images = np.stack([render(m if i < len(evals) else _broken(m, rng), SPEC, rng) for i, m in enumerate(metas)])
    results = ShapesEvaluator(SPEC).score(images, metas)
    correct = np.array([r.correct for r in results])
    graded = np.array([r.graded for r in results])
    assert correct[: len(evals)].mean() >= 0.95 and correct[len(evals) :].mean() <= 0.05  # both kinds present
    np.testing.assert_array_equal(graded == 1.0, correct)
    assert np.all((graded >= 0.0) & (graded <= 1.0))


def test_graded_reward_is_registered_with_its_metadata_keys():
    factory = REWARDS.get("shapes_geneval_graded")
    assert factory.required_metadata == ("tag", "include")
    for name in ("shapes_geneval", "shapes_geneval_strict"):
        assert REWARDS.get(name).required_metadata == ("tag", "include")
    meta = {"tag": "counting", "include": [{"class": "circle", "count": 3}],
            "exclude": [{"class": "circle", "count": 4}], "prompt": "a photo of three circles"}  # fmt: skip
    rng = np.random.default_rng(0)
    images = np.stack([render({**meta, "include": [{"class": "circle", "count": n}]}, SPEC, rng) for n in (3, 4)])
    graded, partial = build_rewards([RewardSpec("shapes_geneval_graded"), RewardSpec("shapes_geneval")],
                                    context={"world_spec": SPEC})  # fmt: skip
    # 3 circles: 1.0 under both; 4 circles: partial 1 - 1/3 = 0.667, graded (count 1, exclude 0) = 0.5
    np.testing.assert_allclose(graded(images, [meta["prompt"]] * 2, [meta] * 2), [1.0, 0.5])
    np.testing.assert_allclose(partial(images, [meta["prompt"]] * 2, [meta] * 2), [1.0, 2 / 3])
    with pytest.raises(ValueError, match="valid kinds"):
        from maskgrpo.rewards.shapes import ShapesGenEvalReward

        ShapesGenEvalReward(None, kind="grade", name="x")
