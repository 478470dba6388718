"""The focused study plan (eval/toy_compare.py --plan focused) and its statistics (eval/study_stats.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from eval.study_stats import ci_record, fmt_interval, metric_curve, paired_t_interval, t975
from eval.toy_compare import METHODS, PLANS, ROW_KEYS, collect, main, paired_table, resolved_config, study_table


def test_paired_t_interval_hand_computed():
    # d = (0.01, 0.03, 0.05): mean 0.03; sd (ddof 1) = sqrt((0.0004 + 0 + 0.0004) / 2) = 0.02;
    # half = t_{0.975, 2} * 0.02 / sqrt(3) = 4.303 * 0.0115470 = 0.0496867
    mean, lo, hi, n = paired_t_interval([0.01, 0.03, 0.05])
    assert (mean, n) == (pytest.approx(0.03), 3)
    assert lo == pytest.approx(0.03 - 0.0496867, abs=1e-6) and hi == pytest.approx(0.03 + 0.0496867, abs=1e-6)
    # 5 seeds (df 4): t = 2.776; d = (0, 0, 0, 0, 0.1): mean 0.02, sd = sqrt((4 * 0.0004 + 0.0064) / 4) = 0.0447214
    mean, lo, hi, n = paired_t_interval([0.0, 0.0, 0.0, 0.0, 0.1])
    assert hi - mean == pytest.approx(2.776 * 0.0447214 / math.sqrt(5), abs=1e-6) and n == 5
    assert paired_t_interval([0.2])[1:] == (pytest.approx(math.nan, nan_ok=True),) * 2 + (1,)
    assert paired_t_interval([])[3] == 0 and t975(4) == 2.776 and t975(100) == 1.96
    assert fmt_interval(ci_record((0.03, -0.02, 0.08, 3))) == "+0.030 [-0.020, +0.080]"
    assert fmt_interval(ci_record(paired_t_interval([0.2]))) == "+0.200"
    assert fmt_interval(ci_record(paired_t_interval([]))) == "-"


def test_metric_curve_reads_the_last_line_per_round(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"round": 1, "a": 0.1}\n{"round": 2, "b": 5}\n{"round": 2, "a": 0.2}\n{"round": 2, "a": 0.3}\n')
    rounds, values = metric_curve(f, "a")
    assert rounds.tolist() == [1, 2] and np.allclose(values, [0.1, 0.3])
    assert metric_curve(f, "missing") is None


def test_focused_plan_definition():
    plan = PLANS["focused"]
    assert len(plan.seeds) == 5 and len(plan.methods) == 7 and all(m in METHODS for m in plan.methods)
    assert all(Path(METHODS[m].config).is_file() for m in plan.methods)
    # the confidence-rank HT-GRPO and its MaskGRPO twin roll out with the same sampler, and are paired
    ht, twin = METHODS["HT confidence ranks"], METHODS["MaskGRPO maskgit"]
    assert ht.reference == twin.label
    rollout = [resolved_config(m, list(plan.overrides) + list(m.overrides)).rollout for m in (ht, twin)]
    assert rollout[0] == rollout[1] and rollout[0].name == "maskgit"
    assert resolved_config(METHODS["MaskGRPO"], list(plan.overrides)).rollout.name == "emerge"
    assert "eval.samples_per_prompt=8" in PLANS["study"].overrides and len(PLANS["study"].methods) == 10
    # the reward-choice arm trains MaskGRPO on partial credit only, the default on the graded verdict only
    arm = METHODS["MaskGRPO partial credit"]
    weights = [{n: r.weight for n, r in resolved_config(m, list(plan.overrides) + list(m.overrides)).rewards.items()}
               for m in (arm, METHODS["MaskGRPO"])]  # fmt: skip
    assert (weights[0]["shapes_geneval"], weights[0]["shapes_geneval_graded"]) == (1.0, 0.0)
    assert (weights[1]["shapes_geneval"], weights[1]["shapes_geneval_graded"]) == (0.0, 1.0)
    samples = [o for o in plan.overrides if o.startswith("eval.samples_per_prompt=")]
    assert int(samples[0].split("=")[1]) > 8  # more eval images per caption than the study


def test_table_has_the_paired_column_only_when_paired():
    base = {k: (0.25, 0.01, 5) for k in ROW_KEYS}
    row = {**base, "paired": {"mean": 0.03, "low": -0.02, "high": 0.08, "n": 5}, "reference": "MaskGRPO"}
    lines = study_table({"base": base, "X": row}).splitlines()
    assert lines[0].endswith("| Δ overall vs reference, paired, 95% CI |")
    assert lines[3].endswith("| +0.030 [-0.020, +0.080] vs MaskGRPO |") and lines[2].endswith("| - |")
    assert "paired" not in study_table({"base": base})


def test_paired_table_shows_each_metric_vs_base_and_vs_reference():
    ci = {"mean": 0.03, "low": -0.02, "high": 0.08, "n": 5}
    rows = {"base": {}, "MaskGRPO": {"vs_base": {"overall": ci, "partial_mean": {**ci, "mean": 0.05}}},
            "X": {"vs_base": {"overall": ci}, "vs_reference": {"overall": {**ci, "low": None, "high": None, "n": 1}},
                  "reference": "MaskGRPO"}}  # fmt: skip
    lines = paired_table(rows).splitlines()
    assert lines[0] == (
        "| method | Δ accuracy vs base | Δ partial credit vs base | Δ graded verdict vs base | reference | "
        "Δ accuracy vs reference | Δ partial credit vs reference | Δ graded verdict vs reference |"
    )
    assert lines[2] == "| MaskGRPO | +0.030 [-0.020, +0.080] | +0.050 [-0.020, +0.080] | - | - | - | - | - |"
    assert lines[3] == "| X | +0.030 [-0.020, +0.080] | - | - | MaskGRPO | +0.030 | - | - |"
    assert len(lines) == 4  # the base row has no paired changes


@pytest.mark.slow
def test_quick_focused_plan_pairs_the_twins_and_draws_accuracy_curves(toy_base_dir, tmp_path):
    out = tmp_path / "focused"
    args = ["--plan", "focused", "--quick", "--methods", "MaskGRPO maskgit",
            "HT confidence ranks", "--out", str(out), f"backbone.path={toy_base_dir}", "rl.rounds=1",
            "rollout.num_steps=2", "eval.sampler.num_steps=2", "eval.samples_per_prompt=1"]  # fmt: skip
    assert main(args) == 0
    study = json.loads((out / "study.json").read_text())
    ht = study["rows"]["HT confidence ranks"]
    after = [json.loads((out / d / "seed0" / "eval_after.json").read_text())["overall"]
             for d in ("ht_confidence_ranks", "maskgrpo_maskgit")]  # fmt: skip
    assert ht["paired"] == {"mean": pytest.approx(after[0] - after[1]), "low": None, "high": None, "n": 1}
    md = (out / "study.md").read_text()
    assert "| Δ overall vs reference, paired, 95% CI |" in md and "| HT confidence ranks | " in md.split("Paired")[1]
    assert ht["vs_reference"]["partial_mean"]["n"] == 1 and set(ht["vs_base"]) == {
        "overall",
        "partial_mean",
        "graded_mean",
    }
    assert (out / "accuracy_curves.png").stat().st_size > 0  # the zero-weight verdict monitor was logged
    cfg = (out / "ht_confidence_ranks" / "seed0" / "config.yaml").read_text()
    assert "maskgit" in cfg and "rollout_accuracy" in cfg


def _fake_run(d: Path, overall: float) -> None:
    """The files ``collect`` reads from a finished run: eval_after.json, metrics.jsonl and the .wall beside it."""
    d.mkdir(parents=True)
    (d / "eval_after.json").write_text(json.dumps({k: overall for k in ROW_KEYS}))
    (d / "metrics.jsonl").write_text('{"round": 1, "reward/mean": 0.5, "perf/forwards_rollout": 10}\n')
    (d.parent / f"{d.name}.wall").write_text("1.0\n")


def test_study_plan_pairs_each_ablation_with_ht_grpo(tmp_path):
    plan = PLANS["study"]
    assert {m: plan.references.get(m, METHODS[m].reference) for m in plan.methods} == {
        "MaskGRPO": "MaskGRPO", "UniGRPO": "MaskGRPO", "TraceGRPO": "MaskGRPO", "HT-GRPO": "MaskGRPO",
        **{m: "HT-GRPO" for m in plan.methods[4:]}}  # fmt: skip
    # overall per seed (0, 1): base 0.30 / 0.40, MaskGRPO 0.32 / 0.44, HT-GRPO 0.35 / 0.41, single-stage 0.31 / 0.43
    values = {"base": (0.30, 0.40), "maskgrpo": (0.32, 0.44), "ht_grpo": (0.35, 0.41), "ht_single_stage": (0.31, 0.43)}
    for s in (0, 1):
        (tmp_path / "base" / f"seed{s}").mkdir(parents=True)
        (tmp_path / "base" / f"seed{s}" / "eval_before.json").write_text(json.dumps({k: values["base"][s]
                                                                                    for k in ROW_KEYS}))  # fmt: skip
        for name in ("maskgrpo", "ht_grpo", "ht_single_stage"):
            _fake_run(tmp_path / name / f"seed{s}", values[name][s])
    methods = [METHODS[m] for m in ("MaskGRPO", "HT-GRPO", "HT single-stage")]
    rows, _ = collect(tmp_path, methods, [0, 1], plan.references)
    # single-stage - HT-GRPO per seed: -0.04, +0.02 -> mean -0.01; HT-GRPO - MaskGRPO: +0.03, -0.03 -> 0
    assert rows["HT single-stage"]["reference"] == "HT-GRPO"
    assert rows["HT single-stage"]["paired"]["mean"] == pytest.approx(-0.01)
    assert rows["HT-GRPO"]["reference"] == "MaskGRPO" and rows["HT-GRPO"]["paired"]["mean"] == pytest.approx(0.0)
    assert rows["HT single-stage"]["vs_base"]["overall"]["mean"] == pytest.approx(0.02)  # +0.01, +0.03
    rows, _ = collect(tmp_path, methods, [0, 1])  # without the plan: every method's own reference
    assert rows["HT single-stage"]["reference"] == "MaskGRPO"
    assert rows["HT single-stage"]["paired"]["mean"] == pytest.approx(-0.01)  # -0.01, -0.01


def test_compose_plan_is_the_budget_plan_on_the_composition_base():
    budget, compose = PLANS["budget"], PLANS["compose"]
    assert compose.methods == budget.methods and compose.seeds == budget.seeds
    assert compose.matched == budget.matched == compose.references
    assert set(compose.overrides) - set(budget.overrides) == {"backbone.path=cache/toy_base_compose"}
    assert compose.out != budget.out  # the two studies never share run folders
    cfg = resolved_config(METHODS["HT-GRPO"], list(compose.overrides))
    assert str(cfg.backbone.path) == "cache/toy_base_compose" and cfg.rl.rounds == 30
    assert compose.base_make == "BASE=compose bash launch/toy_pretrain.sh" and not budget.base_make


def test_a_plan_whose_base_is_not_made_stops_before_any_run(tmp_path):
    """The compose base is made, not shipped: both study commands stop in one line naming the command."""
    from eval.select_on_val import main as select_main

    missing = tmp_path / "not_made"
    for entry in (main, select_main):
        with pytest.raises(SystemExit) as e:
            entry(["--plan", "compose", "--out", str(tmp_path / "out"), f"backbone.path={missing}"])
        msg = str(e.value)
        assert msg == (
            f"error: {missing}: the plan's base has not been made here; make it with "
            "`BASE=compose bash launch/toy_pretrain.sh` (docs/toy_base.md), then rerun this command"
        )
    assert not (tmp_path / "out").exists()
