"""The ShapesWorld study driver (eval/toy_compare.py): the table format, and a real --quick study on the tiny base."""

import json
import math

import pytest

from eval.compare import fmt_stats
from eval.toy_compare import METHODS, ROW_KEYS, main, slug, study_table, total_forwards


def test_table_cells_are_mean_std_and_delta_is_signed():
    rows = {
        "base": {k: (0.25, 0.01, 3) for k in ROW_KEYS},
        "X": {
            **{k: (0.5, math.nan, 1) for k in ROW_KEYS},
            "delta": (-0.125, 0.05, 3),
            "reward_last": (0.3, 0.02, 3),
            "wall": (61.4, 2.0, 3),
            "forwards": (123456.0, 0.0, 3),
        },  # fmt: skip
    }
    table = study_table(rows).splitlines()
    assert table[0].startswith("| method | single_object |") and table[0].endswith("forwards / run |")
    assert table[2] == ("| base | " + " | ".join(["0.250 ± 0.010"] * 6) + " | **0.250 ± 0.010** | - | 0.250 ± 0.010 |"
                        + " - |" * 6)  # fmt: skip
    assert table[3].endswith("| **0.500** | -0.125 ± 0.050 | 0.500 | - | - | - | 0.300 ± 0.020 | 61 | 123 k |")
    assert fmt_stats((0.1, 0.2, 2), signed=True) == "+0.100 ± 0.200" and fmt_stats((0.1, 0.2, 0)) == "-"


def test_every_method_config_exists_and_slugs_are_distinct():
    from pathlib import Path

    assert all(Path(m.config).is_file() for m in METHODS.values())
    assert len({slug(n) for n in METHODS}) == len(METHODS) and slug("HT constant p=1") == "ht_constant_p_1"


def test_total_forwards_sums_every_counter(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"round": 1, "perf/forwards_rollout": 10, "perf/forwards_update": 3, "perf/seconds_update": 9}\n'
                 '{"round": 2, "perf/forwards_rollout": 10, "perf/forwards_old_ref": 4}\n')  # fmt: skip
    assert total_forwards(f) == 27


@pytest.mark.slow
def test_quick_study_runs_two_methods_and_resumes_without_rework(toy_base_dir, tmp_path, capsys):
    """Two real runs (separate processes) plus the base evaluation, then the table, the JSON and the curves."""
    out = tmp_path / "study"
    args = [
        "--quick",
        "--methods",
        "MaskGRPO",
        "HT-GRPO",
        "--out",
        str(out),
        f"backbone.path={toy_base_dir}",
        "rl.rounds=2",
        "rollout.num_steps=3",
        "eval.sampler.num_steps=2",
        "eval.samples_per_prompt=1",
    ]
    assert main(args) == 0
    table = (out / "study.md").read_text()
    assert "| base |" in table and "| MaskGRPO |" in table and "| HT-GRPO |" in table
    rows = json.loads((out / "study.json").read_text())["rows"]
    # HT-GRPO shares one context per prompt: fewer forwards than the per-rollout baseline on the same rollouts
    assert rows["HT-GRPO"]["forwards"]["mean"] < rows["MaskGRPO"]["forwards"]["mean"]
    assert rows["base"]["train"]["n"] == 1 and rows["HT-GRPO"]["delta_train"]["n"] == 1  # training-caption columns
    for m in ("maskgrpo", "ht_grpo"):
        before = json.loads((out / m / "seed0" / "eval_before.json").read_text())
        assert before == json.loads((out / "base" / "seed0" / "eval_before.json").read_text())
        assert (out / m / "seed0" / "eval_after.json").is_file() and float((out / m / "seed0.wall").read_text()) > 0
    assert (out / "reward_curves.png").stat().st_size > 0
    assert (out / "maskgrpo" / "seed0.commit").read_text().strip() in table  # header names the runs' commit
    assert "- HT-GRPO: `configs/toy_htgrpo.yaml`" in table  # legend
    assert [r["n"] for r in (rows["MaskGRPO"]["forwards"], rows["base"]["overall"])] == [1, 1]  # strict JSON
    capsys.readouterr()
    assert main(args) == 0
    assert "0 runs to do" in capsys.readouterr().out


