"""The soak (``python -m eval.soak``), short: a tiny run SIGKILLed and SIGTERMed at random moments and resumed each
time ends bit-identical to the uninterrupted run. The 60-minute soak and its result: docs/reliability.md."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO, tiny_run

from eval import soak
from eval.soak import main


@pytest.mark.slow
def test_short_soak_ends_where_the_uninterrupted_run_ends(toy_base_dir, tmp_path):
    out = tmp_path / "soak"
    out.mkdir()
    quiet = {"checkpoint.every": 2, "log.image_every": 0, "log.rollout_table": False}
    overrides = tiny_run(toy_base_dir, tmp_path / "unused", rounds=16, **quiet)
    config = str(REPO / "configs" / "toy_maskgrpo.yaml")
    # Interruptions counted in rounds, not seconds (a wall-clock interval drawn from a timed reference failed when
    # the load changed between the reference and the soak): each attempt is interrupted 4-6 rounds past the
    # checkpoint it resumed from (checkpoints every 2 rounds, so every attempt passes at least one), so one attempt
    # completes at most 6 rounds and 16 rounds take at least 2 interruptions on any machine. Seed 3 draws SIGKILL,
    # then SIGTERM.
    code = main(["--config", config, "--rounds", "4", "6", "--kill-share", "0.5", "--seed", "3", "--out", str(out),
                 *overrides])  # fmt: skip
    state = json.loads((out / "soak.json").read_text())
    assert code == 0, state
    verdict = state["verdict"]
    assert verdict["weights"] and verdict["metrics"]
    assert verdict["interruptions"] >= 2 and verdict["sigkill"] >= 1 and verdict["sigterm"] >= 1, state
    assert verdict["sigterm_clean"] == verdict["sigterm"], state


FAKE_TRAIN = """
import sys, time, json, torch
from pathlib import Path
from safetensors.torch import save_file
out = Path(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("run.output_dir=")))
time.sleep({seconds})
if {fail}:
    sys.exit(3)
(out / "final" / "model").mkdir(parents=True, exist_ok=True)
save_file({{"w": torch.ones(2)}}, str(out / "final" / "model" / "model.safetensors"))
(out / "metrics.jsonl").write_text(json.dumps({{"round": 1, "loss": 0.5}}) + "\\n")
"""


def fake_launch(calls: list, seconds: dict, fail: str = ""):
    """``eval.soak.launch`` with a stand-in trainer: it sleeps, then writes a finished run (or exits 3)."""

    def launch_(cmd, nproc, log):
        kind = "reference" if any(a.endswith("/reference") for a in cmd) else "run"
        calls.append((kind, time.monotonic()))
        code = FAKE_TRAIN.format(seconds=seconds[kind], fail=kind == fail)
        return subprocess.Popen([sys.executable, "-c", code, *cmd], start_new_session=True)

    return launch_


def test_parallel_reference_runs_beside_the_soak(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(soak, "launch", fake_launch(calls, {"reference": 1.5, "run": 0.1}))
    t0 = time.monotonic()
    assert soak.main(["--parallel", "--interval", "30", "30", "--out", str(tmp_path / "s")]) == 0
    # both started at once; the verdict waited for the slower reference
    assert [k for k, _ in calls] == ["reference", "run"] and calls[1][1] - calls[0][1] < 1.0
    assert time.monotonic() - t0 >= 1.5
    verdict = json.loads((tmp_path / "s" / "soak.json").read_text())["verdict"]
    assert verdict["weights"] and verdict["metrics"] and verdict["interruptions"] == 0


def test_serial_reference_finishes_before_the_soak_starts(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(soak, "launch", fake_launch(calls, {"reference": 1.0, "run": 0.1}))
    assert soak.main(["--interval", "30", "30", "--out", str(tmp_path / "s")]) == 0
    assert [k for k, _ in calls] == ["reference", "run"] and calls[1][1] - calls[0][1] >= 1.0


@pytest.mark.parametrize("fail", ["reference", "run"])
def test_a_failed_run_ends_a_parallel_soak_with_2_and_no_process_left(fail, tmp_path, monkeypatch, capsys):
    calls: list = []
    procs: list = []
    launch_ = fake_launch(calls, {"reference": 0.2 if fail == "reference" else 30.0, "run": 0.1}, fail=fail)
    monkeypatch.setattr(soak, "launch", lambda *a: procs.append(launch_(*a)) or procs[-1])
    assert soak.main(["--parallel", "--interval", "30", "30", "--out", str(tmp_path / "s")]) == 2
    assert f"the {fail} " in capsys.readouterr().err
    assert all(p.poll() is not None for p in procs)  # a failed run does not leave the 30 s reference running
