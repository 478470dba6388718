"""eval.compare shows HT-GRPO's per-stage metrics (issue 14 item 4): loaded per round, plotted per stage."""

import json
import math
from pathlib import Path

from PIL import Image

from eval import compare


def make_run(root: Path, name: str, stages: bool) -> Path:
    """3 rounds; with ``stages`` the structure updates clip 0.3 and refine ones 0.1, and round 2 has no global key."""
    d = root / name
    d.mkdir()
    lines = []
    for r in (1, 2, 3):
        line = {"round": r, "reward/mean": 0.1 * r, "reward/std": 0.1}
        if stages:
            line |= {"stage/structure/clip_frac": 0.3, "stage/refine/clip_frac": 0.1, "stage/structure/p": 0.75}
            line |= {} if r == 2 else {"stage/global/clip_frac": 0.05}
        lines.append(line)
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def test_stage_metrics_are_loaded_per_round(tmp_path):
    run = compare.load_run(make_run(tmp_path, "ht", True))
    assert sorted(run["stage"]) == ["stage/global/clip_frac", "stage/refine/clip_frac", "stage/structure/clip_frac",
                                    "stage/structure/p"]  # fmt: skip
    assert run["stage"]["stage/structure/clip_frac"].tolist() == [0.3, 0.3, 0.3]
    g = run["stage"]["stage/global/clip_frac"].tolist()
    assert g[0] == g[2] == 0.05 and math.isnan(g[1])  # a round without the key is a gap, not a 0
    assert compare.load_run(make_run(tmp_path, "mg", False))["stage"] == {}


def test_compare_plots_stages_only_for_runs_that_log_them(tmp_path):
    ht, mg = make_run(tmp_path, "ht", True), make_run(tmp_path, "mg", False)
    out = tmp_path / "cmp"
    compare.compare([str(ht), str(mg)], ["htgrpo", "maskgrpo"], False, out)
    with Image.open(out / "stage_metrics.png") as im:
        assert im.width > im.height > 0
    compare.compare([str(mg)], None, False, out)  # a baseline-only comparison: no (stale) stage plot
    assert not (out / "stage_metrics.png").exists() and (out / "reward_curves.png").is_file()
