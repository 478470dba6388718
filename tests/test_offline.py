"""The GPU launchers from a fresh clone with the network blocked: every dry run passes and prints the time estimate
and the memory; a launcher never installs (a stale or missing venv is one line saying how to make it); a real launch
whose weights are not in the cache stops with one line naming the fetch command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO
from tiny_models import write_prompts

pytestmark = pytest.mark.slow  # copies the tree and runs every GPU launcher with the network blocked

LAUNCHERS = ("mmada_maskgrpo.sh", "mmada_htgrpo.sh", "dimoo_maskgrpo.sh", "dimoo_htgrpo.sh")
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The working tree as a fresh clone has it (tracked and new files, nothing git ignores: no runs/, no cache/),
    with this machine's .venv linked in (a venv is made once, with network; see scripts/setup_env.sh)."""
    root = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def offline_env(tmp: Path) -> dict[str, str]:
    """No network for anything that honours the usual variables, an empty Hugging Face cache, no pip index; and no
    HF_HUB_OFFLINE: the GPU launchers must set it themselves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HTGRPO_"))}
    env.update(HF_HOME=str(tmp / "hf_home"), OMP_NUM_THREADS="1", PIP_NO_INDEX="1", PIP_INDEX_URL=CLOSED,
               http_proxy=CLOSED, https_proxy=CLOSED, HTTP_PROXY=CLOSED, HTTPS_PROXY=CLOSED, no_proxy="",
               NO_PROXY="")  # fmt: skip
    return env


def value(out: str, label: str) -> str:
    """The value column of a plan line ``<label>   <value>   <note>``."""
    m = re.search(rf"^{re.escape(label)}\s+(\S+)", out, flags=re.M)
    assert m, f"no line {label!r} in:\n{out}"
    return m.group(1)


def no_network_prefix() -> list[str]:
    """``unshare -rn`` (a network namespace with no interface up) where the kernel allows it; else nothing (the
    proxy variables still block every client that honours them)."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def test_every_gpu_dry_run_passes_offline_from_a_fresh_clone(clone, tmp_path) -> None:
    env = offline_env(tmp_path)
    outputs = {}
    for launcher in LAUNCHERS:
        t0 = time.monotonic()
        r = subprocess.run([*no_network_prefix(), "bash", f"launch/{launcher}"], cwd=clone,
                           env={**env, "DRY_RUN": "1"}, capture_output=True, text=True, timeout=300)  # fmt: skip
        seconds = time.monotonic() - t0
        out = r.stdout
        assert r.returncode == 0, f"{launcher}: {out[-3000:]}{r.stderr[-3000:]}"
        assert "[setup]" not in out + r.stderr  # nothing was installed
        assert "= peak (resident + largest phase)" in out and "fits in 80 GB" in out  # the memory
        assert "time per round and per run on H100" in out and "FLOP estimate, not a measurement" in out
        assert "not in the cache: fetch them before launching" in out and "bash launch/fetch_weights.sh" in out
        assert "dry run OK" in out
        print(f"{launcher}: dry run {seconds:.1f} s offline")  # measured wall time, shown with -s
        outputs[launcher] = out
    # the plan itself, configs/mmada_maskgrpo.yaml on the default 8 GPUs: P = 24, G = 9, mu = 8, one prompt per
    # micro-batch; the shipped prompt file (600 prompts)
    out = outputs["mmada_maskgrpo.sh"]
    for label, v in {"GPUs (ranks)": "8", "ZeRO stage": "2", "prompts per round": "24", "prompts per GPU": "3",
                     "rollouts per prompt": "9", "rollouts per round": "216", "rollouts per GPU": "27",
                     "micro-batch (rollouts)": "9", "gradient accumulation steps": "3", "inner updates": "8",
                     "optimizer steps per round": "8"}.items():  # fmt: skip
        assert value(out, label) == v, label
    assert re.search(r"backbone.path\s+hub id \(cache: see weights\)\s+Gen-Verse/MMaDA-8B-Base", out)
    assert re.search(r"NOT CACHED\s+backbone.options.vq_path\s+showlab/magvitv2", out)
    assert re.search(r"prompts.source\s+local file, 600 prompt\(s\)", out)
    # MMaDA-8B: Psi = 8,082,690,048; bf16 frozen base 2 Psi = 16.17 GB; LoRA r=128 x 7 linears = 335.5 M params,
    # ZeRO-2 states 2 Psi_t + 14 Psi_t / 8 = 0.671 + 0.587 = 1.26 GB
    assert "8,082,690,048 params" in out and re.search(r"frozen base weights \(bf16\)\s+16\.17 GB", out)
    assert re.search(r"trainable states, LoRA r=128 on 7 linears/block\s+1\.26 GB\s+335\.5 M params", out)
    assert "backbone.options.gradient_checkpointing=true" in out and "--num_gpus 8" in out
    assert "configs/mmada_htgrpo.yaml" in outputs["mmada_htgrpo.sh"]
    assert value(outputs["mmada_htgrpo.sh"], "rollouts per round") == "216"


