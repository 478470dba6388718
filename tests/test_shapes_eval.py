"""ShapesEval (docs/toy_world.md, "Evaluator and reward"): ground truth scores ~1, broken renderings score 0 on the tag
they break, partial credit is in [0, 1] and lower for broken images, the detector finds hand-built scenes."""

from __future__ import annotations

import json
import time
from collections import deque

import numpy as np
import pytest
from PIL import Image

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


# ----------------------------------------------------------------------------------------------------------------
# The ShapesEval sample grid: tiles grouped by tag, caption and pass/fail mark on every tile
# ----------------------------------------------------------------------------------------------------------------


def grid_summary(correct: list[bool], samples: int = 2) -> dict:
    """An evaluate_shapes-like summary: 3 captions (two 'colors', one 'position'), ``samples`` 8 x 8 images each."""
    captions = [("a photo of a red circle", "colors"), ("a photo of a blue square", "colors"),
                ("a photo of a circle left of a square", "position")]  # fmt: skip
    metas = [{"prompt": p, "tag": t} for p, t in captions for _ in range(samples)]
    images = np.full((len(metas), 8, 8, 3), 200, dtype=np.uint8)
    return {"_images": images, "_metas": metas, "_correct": correct, "colors": 0.5, "position": 0.0,
            "tag_images": {"colors": 2 * samples, "position": samples}}  # fmt: skip


def tile_label_pixels(im, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """(h, w, 3) RGB of a region of a PIL image."""
    return np.asarray(im.convert("RGB"))[y0 : y0 + h, x0 : x0 + w].astype(int)


def test_sample_grid_groups_by_tag_with_caption_and_a_mark_per_tile():
    from maskgrpo.observe import GRID_BORDER_PX, GRID_GAP_PX, GRID_HEADER_PX, GRID_LINE_PX, MARKS, labelled_grid
    from maskgrpo.toy.evaluate import sample_grid, tag_sections

    summary = grid_summary([True, True, False, True, False, False])
    sections = tag_sections(summary)
    # GenEval tag order, the first sample of each caption, the tag's accuracy in its header
    assert [idx for _, idx in sections] == [[0, 2], [4]]
    assert sections[0][0].startswith("colors: accuracy 0.500 over 4 images") and sections[1][0].startswith("position")
    im = sample_grid(summary, sections, scale=3)
    b, side = GRID_BORDER_PX, 8 * 3
    tw = max(side + 2 * b, 160)  # a tile is at least 160 px wide for its caption
    th = 2 * b + side + 4 + GRID_LINE_PX * (3 + 1)  # 3 caption lines + the pass/fail word
    assert im.size == (2 * (tw + GRID_GAP_PX), 2 * GRID_HEADER_PX + 2 * th)  # 2 columns; 2 tag blocks of one row
    # border colour = verdict: image 0 passed, image 2 failed (colors row), image 4 failed (position row)
    row2 = GRID_HEADER_PX + th + GRID_HEADER_PX
    for (x, y), ok in (((0, GRID_HEADER_PX), True), ((tw + GRID_GAP_PX, GRID_HEADER_PX), False), ((0, row2), False)):
        assert im.getpixel((x + 1, y + 1)) == MARKS[ok][1]
        assert im.getpixel((x + b + side // 2, y + b + side // 2)) == (200, 200, 200)  # the image inside the border
        # the verdict word is written in the mark's colour under the image, the caption in black under that
        word = tile_label_pixels(im, x, y + 2 * b + side + 2, tw, GRID_LINE_PX)
        hue, other = (1, 0) if ok else (0, 1)  # green or red glyphs
        assert ((word[..., hue] > 100) & (word[..., other] < 90) & (word[..., 2] < 90)).sum() > 5
        caption = tile_label_pixels(im, x, y + 2 * b + side + 2 + GRID_LINE_PX, tw, GRID_LINE_PX)
        assert (caption.max(-1) < 100).sum() > 5  # dark caption glyphs
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        labelled_grid(summary["_images"][:3], ["a", "b"], None)


def test_write_eval_writes_the_labelled_tag_grid(tmp_path):
    from maskgrpo.observe import GRID_HEADER_PX
    from maskgrpo.toy.evaluate import write_eval

    summary = grid_summary([False] * 6) | {"table": "| tag | accuracy |"}
    write_eval(summary, tmp_path, "ev")
    with Image.open(tmp_path / "ev_samples.png") as im:
        px = np.asarray(im.convert("RGB"))
    assert tuple(px[GRID_HEADER_PX + 1, 1]) == (210, 0, 0)  # the first tile of the colors block failed
    assert not any(k.startswith("_") for k in json.loads((tmp_path / "ev.json").read_text()))
