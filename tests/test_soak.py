"""The soak (``python -m eval.soak``), short: a tiny run SIGKILLed and SIGTERMed at random moments and resumed each
time ends bit-identical to the uninterrupted run. The 60-minute soak and its result: docs/reliability.md."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_run

from eval.soak import main


@pytest.mark.slow
def test_short_soak_ends_where_the_uninterrupted_run_ends(toy_base_dir, tmp_path):
    out = tmp_path / "soak"
    quiet = {"checkpoint.every": 3, "log.image_every": 0, "log.rollout_table": False}
    overrides = tiny_run(toy_base_dir, tmp_path / "unused", rounds=40, **quiet)
    code = main(["--config", "configs/toy_maskgrpo.yaml", "--interval", "18", "30", "--kill-share", "0.5",
                 "--seed", "3", "--out", str(out), *overrides])  # fmt: skip
    state = json.loads((out / "soak.json").read_text())
    assert code == 0, state
    verdict = state["verdict"]
    assert verdict["weights"] and verdict["metrics"]
    assert verdict["interruptions"] >= 2 and verdict["sigkill"] >= 1 and verdict["sigterm"] >= 1, state["events"]
