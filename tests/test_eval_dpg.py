"""DPG-Bench harnesses: the 2x2 grid layout, resumption and sharding on the official JSONL with a tiny toy model;
the summary of ELLA's results format on hand-written files (numbers worked out in comments)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_toy import DPG_JSONL, model_args
from PIL import Image

from eval import dpg_generate, dpg_summary
from eval.common import generate_items, load_backbone
from eval.dpg_generate import crop_tiles, make_grid, read_prompts

needs_data = pytest.mark.skipif(not DPG_JSONL.is_file(), reason="official DPG-Bench JSONL not available")

LIMIT = 3


def first_items(n: int = LIMIT) -> list[dict]:
    return [json.loads(x) for x in DPG_JSONL.read_text().splitlines()[:n]]


def generate(outdir: Path, *extra: str) -> int:
    return dpg_generate.main(["--prompts", str(DPG_JSONL), "--outdir", str(outdir), "--limit", str(LIMIT),
                              *model_args(), *extra])  # fmt: skip


def snapshot(outdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(outdir.iterdir())}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path_factory.mktemp("dpg") / "out"
    assert generate(out) == 0
    return out, snapshot(out)


# ----------------------------------------------------------------------------------------------------------------
# Grid and generation
# ----------------------------------------------------------------------------------------------------------------


def test_grid_crops_at_ella_offsets_are_the_four_tiles_in_row_major_order():
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    grid = make_grid(tiles)
    assert grid.shape == (10, 10, 3)
    assert np.array_equal(crop_tiles(grid, 5), tiles)
    # The scorer's PIL crops (x0, y0, x1, y1) = (0,0,R,R), (R,0,2R,R), (0,R,R,2R), (R,R,2R,2R) -> samples 0..3.
    pil = Image.fromarray(grid)
    boxes = [(0, 0, 5, 5), (5, 0, 10, 5), (0, 5, 5, 10), (5, 5, 10, 10)]
    for j, box in enumerate(boxes):
        assert np.array_equal(np.asarray(pil.crop(box)), tiles[j])
    with pytest.raises(ValueError):
        make_grid(tiles[:3])


@needs_data
def test_layout_is_one_flat_folder_of_grids_with_r_outside(full_run):
    out, files = full_run
    ids = [x["item_id"] for x in first_items()]
    assert sorted(files) == sorted(f"{i}.png" for i in ids)  # only the PNGs in the folder
    side = json.loads((out.parent / "out.json").read_text())
    r = side["tile_size"]
    assert side["grid_size"] == 2 * r and side["samples"] == 4
    assert side["score_command"].endswith(f" {r}") and "JSONL" in side["settings"]["prompt_source"]
    for name in files:
        with Image.open(out / name) as im:
            assert im.size == (2 * r, 2 * r) and im.mode == "RGB"


def test_generation_dtype_defaults_to_auto():
    """bf16 on a GPU by default (eval.common.resolve_dtype), as GenEval generation."""
    args = dpg_generate.build_parser().parse_args(["--outdir", "x", "--prompts", "p.jsonl"])
    assert args.dtype == "auto"


@needs_data
def test_saved_grid_crops_are_the_samples_of_that_prompt(full_run):
    out, _ = full_run
    item = first_items(1)[0]
    args = dpg_generate.build_parser().parse_args(["--outdir", "x", *model_args()])
    backbone = load_backbone(args)
    from maskgrpo.config.schema import SamplerConfig

    sampler = SamplerConfig(name="maskgit", num_steps=2, cfg_scale=3.5).build()
    got = {}
    generate_items(backbone, sampler, [(0, item["prompt"])], 4, 1234, 1, lambda i, imgs: got.update({i: imgs}))
    grid = np.asarray(Image.open(out / f"{item['item_id']}.png"))
    r = got[0].shape[1]
    assert np.array_equal(crop_tiles(grid, r), got[0])  # sample j at crop j


@needs_data
def test_resume_skips_finished_items(full_run, tmp_path, capsys):
    src, files = full_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    shutil.copy(src.parent / "out.json", tmp_path / "out.json")
    (out / f"{first_items()[1]['item_id']}.png").unlink()
    assert generate(out) == 0
    assert "2 already done, 1 to generate" in capsys.readouterr().out
    assert snapshot(out) == files  # the lost grid comes back bit-identical
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert generate(out) == 0
    assert "0 to generate" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


@needs_data
def test_resume_refuses_grids_of_another_size(full_run, tmp_path):
    src, _ = full_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    side = json.loads((src.parent / "out.json").read_text())
    (tmp_path / "out.json").write_text(json.dumps({**side, "tile_size": side["tile_size"] + 1}))
    with pytest.raises(SystemExit, match="use a fresh --outdir"):
        generate(out)


@needs_data
def test_two_ranks_cover_every_item_once(full_run, tmp_path, monkeypatch):
    _, files = full_run
    ids = [x["item_id"] for x in first_items()]
    shards = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert generate(tmp_path / f"rank{rank}") == 0
        shards.append(snapshot(tmp_path / f"rank{rank}"))
    assert sorted(shards[0]) == sorted([f"{ids[0]}.png", f"{ids[2]}.png"])
    assert sorted(shards[1]) == [f"{ids[1]}.png"]
    assert {**shards[0], **shards[1]} == files


@needs_data
def test_prompt_sources_jsonl_and_ella_txt(tmp_path):
    items = first_items()
    txt = tmp_path / "prompts"
    txt.mkdir()
    for k, x in enumerate(items):
        (txt / f"{x['item_id']}.txt").write_text(x["prompt"] + (" (edited)" if k == 0 else "") + "\n")
    got, source = read_prompts(None, txt)
    assert sorted(i for i, _ in got) == sorted(x["item_id"] for x in items) and "ELLA txt" in source
    got, source = read_prompts(DPG_JSONL, None)
    assert len(got) == 1065 and got[0] == (items[0]["item_id"], items[0]["prompt"]) and "JSONL" in source
    with pytest.raises(ValueError, match="lacks 1062 prompt files"):  # JSONL ids, txt texts: 3 of 1065 present
        read_prompts(DPG_JSONL, txt)


@needs_data
def test_txt_prompts_with_jsonl_ids(tmp_path, capsys):
    items = first_items()
    jsonl = tmp_path / "three.jsonl"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in items))
    txt = tmp_path / "prompts"
    txt.mkdir()
    for k, x in enumerate(items):
        (txt / f"{x['item_id']}.txt").write_text(x["prompt"] + (" (edited)" if k == 0 else "") + "\n")
    got, source = read_prompts(jsonl, txt)
    assert [i for i, _ in got] == [x["item_id"] for x in items]
    assert got[0][1].endswith("(edited)") and got[1][1] == items[1]["prompt"]
    assert "1 texts differ from the JSONL" in source
    (txt / f"{items[2]['item_id']}.txt").unlink()
    with pytest.raises(ValueError, match="lacks 1 prompt files"):
        read_prompts(jsonl, txt)
    out = tmp_path / "out"
    jsonl2 = tmp_path / "two.jsonl"
    jsonl2.write_text("".join(json.dumps(x) + "\n" for x in items[:2]))
    assert dpg_generate.main(["--prompts", str(jsonl2), "--prompts-dir", str(txt), "--outdir", str(out),
                              *model_args()]) == 0  # fmt: skip
    assert "prompt source: ELLA txt files" in capsys.readouterr().out
    assert "ELLA txt" in json.loads((tmp_path / "out.json").read_text())["settings"]["prompt_source"]


# ----------------------------------------------------------------------------------------------------------------
# Summary of ELLA's output
# ----------------------------------------------------------------------------------------------------------------

# Three scored images of four expected ids (partiprompts97 failed, as with ELLA issue #61):
#   partiprompts1 crops 1, .5, .5, 1  -> .75
#   5             crops 0, .5, 1, .5  -> .5
#   COCOval3      crops 1, 1, 1, 0    -> .75
# DPG = (.75 + .5 + .75) / 3 x 100 = 66.666...; with the missing image as 0: 2.0 / 4 x 100 = 50.
RESULTS = """\
/data/OUT/partiprompts1.png, 1.0, 0.5, 0.5, 1.0, 0.75
/data/OUT/5.png, 0.0, 0.5, 1.0, 0.5, 0.5
/data/OUT/COCOval3.png, 1.0, 1.0, 1.0, 0.0, 0.75
Model: OUT
L1 category scores:
\tentity: 80.0
\tattribute: 50.0
L2 category scores:
\tattribute - color: 50.0
\tentity - whole: 80.0
Image path: /data/OUT
Save results to: /data/OUT/dpg-bench_20250101-000000_results.txt
DPG-Bench score: 66.66666666666667
"""


def test_summary_recomputes_dpg_counts_missing_and_flags_partiprompts97(tmp_path):
    res = tmp_path / "res.txt"
    res.write_text(RESULTS)
    s = dpg_summary.summarize_dpg(res, expected_ids=["partiprompts1", "5", "COCOval3", "partiprompts97"])
    assert s["scored_images"] == 3 and s["expected_images"] == 4
    assert s["missing_ids"] == ["partiprompts97"]
    assert s["dpg"] == pytest.approx(200 / 3) and s["dpg_reported"] == pytest.approx(200 / 3)
    assert s["dpg_abs_diff"] < 1e-9
    assert s["dpg_missing_as_zero"] == pytest.approx(50.0)
    assert s["crops_per_image"] == [4]
    assert s["l1"] == {"entity": 80.0, "attribute": 50.0}
    assert s["l2"] == {"attribute - color": 50.0, "entity - whole": 80.0}
    assert "last crop only" in s["category_note"] and "#60" in s["category_note"]
    assert "#61" in s["partiprompts97"] and "not scored" in s["partiprompts97"]
    assert not any("differs" in w for w in s["warnings"])
    text = dpg_summary.format_summary(s)
    assert "DPG-Bench: 66.6667" in text and "3 / 4" in text and "partiprompts97" in text


def test_summary_warns_on_a_wrong_reported_score_and_single_crop(tmp_path):
    res = tmp_path / "res.txt"
    # One crop per image (the Python default --pic-num 1); mean line 0.5 but reported 60.
    res.write_text("/d/OUT/a.png, 0.5, 0.5\n/d/OUT/b.png, 0.5, 0.5\nDPG-Bench score: 60.0\n")
    s = dpg_summary.summarize_dpg(res)
    assert s["dpg"] == pytest.approx(50.0) and s["dpg_abs_diff"] == pytest.approx(10.0)
    assert s["expected_images"] == 1065 and s["missing_ids"] is None
    warns = " | ".join(s["warnings"])
    assert "differs from the reported" in warns and "crops per image [1]" in warns and "2 distinct images" in warns


# Synthetic CSV: item a1 has a chain q1 <- q2 <- q3, item b2 has q1 <- q2. Raw answers per crop (0..3):
#   a1 q1 [1,0,1,1]  q2 [1,1,0,1]  q3 [0,1,1,0]
#   b2 q1 [1,1,0,0]  q2 [1,0,0,0]
# Zeroing (parent 0 -> child 0, in CSV order, chains propagate):
#   a1 crop0 [1,1,0] = 2/3; crop1 q1=0 -> q2=0 -> q3=0: 0; crop2 q2=0 -> q3=0: [1,0,0] = 1/3; crop3 [1,1,0] = 2/3
#      image a1 = (2/3 + 0 + 1/3 + 2/3) / 4 = 5/12
#   b2 crop0 [1,1] = 1; crop1 [1,0] = .5; crop2 [0,0] = 0; crop3 [0,0] = 0 -> image b2 = 1.5 / 4 = 3/8
#   DPG = (5/12 + 3/8) / 2 x 100 = 19/48 x 100 = 39.5833...
# Categories over all crops, raw: entity - whole (3 + 2) / 8 = 62.5, attribute - color 3/4 = 75,
#   relation - spatial 2/4 = 50, other - count 1/4 = 25.
# After zeroing: entity 62.5 (roots), attribute a1 q2 [1,0,0,1] = 50, relation [0,0,0,0] = 0, other [1,0,0,0] = 25.
# ELLA's own category lines (last crop, raw): entity (1 + 0) / 2 = 50, attribute 100, relation 0, other 0.
CSV_ROWS = [
    ("a1", 1, "0", "entity - whole (cat)", "is there a cat?"),
    ("a1", 2, "1", "attribute - color (cat, black)", "is the cat black?"),
    ("a1", 3, "2", "relation - spatial (cat, mat, on)", "is the cat on the mat, next to the door?"),
    ("b2", 1, "0", "entity - whole (dog)", "is there a dog?"),
    ("b2", 2, "1", "other - count (dog, ==2)", "are there two dogs?"),
]
ANSWERS = {
    "a1": [[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]],
    "b2": [[1, 1], [1, 0], [0, 0], [0, 0]],
}


def write_synthetic(tmp_path: Path, r: int = 8) -> tuple[Path, Path, Path, Path]:
    import csv

    csv_path = tmp_path / "dpg_bench.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                    "category_detailed", "tuple", "question_natural_language"])  # fmt: skip
        for item, qid, dep, tup, q in CSV_ROWS:
            w.writerow([item, "a prompt, with a comma", "kw", qid, dep, tup.split(" - ")[0], "x", tup, q])
    img_dir = tmp_path / "OUT"
    img_dir.mkdir()
    crops = [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)]
    detail_lines, result_lines = [], []
    for item, per_crop in ANSWERS.items():
        path = str(img_dir / f"{item}.png")
        Image.fromarray(np.zeros((2 * r, 2 * r, 3), np.uint8)).save(path)
        qs = [row for row in CSV_ROWS if row[0] == item]
        for crop, answers in zip(crops, per_crop):
            for (_, _, _, _, q), a in zip(qs, answers):
                detail_lines.append(f"{path}, {crop}, {q}, {'yes' if a else 'no'}")
    # partiprompts97-style failure: a crop's questions were asked, then the item raised (no results line).
    detail_lines.insert(3, f"{img_dir / 'partiprompts97.png'}, (0, 0, {r}, {r}), is there a man?, yes")
    result_lines = [
        f"{img_dir / 'a1.png'}, 0.6666666666666666, 0.0, 0.3333333333333333, 0.6666666666666666, 0.41666666666666663",
        f"{img_dir / 'b2.png'}, 1.0, 0.5, 0.0, 0.0, 0.375",
    ]
    footer = ["Model: OUT", "L1 category scores:", "\tentity: 50.0", "\tattribute: 100.0", "\trelation: 0.0",
              "\tother: 0.0", "L2 category scores:", "\tattribute - color: 100.0", "\tentity - whole: 50.0",
              "\tother - count: 0.0", "\trelation - spatial: 0.0", f"Image path: {img_dir}",
              "Save results to: x", "DPG-Bench score: 39.58333333333333"]  # fmt: skip
    res = tmp_path / "dpg-bench_x_results.txt"
    res.write_text("\n".join(result_lines + footer) + "\n")
    detail = tmp_path / "dpg-bench_x_results_detail.txt"
    detail.write_text("\n".join(detail_lines) + "\n")
    return csv_path, res, detail, img_dir


def test_all_crops_recompute_on_a_synthetic_csv(tmp_path):
    csv_path, res, detail, img_dir = write_synthetic(tmp_path)
    s = dpg_summary.summarize_dpg(res, csv_path=csv_path, detail_path=detail, resolution=8)
    assert s["dpg"] == pytest.approx(100 * 19 / 48)
    ac = s["all_crops"]
    assert ac["images"] == 2 and ac["skipped"] == [] and ac["unmatched"] == 0
    assert ac["dpg"] == pytest.approx(100 * 19 / 48)
    assert ac["l2_raw"] == pytest.approx({"attribute - color": 75.0, "entity - whole": 62.5, "other - count": 25.0,
                                          "relation - spatial": 50.0})  # fmt: skip
    assert ac["l2_zeroed"] == pytest.approx({"attribute - color": 50.0, "entity - whole": 62.5,
                                             "other - count": 25.0, "relation - spatial": 0.0})  # fmt: skip
    assert ac["l1_raw"] == pytest.approx({"attribute": 75.0, "entity": 62.5, "other": 25.0, "relation": 50.0})
    assert ac["l1_zeroed"] == pytest.approx({"attribute": 50.0, "entity": 62.5, "other": 25.0, "relation": 0.0})
    assert s["l2"]["attribute - color"] == 100.0  # ELLA's last-crop number, reported as such
    assert s["grid_check"] == {"tile_size": 8, "grid_size": 16, "wrong_size": {}, "stray_files": []}
    assert not any("differs" in w for w in s["warnings"])
    text = dpg_summary.format_summary(s)
    assert "All-crops recompute" in text and "last crop only" in text


def test_grid_check_flags_wrong_sizes_and_stray_files(tmp_path):
    _, res, _, img_dir = write_synthetic(tmp_path)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img_dir / "c3.png")
    (img_dir / "notes.txt").write_text("stray")
    (tmp_path / "OUT.json").write_text(json.dumps({"tile_size": 8}))  # the sidecar of eval.dpg_generate
    s = dpg_summary.summarize_dpg(res)  # image folder from 'Image path:', R from the sidecar
    assert s["grid_check"]["wrong_size"] == {"c3.png": [20, 20]}
    assert s["grid_check"]["stray_files"] == ["notes.txt"]
    assert s["missing_ids"] == ["c3"]  # in the folder but not scored
    assert any("not 16x16" in w for w in s["warnings"])


def test_summary_cli(tmp_path, capsys):
    csv_path, res, detail, _ = write_synthetic(tmp_path)
    assert dpg_summary.main([str(res), "--csv", str(csv_path), "--detail", str(detail), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["all_crops"]["dpg"] == pytest.approx(100 * 19 / 48)
    with pytest.raises(SystemExit):
        dpg_summary.main([str(res), "--csv", str(csv_path)])
