"""Record what tiny RL runs compute, to pin it across refactors: ``python tests/golden/record_rounds.py OUT.json``.

Each case is two rounds of a tiny ShapesWorld run through the public CLI (``maskgrpo.train.main``): every logged
number except wall-clock ones, the forward counts, and a SHA-256 over the final weights. ``rounds.json`` beside this
file was written by the code at commit 173b675 (before the round-as-data refactor); tests/test_bit_identical.py runs
the same cases on the current code and compares. Float results depend on the CPU's kernels, so the file also holds
the machine fingerprint it was recorded on: on the same fingerprint the comparison is exact, on another one the
integer counts stay exact and floats get a tolerance.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TINY_BASE = [  # own copy (not fixtures_toy's), so a change there cannot move the pinned numbers
    "pretrain.steps=30", "pretrain.batch_size=16", "pretrain.warmup_steps=5", "model.n_layers=1",
    "model.d_model=32", "model.n_heads=2", "model.mlp_hidden_size=64", "world.codebook_fit_images=32",
    "world.codebook_size=32", "world.num_eval_prompts=12", "eval.samples_per_prompt=1",
    "eval.sampler.name=maskgit", "eval.sampler.num_steps=2",
]  # fmt: skip
COMMON = ["prompts.per_round=4", "rl.group_size=3", "rl.num_inner_updates=4", "rl.micro_batch_prompts=1",
          "rollout.num_steps=4", "rl.rounds=2", "optim.lr=1e-3", "checkpoint.every=0", "log.image_every=0",
          "eval=null"]  # fmt: skip
HT = ["patch_options.budgets=[1,2,1]"]
CASES: dict[str, tuple[str, list[str]]] = {
    "maskgrpo": ("toy_maskgrpo.yaml", []),
    "maskgrpo_upstream_count": ("toy_maskgrpo.yaml", ["remask.loss_mask=upstream_count"]),
    "maskgrpo_seq_mean_mb2": ("toy_maskgrpo.yaml", ["rl.aggregation=seq_mean", "rl.micro_batch_prompts=2"]),
    "unigrpo": ("toy_unigrpo.yaml", []),
    "tracegrpo_shrink2": ("toy_tracegrpo.yaml", ["trace.shrink=2"]),
    "htgrpo": ("toy_htgrpo.yaml", HT),
    "htgrpo_mb2_no_kl": ("toy_htgrpo.yaml", [*HT, "rl.micro_batch_prompts=2", "rl.kl_beta=0.0"]),
    "htgrpo_fixed_size_per_stage": (
        "toy_htgrpo.yaml",
        [
            *HT,
            "patch_options.subset=fixed_size",
            "patch_options.p_max={global: 1.0, structure: 0.9, refine: 0.8}",
            "patch_options.p_min={global: 0.5, structure: 0.4, refine: 0.3}",
            "patch_options.tie_break=confidence",
        ],
    ),  # fmt: skip
    "htgrpo_two_stage_up": ("toy_htgrpo.yaml", ["patch_options.budgets=[0,3,1]", "patch_options.schedule=up"]),
    "htgrpo_a5": ("toy_htgrpo.yaml", [*HT, "rl.context=revealed_structure"]),
}
WALL_CLOCK = ("perf/seconds_", "perf/rollout_images_per_s")


def fingerprint() -> dict:
    """What float results depend on: CPU model, torch's CPU kernel level, torch and Python versions."""
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())  # fmt: skip
    return {"cpu": model, "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "python": platform.python_version()}  # fmt: skip


def weights_digest(path: Path) -> str:
    tensors = load_file(path)
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def build_base(root: Path) -> Path:
    from maskgrpo.toy.pretrain import main as pretrain

    with contextlib.redirect_stdout(io.StringIO()):
        pretrain([f"run.output_dir={root / 'base'}", *TINY_BASE])
    return root / "base"


TWO_RANKS = {"htgrpo_2ranks": ("toy_htgrpo.yaml", HT), "maskgrpo_2ranks": ("toy_maskgrpo.yaml", [])}
"""Cases run on two DeepSpeed ranks (torchrun over gloo, a subprocess): advantages gathered, then sliced per rank."""


def run_case(base: Path, root: Path, case: str) -> dict:
    """Two rounds of ``case``: {"metrics": [per round, wall-clock keys dropped], "weights": sha256}."""
    from maskgrpo.train import main as train

    config, extra = {**CASES, **TWO_RANKS}[case]
    out = root / case
    args = ["--config", str(REPO / "configs" / config), f"backbone.path={base}", f"run.output_dir={out}",
            *COMMON, *extra]  # fmt: skip
    if case in TWO_RANKS:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": os.pathsep.join(sys.path)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "maskgrpo.train", *args]  # fmt: skip
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            train(args)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    metrics = [{k: v for k, v in r.items() if not k.startswith(WALL_CLOCK)} for r in rows]
    return {"metrics": metrics, "weights": weights_digest(out / "final" / "model" / "model.safetensors")}


def record(cases: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="golden_") as tmp:
        root = Path(tmp)
        base = build_base(root)
        return {"fingerprint": fingerprint(), "base": weights_digest(base / "model" / "model.safetensors"),
                "cases": {c: run_case(base, root, c) for c in (cases or [*CASES, *TWO_RANKS])}}  # fmt: skip


if __name__ == "__main__":
    result = record()
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {sys.argv[1]}: {len(result['cases'])} cases")
