"""ShapesEval (toy_world.md, "Evaluator and reward"): ground truth scores ~1, broken renderings score 0 on the tag
they break, partial credit is in [0, 1] and lower for broken images, the detector finds hand-built scenes."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pytest

from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS
from maskgrpo.toy import (
    PatchTokenizer,
    SceneObject,
    ShapesEvaluator,
    WorldSpec,
    format_table,
    render,
    render_scene,
    split_prompts,
    tokenizer_fit_images,
)
from maskgrpo.toy.shapes_eval import label_components

SPEC = WorldSpec()
RENDERS_PER_PROMPT = 4
MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@pytest.fixture(scope="module")
def world():
    """Split, a tokenizer fitted on training renders, the evaluator, and 4 ground-truth renders per eval prompt."""
    train, evals = split_prompts(SPEC, seed=0, num_eval=24)
    t0 = time.perf_counter()
    tok = PatchTokenizer.fit(tokenizer_fit_images(SPEC, train, 200, seed=0), codebook_size=256, seed=0)
    print(f"\n[timing] codebook fit (32 px, K=256, 200 renders + swatches): {time.perf_counter() - t0:.2f}s")
    metas = [m for m in evals for _ in range(RENDERS_PER_PROMPT)]
    rng = np.random.default_rng(11)
    images = np.stack([render(m, SPEC, rng) for m in metas])  # (B, 32, 32, 3)
    return {"train": train, "evals": evals, "tok": tok, "metas": metas, "images": images,
            "evaluator": ShapesEvaluator(SPEC)}  # fmt: skip


def _broken(meta: dict, rng: np.random.Generator) -> np.ndarray:
    """A rendering that violates ``meta`` on its own tag (count, colour, relation or a missing object)."""
    m = {**meta, "include": [dict(c) for c in meta["include"]]}
    tag = m["tag"]
    if tag == "counting":
        n = m["include"][0]["count"]
        m["include"][0]["count"] = n + 1 if rng.random() < 0.5 or n == 2 else n - 1
    elif tag in ("colors", "color_attr"):
        clause = m["include"][-1]
        clause["color"] = next(c for c in SPEC.color_names if c != clause["color"])
    elif tag == "position":
        rel, g = m["include"][1]["position"]
        m["include"][1]["position"] = [MIRROR[rel], g]
    elif tag == "two_object":
        m["include"] = m["include"][:1]
    elif tag == "single_object":
        other = next(s for s in SPEC.shapes if s != m["include"][0]["class"])
        m["include"] = [{"class": other, "count": 1}]
    return render(m, SPEC, rng)


def test_ground_truth_scores_at_least_095_raw_and_after_tokenizer_round_trip(world):
    ev = world["evaluator"]
    decoded = world["tok"].decode(world["tok"].encode(world["images"]))
    for name, images in (("raw", world["images"]), ("decoded", decoded)):
        results = ev.score(images, world["metas"])
        summary = ev.summarize(results)
        print(f"\nShapesEval, ground truth ({name}), {len(results)} images:\n{format_table(summary)}")
        assert list(summary) == list(GENEVAL_TAGS) + ["overall"]
        assert summary["overall"] >= 0.95, [r.reason for r in results if not r.correct]
        assert min(summary[t] for t in GENEVAL_TAGS) >= 0.9
        assert all(0.0 <= r.partial <= 1.0 for r in results)
        assert np.mean([r.partial for r in results]) >= 0.95


def test_broken_renderings_score_zero_on_their_tag_and_lower_partial_credit(world):
    ev = world["evaluator"]
    rng = np.random.default_rng(5)
    broken = np.stack([_broken(m, rng) for m in world["metas"]])
    results = ev.score(broken, world["metas"])
    summary = ev.summarize(results)
    print(f"\nShapesEval, broken renderings:\n{format_table(summary)}")
    for tag in GENEVAL_TAGS:
        assert summary[tag] == 0.0, [(r.prompt, r.reason) for r in results if r.tag == tag and r.correct]
    assert all(r.reason for r in results)
    good = ev.score(world["images"], world["metas"])
    for tag in GENEVAL_TAGS:
        bad_pc = [r.partial for r in results if r.tag == tag]
        good_pc = [r.partial for r in good if r.tag == tag]
        assert all(0.0 <= p < 1.0 for p in bad_pc), (tag, bad_pc)
        assert np.mean(bad_pc) < np.mean(good_pc)


def test_wrong_count_both_directions_fails_counting():
    ev = ShapesEvaluator(SPEC)
    meta = {"tag": "counting", "include": [{"class": "circle", "count": 3}],
            "exclude": [{"class": "circle", "count": 4}], "prompt": "a photo of three circles"}  # fmt: skip
    rng = np.random.default_rng(0)
    for n, expect in ((2, False), (3, True), (4, False)):
        img = render({**meta, "include": [{"class": "circle", "count": n}]}, SPEC, rng)
        (res,) = ev.score(img[None], [meta])
        assert res.correct is expect, res.reason
        # clipped partial credit: the single count term 1 - |3 - n| / 3
        assert res.partial == pytest.approx(1 - abs(3 - n) / 3)


def test_detector_on_hand_built_scene():
    objs = [SceneObject("circle", "red", 0, 0, 12), SceneObject("square", "blue", 16, 0, 10),
            SceneObject("triangle", "yellow", 4, 16, 14), SceneObject("triangle", "purple", 20, 20, 8)]  # fmt: skip
    img = render_scene(objs, SPEC)
    ev = ShapesEvaluator(SPEC)
    dets = ev.detector.detect(img)
    assert {k: len(v) for k, v in dets.items()} == {"circle": 1, "square": 1, "triangle": 2}
    assert dets["circle"][0].box == (0.0, 0.0, 12.0, 12.0)
    assert dets["square"][0].box == (16.0, 0.0, 26.0, 10.0)
    assert sorted(d.box for d in dets["triangle"]) == [(4.0, 16.0, 18.0, 30.0), (20.0, 20.0, 28.0, 28.0)]
    assert all(d.score > 0.95 for ds in dets.values() for d in ds)
    colours = ev.detector.color_classifier(img)
    assert colours("circle", dets["circle"]) == ["red"]
    assert sorted(colours("triangle", dets["triangle"])) == ["purple", "yellow"]
    meta = {"tag": "position", "include": [{"class": "circle", "count": 1},
                                           {"class": "square", "count": 1, "position": ["right of", 0]}],
            "prompt": "a photo of a square right of a circle"}  # fmt: skip
    (res,) = ev.score(img[None], [meta])
    assert res.correct and res.partial == 1.0


def test_noise_and_ambiguous_blobs_score_low():
    ev = ShapesEvaluator(SPEC)
    img = render_scene([], SPEC)
    img[5:7, 5:7] = SPEC.palette["red"]  # 4 px fragment, like a stray decoded patch corner
    assert all(not v for v in ev.detector.detect(img).values())
    clean = render_scene([SceneObject("square", "green", 8, 8, 12)], SPEC)
    (sq,) = ev.detector.detect(clean)["square"]
    octagon = clean.copy()  # 12 x 12 square with 2 x 2 corners cut: fill 128/144 = 0.89, between square and circle
    for ys in (slice(8, 10), slice(18, 20)):
        for xs in (slice(8, 10), slice(18, 20)):
            octagon[ys, xs] = SPEC.background
    amb = [d for ds in ev.detector.detect(octagon).values() for d in ds]
    assert len(amb) == 1 and amb[0].score < 0.9 < sq.score  # fails GenEval's counting threshold
    bar = render_scene([], SPEC)
    bar[10:14, 4:28] = SPEC.palette["blue"]  # 24 x 4 bar: no shape has that aspect
    assert all(not v for v in ev.detector.detect(bar).values())


def _bfs_components(fg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Loop reference: 8-connected BFS, each component named by its first pixel in raster order."""
    h, w = fg.shape
    out = np.full((h, w), -1)
    for y0 in range(h):
        for x0 in range(w):
            if not fg[y0, x0] or out[y0, x0] >= 0:
                continue
            cid = y0 * w + x0
            out[y0, x0] = cid
            queue = deque([(y0, x0)])
            while queue:
                y, x = queue.popleft()
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        v, u = y + dy, x + dx
                        if 0 <= v < h and 0 <= u < w and fg[v, u] and out[v, u] < 0 and labels[v, u] == labels[y, x]:
                            out[v, u] = cid
                            queue.append((v, u))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_label_components_matches_bfs_reference(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=(20, 23))  # 0 = background
    fg = labels > 0
    np.testing.assert_array_equal(label_components(fg, labels), _bfs_components(fg, labels))


