"""Time before launch: per method, the work of one round on one GPU and what it costs on a named GPU type.

Used by the dry run (``maskgrpo.launch_plan``). Two sources, in this order:

1. **measured**: the GPU check's JSON (``python -m eval.gpu_check`` writes ``runs/gpu_check/gpu_check.json``), when
   it ran on the named GPU type and at the run's shape (MMaDA backbone, row length, G, mu, sampler steps, CFG, LoRA
   rank): its per-GPU phase seconds at 32 blocks (rollout, decode, old/ref, update), scaled linearly from its
   prompts per GPU to the run's, plus the LoRA gradient exchange of every optimizer step (:func:`allreduce_seconds`);
2. **FLOP estimate** otherwise, labelled so: the model rows of a round (:func:`round_work`) times the FLOPs of a row
   (:func:`forward_flops`, :func:`train_flops`) over ``peak x MFU`` of the GPU type (:data:`GPU_PEAK_TFLOPS`).

Neither includes the reward servers' time; the FLOP estimate also leaves out the image decode and the gradient
exchange (both measured by the GPU check).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GPU_PEAK_TFLOPS: dict[str, float] = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
"""Dense bf16 tensor-core peak of the SXM parts, TFLOP/s (NVIDIA datasheets; sparsity excluded). The H200 is the
H100's chip with more memory."""
DEFAULT_MFU = 0.35
"""Fraction of the peak the FLOP estimate assumes the model reaches (a stated assumption, not a measurement)."""
GPU_CHECK_JSON = Path("runs/gpu_check/gpu_check.json")
"""Where ``python -m eval.gpu_check`` (``bash launch/gpu_check.sh``) writes its measured figures."""
BUS_GB_PER_S = 150.0
"""Ring all-reduce bandwidth assumed for the LoRA gradient exchange (NVLink H100 ~150 GB/s), as the GPU check."""


def allreduce_seconds(grad_bytes: float, gpus: int, bus_gb_per_s: float) -> float:
    """ZeRO-2 traffic of one optimizer step on a ring: reduce-scatter of the gradients plus all-gather of the updated
    parameters, 2 (n - 1) / n x bytes over the bus bandwidth. Test: 0.671 GB, 8 GPUs, 150 GB/s -> 7.83 ms."""
    return 2 * (gpus - 1) / gpus * grad_bytes / (bus_gb_per_s * 1e9)


@dataclass(frozen=True)
class RoundWork:
    """Model rows of one round of one method on one GPU (each row is ``seq_len`` tokens)."""

    method: str
    context: str
    rollout_rows: int
    """Sampler forwards: at most steps x canvases x (2 with CFG) (the sampler forwards shared rows once, so fewer)."""
    pass_rows: int
    """No-grad rows: the old log-probs over every distinct context, and as many again for the reference (KL > 0)."""
    update_rows: int
    """Forward + backward rows of the mu inner updates."""
    seq_len: int


def round_work(cfg: Any, prompts_per_gpu: int, num_image_tokens: int, seq_len: int, preset: str | None = None
               ) -> RoundWork:  # fmt: skip
    """The rows of ``preset``'s round (None: the run's own context) on a GPU with ``prompts_per_gpu`` prompts,
    counted on its context builder (``maskgrpo.algo.contexts.round_rows``)."""
    from maskgrpo.algo.contexts import round_rows
    from maskgrpo.components import run_context

    method, name, builder = run_context(cfg, preset)
    update, one_pass = round_rows(builder, prompts_per_gpu, cfg.rl.micro_batch_prompts, cfg.rl.group_size,
                                  num_image_tokens, cfg.rollout.num_steps, cfg.rl.num_inner_updates)  # fmt: skip
    canvases = prompts_per_gpu * cfg.rl.group_size
    rollout = cfg.rollout.num_steps * canvases * (2 if cfg.rollout.cfg_scale > 0 else 1)
    passes = 2 if cfg.rl.kl_beta > 0 else 1
    return RoundWork(method, name, rollout, passes * one_pass, update, seq_len)


def forward_flops(size: Any, seq_len: int, num_image_tokens: int, codebook: int) -> float:
    """One row's forward: 2 x block params x T (the linears) + 4 x L x T^2 x C (attention scores and values) +
    2 x C x K x N (the head, sliced to the image positions and codes). MMaDA-8B, T = 1539: 2.15e13 + 1.24e12 +
    6.9e10 = 2.28e13."""
    t, c, layers = seq_len, size.d_model, size.n_layers
    return 2 * layers * size.params_per_block * t + 4 * layers * t * t * c + 2 * c * codebook * num_image_tokens


def train_multiplier(lora: bool, checkpointing: bool) -> int:
    """Forwards' worth of FLOPs in one trained row: the forward, the backward's input gradients (1), the weight
    gradients of full fine-tuning (1 more; LoRA's own are negligible), the block recompute of checkpointing (1).
    LoRA + checkpointing: 3 (6 x params x tokens); full fine-tuning without: 3 as well; full with: 4."""
    return 1 + 1 + (0 if lora else 1) + (1 if checkpointing else 0)


