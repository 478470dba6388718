"""eval.gpu_check: its arithmetic by hand, and ``--device cpu --tiny`` end to end (the same code as on a GPU)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import REPO
from forward_counts import max_rollout_forwards

from eval.gpu_check import (
    NO_CUDA,
    allreduce_seconds,
    choose_blocks,
    linear_extrapolate,
    main,
    plan_check,
    prompts_that_fit,
    round_seconds_multi_gpu,
)

G, MU, P, STEPS = 9, 8, 3, 12


def test_linear_extrapolation_to_32_blocks() -> None:
    # 10 s at 2 blocks, 38 s at 16: 28 / 14 = 2 s per block, 10 - 2 x 2 = 6 s fixed -> 6 + 32 x 2 = 70 s
    assert linear_extrapolate(2, 10.0, 16, 38.0, 32) == pytest.approx(70.0)
    assert linear_extrapolate(2, 10.0, 16, 38.0, 16) == pytest.approx(38.0)
    with pytest.raises(ValueError, match="two different depths"):
        linear_extrapolate(4, 1.0, 4, 2.0, 32)


def test_eight_gpu_round_time() -> None:
    # ring reduce-scatter + all-gather of 0.671 GB (LoRA r=128 bf16 gradients) on 8 GPUs at 150 GB/s:
    # 2 x 7/8 = 1.75 passes; 1.75 x 0.671e9 B = 1.17425e9 B; / 150e9 B/s = 7.828333 ms
    assert allreduce_seconds(0.671e9, 8, 150.0) == pytest.approx(7.828333e-3, rel=1e-6)
    # phases 10 + 2 + 5 + 3 = 20 s per GPU, plus 8 optimizer steps of 7.828 ms = 20.0626 s
    phases = {"rollout": 10.0, "decode": 2.0, "old_ref": 5.0, "update": 3.0}
    assert round_seconds_multi_gpu(phases, 8, 0.671e9, 8, 150.0) == pytest.approx(20.0 + 8 * 0.00782833, abs=1e-6)


def test_plan_check_within_15_percent() -> None:
    ok = plan_check(11.4e9, 10e9, 0.15)  # (11.4 - 10) / 10 = +14% -> within 15%
    assert ok["status"] == "ok" and ok["rel_error"] == pytest.approx(0.14)
    off = plan_check(8.4e9, 10e9, 0.15)  # -16%: the plan must be corrected
    assert off["status"] == "off" and off["rel_error"] == pytest.approx(-0.16)
    assert "off by -16.0%: correct maskgrpo/launch_plan.py" in off["message"]


def test_fit_and_depth_choice() -> None:
    assert prompts_that_fit(70e9, 3e9) == 23 and prompts_that_fit(-1e9, 3e9) == 0
    # 2 blocks took 40 s -> 20 s per block (over-estimate). 100 s used of 480: 16 x 20 = 320 -> 420 <= 480 keeps 16.
    assert choose_blocks(16, 2, 40.0, 100.0, 480.0, 4) == 16
    # 240 s used: (480 - 240) / 20 = 12 blocks; 470 s used: 0.5 -> the minimum, 4
    assert choose_blocks(16, 2, 40.0, 240.0, 480.0, 4) == 12 and choose_blocks(16, 2, 40.0, 470.0, 480.0, 4) == 4


@pytest.mark.slow
def test_tiny_cpu_run_writes_a_consistent_report(tmp_path) -> None:
    rep = main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == json.loads(json.dumps(rep))
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## Per phase at 2 blocks" in md and "## Extrapolated to 32 blocks" in md
    small, big = rep["runs"]
    assert (small["blocks"], big["blocks"], rep["target_blocks"]) == (1, 2, 32)
    for run in rep["runs"]:
        assert run["rollouts"] == P * G and run["seq_len"] == 17 + 16 + 2  # text window + 4 x 4 codes + soi / eoi
        # 12 steps x the distinct (cond + uncond) rows: P + 1 at the first step, at most 2 P G later
        assert STEPS * 2 <= run["shared"]["rollout"]["forwards"] <= max_rollout_forwards(STEPS, P, P * G)
        mg, ht = run["maskgrpo"], run["htgrpo"]
        assert mg["update"]["forwards"] == MU * P * G and ht["update"]["forwards"] == mg["update"]["forwards"] / G
        assert mg["old_ref"]["forwards"] == 2 * MU * P * G and ht["old_ref"]["forwards"] == 2 * P
        assert ht["prompts_per_forward"] == P and mg["prompts_per_forward"] == 1  # HT's 3 shared rows, one forward
        for stats in (*run["shared"].values(), mg["old_ref"], mg["update"], ht["old_ref"], ht["update"]):
            assert math.isfinite(stats["seconds"]) and stats["seconds"] > 0 and stats["peak_bytes"] is None
            # 3 prompts x 9 images = 27 images and 35-token rows per phase
            assert stats["images_per_s"] * stats["seconds"] == pytest.approx(27)
            assert stats["tokens_per_s"] * stats["seconds"] == pytest.approx(stats["forwards"] * 35)
    # every extrapolated figure is the line through the two measured depths, evaluated at 32: a s at 1 block and
    # b s at 2 give b - a per block and a - (b - a) = 2a - b fixed, so 2a - b + 32 (b - a) = 31 b - 30 a at 32
    for m in ("maskgrpo", "htgrpo"):
        for p in ("old_ref", "update"):
            a, b = small[m][p]["seconds"], big[m][p]["seconds"]
            assert rep["extrapolated"][m][p]["seconds"] == pytest.approx(31 * b - 30 * a)
        assert rep["ratios"]["update"]["forwards"] == pytest.approx(1 / G)
    ext = rep["extrapolated"]
    r8 = rep["round_8gpu"]
    # LoRA r=8 on 7 linears of a width-64, MLP-128 block: 8 x (4 x 128 + 2 x 192 + 192) = 8,704 params per block;
    # x 32 blocks x 2 bytes (bf16 gradients) = 557,056
    assert r8["grad_bytes"] == 557_056
    for m in ("maskgrpo", "htgrpo"):
        per_gpu = sum(ext["shared"][p]["seconds"] for p in ("rollout", "decode"))
        per_gpu += sum(ext[m][p]["seconds"] for p in ("old_ref", "update"))
        # plus mu = 8 gradient exchanges of 557,056 B on 8 GPUs at 150 GB/s: 8 x 1.75 x 557,056 B = 7,798,784 B;
        # / 150e9 B/s = 51.991893 us
        assert r8[f"{m}_s"] - per_gpu == pytest.approx(5.1991893e-5, rel=1e-6)
        assert rep["plan_check"][m] == NO_CUDA and r8["plan_bytes"][m] > 0
    assert rep["fits"] == NO_CUDA
    bf16 = rep["bf16_vs_fp32"]
    assert 0 < bf16["max_abs_diff"] < 0.1 and bf16["tokens_scored"] == 16
    # what the dry runs match before they use the measured round time (maskgrpo/launch_time.py): the MMaDA
    # configs' G, mu, steps and CFG, this run's row length and LoRA rank, 3 prompts per GPU
    assert rep["workload"] == {"backbone": "mmada", "seq_len": 35, "group_size": 9, "num_inner_updates": 8,
                               "num_steps": 12, "cfg_scale": 3.5, "lora_r": 8, "prompts_per_gpu": 3}  # fmt: skip


def test_the_real_shape_is_the_configs_shape() -> None:
    """The check measures the rows the runs train on: the configs' text window (513: 1539-token rows), grid and
    LoRA rank, on MMaDA-8B's width, heads, MLP and vocabulary (docs/models.md 1.1)."""
    import yaml

    from eval.gpu_check import REAL

    for name in ("mmada_maskgrpo", "mmada_htgrpo"):
        cfg = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
        assert (REAL.text_window, REAL.grid) == (
            cfg["backbone"]["options"]["text_window"],
            cfg["backbone"]["options"]["grid"],
        )
        assert REAL.lora_r == cfg["lora"]["r"]
    assert (REAL.d_model, REAL.n_heads, REAL.mlp_hidden_size, REAL.vocab) == (4096, 32, 12288, 134656)
    assert REAL.text_window + REAL.grid**2 + 2 == 1539 and REAL.vq_config is None  # the released MAGVIT-v2


def test_without_cuda_the_gpu_check_stops_with_one_line(tmp_path) -> None:
    """A user runs `bash launch/gpu_check.sh` on a machine without CUDA: exit 2, one line that says what to run,
    nothing written."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run(["bash", "launch/gpu_check.sh", "--out", str(tmp_path / "out")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        "error: no CUDA device here: run it on a GPU machine; `python -m eval.gpu_check --device cpu --tiny` tests "
        "the code on a tiny width"
    )
    assert not (tmp_path / "out").exists()
