"""The dry run's time before launch (FLOP estimate by hand; the GPU check's measured figures when they apply) and its
reward-server placement (co-location memory, missing REWARD_GPUS or judge environment), in process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO

from maskgrpo.launch_plan import main, prompt_counts

HT = str(REPO / "configs" / "mmada_htgrpo.yaml")


def plan(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["--config", HT, "prompts.source=backbone", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def row(out: str, method: str) -> list[str]:
    """The time table's row of ``method``: rounds, images/round, images/run, rollout, /, pass, /, update, ..."""
    m = re.search(rf"^  {method} \(\w+\)\s+(\d.*)$", out, flags=re.M)
    assert m, out
    return m.group(1).split()


def test_flop_estimate_by_hand(capsys) -> None:
    rc, out, _ = plan(capsys)
    assert rc == 0
    # one 1539-token row forward of MMaDA-8B: 2 x 32 x 218,112,000 x 1539 (linears) + 4 x 32 x 1539^2 x 4096
    # (attention) + 2 x 4096 x 8192 x 1024 (sliced head) = 2.1483e13 + 1.2418e12 + 6.87e10 = 2.2793e13
    fwd = 2 * 32 * 218_112_000 * 1539 + 4 * 32 * 1539**2 * 4096 + 2 * 4096 * 8192 * 1024
    assert "22.8 TFLOP per 1539-token row forward, 3x for a trained row" in out
    per_second = 989.4e12 * 0.35  # H100 bf16 dense peak x the assumed MFU
    # HT-GRPO per GPU: rollout 12 steps x 27 canvases x 2 (CFG) = 648 rows, old + ref 2 x 3 shared rows, update
    # 8 x 3 rows trained (x3: forward, input gradients, recompute) -> 648 + 6 + 72 = 726 row forwards
    ht = 726 * fwd / per_second
    # MaskGRPO: 648 + 2 x 8 x 27 + 3 x 8 x 27 = 1728 row forwards
    mg = 1728 * fwd / per_second
    assert ht == pytest.approx(47.79, abs=0.01) and mg == pytest.approx(113.74, abs=0.01)
    h, m = row(out, "htgrpo"), row(out, "maskgrpo")
    assert h[:8] == ["300", "216", "64,800", "648", "/", "6", "/", "24"]
    assert m[:8] == ["300", "216", "64,800", "648", "/", "432", "/", "216"]
    assert h[8:] == ["1.63e+06", "47.8", "s", "4.0", "h"]  # rows/run: (648 + 6 + 24) x 8 GPUs x 300; 300 x 47.79 s
    assert m[8:] == ["3.11e+06", "113.7", "s", "9.5", "h"]  # (648 + 432 + 216) x 8 x 300; 300 x 113.74 s = 9.48 h
    assert out.count("FLOP estimate, not a measurement (no runs/gpu_check/gpu_check.json)") == 2


def gpu_check_json(path: Path, device: str = "NVIDIA H100 80GB HBM3", seq_len: int = 1539) -> Path:
    """A GPU check report as eval/gpu_check.py writes it (the fields the dry run reads), with round numbers."""
    rep = {"device": device, "date": "2026-12-01", "target_blocks": 32,
           "workload": {"backbone": "mmada", "seq_len": seq_len, "group_size": 9, "num_inner_updates": 8,
                        "num_steps": 12, "cfg_scale": 3.5, "lora_r": 128, "prompts_per_gpu": 3},
           "extrapolated": {"shared": {"rollout": {"seconds": 20.0}, "decode": {"seconds": 2.0}},
                            "htgrpo": {"old_ref": {"seconds": 1.0}, "update": {"seconds": 5.0}},
                            "maskgrpo": {"old_ref": {"seconds": 10.0}, "update": {"seconds": 30.0}}},
           "round_8gpu": {"grad_bytes": 0.671e9}}  # fmt: skip
    path.write_text(json.dumps(rep))
    return path


