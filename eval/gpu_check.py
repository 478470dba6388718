"""One-command GPU check at MMaDA's real shape: ``bash launch/gpu_check.sh`` (``python -m eval.gpu_check``).

Builds an MMaDA-shaped LLaDA from config with random weights (no hub access): the real vocabulary (134656), the real
T2I layout at the configs' text window (513 + 1024 image slots + 2 = 1539 tokens), width 4096, 32 heads, MLP 12288,
bf16, whole-block gradient checkpointing, LoRA r = 128 on the seven block linears, DeepSpeed ZeRO-2 on one rank; and
a MAGVIT-v2 with the real architecture (random weights). On it, one round per method at the paper's shape per GPU
(3 prompts, as configs/mmada_*.yaml give each of 8 GPUs; G = 9, mu = 8, 12 emerge steps, CFG 3.5): the HT-GRPO
trainer samples the rollouts (ranked) and decodes them, then both methods run their old / reference pass and mu
inner updates on the SAME rollouts. Per phase (rollout, decode, old_ref, update): seconds, images/s, tokens/s, model
forwards and peak GPU memory (``torch.cuda.max_memory_allocated``, reset per phase); HT / MaskGRPO ratios; the
largest micro-batch (in prompts per forward) each method fits; a bf16-vs-fp32 check of the policy log-probs on a
short case.

Depth: the round is run at two depths (``--small-blocks``, ``--blocks``) and every phase's seconds and memory are
extrapolated linearly to the full 32 blocks (:func:`linear_extrapolate`). Sizing for <= 8 min on one H100 / H200:
one block costs 2 x 218 M x 1539 + 4 x 1539^2 x 4096 = 0.71 TFLOP per row forward; a round pair (rollout at most
648 rows, MaskGRPO old/ref 432 rows + update 216 rows x 3 for forward, recompute and backward, HT-GRPO 6 + 24 x 3
rows) is about 1.28 PFLOP per block, 4.3 s at 300 TFLOP/s of bf16. 16 + 2 blocks are then about 77 s of model
compute, so the default stays inside the budget with room for a throughput 4x below that assumption plus the fixed
costs (four engine builds, decode, the bf16 check). After the small depth the run re-checks the budget
(``--time-budget-s``) and lowers ``--blocks`` (never below 4) if the projected time would exceed it
(:func:`choose_blocks`).

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default ``runs/gpu_check``, where the GPU launchers'
dry runs read the measured round time: ``maskgrpo/launch_time.py``; the JSON's ``workload`` is the shape it applies
to). ``--device cpu --tiny`` runs the same code on a tiny width (64, 4 heads, MLP 128, text window 17, 4 x 4 codes,
LoRA r = 8, a tiny MAGVIT-v2; depths 1 and 2) in under a minute; memory figures then read "skipped: no CUDA".
Rewards are not part of the check (their servers run elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from eval.bench_round_cost import measure, phase_figures
from maskgrpo.algo.equations import code_logprobs
from maskgrpo.errors import RunError, add_traceback_flag, one_line_errors
from maskgrpo.launch_time import allreduce_seconds, workload_of

REPO = Path(__file__).resolve().parents[1]
TARGET_BLOCKS = 32
"""MMaDA-8B's block count: the depth every per-block figure is extrapolated to."""
BACKBONE = "gpu_check_random"
"""Registered (at run time) backbone loader that builds the random MMaDA-shaped model."""
PROMPTS = ["a photo of a red bus and a blue clock", "a photo of two cats", "a photo of a dog right of a cup"]
"""Prompts per GPU (configs/mmada_*.yaml: 24 prompts over 8 GPUs = 3)."""
NO_CUDA = "skipped: no CUDA"
BF16_CHECK_BLOCKS = 2
"""Depth of the bf16-vs-fp32 log-prob check (a short case: one prompt row, random weights)."""


@dataclass(frozen=True)
class Shape:
    """Sizes of the checked model (docs/models.md 1.1, 2.2)."""

    d_model: int
    n_heads: int
    mlp_hidden_size: int
    vocab: int
    text_window: int
    grid: int
    lora_r: int
    vq_config: dict | None
    """MagvitV2Config fields; None = the released architecture (95,387,004 params)."""


