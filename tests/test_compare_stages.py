"""eval.compare shows HT-GRPO's per-stage metrics: loaded per round, plotted per stage."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
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
        assert im.size == (1650, 748)  # the 15 x 6.8 inch figure at 110 dpi
    # what it draws: a line per (run, stage) where the run logged that stage's metric (maskgrpo: none), NaN gaps kept
    fig = compare.stage_figure({"htgrpo": [compare.load_run(ht)], "maskgrpo": [compare.load_run(mg)]})
    panels = {ax.get_title(): {ln.get_label(): ln.get_ydata().tolist() for ln in ax.lines} for ax in fig.axes}
    clip = panels["clip_frac"]
    assert sorted(clip) == ["htgrpo (n=1): global", "htgrpo (n=1): refine", "htgrpo (n=1): structure"]
    assert clip["htgrpo (n=1): structure"] == [0.3, 0.3, 0.3] and clip["htgrpo (n=1): refine"] == [0.1, 0.1, 0.1]
    g = clip["htgrpo (n=1): global"]
    assert g[0] == g[2] == 0.05 and math.isnan(g[1])
    assert panels["p"] == {"htgrpo (n=1): structure": [0.75, 0.75, 0.75]}
    assert all(not panels[m] for m in ("loss", "ratio_mean", "ratio_max", "kl_k3", "support_frac", "mean_weight"))
    compare.compare([str(mg)], None, False, out)  # a baseline-only comparison: no (stale) stage plot
    assert not (out / "stage_metrics.png").exists() and (out / "reward_curves.png").is_file()


def test_plots_name_the_configured_base_and_say_what_the_band_is(tmp_path):
    runs = [make_run(tmp_path, f"ht{i}", True) for i in range(2)]
    for d in runs:  # the run's config.yaml names the base as configured
        (d / "config.yaml").write_text("run:\n  seed: 0\nbackbone:\n  name: shapes\n  path: assets/toy_base\n")
    groups = {"htgrpo": [compare.load_run(d) for d in runs]}
    fig = compare.plot_curves(groups, tmp_path / "r.png", smooth=2)
    (ax,) = fig.axes
    assert fig._suptitle.get_text().endswith("\nbase assets/toy_base")
    assert ax.get_legend().get_texts()[0].get_text() == "htgrpo (n=2)"
    (caption,) = [t.get_text() for t in fig.texts if t is not fig._suptitle]
    assert "band: ±1 sample SD" in caption and "n = 2 runs (seeds) per line" in caption and "2-round moving" in caption
    assert len(ax.collections) == 1  # the band of the one 2-run line
    fig = compare.stage_figure(groups)
    assert fig._suptitle.get_text().endswith(", base assets/toy_base")
    assert any("mean over a group's n runs" in t.get_text() for t in fig.texts)
    # one run per line: no band, and the caption says so; a run without config.yaml adds no base
    bare = make_run(tmp_path, "bare", False)
    fig = compare.plot_curves({"bare": [compare.load_run(bare)]}, tmp_path / "b.png")
    assert fig._suptitle.get_text() == "training reward/mean per round" and not fig.axes[0].collections
    assert [t.get_text() for t in fig.texts if t is not fig._suptitle] == ["One run per line (n = 1), no band."]
    (bare / "config.yaml").write_text("backbone: [unclosed")
    with pytest.raises(ValueError, match=r"bare/config.yaml: no backbone.path in it \(ParserError"):
        compare.configured_base(bare)


def test_more_than_three_groups_become_small_multiples_with_a_reference_line(tmp_path):
    """Never 4+ overlapping bands on one axis: one panel per group, shared axes, the first group dashed in each."""
    from eval.study_stats import OVERLAY_MAX, plot_metric_curves

    rounds = np.arange(1, 6)
    groups = {f"m{i}": [(rounds, rounds * 0.1 + i), (rounds, rounds * 0.1 + i + 0.05)] for i in range(OVERLAY_MAX + 2)}
    fig = plot_metric_curves(groups, tmp_path / "m.png", "x")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == OVERLAY_MAX + 2
    assert all(len(ax.collections) == 1 for ax in panels)  # one band per panel
    assert [len(ax.lines) for ax in panels] == [1] + [2] * (OVERLAY_MAX + 1)  # + the first group's dashed mean
    assert panels[1].lines[0].get_linestyle() == "--" and panels[0].get_shared_y_axes().joined(panels[0], panels[3])
    few = plot_metric_curves(dict(list(groups.items())[:OVERLAY_MAX]), tmp_path / "f.png", "x")
    assert len(few.axes) == 1 and len(few.axes[0].collections) == OVERLAY_MAX


def make_eval_run(root: Path, name: str, heldout: dict[int, float], geneval: dict[int, float] | None = None) -> Path:
    """4 rounds; ``eval/heldout/overall`` (and ``eval/geneval/overall``) at the rounds given."""
    d = root / name
    d.mkdir()
    lines = []
    for r in (1, 2, 3, 4):
        line = {"round": r, "reward/mean": 0.5, "reward/std": 0.1}
        line |= {"eval/heldout/overall": heldout[r], "eval/heldout/colors": 1.0} if r in heldout else {}
        line |= {"eval/geneval/overall": geneval[r]} if geneval and r in geneval else {}
        lines.append(line)
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def test_evaluations_during_training_are_loaded_and_plotted_per_set(tmp_path, monkeypatch):
    a = make_eval_run(tmp_path, "a", {2: 0.4, 4: 0.6}, geneval={4: 0.25})
    b = make_eval_run(tmp_path, "b", {2: 0.2, 4: 0.5})
    run = compare.load_run(a)
    assert sorted(run["eval"]) == ["geneval", "heldout"]  # per-tag keys are not sets
    assert run["eval"]["heldout"][0].tolist() == [2, 4] and run["eval"]["heldout"][1].tolist() == [0.4, 0.6]
    plotted = {}
    from eval import study_stats

    draw = study_stats.plot_metric_curves

    def record(curves, path, ylabel, smooth=1, base=None, title=None):
        plotted[path.name] = (ylabel, {k: [(r.tolist(), v.tolist()) for r, v in c] for k, c in curves.items()})
        return draw(curves, path, ylabel, smooth, base, title)

    monkeypatch.setattr(study_stats, "plot_metric_curves", record)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "eval_curves_val.png").write_bytes(b"stale")
    compare.compare([str(a), str(b)], ["m", "m"], True, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("eval_curves_*.png")) == [
        "eval_curves_geneval.png", "eval_curves_heldout.png"]  # fmt: skip
    assert plotted["eval_curves_heldout.png"] == ("eval/heldout/overall", {"m": [([2, 4], [0.4, 0.6]),
                                                                                ([2, 4], [0.2, 0.5])]})  # fmt: skip
    assert plotted["eval_curves_geneval.png"] == ("eval/geneval/overall", {"m": [([4], [0.25])]})  # run b has none
    assert Image.open(tmp_path / "out" / "eval_curves_heldout.png").size[0] > 0