def test_measured_round_time_from_the_gpu_check(capsys, tmp_path) -> None:
    rep = str(gpu_check_json(tmp_path / "gpu_check.json"))
    rc, out, _ = plan(capsys, "--gpu-check", rep)
    assert rc == 0
    # per GPU at 3 prompts: HT 20 + 2 + 1 + 5 = 28 s, MaskGRPO 20 + 2 + 10 + 30 = 62 s; plus 8 optimizer steps of
    # a ring exchange of 0.671 GB over 8 GPUs at 150 GB/s: 8 x 2 x 7/8 x 0.671 / 150 = 0.0626 s
    assert row(out, "htgrpo")[9:11] == ["28.1", "s"] and row(out, "maskgrpo")[9:11] == ["62.1", "s"]
    assert "measured by the GPU check on NVIDIA H100 80GB HBM3 (2026-12-01), 32 blocks extrapolated, scaled x1 " in out
    # 6 training GPUs: 4 prompts per GPU -> x4/3; exchange over 6 GPUs: 8 x 2 x 5/6 x 0.671 / 150 = 0.0596 s
    rc, out, _ = plan(capsys, "--gpu-check", rep, "--num-gpus", "6")
    assert 28 * 4 / 3 + 0.0596 == pytest.approx(37.39, abs=0.01) and 62 * 4 / 3 + 0.0596 == pytest.approx(82.73, 1e-3)
    assert row(out, "htgrpo")[9:11] == ["37.4", "s"] and row(out, "maskgrpo")[9:11] == ["82.7", "s"]
    assert "scaled x1.33333 from 3 to 4 prompts per GPU" in out
    # another GPU type, or another shape: the measurement does not apply, and the dry run says why
    rc, out, _ = plan(capsys, "--gpu-check", rep, "--gpu-type", "H200")
    assert "FLOP estimate, not a measurement (measured on NVIDIA H100 80GB HBM3, not H200)" in out
    rc, out, _ = plan(capsys, "--gpu-check", rep, "backbone.options.text_window=257")
    assert "FLOP estimate, not a measurement (measured at another shape (seq_len 1539 vs 1283))" in out
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps({**json.loads(Path(rep).read_text()), "device": "cpu (--tiny: tests the code)"}))
    rc, out, _ = plan(capsys, "--gpu-check", str(cpu))
    assert "FLOP estimate, not a measurement (no GPU measurement)" in out


def test_reward_placement_and_its_problems(capsys) -> None:
    py = ["--python", "hpsv3=/envs/hpsv3/bin/python", "--python", "unifiedreward=/envs/ur/bin/python"]
    rc, out, err = plan(capsys, "--start-rewards", *py)
    assert rc == 1 and "START_REWARDS=1 needs REWARD_GPUS (e.g. 6,7 with TRAIN_GPUS=0,1,2,3,4,5" in err
    # dedicated GPUs 6 and 7 next to 6 training GPUs: one judge each, nothing shared
    rc, out, err = plan(capsys, "--start-rewards", "--reward-gpus", "6,7", "--train-gpus", "0,1,2,3,4,5",
                        "--num-gpus", "6", *py)  # fmt: skip
    assert rc == 0, err
    assert re.search(r"hpsv3\s+http://127.0.0.1:18087/score\s+GPU 6\s+about 16 GB", out)
    assert re.search(r"unifiedreward\s+http://127.0.0.1:18088/score\s+GPU 7\s+about 16 GB", out)
    assert "co-located" not in out
    # both judges on GPU 7, which also trains: MaskGRPO's peak (the larger of the two methods) 25.42 GB + 2 x 16 GB
    rc, out, err = plan(capsys, "--start-rewards", "--reward-gpus", "7", *py)
    assert rc == 0
    assert (
        "co-located: GPU 7 runs a training rank (peak 25.4 GB) and 32 GB of judge weights: 57.4 GB, fits in 80 GB"
        in out
    )
    rc, out, err = plan(capsys, "--start-rewards", "--reward-gpus", "7", "--gpu-mem-gb", "40", *py)
    assert rc == 1 and "GPU 7: training (25.4 GB) + reward judges (32 GB) do not fit in 40 GB" in err
    rc, out, err = plan(capsys, "--start-rewards", "--reward-gpus", "6,7")
    assert rc == 1 and "START_REWARDS=1 serves hpsv3: set HPSV3_PYTHON" in err


def test_prompt_counts_that_divide() -> None:
    assert prompt_counts(16, 1) == "use a multiple of 16: 16, 32, 48, 64, ... (3 per GPU, the configs' share: " \
                                   "prompts.per_round=48)"  # fmt: skip
    # 12 GPUs, 2 prompts per micro-batch: multiples of 24; 3 per GPU (36) leaves half a micro-batch, so not offered
    assert prompt_counts(12, 2) == "use a multiple of 24: 24, 48, 72, 96, ..."
