"""`bash launch/eval_env.sh geneval|dpg DIR`: the one command per benchmark scorer for Hopper GPUs. Nothing is
installed here (no GPU, no CUDA toolkit, no network in the tests): PRINT_ONLY=1 shows the steps, which must build
for sm_90 from the requirement files in the repository."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import REPO


def eval_env(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "launch/eval_env.sh", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_geneval_environment_builds_for_hopper(tmp_path) -> None:
    r = eval_env("geneval", str(tmp_path / "env"), PRINT_ONLY="1")
    assert r.returncode == 0, r.stderr
    steps = [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]
    assert steps[0] == f"python3.10 -m venv {tmp_path / 'env'}"
    assert steps[2].endswith(f"-r {REPO / 'requirements' / 'eval-geneval.txt'}")
    builds = [s for s in steps if "pip install" in s and "-e ." in s]
    assert len(builds) == 2 and all("TORCH_CUDA_ARCH_LIST='8.0;9.0'" in s and "MMCV_WITH_OPS=1" in s for s in builds)
    assert "--branch 1.x https://github.com/open-mmlab/mmcv.git" in r.stdout
    assert "--branch 2.x https://github.com/open-mmlab/mmdetection.git" in r.stdout
    assert not (tmp_path / "env").exists()  # PRINT_ONLY ran nothing
    reqs = (REPO / "requirements" / "eval-geneval.txt").read_text()
    # a CUDA 12 build of torch (sm_90 kernels), not GenEval's own torch 1.12.1 + CUDA 11.3
    assert re.search(r"^torch==2\.1\.2\+cu121$", reqs, flags=re.M) and "cu113" not in reqs


def test_dpg_environment_and_bad_arguments(tmp_path) -> None:
    r = eval_env("dpg", str(tmp_path / "env"), PRINT_ONLY="1", EVAL_PYTHON="python3.11")
    assert r.returncode == 0 and f"-r {REPO / 'requirements' / 'eval-dpg.txt'}" in r.stdout
    assert r.stdout.splitlines()[0] == f"+ python3.11 -m venv {tmp_path / 'env'}"
    assert "torch==2.1.2+cu121" in (REPO / "requirements" / "eval-dpg.txt").read_text()
    bad = eval_env("imagereward", str(tmp_path / "env"))
    assert bad.returncode == 2
    usage = "usage: bash launch/eval_env.sh geneval|dpg ENV_DIR"
    assert bad.stderr.strip() == f"error: unknown scorer 'imagereward'; {usage}"
    assert eval_env("geneval").returncode == 2