def test_budget_schedule_hand_computed():
    from eval.budget_study import schedule

    # reference 30 rounds at 2000 FE / round = 60000 FE; a method at 800 FE / round gets floor(75) rounds, evaluated
    # where it reaches 1/2 and all of 60000 FE (rounds 37.5 -> 37, 75) and at the reference's 30 rounds
    assert schedule(30, 2000.0, 800.0) == (75, (30, 37, 75))
    assert schedule(30, 2000.0, 2000.0) == (30, (15, 30))  # the reference itself
    assert schedule(30, 2000.0, 2400.0) == (25, (12, 25))  # a dearer method: fewer rounds, no round-30 point


def test_budget_comparisons_on_hand_made_curves():
    from eval.budget_study import Point, compare_pair

    def pt(r, fe, acc):
        return Point(r, fe, fe / 100, acc, {t: acc for t in ("single_object", "two_object", "counting", "colors",
                                                            "position", "color_attr")})  # fmt: skip

    ref = {s: [pt(0, 0, 0.30), pt(2, 1000, 0.34 + s / 100), pt(4, 2000, 0.40 + s / 100)] for s in range(3)}
    # the method: half the FE per round; at 1000 FE (round 4) 0.36 + s/100, at 2000 FE (round 8) 0.45 + s/100
    method = {s: [pt(0, 0, 0.30), pt(2, 500, 0.33), pt(4, 1000, 0.36 + s / 100), pt(6, 1500, 0.41 + s / 100),
                  pt(8, 2000, 0.45 + s / 100)] for s in range(3)}  # fmt: skip
    got = compare_pair(method, ref, rounds=4)
    # equal rounds: round 2 -> 0.33 - (0.34 + s/100) = -0.01 - s/100, mean -0.02; round 4 -> -0.04 exactly
    assert abs(got["equal_rounds"]["half"]["overall"]["mean"] - (-0.02)) < 1e-12
    assert abs(got["equal_rounds"]["full"]["overall"]["mean"] - (-0.04)) < 1e-12
    # equal budget: 1000 FE -> +0.02; 2000 FE -> +0.05, with no spread over seeds (a zero-width interval)
    eb = got["equal_budget"]
    assert abs(eb["half"]["overall"]["mean"] - 0.02) < 1e-12 and abs(eb["full"]["overall"]["mean"] - 0.05) < 1e-12
    assert eb["full"]["budget_ratio"] == 1.0 and abs(eb["full"]["overall"]["high"] - 0.05) < 1e-9
    # time to the reference's final accuracy 0.40 + s/100: first reached at 1500 FE (0.41 + s/100) = 0.75 of 2000
    tta = got["time_to_accuracy"]
    assert tta["reached"] == 3 and tta["not_reached"] == 0 and abs(tta["fraction"]["mean"] - 0.75) < 1e-12


@pytest.mark.slow
def test_quick_budget_plan_matches_compute_and_writes_the_report(toy_base_dir, tmp_path):
    """The budget plan end to end on the tiny base: pilots, matched rounds, evaluations at the budget points, the
    report and both figures."""
    out = tmp_path / "budget"
    args = ["--plan", "budget", "--quick", "--methods", "MaskGRPO", "HT-GRPO", "--seeds", "0", "1", "--out", str(out),
            f"backbone.path={toy_base_dir}", "rl.rounds=2", "rollout.num_steps=3", "eval.sampler.num_steps=2",
            "eval.samples_per_prompt=1"]  # fmt: skip
    assert main(args) == 0
    pilot = json.loads((out / "pilot.json").read_text())
    assert pilot["HT-GRPO"]["fe_per_round"] < pilot["MaskGRPO"]["fe_per_round"]
    report = json.loads((out / "budget.json").read_text())
    ht_rounds, ht_evals = report["schedule"]["HT-GRPO"]
    assert ht_rounds > 2 and report["schedule"]["MaskGRPO"][0] == 2
    rows = [json.loads(x) for x in (out / "ht_grpo" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == ht_rounds and [r["round"] for r in rows if "eval/heldout/overall" in r] == ht_evals
    full = report["results"]["HT-GRPO"]["equal_budget"]["full"]
    assert full["overall"]["n"] == 2 and full["budget_ratio"] <= 1.0  # never more compute than MaskGRPO's
    assert "| HT-GRPO | MaskGRPO |" in (out / "budget.md").read_text()
    assert (out / "accuracy_vs_budget.png").stat().st_size > 0 and (out / "per_tag_equal_budget.png").is_file()
