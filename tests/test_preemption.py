"""Preemption: SIGTERM / SIGUSR1 at any point of a round -> a checkpoint of the last completed round, one line, exit
0; ``--resume`` from it is bit-identical to the uninterrupted run. A second signal exits at once and leaves the last
complete checkpoint as it was. ``--auto-resume`` starts or resumes, so a requeued job needs no edit.

The signals arrive where ``tests/fault_driver.py signal_before`` sends them: a process signalling itself before the
N-th call of a function, on one rank only when a rank is named (the other rank learns of it through the trainer's
agreement collective).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_run
from procs import children
from test_faults_run import _tail, ok, read_jsonl, same_weights, train

pytestmark = pytest.mark.slow  # every case signals real trainer processes (1 and 2 ranks) and resumes

WALL = ("perf/seconds_", "perf/rollout_images_per_s", "budget/seconds")
EVERY2 = {"checkpoint.every": 2, "checkpoint.keep": 3}
"""Checkpoints at rounds 2 and 3 only: a stop after round 1 must write round 1's itself."""
POINTS = {  # where the signal arrives (round 2 unless said) -> (fault triple, rounds completed when the run stops)
    "rollout": (("signal_before", "maskgrpo.train.sample_rollouts", "2"), 1),
    "reward": (("signal_before", "maskgrpo.train.score_all", "2:USR1"), 1),
    "old_ref": (("signal_before", "maskgrpo.train.Trainer.old_and_ref_logp", "2"), 1),
    "update": (("signal_before", "maskgrpo.train.Trainer.inner_updates", "2"), 2),
    "checkpoint_write": (("signal_before", "maskgrpo.checkpoint._files", "1"), 2),  # round 2's save is the first
}


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(WALL)} for r in rows]


@pytest.fixture(scope="module")
def reference(toy_base_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("preempt") / "reference"
    ok(train(tiny_run(toy_base_dir, run, rounds=3, **EVERY2)))
    return run


def preempted(r: subprocess.CompletedProcess, run: Path, rounds: int) -> None:
    """The run stopped cleanly after ``rounds`` rounds: exit 0, the one line, that round's checkpoint, its metrics."""
    if r.returncode != 0:
        pytest.fail(_tail(r), pytrace=False)
    assert f"preempted at round {rounds} (" in r.stdout and "resume with --resume" in r.stdout
    assert (run / "checkpoints" / "latest").read_text() == f"round-{rounds:06d}"
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, rounds + 1))
    assert not (run / "final").exists()


SWEEP_POINTS = ("rollout", "reward", "old_ref")
"""Further points, run with HTGRPO_SLOW_TESTS=1: the default suite keeps a signal inside the update and one inside the
checkpoint write; the 2-rank case below signals in the rollout."""


@pytest.mark.parametrize(
    "point", [pytest.param(p, marks=pytest.mark.sweep if p in SWEEP_POINTS else ()) for p in POINTS]
)
def test_one_rank_signal_at_a_point_of_the_round_then_resume_is_bit_exact(point, toy_base_dir, reference, tmp_path):
    fault, rounds = POINTS[point]
    run = tmp_path / "run"
    args = tiny_run(toy_base_dir, run, rounds=3, **EVERY2)
    preempted(train(args, fault=fault), run, rounds)
    out = ok(train([*args, "--resume"]))
    assert f"resumed from {run / 'checkpoints' / f'round-{rounds:06d}'}" in out
    assert same_weights(run, reference)
    assert strip(read_jsonl(run / "metrics.jsonl")) == strip(read_jsonl(reference / "metrics.jsonl"))


