"""The ShapesWorld study driver (eval/toy_compare.py): the table format, and a real --quick study on the tiny base."""

import json
import math

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
