"""A reward server killed and restarted during a toy run: the run waits, continues, and loses or double-counts
nothing; past ``reward.max_outage_s`` it writes the checkpoint of its last completed round and stops with one line,
and ``--resume`` once the server is back ends where an uninterrupted run ends.

The server is the HPSv3 stand-in of tests/test_reward_outage.py (deterministic scores), next to the toy's own
ShapesEval reward; a round's scores are the same whichever attempt produced them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, free_ports, tiny_run
from test_faults_run import _tail, error_line, ok, read_jsonl, same_weights
from test_reward_outage import Mimic

pytestmark = pytest.mark.slow  # trainer runs against a reward server that is killed and restarted

WALL = ("perf/seconds_", "perf/rollout_images_per_s", "budget/seconds")


def overrides(base: str, run: Path, port: int, **extra: object) -> list[str]:
    hps = {"weight": 0.1, "scale": 0.2,
           "kwargs": {"url": f"http://127.0.0.1:{port}/", "protocol": "pickle", "backoff": 0.05}}  # fmt: skip
    rewards = {"shapes_geneval_graded": {"weight": 1.0}, "hpsv3": hps}
    return tiny_run(base, run, rounds=3, **{"rewards": rewards, "checkpoint.every": 2, "log.image_every": 0,
                                                  "log.rollout_table": False, **extra})  # fmt: skip


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "maskgrpo.train", "--config", str(REPO / "configs/toy_maskgrpo.yaml"), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def after_round_1(run: Path, p: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").is_file() or not read_jsonl(run / "metrics.jsonl"):
        assert p.poll() is None and time.time() < deadline, "the run ended before its first round"
        time.sleep(0.05)


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(WALL)} for r in rows]


@pytest.fixture(scope="module")
def reference(toy_base_dir, tmp_path_factory):
    """The uninterrupted run (server up throughout); its port is reused by nobody else."""
    port = free_ports()[0]
    server = Mimic(port, delay=0.2)
    run = tmp_path_factory.mktemp("outage") / "reference"
    try:
        p = start(overrides(toy_base_dir, run, port))
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    finally:
        server.kill()
    return run


def test_server_killed_and_restarted_mid_run_the_run_waits_and_loses_nothing(
    toy_base_dir, reference, tmp_path, free_port
):
    port, run = free_port, tmp_path / "run"
    server = Mimic(port, delay=0.5)
    p = start(overrides(toy_base_dir, run, port))
    after_round_1(run, p)
    server.kill()  # down for about 3 s, while round 2 scores (or is about to)
    time.sleep(3)
    server = Mimic(port, delay=0.5)
    try:
        out, err = p.communicate(timeout=600)
    finally:
        server.kill()
    assert p.returncode == 0, err[-3000:]
    assert "unreachable" in err and "waiting up to 600 s" in err and "answers again" in err
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert strip(read_jsonl(run / "metrics.jsonl")) == strip(read_jsonl(reference / "metrics.jsonl"))
    assert same_weights(run, reference)


def test_outage_past_the_limit_checkpoints_stops_with_one_line_and_resumes(
    toy_base_dir, reference, tmp_path, free_port
):
    port, run = free_port, tmp_path / "run"
    server = Mimic(port, delay=0.5)
    args = overrides(toy_base_dir, run, port, **{"reward.max_outage_s": 2.0})
    p = start(args)
    after_round_1(run, p)
    server.kill()  # and not restarted
    out, err = p.communicate(timeout=600)
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    line = error_line(r)  # exit status 2, one line, no traceback
    assert "reward 'hpsv3': server" in line and "unreachable for" in line, line
    done = len(read_jsonl(run / "metrics.jsonl"))  # round 2's scoring (or round 3's) met the outage
    assert f"wrote the checkpoint of round {done}: resume with --resume once the server answers" in line
    assert (run / "checkpoints" / "latest").read_text() == f"round-{done:06d}"
    server = Mimic(port, delay=0.2)
    try:
        resumed = subprocess.run([sys.executable, "-m", "maskgrpo.train", "--config",
                                  str(REPO / "configs/toy_maskgrpo.yaml"), *args, "--resume"], cwd=REPO,
                                 env={**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"},
                                 capture_output=True, text=True, timeout=600)  # fmt: skip
    finally:
        server.kill()
    if resumed.returncode != 0:
        pytest.fail(_tail(resumed), pytrace=False)
    ok(resumed)
    assert strip(read_jsonl(run / "metrics.jsonl")) == strip(read_jsonl(reference / "metrics.jsonl"))
    assert same_weights(run, reference)