def test_score_and_table_contract(world):
    ev = world["evaluator"]
    with pytest.raises(ValueError, match="metadata"):
        ev.score(world["images"][:2], world["metas"][:1])
    one_each = slice(None, None, RENDERS_PER_PROMPT)  # one render per eval prompt, every tag present
    table = format_table(ev.summarize(ev.score(world["images"][one_each], world["metas"][one_each])))
    assert table.splitlines()[0] == "| tag | accuracy |" and "**overall**" in table.splitlines()[-1]


def test_decoded_random_codes_score_in_range(world):
    """Garbage images (what an untrained model samples) are scored without error, partial credit in [0, 1]."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, world["tok"].codebook_size, size=(len(world["metas"]), world["tok"].num_tokens))
    results = world["evaluator"].score(world["tok"].decode(codes), world["metas"])
    assert all(0.0 <= r.partial <= 1.0 for r in results)
    assert world["evaluator"].summarize(results)["overall"] < 0.5


def test_canvas_64_world_round_trip():
    spec = WorldSpec.scaled(64)
    train, evals = split_prompts(spec, seed=0, num_eval=12)
    tok = PatchTokenizer.fit(tokenizer_fit_images(spec, train, 100, seed=0), codebook_size=512, seed=0)
    assert tok.grid == 16 and tok.num_tokens == 256
    rng = np.random.default_rng(2)
    images = np.stack([render(m, spec, rng) for m in evals])
    ev = ShapesEvaluator(spec)
    for imgs in (images, tok.decode(tok.encode(images))):
        summary = ev.summarize(ev.score(imgs, evals))
        assert summary["overall"] >= 0.95, summary
