"""``eval.every``: ShapesEval during training, logged with its round and the budget spent so far, exact on resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, tiny_run
from test_train import finish, read_jsonl, run_train

pytestmark = pytest.mark.slow  # trainer runs with evaluations, one killed and resumed

EVAL = {"eval": {"samples_per_prompt": 1, "batch_size": 64, "seed": 7, "train_prompts_per_tag": 1,
                 "sampler": {"name": "emerge", "num_steps": 2, "cfg_scale": 3.5}}}  # fmt: skip
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
WALL = ("perf/seconds_", "perf/rollout_images_per_s", "budget/seconds", "eval/seconds")


def overrides(base: str, out: Path, every: int, rounds: int = 3, **extra: object) -> list[str]:
    return tiny_run(base, out, rounds=rounds, **{**EVAL, "eval.every": every, "log.image_every": 0,
                                                       "log.rollout_table": False, **extra})  # fmt: skip


def training_numbers(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(("eval/", *WALL))} for r in rows]


def test_evaluations_are_logged_with_their_round_and_budget_and_change_no_training_number(toy_base_dir, tmp_path):
    with_eval, without = tmp_path / "with", tmp_path / "without"
    finish(run_train(overrides(toy_base_dir, with_eval, every=2, rounds=4)))
    finish(run_train(overrides(toy_base_dir, without, every=0, rounds=4)))
    a, b = read_jsonl(with_eval / "metrics.jsonl"), read_jsonl(without / "metrics.jsonl")
    assert training_numbers(a) == training_numbers(b)  # the evaluation draws from no training generator
    assert (with_eval / "final/model/model.safetensors").read_bytes() == (
        without / "final/model/model.safetensors").read_bytes()  # fmt: skip
    assert [r["round"] for r in a if "eval/heldout/overall" in r] == [2, 4]
    for r in a:
        if r["round"] % 2 == 0:
            assert {f"eval/{s}/{t}" for s in ("heldout", "train") for t in (*TAGS, "overall")} <= r.keys()
            overall = sum(r[f"eval/heldout/{t}"] for t in TAGS) / len(TAGS)  # GenEval overall = mean of the tags
            assert abs(r["eval/heldout/overall"] - overall) < 1e-9
            saved = json.loads((with_eval / "evals" / f"round_{r['round']:05d}.json").read_text())
            assert saved["overall"] == r["eval/heldout/overall"]
        else:
            assert not any(k.startswith("eval/") for k in r)
    # budget: running sums of the rounds' forwards (FE counts a backward as two forwards)
    fwd = fe = 0
    for r in a:
        fwd += r["perf/forwards_rollout"] + r["perf/forwards_old_ref"] + r["perf/forwards_update"]
        fe += r["perf/forwards_rollout"] + r["perf/forwards_old_ref"] + 3 * r["perf/forwards_update"]
        assert (r["budget/forwards"], r["budget/forward_equivalents"]) == (fwd, fe)
    assert [r["budget/seconds"] for r in a] == sorted(r["budget/seconds"] for r in a)
    # the last round was evaluated: eval_after is that evaluation (copied, not sampled again)
    after = json.loads((with_eval / "eval_after.json").read_text())
    assert after == json.loads((with_eval / "evals" / "round_00004.json").read_text())
    assert json.loads((without / "eval_after.json").read_text())["overall"] == after["overall"]


def test_an_evaluation_killed_midway_is_redone_once_on_resume(toy_base_dir, tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    finish(run_train(overrides(toy_base_dir, reference, every=1)))
    args = overrides(toy_base_dir, run, every=1)
    # evaluate_shapes calls: 1-2 eval_before (held-out, train pick), 3-4 round 1, 5-6 round 2: die inside round 2's
    fault = [str(REPO / "tests/fault_driver.py"), "kill_before", "maskgrpo.toy.evaluate.evaluate_shapes", "6", "--"]
    cmd = [sys.executable, *fault, "--config", str(REPO / "configs/toy_maskgrpo.yaml"), *args]
    killed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0
    assert [r["round"] for r in read_jsonl(run / "metrics.jsonl")] == [1]  # round 2's line was never written
    out = finish(run_train([*args, "--resume"]))
    assert "resumed from" in out
    got, want = read_jsonl(run / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
    assert [r["round"] for r in got] == [1, 2, 3]  # each round, and its evaluation, logged once
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(WALL)} for r in rows]  # noqa: E731
    assert strip(got) == strip(want)


def test_add_spend_sums_ranks_and_counts_a_backward_as_two_forwards():
    import numpy as np

    from maskgrpo.budget import add_spend, budget_metrics

    # two ranks [rollout, old_ref, update forwards, seconds]: forwards 2 * (10 + 4 + 2) = 32, FE 20 + 8 + 3 * 4 = 40,
    # seconds of the slowest rank 2.0; a second round adds the same again
    one = add_spend({}, np.array([[10, 4, 2, 1.5], [10, 4, 2, 2.0]]))
    assert one == {"forwards": 32.0, "forward_equivalents": 40.0, "seconds": 2.0}
    two = add_spend(one, np.array([[10, 4, 2, 1.0], [10, 4, 2, 0.5]]))
    assert budget_metrics(two) == {"budget/forwards": 64, "budget/forward_equivalents": 80, "budget/seconds": 3.0}
    assert all(type(v) is float for v in two.values())  # plain floats: a checkpoint loads them with weights_only
