"""The RL loop end to end on CPU: tiny ShapesWorld runs through DeepSpeed ZeRO (1 and 2 processes), resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_run
from forward_counts import max_rollout_forwards
from safetensors.torch import load_file

from maskgrpo.algo.equations import group_advantages


def run_train(args: list[str], nproc: int = 1, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    # one process runs the trainer directly (so a SIGKILL hits it, not a launcher whose worker would live on)
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launch, "-m", "maskgrpo.train", "--config", str(REPO / "configs/toy_maskgrpo.yaml"), *args]
    popen.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.STDOUT, text=True, **popen)


def finish(p: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-4000:]
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_tiny_run_finite_loss_and_every_parameter_changed(toy_base_dir, tmp_path):
    out = tmp_path / "run"
    log = finish(run_train(tiny_run(toy_base_dir, out, **{"run.wandb_mode": "offline"})))
    assert "round    2 | reward" in log
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1, 2]
    for m in metrics:
        assert np.isfinite(m["loss/policy"]) and np.isfinite(m["policy/kl_k3"])
        # forwards: baseline old+ref = 2 * mu * B rows; update = mu * B rows (B = 16 rollouts)
        assert m["perf/forwards_old_ref"] == 2 * 2 * 16 and m["perf/forwards_update"] == 2 * 16
        # T steps x (cond + uncond) rows, each distinct row once: 4 prompts x 4 rollouts, fully masked at step 0
        assert 4 * 2 <= m["perf/forwards_rollout"] <= max_rollout_forwards(4, 4, 16)
    before = load_file(Path(toy_base_dir) / "model" / "model.safetensors")
    after = load_file(out / "final" / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    assert (out / "config.yaml").is_file() and (out / "images" / "round_00002.png").is_file()
    assert (out / "checkpoints" / "latest").read_text() == "round-000002"
    assert list((out / "wandb").glob("offline-run-*")), "no offline wandb run was written"


@pytest.mark.slow
def test_two_ranks_zero2_gathers_rewards_before_normalising(toy_base_dir, tmp_path):
    out = tmp_path / "run2"
    finish(run_train(tiny_run(toy_base_dir, out), nproc=2))
    metrics = read_jsonl(out / "metrics.jsonl")
    assert len(metrics) == 2
    for rnd, m in enumerate(metrics, start=1):
        rows = [read_jsonl(out / "rollouts" / f"round_{rnd:05d}_rank{r}.jsonl") for r in (0, 1)]
        assert len(rows[0]) == len(rows[1]) == 8  # 2 prompts x G=4 per rank
        everything = rows[0] + rows[1]  # rank order = gather order
        rewards = torch.tensor([x["reward"] for x in everything], dtype=torch.float64)
        # the logged mean is over both ranks (rank 0 alone would give another number unless they agree)
        assert m["reward/mean"] == pytest.approx(float(rewards.mean()))
        expected = group_advantages(rewards, 4)
        logged = torch.tensor([x["advantage"] for x in everything], dtype=torch.float64)
        torch.testing.assert_close(logged, expected, rtol=1e-5, atol=1e-5)
    assert (out / "checkpoints" / "round-000002" / "trainer_rank1.pt").is_file()


@pytest.mark.slow
def test_two_ranks_zero3_trains_and_exports(toy_base_dir, tmp_path):
    out = tmp_path / "z3"
    zero3 = {"deepspeed.config": "configs/deepspeed/zero3.json", "log.rollout_table": False}
    finish(run_train(tiny_run(toy_base_dir, out, rounds=1, **zero3), nproc=2))
    assert np.isfinite(read_jsonl(out / "metrics.jsonl")[0]["loss/policy"])
    before = load_file(Path(toy_base_dir) / "model" / "model.safetensors")
    after = load_file(out / "final" / "model" / "model.safetensors")  # gathered from the two ZeRO-3 shards
    assert before.keys() == after.keys() and all(before[k].shape == after[k].shape for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
@pytest.mark.sweep  # test_faults_run.py kills at fixed points of the checkpoint write and resumes bit-exact
def test_resume_after_sigkill_is_bit_identical(toy_base_dir, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(run_train(tiny_run(toy_base_dir, straight, rounds=4, **{"checkpoint.every": 2})))
    log_file = (tmp_path / "killed.log").open("w")
    p = run_train(tiny_run(toy_base_dir, killed, rounds=4, **{"checkpoint.every": 2}), stdout=log_file)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:  # kill as soon as round 2's checkpoint is complete
        if latest.is_file() and latest.read_text() == "round-000002":
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (killed / "final").exists()
    assert (killed / "checkpoints" / "latest").read_text() == "round-000002"
    log = finish(run_train([*tiny_run(toy_base_dir, killed, rounds=4, **{"checkpoint.every": 2}), "--resume"]))
    assert "resumed from" in log and "round    3 |" in log
    a = load_file(straight / "final" / "model" / "model.safetensors")
    b = load_file(killed / "final" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert [m["round"] for m in read_jsonl(killed / "metrics.jsonl")] == [1, 2, 3, 4]
    assert (
        read_jsonl(killed / "metrics.jsonl")[3]["reward/mean"]
        == read_jsonl(straight / "metrics.jsonl")[3]["reward/mean"]
    )


@pytest.mark.slow
def test_bad_config_and_missing_checkpoint_give_one_clear_line(tmp_path, toy_base_dir):
    def train(*overrides: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "maskgrpo.train", "--config", str(REPO / "configs/toy_maskgrpo.yaml"), *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)

    r = train("rl.group_siz=4")
    assert (
        r.returncode != 0 and "unknown key 'rl.group_siz'" in r.stderr and "Did you mean 'rl.group_size'" in r.stderr
    )
    r = train(f"backbone.path={tmp_path / 'nope'}")
    assert r.returncode != 0 and "is not a ShapesWorld base" in r.stderr
    r = train(f"backbone.path={toy_base_dir}", f"run.output_dir={tmp_path / 'fresh'}", "--resume")
    assert r.returncode != 0 and "no checkpoint under" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