REAL = Shape(4096, 32, 12288, 134656, 513, 32, 128, None)
"""MMaDA-8B at the configs' text window (backbone.options.text_window: 513 in configs/mmada_*.yaml)."""
TINY_VQ = {"ch": 32, "encoder_ch_mult": [1, 1, 2], "encoder_num_res_blocks": [1, 1, 1],
           "decoder_ch_mult": [1, 1, 2], "decoder_num_res_blocks": [1, 1, 1]}  # fmt: skip
"""docs/models.md 4 tiny MAGVIT-v2: 4x downsampling, real 13-bit codes."""
TINY = Shape(64, 4, 128, 134656, 17, 4, 8, TINY_VQ)


# ---------------------------------------------------------------------------------------------------------------
# Pure arithmetic (tests/test_gpu_check.py pins each with a hand-computed case)


def linear_extrapolate(x1: float, y1: float, x2: float, y2: float, x: float) -> float:
    """y at depth x on the line through (x1, y1), (x2, y2): fixed part + x * per-block part.
    Test: (2, 10), (16, 38) -> 2 per block, 6 fixed -> 70 at 32."""
    if x1 == x2:
        raise ValueError(f"two different depths are needed, got {x1} and {x2}")
    return y1 + (y2 - y1) * (x - x1) / (x2 - x1)


def round_seconds_multi_gpu(phase_seconds: dict[str, float], steps: int, grad_bytes: float, gpus: int,
                            bus_gb_per_s: float) -> float:  # fmt: skip
    """One round on ``gpus`` data-parallel GPUs that each do the measured per-GPU share (same prompts per GPU):
    the per-GPU phases plus ``steps`` gradient exchanges. Test: phases 10 + 2 + 5 + 3, 8 steps of 7.83 ms -> 20.063."""
    return sum(phase_seconds.values()) + steps * allreduce_seconds(grad_bytes, gpus, bus_gb_per_s)


def plan_check(plan_bytes: float, measured_bytes: float, tolerance: float) -> dict[str, Any]:
    """Is the dry-run plan within ``tolerance`` of the measured peak? rel_error = (plan - measured) / measured.
    Test: plan 11.4 GB vs 10 GB -> +0.14 ok at 0.15; 8.4 GB -> -0.16 off."""
    rel = (plan_bytes - measured_bytes) / measured_bytes
    ok = abs(rel) <= tolerance
    verdict = "ok" if ok else f"off by {rel:+.1%}: correct maskgrpo/launch_plan.py (memory_estimate)"
    return {"status": "ok" if ok else "off", "plan_bytes": plan_bytes, "measured_bytes": measured_bytes,
            "rel_error": rel, "tolerance": tolerance, "message": verdict}  # fmt: skip


def prompts_that_fit(free_bytes: float, per_prompt_bytes: float) -> int:
    """Largest whole number of prompts whose update activations fit in ``free_bytes``. Test: 70 GB / 3 GB -> 23."""
    return max(0, math.floor(free_bytes / per_prompt_bytes))


def choose_blocks(requested: int, small_blocks: int, small_seconds: float, elapsed: float, budget: float,
                  minimum: int) -> int:  # fmt: skip
    """Main-run depth: ``requested``, lowered so the projected time fits ``budget``; never below ``minimum``.
    Projection: the small run's seconds scaled by depth (an over-estimate: its fixed costs scale too).
    Test: 16 asked, 2 blocks took 40 s, 100 s used of 480 -> 16 x 20 = 320 fits -> 16; 240 s used -> 12."""
    per_block = small_seconds / small_blocks
    if elapsed + requested * per_block <= budget:
        return requested
    return max(minimum, math.floor((budget - elapsed) / per_block))


# ---------------------------------------------------------------------------------------------------------------
# The random MMaDA-shaped backbone (registered at run time, like test-only rewards)


