"""ShapesWorld world, tokenizers and layout (docs/toy_world.md): captions, metadata, split, rendering, round trips."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
import torch

from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS, relpos
from maskgrpo.toy import (
    PatchTokenizer,
    SceneObject,
    WordTokenizer,
    WorldSpec,
    enumerate_prompts,
    render,
    render_scene,
    sample_scene,
    shapes_layout,
    split_prompts,
    swatches,
    tokenizer_fit_images,
)
from maskgrpo.toy.image_tokenizer import images_to_patches, kmeans, patches_to_images

SPEC = WorldSpec()

# Lines of GenEval's evaluation_metadata.jsonl (docs/benchmarks.md section 1), one per tag: the format to match.
OFFICIAL = {
    "single_object": {"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                      "prompt": "a photo of a bench"},
    "two_object": {"tag": "two_object", "include": [{"class": "toaster", "count": 1}, {"class": "oven", "count": 1}],
                   "prompt": "a photo of a toaster and an oven"},
    "counting": {"tag": "counting", "include": [{"class": "clock", "count": 2}],
                 "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"},
    "colors": {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "pink"}],
               "prompt": "a photo of a pink car"},
    "position": {"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                                {"class": "dog", "count": 1, "position": ["right of", 0]}],
                 "prompt": "a photo of a dog right of a teddy bear"},
    "color_attr": {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "green"},
                                                    {"class": "microwave", "count": 1, "color": "purple"}],
                   "prompt": "a photo of a green bus and a purple microwave"},
}  # fmt: skip


def _by_prompt(spec: WorldSpec = SPEC) -> dict[str, dict]:
    return {m["prompt"]: m for m in enumerate_prompts(spec)}


# ---------------------------------------------------------------------------------------------------------------
# Captions and metadata
# ---------------------------------------------------------------------------------------------------------------


def test_enumerate_prompts_counts_per_tag_and_determinism():
    prompts = enumerate_prompts(SPEC)
    assert prompts == enumerate_prompts(WorldSpec())
    assert len({m["prompt"] for m in prompts}) == len(prompts)
    # 3 shapes, 6 colours, counts 2..4: 3 singles, 3*2 ordered pairs, 3*3 counts, 6*3 coloured,
    # 6 pairs * 4 relations, (6*3) * (5*2) colour-attribute pairs.
    assert Counter(m["tag"] for m in prompts) == {"single_object": 3, "two_object": 6, "counting": 9, "colors": 18,
                                                  "position": 24, "color_attr": 180}  # fmt: skip


@pytest.mark.parametrize("tag", GENEVAL_TAGS)
def test_metadata_keys_match_official_geneval_format(tag):
    official = OFFICIAL[tag]
    ours = [m for m in enumerate_prompts(SPEC) if m["tag"] == tag]
    assert ours
    for meta in ours:
        assert list(meta) == list(official)
        assert [list(c) for c in meta["include"]] == [list(c) for c in official["include"]]
        for clause in meta["include"] + meta.get("exclude", []):
            assert clause["class"] in SPEC.shapes and isinstance(clause["count"], int)
            assert clause.get("color", "red") in SPEC.color_names
        if "position" in official["include"][-1]:
            rel, group = meta["include"][1]["position"]
            assert rel in ("left of", "right of", "above", "below") and group == 0


def test_caption_templates_follow_geneval():
    p = _by_prompt()
    assert p["a photo of a circle"]["include"] == [{"class": "circle", "count": 1}]
    assert p["a photo of a circle and a square"]["include"] == [{"class": "circle", "count": 1},
                                                                 {"class": "square", "count": 1}]  # fmt: skip
    three = p["a photo of three triangles"]
    assert three["include"] == [{"class": "triangle", "count": 3}]
    assert three["exclude"] == [{"class": "triangle", "count": 4}]
    assert p["a photo of a red square"]["include"] == [{"class": "square", "count": 1, "color": "red"}]
    # "A left of B": include[0] is the target B, include[1] is A with the relation to group 0.
    assert p["a photo of a square left of a circle"]["include"] == [
        {"class": "circle", "count": 1},
        {"class": "square", "count": 1, "position": ["left of", 0]},
    ]
    attr = p["a photo of a red circle and a blue square"]
    assert attr["include"] == [{"class": "circle", "count": 1, "color": "red"},
                               {"class": "square", "count": 1, "color": "blue"}]  # fmt: skip
    assert "a photo of an orange triangle" in p  # article before a vowel, as GenEval writes "an oven"


# ---------------------------------------------------------------------------------------------------------------
# Train / eval split
# ---------------------------------------------------------------------------------------------------------------


def test_split_is_disjoint_deterministic_and_balanced():
    train, evals = split_prompts(SPEC, seed=0, num_eval=24)
    assert (train, evals) == split_prompts(SPEC, seed=0, num_eval=24)
    assert split_prompts(SPEC, seed=1, num_eval=24)[1] != evals
    tr, ev = {m["prompt"] for m in train}, {m["prompt"] for m in evals}
    assert not tr & ev
    assert tr | ev == {m["prompt"] for m in enumerate_prompts(SPEC)}
    assert len(evals) == 24
    counts = Counter(m["tag"] for m in evals)
    # Caps (half of each tag): 1, 3, 4, 9, 12, 90. Dealing 24 slots round-robin in canonical order:
    # round 1 -> 1 each (6); round 2 skips single_object (11); round 3 (16); round 4 skips two_object (20);
    # round 5 skips counting: colors, position, color_attr (23); round 6: colors (24).
    assert counts == {"single_object": 1, "two_object": 3, "counting": 4, "colors": 6, "position": 5, "color_attr": 5}
    assert set(Counter(m["tag"] for m in train)) == set(GENEVAL_TAGS)


def test_split_rejects_too_many_eval_prompts():
    with pytest.raises(ValueError, match="num_eval"):
        split_prompts(SPEC, seed=0, num_eval=len(enumerate_prompts(SPEC)))


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def test_render_is_deterministic_and_uses_only_world_colours():
    meta = _by_prompt()["a photo of a red circle and a blue square"]
    a = render(meta, SPEC, np.random.default_rng(7))
    b = render(meta, SPEC, np.random.default_rng(7))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    colours = {tuple(int(v) for v in px) for px in a.reshape(-1, 3)}
    assert colours == {SPEC.background, SPEC.palette["red"], SPEC.palette["blue"]}


@pytest.mark.parametrize("spec", [WorldSpec(), WorldSpec.scaled(64)], ids=["canvas32", "canvas64"])
def test_sampled_scenes_satisfy_their_metadata(spec):
    rng = np.random.default_rng(0)
    for meta in enumerate_prompts(spec)[:60]:  # every tag but most color_attr
        objs = sample_scene(meta, spec, rng)
        assert len(objs) == sum(c["count"] for c in meta["include"])
        start = 0
        groups = []
        for clause in meta["include"]:
            group = objs[start : start + clause["count"]]
            start += clause["count"]
            assert all(o.shape == clause["class"] for o in group)
            assert all(o.color == clause.get("color", o.color) for o in group)
            assert all(o.size in spec.sizes and o.x0 % spec.position_step == 0 for o in group)
            if "position" in clause:
                rel, g = clause["position"]
                assert all(relpos(a.box, b.box, 0.1) == {rel} for a in group for b in groups[g])
            groups.append(group)
        for i, a in enumerate(objs):  # min_gap of background between every two boxes, along x or y
            for b in objs[i + 1 :]:
                gx = max(b.box[0] - a.box[2], a.box[0] - b.box[2])
                gy = max(b.box[1] - a.box[3], a.box[1] - b.box[3])
                assert max(gx, gy) >= spec.min_gap


def test_render_scene_draws_the_shapes():
    img = render_scene([SceneObject("square", "green", 4, 8, 8), SceneObject("triangle", "red", 20, 16, 8)], SPEC)
    green = (img == SPEC.palette["green"]).all(-1)
    assert green.sum() == 64 and green[8:16, 4:12].all()
    red = (img == SPEC.palette["red"]).all(-1)[16:24, 20:28]
    assert red[-1].all() and red[0].sum() == 2  # full base, two-pixel apex (even size)
    assert red.sum() < 48
    with pytest.raises(ValueError, match="fit"):
        render_scene([SceneObject("circle", "red", 28, 0, 8)], SPEC)


def test_world_spec_rejects_bad_settings():
    with pytest.raises(ValueError, match="multiple of patch"):
        WorldSpec(canvas=30)
    with pytest.raises(ValueError, match="shapes"):
        WorldSpec(shapes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="red and pink are 41 apart"):
        WorldSpec(colors=(("red", (210, 20, 20)), ("pink", (230, 50, 40))))  # sqrt(20^2 + 30^2 + 20^2) = 41


# ---------------------------------------------------------------------------------------------------------------
# Text tokenizer and layout
# ---------------------------------------------------------------------------------------------------------------


def test_word_tokenizer_round_trip_specials_and_save_load(tmp_path):
    captions = [m["prompt"] for m in enumerate_prompts(SPEC)]
    tok = WordTokenizer.build(captions)
    assert tok.vocab[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert tok.vocab[4:] == sorted(tok.vocab[4:])
    for cap in captions:
        ids = tok.encode(cap)
        assert min(ids) >= 4 and tok.decode(ids) == cap
    assert tok.encode("A Photo of a HEXAGON") == tok.encode("a photo of a") + [tok.unk_id]
    assert tok.decode([0, 1] + tok.encode("a red circle") + [2, 0]) == "a red circle"
    assert tok.max_words == max(len(c.split()) for c in captions) == 10  # "a photo of an orange circle and a ..."
    for where in (tmp_path / "dir", tmp_path / "tok.json"):  # a directory, or the JSON file itself
        tok.save(where)
        again = WordTokenizer.load(where)
        assert again.vocab == tok.vocab and again.max_words == tok.max_words and len(again) == len(tok)
    assert (tmp_path / "dir" / "text_tokenizer.json").is_file()


def test_shapes_layout_ids():
    tok = WordTokenizer.build([m["prompt"] for m in enumerate_prompts(SPEC)])
    v = len(tok)
    layout = shapes_layout(tok, codebook_size=256, grid=SPEC.grid)
    assert (layout.pad_id, layout.bos_id, layout.eos_id) == (0, 1, 2)
    specials = (layout.t2i_id, layout.soi_id, layout.eoi_id, layout.mask_id, layout.code_offset)
    assert specials == tuple(range(v, v + 5))  # right after the words
    assert layout.text_window == tok.max_words + 3 and layout.num_image_tokens == 64
    assert layout.vocab_needed == v + 4 + 256
    longest = max((m["prompt"] for m in enumerate_prompts(SPEC)), key=lambda c: len(c.split()))
    row = layout.text_part(tok.encode(longest))
    assert row[0] == layout.t2i_id and row[-1] == layout.eos_id and tok.decode(row[2:-1]) == longest  # no truncation


# ---------------------------------------------------------------------------------------------------------------
# Image tokenizer
# ---------------------------------------------------------------------------------------------------------------


def test_patch_layout_is_raster_order_and_invertible():
    img = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    img[0, 4:8, 0:4] = 200  # patch row 1, column 0 -> token 2 in raster order
    patches = images_to_patches(img, 4)  # (1, 4, 48)
    assert patches.shape == (1, 4, 48)
    assert [bool(p.any()) for p in patches[0]] == [False, False, True, False]
    np.testing.assert_array_equal(patches_to_images(patches, 4, 2, 2), img)


def test_patch_tokenizer_exact_round_trip_and_save_load(tmp_path):
    train, evals = split_prompts(SPEC, seed=0, num_eval=24)
    t0 = time.perf_counter()
    tok = PatchTokenizer.fit(tokenizer_fit_images(SPEC, train, 200, seed=0), codebook_size=256, seed=0)
    print(f"\n[timing] PatchTokenizer.fit, 32 px, K=256, 200 images + swatches: {time.perf_counter() - t0:.2f}s")
    assert tok.codebook_size == 256 and tok.grid == 8
    rng = np.random.default_rng(3)
    images = np.stack([render(m, SPEC, rng) for m in evals])  # held-out captions
    codes = tok.encode(images)
    assert codes.dtype == torch.long and codes.shape == (len(evals), 64)
    assert int(codes.min()) >= 0 and int(codes.max()) < 256
    np.testing.assert_array_equal(tok.decode(codes), images)  # the lattice world has < 256 distinct patches
    np.testing.assert_array_equal(tok.encode(torch.from_numpy(images)), codes)
    tok.save(tmp_path)
    again = PatchTokenizer.load(tmp_path)
    np.testing.assert_array_equal(again.codebook, tok.codebook)
    assert (again.patch, again.image_size) == (4, 32)
    with pytest.raises(ValueError, match="codes must be in"):
        tok.decode(torch.full((1, 64), 256))


def test_patch_tokenizer_fit_is_deterministic_and_k_means_codes_are_real_patches():
    free = WorldSpec(position_step=1)  # free placement: more distinct patches than codes, so k-means runs
    images = tokenizer_fit_images(free, enumerate_prompts(free), 60, seed=0)
    x = np.unique(images_to_patches(images, 4).reshape(-1, 48), axis=0)
    assert len(x) > 128
    t0 = time.perf_counter()
    a = PatchTokenizer.fit(images, codebook_size=128, seed=0, iters=10)
    print(
        f"\n[timing] PatchTokenizer.fit via k-means, {len(x)} distinct patches -> 128: {time.perf_counter() - t0:.2f}s"
    )
    b = PatchTokenizer.fit(images[::-1], codebook_size=128, seed=0, iters=10)
    np.testing.assert_array_equal(a.codebook, b.codebook)  # independent of image order
    assert not np.array_equal(a.codebook, PatchTokenizer.fit(images, 128, seed=1, iters=10).codebook)
    # medoid snap: every code is one of the training patches, so decoded pixels keep world colours
    assert all((x == c).all(-1).any() for c in a.codebook)
    dec = a.decode(a.encode(images[:20]))
    err = np.abs(dec.astype(int) - images[:20]).mean()
    assert err < 10, err  # lossy but close (mean abs error per channel, in pixel units)


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    x = (centres[rng.integers(0, 3, 300)] + rng.normal(0, 0.1, (300, 2))).astype(np.float32)
    found = kmeans(x, 3, seed=0, iters=10)
    assert np.sort(np.round(found).astype(int), axis=0).tolist() == np.sort(centres.astype(int), axis=0).tolist()


def test_swatches_cover_the_catalogue():
    sw = swatches(SPEC)
    assert sw.shape == (len(SPEC.shapes) * len(SPEC.colors) * len(SPEC.sizes), 32, 32, 3)
    assert len(swatches(WorldSpec(position_step=2))) == 4 * len(sw)  # 2 x 2 offsets inside a patch
