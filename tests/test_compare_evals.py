"""The main job's closing summary (maskgrpo/toy/compare_evals.py) on hand-made eval JSONs."""

from __future__ import annotations

import json
import math

import pytest

from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS
from maskgrpo.toy.compare_evals import accuracy_se, change_verdict, main, metric_se, reward_trend


def test_accuracy_se_is_the_binomial_se_of_the_mean_of_tags():
    # tag a: acc 0.5 over 2 images -> p = (1 + 1) / 4 = 0.5, p(1-p)/n = 0.125
    # tag b: acc 1.0 over 2 images -> p = (2 + 1) / 4 = 0.75, p(1-p)/n = 0.09375
    # SE = sqrt(0.125 + 0.09375) / 2 = 0.2338535
    summary = {"a": 0.5, "b": 1.0, "overall": 0.75, "tag_images": {"a": 2, "b": 2}}
    assert accuracy_se(summary) == pytest.approx(0.2338535, abs=1e-7)
    assert math.isnan(accuracy_se({"a": 0.5, "overall": 0.5}))  # an old eval JSON without tag_images
    # per caption: tag a = c1 (1 of 2) + c2 (2 of 2): var = (2 * 0.25 * 2 / 1 + 0) / 4^2 = 0.0625;
    # tag b = c3 (1 of 4): var = 4 * 0.25 * 0.75 * 4 / 3 / 4^2 = 0.0625; SE = sqrt(0.125) / 2 = 0.1767767
    per_caption = {"caption_correct": {"c1": ["a", 1, 2], "c2": ["a", 2, 2], "c3": ["b", 1, 4]}}
    assert accuracy_se(per_caption) == pytest.approx(0.1767767, abs=1e-7)
    # means: SD / sqrt(images) = 0.3 / sqrt(9) = 0.1
    assert metric_se({"partial_mean": 0.4, "partial_sd": 0.3, "num_images": 9}, "partial_mean") == pytest.approx(0.1)


def test_change_verdict_against_the_band():
    # band = 1.96 * sqrt(0.02^2 + 0.02^2) = 1.96 * 0.0282843 = 0.0554372
    change, band, verdict = change_verdict(0.30, 0.40, 0.02, 0.02)
    assert band == pytest.approx(0.0554372, abs=1e-7) and change == pytest.approx(0.10) and verdict == "up"
    assert change_verdict(0.30, 0.33, 0.02, 0.02)[2] == "within noise"
    assert change_verdict(0.30, 0.20, 0.02, 0.02)[2] == "down"
    assert change_verdict(0.30, 0.20, math.nan, 0.02)[2] == "n/a"


def test_reward_trend_first_and_last_quarter():
    rows = [{"round": r, "reward/mean": r / 10} for r in range(1, 9)]  # 8 rounds -> quarters of 2
    assert reward_trend(rows) == ((1, 2), (7, 8), pytest.approx(0.15), pytest.approx(0.75))
    assert reward_trend(rows[:2]) == ((1, 1), (2, 2), pytest.approx(0.1), pytest.approx(0.2))


def _eval(overall_shift: float, n: int = 16) -> dict:
    accs = dict(zip(GENEVAL_TAGS, (1.0, 0.25, 0.0625, 0.625, 0.0625, 0.125)))
    accs = {t: a + overall_shift for t, a in accs.items()}
    return {**accs, "overall": sum(accs.values()) / 6, "partial_mean": 0.27 + overall_shift, "partial_sd": 0.2,
            "graded_mean": 0.5, "graded_sd": 0.3, "num_images": 6 * n,
            "tag_images": dict.fromkeys(GENEVAL_TAGS, n)}  # fmt: skip


@pytest.mark.parametrize("before, after, expect", [(0.0, -0.05, "did NOT change beyond eval noise"),
                                                   (0.0, 0.2, "ROSE beyond"), (0.2, 0.0, "FELL beyond")])  # fmt: skip
def test_summary_of_a_run_folder(tmp_path, capsys, before, after, expect):
    run = tmp_path / "run"
    run.mkdir()
    metrics = [{"round": r, "reward/mean": 0.3 + r / 100, "reward/shapes_geneval/mean": 0.3 + r / 100,
                "reward/nan_frac/shapes_geneval": 0.0} for r in range(1, 41)]  # fmt: skip
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")
    # SE of _eval(0): p_t = (16 acc + 1) / 18 -> sum_t p(1-p)/16 = 0.0517, sqrt / 6 = 0.038; the band of a change
    # is about 1.96 * sqrt(2) * 0.038 = 0.105: a shift of 0.05 is inside it, 0.2 beyond it
    (run / "eval_before.json").write_text(json.dumps(_eval(before)))
    (run / "eval_after.json").write_text(json.dumps(_eval(after)))
    assert main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "trained reward (shapes_geneval), mean of rounds 1-10 -> 31-40: 0.355 -> 0.655 (+0.300)" in out
    assert f"| GenEval accuracy (overall) | {0.354 + before:.3f} | {0.354 + after:.3f} |" in out and expect in out
    assert "Training captions" not in out and len(out.splitlines()) < 25  # one screen


def test_summary_without_eval_files_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing [") and len(err.strip().splitlines()) == 1


def test_trained_reward_names_skip_zero_weight_monitors(tmp_path):
    from maskgrpo.toy.compare_evals import trained_reward_names

    last = {"reward/mean": 0.5, "reward/shapes_geneval/mean": 0.4, "reward/shapes_geneval_graded/mean": 0.5}
    assert trained_reward_names(tmp_path, last) == ["shapes_geneval", "shapes_geneval_graded"]  # no config.yaml
    (tmp_path / "config.yaml").write_text("rewards:\n  shapes_geneval: {weight: 0.0, scale: 1.0}\n"
                                          "  shapes_geneval_graded: {weight: 1.0, scale: 1.0}\n")  # fmt: skip
    assert trained_reward_names(tmp_path, last) == ["shapes_geneval_graded"]


def test_eval_json_carries_the_counts_the_band_needs(tmp_path, capsys):
    """A real ShapesEval on the tiny base: per-caption counts add up to the per-tag accuracies and image counts."""
    from fixtures_toy import model_args

    from eval import shapes_eval

    assert shapes_eval.main([*model_args(), "--samples", "3", "--out", str(tmp_path), "--grid-prompts", "0"]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "shapes_eval.json").read_text())
    captions = summary["caption_correct"]
    assert sum(n for _, _, n in captions.values()) == summary["num_images"] == 12 * 3
    for tag, n_tag in summary["tag_images"].items():
        hits = sum(h for t, h, _ in captions.values() if t == tag)
        assert sum(n for t, _, n in captions.values() if t == tag) == n_tag
        assert hits / n_tag == pytest.approx(summary[tag])
    assert math.isfinite(accuracy_se(summary)) and summary["partial_sd"] >= 0 and 0 <= summary["graded_mean"] <= 1
