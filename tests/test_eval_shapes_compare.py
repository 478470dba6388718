"""ShapesEval CLI on a tiny toy model (both ways of loading it) and the run-comparison table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_toy import model_args, toy_base_dir, toy_final_dir
from PIL import Image

from eval import compare, shapes_eval
from maskgrpo.observe import GRID_BORDER_PX, GRID_GAP_PX, GRID_HEADER_PX, GRID_LINE_PX, MARKS
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS

# ----------------------------------------------------------------------------------------------------------------
# ShapesEval
# ----------------------------------------------------------------------------------------------------------------


def test_shapes_eval_writes_table_json_and_a_grid_per_tag(tmp_path, capsys):
    out = tmp_path / "eval"
    assert shapes_eval.main([*model_args(), "--samples", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "shapes_eval.json").read_text())
    assert [k for k in summary if k in GENEVAL_TAGS] == list(GENEVAL_TAGS)  # the held-out set covers every tag
    assert summary["overall"] == pytest.approx(sum(summary[t] for t in GENEVAL_TAGS) / 6)
    assert summary["num_images"] == 12 * 2 and summary["config"]["samples"] == 2
    assert summary["config"]["sampler"] == {"name": "maskgit", "num_steps": 2, "cfg_scale": 3.5, "options": {}}
    assert "| **overall** |" in printed and "| counting |" in printed
    canvas = json.loads((toy_base_dir() / "world.json").read_text())["world"]["canvas"]
    side = canvas * 4  # tag grids upscale x4
    b = GRID_BORDER_PX
    tile_w, tile_h = max(side + 2 * b, 160), 2 * b + side + 4 + 2 * GRID_LINE_PX  # mark word + "sample j"
    for tag in GENEVAL_TAGS:
        rows = (out / f"shapes_eval_{tag}.txt").read_text().splitlines()
        assert rows and all(len(r.split("  ", 1)[0]) == 2 for r in rows)  # one verdict per sample
        with Image.open(out / f"shapes_eval_{tag}.png") as im:
            # one row per prompt under its caption header, its 2 samples side by side
            assert im.size == (2 * (tile_w + GRID_GAP_PX), len(rows) * (GRID_HEADER_PX + tile_h))
            for r, row in enumerate(rows):  # every sample's border carries the verdict of the .txt file
                y = r * (GRID_HEADER_PX + tile_h) + GRID_HEADER_PX + 1
                for j, verdict in enumerate(row.split("  ", 1)[0]):
                    assert im.convert("RGB").getpixel((j * (tile_w + GRID_GAP_PX) + 1, y)) == MARKS[verdict == "1"][1]
    with Image.open(out / "shapes_eval_samples.png") as im:  # per tag: a header, one row of x3 tiles with captions
        assert im.height == len(GENEVAL_TAGS) * (GRID_HEADER_PX + 2 * b + canvas * 3 + 4 + 4 * GRID_LINE_PX)
    assert (out / "shapes_eval.md").read_text().startswith("| tag | accuracy |")


def test_shapes_eval_from_a_run_checkpoint_defaults_to_the_run_directory(capsys):
    final = toy_final_dir()
    assert shapes_eval.main(["--checkpoint", str(final.parent), "--steps", "2", "--samples", "1", "--device", "cpu",
                             "--name", "ck"]) == 0  # fmt: skip
    assert (final.parent / "ck.json").is_file() and (final.parent / "ck_position.png").is_file()
    assert json.loads((final.parent / "ck.json").read_text())["config"]["checkpoint"] == str(final.parent)


def test_model_flags_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="either --checkpoint"):
        shapes_eval.main(["--checkpoint", str(toy_final_dir()), *model_args()])
    with pytest.raises(FileNotFoundError, match="final/"):
        shapes_eval.main(["--checkpoint", str(tmp_path)])


# ----------------------------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------------------------


def make_run(root: Path, name: str, rewards: list[float], before: float | None, after: float | None) -> Path:
    """A run directory: metrics.jsonl with one line per round, eval_before/after.json with every tag = value."""
    d = root / name
    d.mkdir()
    lines = [{"round": r + 1, "reward/mean": v, "reward/std": 0.1, "loss/policy": 0.0} for r, v in enumerate(rewards)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for fname, v in (("eval_before.json", before), ("eval_after.json", after)):
        if v is not None:
            ev = {t: v for t in GENEVAL_TAGS} | {"overall": v, "partial_mean": v / 2, "num_images": 48}
            (d / fname).write_text(json.dumps(ev))
    return d


def test_compare_table_side_by_side_and_plot(tmp_path, capsys):
    a = make_run(tmp_path, "maskgrpo_s0", [0.1, 0.2, 0.3], 0.25, 0.5)
    b = make_run(tmp_path, "htgrpo_s0", [0.1, 0.3, 0.6], 0.25, 0.75)
    c = make_run(tmp_path, "noeval", [0.2, 0.4], None, None)
    out = tmp_path / "cmp"
    assert compare.main([str(a), str(b), str(c), "--out", str(out)]) == 0
    table = (out / "compare.md").read_text()
    header, rule, *rows = table.strip().splitlines()
    assert header == "| metric | maskgrpo_s0 | htgrpo_s0 | noeval |"
    assert rows[0] == "| rounds | 3 | 3 | 2 |"
    assert rows[1] == "| final reward/mean | 0.300 | 0.600 | 0.400 |"
    assert "| **overall** (before → after) | 0.250 → 0.500 | 0.250 → 0.750 | - → - |" in rows
    assert "| partial_mean (before → after) | 0.125 → 0.250 | 0.125 → 0.375 | - → - |" in rows
    assert len(rows) == 2 + 6 + 2  # rounds, reward, six tags, overall, partial_mean
    assert table.strip() in capsys.readouterr().out
    with Image.open(out / "reward_curves.png") as im:
        assert im.format == "PNG" and im.width > 100
    data = json.loads((out / "compare.json").read_text())  # strict JSON (NaN -> null)
    assert data["noeval"]["overall/after"] == {"mean": None, "std": None, "n": 0}


def test_compare_groups_seeds_by_label_mean_and_sample_std(tmp_path):
    # Final rewards 0.4 and 0.6 -> mean 0.5, sample std sqrt(((-.1)^2 + .1^2) / 1) = 0.1414.
    # overall after 0.5 and 0.7 -> 0.6 +/- 0.1414; a single-seed group shows the value alone.
    runs = [make_run(tmp_path, "m0", [0.1, 0.4], 0.2, 0.5), make_run(tmp_path, "m1", [0.2, 0.6], 0.2, 0.7),
            make_run(tmp_path, "h0", [0.3, 0.9, 0.8], 0.2, 0.9)]  # fmt: skip
    out = tmp_path / "cmp"
    table = compare.compare([str(r) for r in runs], ["maskgrpo", "maskgrpo", "htgrpo"], True, out, smooth=2)
    lines = table.splitlines()
    assert lines[0] == "| metric | maskgrpo | htgrpo |"
    assert "| final reward/mean | 0.500 ± 0.141 | 0.800 |" in lines
    assert "| **overall** (before → after) | 0.200 ± 0.000 → 0.600 ± 0.141 | 0.200 → 0.900 |" in lines
    data = json.loads((out / "compare.json").read_text())
    assert data["maskgrpo"]["final_reward"]["n"] == 2 and data["maskgrpo"]["runs"] == [str(runs[0]), str(runs[1])]
    assert (out / "reward_curves.png").stat().st_size > 0
    # --last 2 averages each run's last two rounds first: m0 0.25, m1 0.4 -> 0.325 +/- 0.15 / sqrt(2) = 0.106
    table = compare.compare([str(r) for r in runs], ["maskgrpo", "maskgrpo", "htgrpo"], True, out, last=2)
    assert "| reward/mean, last 2 rounds | 0.325 ± 0.106 | 0.850 |" in table.splitlines()


def test_compare_errors_name_the_problem(tmp_path):
    run = make_run(tmp_path, "r", [0.1], None, None)
    with pytest.raises(ValueError, match="--labels has 2 entries for 1"):
        compare.compare([str(run)], ["a", "b"], False, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        compare.compare([str(tmp_path)], None, False, tmp_path / "o")
