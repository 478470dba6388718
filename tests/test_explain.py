"""``python -m maskgrpo.explain``: one round's plan on the toy, checked against what the method says it must be."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, TINY_RUN, UNSET, tiny_run

from maskgrpo.explain import main

P, G, N = 4, 3, 64  # the tiny base's world: 32 px canvas, 4 px patches -> 64 image tokens


def explain(capsys, config: str, base: str, *extra: str, as_json: bool = True) -> dict | str:
    sizes = {**dict.fromkeys(TINY_RUN, UNSET), "prompts.per_round": P, "rl.group_size": G, "rl.num_inner_updates": 4,
             "rollout.num_steps": 4}  # fmt: skip
    args = ["--config", str(REPO / "configs" / config), *tiny_run(base, rounds=UNSET, **sizes), *extra]
    main([*args, "--json"] if as_json else args)
    out = capsys.readouterr().out
    return json.loads(out) if as_json else out


def test_htgrpo_plan_stages_rows_tokens_and_weights(capsys, toy_base_dir):
    # budgets 1:2:1, p from 1.0 down to 0.5 within a stage; K = floor(0.3 * 64) = 19 structural tokens per rollout
    got = explain(capsys, "toy_htgrpo.yaml", toy_base_dir, "patch_options.budgets=[1,2,1]")
    rows = got["updates"]
    assert [r["stage"] for r in rows] == ["global", "structure", "structure", "refine"]
    assert [r["rate"] for r in rows] == [1.0, 1.0, 0.5, 1.0]
    assert all(r["context"] == "fully_masked[0]" and r["rows"] == P for r in rows)  # one shared row per prompt
    assert rows[0]["tokens_per_rollout"] == N  # Global at p = 1: every token
    assert rows[1]["tokens_per_rollout"] == 19 and rows[3]["tokens_per_rollout"] == N - 19
    assert 0 < rows[2]["tokens_per_rollout"] < 19  # a random half of the structure set
    assert rows[1]["mean_weight"] == pytest.approx(1.2) and rows[3]["mean_weight"] == pytest.approx(0.8)
    assert rows[0]["mean_weight"] == pytest.approx((19 * 1.2 + 45 * 0.8) / 64)  # every token: the mix of both


def test_maskgrpo_plan_one_row_per_rollout_weight_one_and_growing_masks(capsys, toy_base_dir):
    rows = explain(capsys, "toy_maskgrpo.yaml", toy_base_dir)["updates"]
    assert [r["context"] for r in rows] == [f"random_remask[{i}]" for i in range(4)]
    assert all(r["stage"] == "-" and r["rate"] is None and r["mean_weight"] == 1.0 for r in rows)
    assert all(r["rows"] == P * G for r in rows)  # each rollout reads its own re-masked row
    # mask ratio m_min + (1 - m_min) m / mu with m_min 0.6: 0.7, 0.8, 0.9, 0.999 of 64 tokens on average
    tokens = [r["tokens_per_rollout"] for r in rows]
    assert tokens == sorted(tokens) and 0.55 * N < tokens[0] < 0.85 * N and tokens[-1] > 0.95 * N


def test_table_output_names_the_components(capsys, toy_base_dir):
    out = explain(capsys, "toy_htgrpo.yaml", toy_base_dir, "patch_options.budgets=[1,2,1]", as_json=False)
    assert "context fully_masked, loss ht_staged" in out
    assert "| 2 | structure | fully_masked[0] | 4 | 19.0 of 64 | 1.200 | 1.000 |" in out