class HashTokenizer:
    """A stand-in for the LLaDA text tokenizer: each word -> a fixed id in [1000, 100000) (CRC32); ``len`` = the
    image-code offset, as the real tokenizer's (docs/models.md 2.1). Prompt content does not change any cost."""

    unk_token_id = None  # byte-level: every word has ids (the trainer's unknown-word check finds none)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __call__(self, prompts: list[str], add_special_tokens: bool) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1000 + zlib.crc32(w.encode()) % 99000 for w in p.split()] for p in prompts]}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def load_random_mmada(path: str, dtype: torch.dtype, device: torch.device, d_model: int, n_layers: int,
                      n_heads: int, mlp_hidden_size: int, vocab: int, text_window: int, grid: int,
                      vq_config: dict | None, gradient_checkpointing: bool, seed: int) -> Any:  # fmt: skip
    """MMaDABackbone with a random LLaDA (built on ``device`` in ``dtype``) and a random MAGVIT-v2 (fp32)."""
    from maskgrpo.backbones.mmada import MMaDABackbone, _enable_checkpointing
    from maskgrpo.layout import mmada_8b
    from maskgrpo.models import LLaDAConfig, LLaDAModelLM
    from maskgrpo.models.magvit2 import MagvitV2, MagvitV2Config

    layout = mmada_8b(text_window=text_window, grid=grid)
    torch.manual_seed(seed)
    config = LLaDAConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads, mlp_hidden_size=mlp_hidden_size,
                         embedding_size=vocab, mask_token_id=layout.mask_id)  # fmt: skip
    with torch.device(device), default_dtype(dtype):
        model = LLaDAModelLM(config).eval()
    with torch.device(device):
        vq = MagvitV2(MagvitV2Config(**vq_config) if vq_config else MagvitV2Config()).eval()
    if gradient_checkpointing:
        _enable_checkpointing(model)
    return MMaDABackbone(model=model, tokenizer=HashTokenizer(layout.code_offset), vq=vq, layout=layout)


def register_backbone() -> None:
    from maskgrpo.backbones import BACKBONES

    if BACKBONE not in BACKBONES:
        BACKBONES.register(BACKBONE)(load_random_mmada)


def run_config(method: str, shape: Shape, blocks: int, prompts_file: Path, out: Path, per_round: int) -> Any:
    """configs/mmada_<method>.yaml with the random backbone, ``per_round`` prompts, no reward model, 1 round."""
    from maskgrpo.config.loader import config_from_dict
    from maskgrpo.config.schema import TrainRun

    data = yaml.safe_load((REPO / "configs" / f"mmada_{method}.yaml").read_text())
    data["run"] = {"output_dir": str(out), "seed": 0, "wandb_mode": "disabled"}
    options = {"d_model": shape.d_model, "n_layers": blocks, "n_heads": shape.n_heads, "vocab": shape.vocab,
               "mlp_hidden_size": shape.mlp_hidden_size, "text_window": shape.text_window, "grid": shape.grid,
               "vq_config": shape.vq_config, "gradient_checkpointing": True, "seed": 0}  # fmt: skip
    data["backbone"] = {"name": BACKBONE, "path": "random", "dtype": "bfloat16", "options": options}
    data["prompts"] = {"source": str(prompts_file), "per_round": per_round}
    data["rewards"] = {"hpsv3": {}}  # built, never called: rewards are not measured here
    data["rl"]["rounds"] = 1
    data["lora"]["r"] = shape.lora_r
    data["deepspeed"]["config"] = str(REPO / "configs" / "deepspeed" / "zero2.json")
    data["checkpoint"] = {"every": 0}
    data["log"] = {"image_every": 0}
    return config_from_dict(TrainRun, data, f"configs/mmada_{method}.yaml (gpu_check)")


# ---------------------------------------------------------------------------------------------------------------
# Measurement