def test_a_launcher_never_installs(clone, tmp_path) -> None:
    """A venv that no longer matches setup.py: the GPU launcher stops with one line (exit 3) instead of running pip;
    the venv is left as it was."""
    stale = tmp_path / "stale"
    shutil.copytree(clone, stale, symlinks=True)
    with open(stale / "setup.py", "a") as f:
        f.write("# a new dependency would go here\n")
    stamp = (REPO / ".venv" / ".htgrpo-stamp").read_text()
    r = subprocess.run(["bash", "launch/mmada_htgrpo.sh"], cwd=stale, env={**offline_env(tmp_path), "DRY_RUN": "1"},
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"error: {stale}/.venv is out of date (setup.py or requirements/cpu-constraints.txt changed since it was "
        "made): make it on a machine with PyPI access (a login node will do) with `HTGRPO_TORCH=cpu bash "
        "scripts/setup_env.sh`; launchers never install by themselves"
    ]
    assert (REPO / ".venv" / ".htgrpo-stamp").read_text() == stamp
    (stale / ".venv").unlink()  # no venv at all
    r = subprocess.run(["bash", "launch/dimoo_maskgrpo.sh"], cwd=stale, env=offline_env(tmp_path),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 3 and r.stderr.startswith(f"error: there is no {stale}/.venv: make it on a machine")
    env = {**offline_env(tmp_path), "HTGRPO_TORCH": "cuda"}
    r = subprocess.run(["bash", "scripts/setup_env.sh", "--check"], cwd=clone, env=env, capture_output=True, text=True)
    assert r.returncode == 3 and "has torch=cpu but HTGRPO_TORCH=cuda" in r.stderr  # a CPU venv is never swapped


def test_a_launch_without_its_weights_is_one_line_naming_the_fetch(clone, tmp_path) -> None:
    """bash launch/mmada_maskgrpo.sh (a real launch, one CPU rank) on a machine whose cache lacks the weights: the
    launcher is offline by default, and the trainer stops with one line naming the exact fetch command."""
    prompts = write_prompts(tmp_path / "train.jsonl")
    env = {**offline_env(tmp_path), "NUM_GPUS": "1", "PROMPTS": str(prompts), "OUTPUT_DIR": str(tmp_path / "run"),
           "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "MODEL_PATH": "Gen-Verse/MMaDA-8B-Base"}  # fmt: skip
    r = subprocess.run(["bash", "launch/mmada_maskgrpo.sh"], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode != 0
    cache = tmp_path / "hf_home" / "hub"
    fetch = "`MODEL_PATH=Gen-Verse/MMaDA-8B-Base bash launch/fetch_weights.sh configs/mmada_maskgrpo.yaml`"
    expected = (f"error: cannot load backbone 'mmada' from Gen-Verse/MMaDA-8B-Base: Gen-Verse/MMaDA-8B-Base is not in "
                f"the Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1: fetch the weights first, on a machine with "
                f"network and the same cache (HF_HOME), with {fetch}")  # fmt: skip
    assert expected in (r.stdout + r.stderr).splitlines(), (r.stdout + r.stderr)[-4000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
