"""The soak (``python -m eval.soak``), short: a tiny run SIGKILLed and SIGTERMed at random moments and resumed each
time ends bit-identical to the uninterrupted run. The 60-minute soak and its result: docs/reliability.md."""

from __future__ import annotations

import json
import time

import pytest
from conftest import REPO, tiny_run

from eval.soak import launch, main, rounds_logged


@pytest.mark.slow
def test_short_soak_ends_where_the_uninterrupted_run_ends(toy_base_dir, tmp_path):
    out = tmp_path / "soak"
    out.mkdir()
    quiet = {"checkpoint.every": 3, "log.image_every": 0, "log.rollout_table": False}
    overrides = tiny_run(toy_base_dir, tmp_path / "unused", rounds=40, **quiet)
    config = str(REPO / "configs" / "toy_maskgrpo.yaml")
    # The reference first (the soak reuses it), timed the way the soak starts its runs: start-up to the first logged
    # round s, then r for the other 39. Every attempt is interrupted between s + r/4 and s + 2r/5, so it trains
    # at least 10 rounds (3 past a checkpoint) and two attempts cannot finish: at least two interruptions, on a
    # fast machine as on a loaded one. Seed 3 draws SIGKILL, then SIGTERM.
    reference = out / "reference"
    t0 = time.monotonic()
    p = launch(["-m", "maskgrpo.train", "--config", config, *overrides, f"run.output_dir={reference}",
                "--auto-resume"], 1, out / "reference.log")  # fmt: skip
    first = None
    while p.poll() is None:
        if first is None and rounds_logged(reference) >= 1:
            first = time.monotonic() - t0
        time.sleep(0.05)
    assert p.returncode == 0 and first is not None, (out / "reference.log").read_text()[-3000:]
    s, r = first, time.monotonic() - t0 - first
    interval = [f"{s + r / 4:.1f}", f"{s + 2 * r / 5:.1f}"]
    code = main(["--config", config, "--interval", *interval, "--kill-share", "0.5", "--seed", "3", "--out", str(out),
                 *overrides])  # fmt: skip
    state = json.loads((out / "soak.json").read_text())
    assert code == 0, state
    verdict = state["verdict"]
    assert verdict["weights"] and verdict["metrics"]
    assert verdict["interruptions"] >= 2 and verdict["sigkill"] >= 1 and verdict["sigterm"] >= 1, (interval, state)