def free_memory(device: torch.device) -> int:
    """Collect garbage and return the bytes still allocated (a previous trainer's leftovers, subtracted later)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated(device)
    return 0


def phase_stats(r: dict, phase: str, images: int, seq: int, base: int, cuda: bool) -> dict[str, Any]:
    s = r[f"{phase}_s"]
    fwd = r.get(f"{phase}_forwards", 0)
    return {"seconds": s, "images_per_s": images / s, "tokens_per_s": fwd * seq / s, "forwards": fwd,
            "peak_bytes": r[f"{phase}_peak_bytes"] - base if cuda else None,
            "start_bytes": r[f"{phase}_start_bytes"] - base if cuda else None}  # fmt: skip


def run_depth(shape: Shape, blocks: int, device: torch.device, work: Path, prompts_file: Path) -> dict[str, Any]:
    """Both methods' rounds at one depth on the same rollouts: the HT-GRPO trainer samples (ranked) and decodes
    them ("shared" phases), then each method runs its old / reference pass and mu inner updates. Each trainer is
    built alone on the device (the previous one is freed first; what it leaves allocated is subtracted)."""
    from maskgrpo.train import Trainer

    cuda = device.type == "cuda"
    out: dict[str, Any] = {"blocks": blocks}
    rollouts = None
    for method in METHODS:
        base = free_memory(device)
        cfg = run_config(method, shape, blocks, prompts_file, work / f"blocks{blocks}_{method}", len(PROMPTS))
        tr = Trainer(cfg, resume=False)
        r: dict[str, Any] = {}
        if rollouts is None:
            tr.timer.take()
            with tr.timer.phase("rollout"):
                rollouts = tr.rollout(tr.stream.take(0, len(PROMPTS)))
            with tr.timer.phase("decode"):
                images = tr.backbone.decode(rollouts.codes.cpu())
            r.update(phase_figures(tr.timer, ("rollout", "decode")))
            r["rollout_forwards"] = tr.counter.rows["rollout"]
            out["image_shape"] = list(images.shape[1:])
            out["seq_len"], out["rollouts"] = rollouts.prompts.input_ids.shape[1], rollouts.num_rollouts
            out["shared"] = {p: phase_stats(r, p, out["rollouts"], out["seq_len"], base, cuda)
                             for p in ("rollout", "decode")}  # fmt: skip
        r.update(measure(tr, rollouts, out["seq_len"]))
        stats = {p: phase_stats(r, p, out["rollouts"], out["seq_len"], base, cuda) for p in ("old_ref", "update")}
        forwards = tr.forwards(tr.plan(rollouts), rollouts.num_rollouts)
        stats.update(update_step_s=r["update_step_s"], mu=tr.cfg.rl.num_inner_updates,
                     prompts_per_forward=max(len(g.parts) for g in forwards.groups[0]),
                     trainable_params=sum(p.numel() for p in tr.policy.parameters() if p.requires_grad))  # fmt: skip
        out[method] = stats
        del tr, forwards
    return out


METHODS = ("htgrpo", "maskgrpo")
PHASES = ("old_ref", "update")
SHARED = ("rollout", "decode")


def bf16_vs_fp32(shape: Shape, device: torch.device, blocks: int) -> dict[str, Any]:
    """Policy log-probs of one fully masked prompt row at random codes: fp32 weights vs the same weights in bf16."""
    from maskgrpo.layout import mmada_8b
    from maskgrpo.models import LLaDAConfig, LLaDAModelLM

    layout = mmada_8b(text_window=shape.text_window, grid=shape.grid)
    torch.manual_seed(1)
    config = LLaDAConfig(d_model=shape.d_model, n_layers=blocks, n_heads=shape.n_heads,
                         mlp_hidden_size=shape.mlp_hidden_size, embedding_size=shape.vocab,
                         mask_token_id=layout.mask_id)  # fmt: skip
    with torch.device(device):
        model = LLaDAModelLM(config).eval()
    batch = layout.build_batch([[1000 + i for i in range(12)]]).to(device)
    codes = torch.randint(0, layout.codebook_size, (1, layout.num_image_tokens), device=device)
    kw = {"logits_at": batch.image_positions, "vocab_slice": (layout.code_offset, layout.code_offset + 8192)}
    with torch.no_grad():
        lp32 = code_logprobs(model(batch.input_ids, batch.attention_mask, **kw).logits, codes)
        lp16 = code_logprobs(model.to(torch.bfloat16)(batch.input_ids, batch.attention_mask, **kw).logits, codes)
    diff = (lp32 - lp16).abs()
    del model
    return {"blocks": blocks, "rows": 1, "tokens_scored": int(codes.numel()), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "mean_logp_fp32": float(lp32.mean())}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Summary: extrapolation to 32 blocks, fits, the 8-GPU round, the plan checks


def extrapolated(small: dict, main: dict, target: int) -> dict[str, dict[str, dict[str, float | None]]]:
    """Seconds and peak / start bytes of every phase at ``target`` blocks, on the line through the two depths."""
    x1, x2 = small["blocks"], main["blocks"]

    def line(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else linear_extrapolate(x1, a, x2, b, target)

    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for group, phases in (("shared", SHARED), *((m, PHASES) for m in METHODS)):
        out[group] = {p: {k: line(small[group][p][k], main[group][p][k]) for k in ("seconds", "peak_bytes",
                                                                                    "start_bytes")}
                      for p in phases}  # fmt: skip
    return out


def method_round(ext: dict, method: str) -> dict[str, float]:
    """Per-GPU seconds of one round of ``method``: the shared rollout and decode plus its own phases."""
    return {p: ext[g][p]["seconds"] for g, ps in (("shared", SHARED), (method, PHASES)) for p in ps}


def fits(main: dict, small: dict, target: int, total_bytes: int) -> dict[str, Any]:
    """Per method, at ``target`` blocks: update activation bytes per prompt of a forward and the prompts per forward
    that fit next to the resident weights and states (allocator fragmentation not included)."""

    def per_prompt(d: dict, m: str) -> float:
        u = d[m]["update"]
        return (u["peak_bytes"] - u["start_bytes"]) / d[m]["prompts_per_forward"]

    out = {}
    for m in METHODS:
        pp = linear_extrapolate(small["blocks"], per_prompt(small, m), main["blocks"], per_prompt(main, m), target)
        resident = linear_extrapolate(small["blocks"], small[m]["update"]["start_bytes"], main["blocks"],
                                      main[m]["update"]["start_bytes"], target)  # fmt: skip
        out[m] = {"per_prompt_bytes": pp, "resident_bytes": resident,
                  "prompts_per_forward": prompts_that_fit(total_bytes - resident, pp)}  # fmt: skip
    return out


def plan_estimate(method: str, shape: Shape, blocks: int, per_round: int, gpus: int, prompts_file: Path,
                  work: Path) -> float:  # fmt: skip
    """The dry-run plan's per-GPU peak (maskgrpo.launch_plan) for this shape at ``blocks`` on ``gpus`` ranks."""
    from maskgrpo.launch_plan import ModelSize, batch_plan, memory_estimate

    cfg = run_config(method, shape, blocks, prompts_file, work / "plan", per_round)
    size = ModelSize(d_model=shape.d_model, n_layers=blocks, mlp_hidden=shape.mlp_hidden_size, vocab=shape.vocab,
                     source="gpu_check shape")  # fmt: skip
    n = shape.grid * shape.grid
    est = memory_estimate(cfg, batch_plan(cfg, gpus), size, None, None, 8192, True,
                          seq_len=shape.text_window + n + 2, num_image_tokens=n)  # fmt: skip
    return est.peak