def flop_round_seconds(work: RoundWork, fwd_flops: float, multiplier: int, peak_tflops: float, mfu: float) -> float:
    """Seconds of one round on one GPU: (rollout + pass rows + multiplier x update rows) x row FLOPs / (peak x MFU)."""
    rows = work.rollout_rows + work.pass_rows + multiplier * work.update_rows
    return rows * fwd_flops / (peak_tflops * 1e12 * mfu)


# ---------------------------------------------------------------------------------------------------------------
# The GPU check's measured figures


def workload_of(cfg: Any, backbone: str, seq_len: int, prompts_per_gpu: int) -> dict[str, Any]:
    """What a measured round depends on (the GPU check records the same keys for its own round)."""
    return {"backbone": backbone, "seq_len": seq_len, "group_size": cfg.rl.group_size,
            "num_inner_updates": cfg.rl.num_inner_updates, "num_steps": cfg.rollout.num_steps,
            "cfg_scale": cfg.rollout.cfg_scale, "lora_r": cfg.lora.r if cfg.lora.enabled else None,
            "prompts_per_gpu": prompts_per_gpu}  # fmt: skip


def load_gpu_check(path: Path) -> dict[str, Any] | None:
    """The GPU check's JSON, or None when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def measured_round_seconds(rep: dict[str, Any], workload: dict[str, Any], method: str, gpu_type: str, gpus: int
                           ) -> tuple[float | None, str]:  # fmt: skip
    """(seconds of one round per GPU, how) from the GPU check ``rep``; (None, why not) when it does not apply.

    Applies when ``rep`` ran on a CUDA device whose name contains ``gpu_type`` and its workload equals ``workload``
    except for prompts per GPU: its per-phase seconds at 32 blocks are scaled by the ratio of prompts per GPU, and
    each of mu optimizer steps adds the LoRA gradient exchange over ``gpus`` GPUs."""
    measured = rep.get("workload")
    device = str(rep.get("device", ""))
    if not isinstance(measured, dict) or "cpu" in device.lower():
        return None, "no GPU measurement"
    if gpu_type.lower() not in device.lower():
        return None, f"measured on {device}, not {gpu_type}"
    differ = sorted(k for k in workload if k != "prompts_per_gpu" and measured.get(k) != workload[k])
    if differ:
        return None, "measured at another shape (" + ", ".join(f"{k} {measured.get(k)} vs {workload[k]}"
                                                              for k in differ) + ")"  # fmt: skip
    ext = rep["extrapolated"]
    per_gpu = sum(ext["shared"][p]["seconds"] for p in ("rollout", "decode"))
    per_gpu += sum(ext[method][p]["seconds"] for p in ("old_ref", "update"))
    scale = workload["prompts_per_gpu"] / measured["prompts_per_gpu"]
    exchange = workload["num_inner_updates"] * allreduce_seconds(rep["round_8gpu"]["grad_bytes"], gpus, BUS_GB_PER_S)
    how = (f"measured by the GPU check on {device} ({rep.get('date', '?')}), {rep.get('target_blocks', 32)} blocks "
           f"extrapolated, scaled x{scale:g} from {measured['prompts_per_gpu']} to {workload['prompts_per_gpu']} "
           f"prompts per GPU")  # fmt: skip
    return per_gpu * scale + exchange, how


# ---------------------------------------------------------------------------------------------------------------
# Report


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render_time(rows: list[tuple[RoundWork, float, str]], rounds: int, images_per_round: int, gpus: int,
                gpu_type: str) -> str:  # fmt: skip
    """Per method: rounds, images, model rows (per GPU per round and for the whole run on all GPUs), the time of a
    round and of the run, and how each time was obtained."""
    head = f"{'rows per GPU per round: rollout<= / old+ref / update':<52}{'rows/run':>10}{'round':>10}{'run':>10}"
    out = [
        f"time per round and per run on {gpu_type} ({gpus} GPUs; reward servers not included)",
        f"  {'method (context)':<30}{'rounds':>7}{'images/round':>13}{'images/run':>12}   {head}",
    ]
    hows = []
    for work, seconds, how in rows:
        per_round = work.rollout_rows + work.pass_rows + work.update_rows
        label = f"{work.method} ({work.context})"
        split = f"{work.rollout_rows} / {work.pass_rows} / {work.update_rows}"
        times = f"{per_round * gpus * rounds:>10.3g}{_duration(seconds):>10}{_duration(seconds * rounds):>10}"
        out.append(
            f"  {label:<30}{rounds:>7}{images_per_round:>13,}{images_per_round * rounds:>12,}   {split:<52}" + times
        )
        hows.append(f"  {work.method}: {how}")
    return "\n".join(out + hows + ["-" * 100])


__all__ = [
    "DEFAULT_MFU",
    "GPU_CHECK_JSON",
    "GPU_PEAK_TFLOPS",
    "RoundWork",
    "allreduce_seconds",
    "flop_round_seconds",
    "forward_flops",
    "load_gpu_check",
    "measured_round_seconds",
    "render_time",
    "round_work",
    "train_multiplier",
    "workload_of",
]