def test_second_signal_exits_at_once_and_keeps_the_last_good_checkpoint(toy_base_dir, tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    args = tiny_run(toy_base_dir, run, rounds=3, **{"checkpoint.every": 1})
    ok(train(tiny_run(toy_base_dir, reference, rounds=3, **{"checkpoint.every": 1})))
    # first SIGTERM during round 2's update; the second 2.5 s later, inside round 2's checkpoint write
    faults = ("signal_before", "maskgrpo.train.Trainer.inner_updates", "2",
              "signal_before", "maskgrpo.checkpoint._files", "2+2.5")  # fmt: skip
    r = train(args, fault=faults)
    assert r.returncode == 128 + signal.SIGTERM, _tail(r)
    assert "second signal (SIGTERM): exiting now" in r.stderr
    ckpt = run / "checkpoints"
    assert (ckpt / "latest").read_text() == "round-000001"  # the write in progress never became `latest`
    assert (ckpt / ".tmp-round-000002").is_dir()
    out = ok(train([*args, "--resume"]))
    assert "resumed from" in out and not (ckpt / ".tmp-round-000002").exists()
    assert same_weights(run, reference)


def test_two_ranks_a_signal_on_one_rank_stops_both_at_the_same_point(toy_base_dir, reference, tmp_path):
    """Rank 1 alone receives SIGUSR1 in round 2's rollout: both ranks abandon the round at the same sampler step
    and write round 1's checkpoint together; the 2-rank resume equals an uninterrupted 2-rank run."""
    ref2, run = tmp_path / "reference2", tmp_path / "run"
    ok(train(tiny_run(toy_base_dir, ref2, rounds=3, **EVERY2), nproc=2))
    args = tiny_run(toy_base_dir, run, rounds=3, **EVERY2)
    preempted(train(args, nproc=2, fault=("signal_before", "maskgrpo.train.sample_rollouts", "2@1:USR1")), run, 1)
    ok(train([*args, "--resume"], nproc=2))
    assert same_weights(run, ref2)
    assert strip(read_jsonl(run / "metrics.jsonl")) == strip(read_jsonl(ref2 / "metrics.jsonl"))


@pytest.mark.sweep  # the toy-launcher case below also puts a SIGTERM in both workers (run_ranks passes it on)
def test_two_ranks_sigterm_to_every_process_as_a_cluster_sends_it(toy_base_dir, tmp_path):
    """SLURM signals every process of the job step: the launcher and both workers. Started as launch/_common.sh's
    run_ranks starts it (torchrun leaves SIGTERM to the workers), each worker sees one notice and the launcher
    exits 0 once both have written their checkpoint."""
    run = tmp_path / "run"
    args = tiny_run(toy_base_dir, run, rounds=50, **{"checkpoint.every": 0})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1",
           "PET_SIGNALS_TO_HANDLE": "SIGINT,SIGHUP,SIGQUIT"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "maskgrpo.train",
           "--config", str(REPO / "configs/toy_maskgrpo.yaml"), *args]  # fmt: skip

    def ignore_term() -> None:  # what `trap '' TERM` does in the launcher: torchrun inherits "ignore"
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=ignore_term, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").is_file() or len(read_jsonl(run / "metrics.jsonl")) < 2:
        assert p.poll() is None and time.time() < deadline, p.stdout.read()[-3000:] if p.poll() is not None else ""
        time.sleep(0.2)
    workers = children(p.pid)
    assert len(workers) == 2
    t = time.time()
    for pid in (p.pid, *workers):  # every process of the step: the launcher starts its workers in their own sessions
        os.kill(pid, signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    stopped_after = time.time() - t
    assert p.returncode == 0, out[-4000:]
    done = len(read_jsonl(run / "metrics.jsonl"))
    assert f"preempted at round {done} (SIGTERM)" in out
    assert (run / "checkpoints" / "latest").read_text() == f"round-{done:06d}"
    assert stopped_after < 60, stopped_after  # a toy round plus a checkpoint
    # a requeued job: the same command with --auto-resume continues from that checkpoint (and starts a fresh one)
    more = tiny_run(toy_base_dir, run, rounds=done + 1, **{"checkpoint.every": 0})
    assert "resumed from" in ok(train([*more, "--auto-resume", "--allow-config-change", "rl.rounds"], nproc=2))
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, done + 2))
    fresh = tmp_path / "fresh"
    assert "resumed from" not in ok(train([*tiny_run(toy_base_dir, fresh, rounds=1), "--auto-resume"]))
    assert (fresh / "final" / "model").is_dir()


def test_sigterm_to_the_toy_launcher_reaches_the_workers_and_the_launcher_exits_0(toy_base_dir, tmp_path):
    """`kill <launcher>` (a scheduler that signals only the job's shell): launch/_common.sh's run_ranks passes the
    SIGTERM on to the workers, which checkpoint; the launcher then exits 0 and AUTO_RESUME=1 continues the run."""
    run = tmp_path / "run"
    tiny_eval = {"eval": {"samples_per_prompt": 1, "sampler": {"name": "maskgit", "num_steps": 2, "cfg_scale": 3.5}},
                 "checkpoint.every": 0}  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NPROC": "2"}
    cmd = ["bash", "launch/toy_maskgrpo.sh", *tiny_run(toy_base_dir, run, rounds=60, **tiny_eval)]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").is_file() or len(read_jsonl(run / "metrics.jsonl")) < 2:
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)  # the launcher shell only
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out[-4000:]
    done = len(read_jsonl(run / "metrics.jsonl"))
    assert f"preempted at round {done} (SIGTERM)" in out and done < 60
    more = tiny_run(toy_base_dir, run, rounds=done + 1, **tiny_eval)
    r = subprocess.run(["bash", "launch/toy_maskgrpo.sh", *more, "--allow-config-change", "rl.rounds"], cwd=REPO,
                       env={**env, "AUTO_RESUME": "1"}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, done + 2))