def measured_peak(d: dict, method: str) -> float:
    """Largest phase peak of a method's round on one rank: shared rollout, its old / ref pass, its updates."""
    return max(d["shared"]["rollout"]["peak_bytes"], *(d[method][p]["peak_bytes"] for p in PHASES))


# ---------------------------------------------------------------------------------------------------------------
# Report


def gb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e9:.2f}"


def markdown(rep: dict) -> str:
    main, ext = rep["runs"][-1], rep["extrapolated"]
    sh = rep["shape"]
    lines = [f"# GPU check: {rep['device']}, {rep['date']}", "",
             f"LLaDA width {sh['d_model']}, {sh['n_heads']} heads, MLP {sh['mlp_hidden_size']}, vocabulary "
             f"{sh['vocab']}, {main['seq_len']} tokens per row; bf16, gradient checkpointing, LoRA r={sh['lora_r']} "
             f"on 7 linears, ZeRO-2 on one rank; {main['rollouts']} rollouts (3 prompts x G=9), mu=8, 12 emerge "
             f"steps, CFG 3.5. Measured at {' and '.join(str(r['blocks']) for r in rep['runs'])} blocks.", "",
             f"## Per phase at {main['blocks']} blocks", "",
             "| phase | method | seconds | images/s | tokens/s | forwards | peak GB |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    rows = [(p, "both", main["shared"][p]) for p in SHARED] + [(p, m, main[m][p]) for p in PHASES for m in METHODS]
    for p, m, st in rows:
        lines.append(f"| {p} | {m} | {st['seconds']:.2f} | {st['images_per_s']:.2f} | {st['tokens_per_s']:.0f} | "
                     f"{st['forwards']} | {gb(st['peak_bytes'])} |")  # fmt: skip
    lines += ["", "| HT / MaskGRPO | seconds | forwards |", "|---|---:|---:|"]
    lines += [f"| {p} | {r['seconds']:.3f} | {r['forwards']:.3f} |" for p, r in rep["ratios"].items()]
    lines += ["", f"## Extrapolated to {TARGET_BLOCKS} blocks (linear in depth)", "",
              "| phase | MaskGRPO s | HT-GRPO s | MaskGRPO peak GB | HT-GRPO peak GB |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for p in SHARED:
        lines.append(f"| {p} (shared) | {ext['shared'][p]['seconds']:.2f} | {ext['shared'][p]['seconds']:.2f} | "
                     f"{gb(ext['shared'][p]['peak_bytes'])} | {gb(ext['shared'][p]['peak_bytes'])} |")  # fmt: skip
    for p in PHASES:
        lines.append(f"| {p} | {ext['maskgrpo'][p]['seconds']:.2f} | {ext['htgrpo'][p]['seconds']:.2f} | "
                     f"{gb(ext['maskgrpo'][p]['peak_bytes'])} | {gb(ext['htgrpo'][p]['peak_bytes'])} |")  # fmt: skip
    r8 = rep["round_8gpu"]
    lines += ["", f"One round on {r8['gpus']} GPUs ({r8['prompts_per_gpu']} prompts each, the per-GPU share measured "
              f"here; {r8['bus_gb_per_s']:g} GB/s ring bandwidth for the LoRA gradients; reward servers not "
              f"included): MaskGRPO {r8['maskgrpo_s']:.1f} s, HT-GRPO {r8['htgrpo_s']:.1f} s "
              f"({r8['maskgrpo_s'] / r8['htgrpo_s']:.2f}x). Dry-run plan per GPU at {TARGET_BLOCKS} blocks: "
              f"MaskGRPO {gb(r8['plan_bytes']['maskgrpo'])} GB, "
              f"HT-GRPO {gb(r8['plan_bytes']['htgrpo'])} GB."]  # fmt: skip
    lines += ["", f"## Largest micro-batch at {TARGET_BLOCKS} blocks", ""]
    if isinstance(rep["fits"], str):
        lines.append(rep["fits"])
    else:
        for m, f in rep["fits"].items():
            lines.append(
                f"- {m}: {f['prompts_per_forward']} prompts per forward ({gb(f['per_prompt_bytes'])} GB "
                f"per prompt, {gb(f['resident_bytes'])} GB resident of {gb(rep['gpu_memory_bytes'])})"
            )
    b = rep["bf16_vs_fp32"]
    lines += ["", f"## bf16 vs fp32 log-probs: max |diff| {b['max_abs_diff']:.2e}, mean {b['mean_abs_diff']:.2e} "
              f"({b['blocks']} blocks, {b['rows']} row, {b['tokens_scored']} tokens, random weights)", "",
              "## Plan vs measured peak (at the measured depth)", ""]  # fmt: skip
    for m, c in rep["plan_check"].items():
        text = c if isinstance(c, str) else (f"plan {gb(c['plan_bytes'])} GB, measured {gb(c['measured_bytes'])} GB, "
                                             f"{c['rel_error']:+.1%}: {c['message']}")  # fmt: skip
        lines.append(f"- {m}: {text}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --tiny: the test of the code)")
    ap.add_argument("--tiny", action="store_true", help="tiny width, depths 1 and 2 (the CPU test of this script)")
    ap.add_argument("--blocks", type=int, default=None, help="main depth (default 16; 2 with --tiny)")
    ap.add_argument("--small-blocks", type=int, default=None, help="second depth for the fit (default 2; 1 tiny)")
    ap.add_argument("--time-budget-s", type=float, default=480.0, help="lower --blocks to fit this (>= 4 blocks)")
    ap.add_argument("--bus-gb-per-s", type=float, default=150.0,
                    help="ring all-reduce bandwidth for the 8-GPU round estimate (NVLink H100 ~150 GB/s)")  # fmt: skip
    ap.add_argument("--tolerance", type=float, default=0.15, help="plan vs measured peak, relative")
    ap.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    add_traceback_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors(args.traceback):  # "error: <one line>", exit status 2
        return run_check(args)


def run_check(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("no CUDA device here: run it on a GPU machine; `python -m eval.gpu_check --device cpu --tiny` "
                       "tests the code on a tiny width")  # fmt: skip
    shape = TINY if args.tiny else REAL
    small_blocks = args.small_blocks or (1 if args.tiny else 2)
    blocks = args.blocks or (2 if args.tiny else 16)
    minimum = 2 if args.tiny else 4
    if not 1 <= small_blocks < blocks:
        raise RunError(f"need 1 <= --small-blocks < --blocks, got {small_blocks} and {blocks}")
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    prompts_file = out / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    register_backbone()
    cuda = device.type == "cuda"
    small = run_depth(shape, small_blocks, device, work, prompts_file)
    small_s = sum(small["shared"][p]["seconds"] for p in SHARED)
    small_s += sum(small[m][p]["seconds"] for m in METHODS for p in PHASES)
    chosen = choose_blocks(blocks, small_blocks, small_s, time.perf_counter() - t0, args.time_budget_s, minimum)
    if chosen != blocks:
        print(f"[gpu_check] --blocks {blocks} would exceed --time-budget-s {args.time_budget_s:g}: using {chosen}")
    main_run = run_depth(shape, chosen, device, work, prompts_file)
    ext = extrapolated(small, main_run, TARGET_BLOCKS)
    ratios = {p: {"seconds": main_run["htgrpo"][p]["seconds"] / main_run["maskgrpo"][p]["seconds"],
                  "forwards": main_run["htgrpo"][p]["forwards"] / main_run["maskgrpo"][p]["forwards"]}
              for p in PHASES}  # fmt: skip
    from maskgrpo.launch_plan import ModelSize
    from maskgrpo.models import ALL_BLOCK_LINEARS

    size32 = ModelSize(d_model=shape.d_model, n_layers=TARGET_BLOCKS, mlp_hidden=shape.mlp_hidden_size)
    grad_bytes = 2 * size32.lora_params(shape.lora_r, ALL_BLOCK_LINEARS)  # bf16 LoRA gradients
    per_round_8 = 8 * len(PROMPTS)
    round8 = {"gpus": 8, "prompts_per_gpu": len(PROMPTS), "bus_gb_per_s": args.bus_gb_per_s,
              "grad_bytes": grad_bytes, "plan_bytes": {}}  # fmt: skip
    for m in METHODS:
        round8[f"{m}_s"] = round_seconds_multi_gpu(method_round(ext, m), main_run[m]["mu"], grad_bytes, 8,
                                                   args.bus_gb_per_s)  # fmt: skip
        round8["plan_bytes"][m] = plan_estimate(m, shape, TARGET_BLOCKS, per_round_8, 8, prompts_file, work)
    total = torch.cuda.get_device_properties(device).total_memory if cuda else None
    rep = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu (--tiny: tests the code, no GPU figures)",
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "shape": asdict(shape),
        "runs": [small, main_run], "blocks_requested": blocks, "target_blocks": TARGET_BLOCKS, "ratios": ratios,
        "extrapolated": ext, "gpu_memory_bytes": total, "round_8gpu": round8,
        "fits": fits(main_run, small, TARGET_BLOCKS, total) if cuda else NO_CUDA,
        "bf16_vs_fp32": bf16_vs_fp32(shape, device, BF16_CHECK_BLOCKS),
        "plan_check": {m: plan_check(plan_estimate(m, shape, chosen, len(PROMPTS), 1, prompts_file, work),
                                     measured_peak(main_run, m), args.tolerance) if cuda else NO_CUDA
                       for m in METHODS},
    }  # fmt: skip
    cfg = run_config("htgrpo", shape, chosen, prompts_file, work / "plan", len(PROMPTS))
    rep["workload"] = workload_of(cfg, "mmada", main_run["seq_len"], len(PROMPTS))  # what the dry run matches
    rep["seconds_total"] = time.perf_counter() - t0
    (out / "gpu_check.json").write_text(json.dumps(rep, indent=1))
    (out / "gpu_check.md").write_text(markdown(rep))
    print(markdown(rep) + f"\n[gpu_check] {rep['seconds_total']:.0f} s; wrote {out / 'gpu_check.json'} and .md")
    return rep


if __name__ == "__main__":
    main()
