"""Load a checkpoint with ``maskgrpo.checkpoint.load_resharded`` on the current ranks and compare every value with
the checkpoint's own files (tests/test_world_size.py launches this, with 1 or 2 ranks).

    python tests/reshard_check.py CHECKPOINT -- [config overrides]
    python -m torch.distributed.run --nproc_per_node 2 tests/reshard_check.py CHECKPOINT -- [config overrides]

Prints one JSON line per rank: the parameters compared, those whose fp32 master weight, Adam moment or module weight
differs from the checkpoint (the reference concatenates every old rank's pieces of a parameter, in rank order), the
optimizer step and scheduler position loaded and saved, and a digest of each re-derived generator state.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def saved_full_state(ckpt: Path) -> tuple[dict[str, dict[str, list]], float]:
    """name -> {"fp32" | "exp_avg" | "exp_avg_sq": [old pieces in rank order]}, and the saved Adam step."""
    import torch

    full: dict[str, dict[str, list]] = {}
    step = None
    for f in sorted((ckpt / "state").glob("*zero_pp_rank_*_optim_states.pt"), key=lambda p: int(p.name.split("_")[3])):
        sd = torch.load(f, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        state = sd["base_optimizer_state"]["state"][0]
        step = float(state["step"])
        for name, frag in sd["param_slice_mappings"][0].items():
            sl = slice(frag.start, frag.start + frag.numel)
            for key, src in (("fp32", sd["single_partition_of_fp32_groups"][0]), ("exp_avg", state["exp_avg"]),
                             ("exp_avg_sq", state["exp_avg_sq"])):  # fmt: skip
                full.setdefault(name, {}).setdefault(key, []).append(src[sl])
    return full, step


def main() -> None:
    argv = sys.argv[1:]
    ckpt, overrides = Path(argv[0]), argv[argv.index("--") + 1 :]
    import torch
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    from maskgrpo.checkpoint import load_resharded
    from maskgrpo.components import resolve_components
    from maskgrpo.config import load_config
    from maskgrpo.config.schema import TrainRun
    from maskgrpo.distributed import init_distributed
    from maskgrpo.engine import build_engine

    rank, world, device = init_distributed()
    cfg = load_config(TrainRun, str(REPO / "configs/toy_maskgrpo.yaml"), overrides)
    engine, _ = build_engine(cfg, resolve_components(cfg, device).backbone.model, world, device)
    state = load_resharded(engine, ckpt, rank, world)
    engine.optimizer._lazy_init_hp_params_optimizer_state()  # DeepSpeed links the moments at the next step
    full, saved_step = saved_full_state(ckpt)
    module = torch.load(ckpt / "state/mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    bad = []
    trained = {n: p for n, p in engine.module.named_parameters() if p.requires_grad}  # LoRA: the adapters only
    for name, p in trained.items():
        want = {k: torch.cat(v).view(p.shape) for k, v in full[name].items()}
        got = {"fp32": safe_get_full_fp32_param(p), **{k: safe_get_full_optimizer_state(p, k)
                                                       for k in ("exp_avg", "exp_avg_sq")}}  # fmt: skip
        bad += [f"{name}:{k}" for k in want if not torch.equal(want[k], got[k].cpu())]
        if not torch.equal(p.detach().cpu(), module["module"][name]):
            bad.append(f"{name}:module")
    saved = torch.load(ckpt / "trainer_rank0.pt", weights_only=True)
    line = json.dumps({
        "rank": rank, "world": world, "compared": sorted(full), "params": sorted(trained),
        "mismatch": bad, "step": float(engine.optimizer.optimizer.state_dict()["state"][0]["step"]),
        "saved_step": saved_step, "lr_epoch": engine.lr_scheduler.state_dict()["last_epoch"],
        "saved_lr_epoch": module["lr_scheduler"]["last_epoch"], "round": state.round,
        "saved_round": saved["round"], "prompt_position": state.prompt_position,
        "saved_prompt_position": saved["prompt_position"],
        "generators": {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in state.generators.items()},
        "saved_generators": {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()
                             for k, v in saved["generators"].items()},
    })  # fmt: skip
    os.write(1, (line + "\n").encode())  # one write(2) of < 4 KiB: the two ranks' lines never interleave


if __name__ == "__main__":
    from maskgrpo.distributed import exit_process, shutdown_distributed

    status = None
    try:
        main()
    except SystemExit as e:
        status = e.code
    # the gloo group goes down here, not in finalization, where it can abort a rank (SIGABRT) after its line
    exit_process(status, shutdown_distributed())
