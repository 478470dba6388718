"""Atomic checkpoints: DeepSpeed engine state + trainer state (round, every generator's RNG state, data position).

Layout under ``<run>/checkpoints/``::

    round-000004/state/...              DeepSpeed checkpoint (model, optimizer, scheduler; ZeRO shards)
    round-000004/trainer_rank{r}.pt     TrainerState of rank r
    latest                              text file naming the newest complete checkpoint

A checkpoint is written under ``.tmp-round-N`` and renamed only when every rank has finished, and ``latest`` is
replaced atomically afterwards, so a crash mid-save never leaves a ``latest`` that does not load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from maskgrpo.distributed import barrier


@dataclass
class TrainerState:
    """Everything besides the engine needed to continue bit-exactly."""

    round: int = 0
    """Rounds completed."""
    prompt_position: int = 0
    """Global index of the next prompt in the prompt stream."""
    generators: dict[str, Any] = field(default_factory=dict)
    """name -> torch.Generator.get_state() of every dedicated generator of this rank."""
    torch_rng: Any = None
    """Global torch CPU RNG state (LoRA dropout draws from it)."""
    components: dict[str, str] = field(default_factory=dict)
    """Resolved component names (sampler, context, loss, ...)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved run config."""


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(engine: Any, root: Path, state: TrainerState, rank: int, keep: int) -> Path:
    name = f"round-{state.round:06d}"
    tmp, final = root / f".tmp-{name}", root / name
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    engine.save_checkpoint(str(tmp), tag="state", save_latest=False)
    torch.save(state.__dict__, tmp / f"trainer_rank{rank}.pt")
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _write_text_atomic(root / "latest", name)
        old = sorted(p for p in root.glob("round-*") if p.is_dir())[:-keep]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
    barrier()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    f = root / "latest"
    if not f.is_file():
        return None
    path = root / f.read_text().strip()
    if not path.is_dir():
        raise FileNotFoundError(f"{f} names {path.name}, which does not exist")
    return path


def load_checkpoint(engine: Any, path: Path, rank: int) -> TrainerState:
    state_file = path / f"trainer_rank{rank}.pt"
    if not state_file.is_file():
        world = dist.get_world_size() if dist.is_initialized() else 1
        raise FileNotFoundError(f"{state_file} missing: was the checkpoint written with {world} ranks?")
    load_path, _ = engine.load_checkpoint(str(path), tag="state", load_optimizer_states=True,
                                          load_lr_scheduler_states=True)  # fmt: skip
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint at {path / 'state'}")
    return TrainerState(**torch.load(state_file, weights_only=False))


def export_final(engine: Any, cfg: Any, out: Path, rank: int) -> None:
    """Trained weights for evaluation, loadable by ``load_trained`` without DeepSpeed::

        final/backbone.json   {"name", "path", "options"} of the base backbone
        final/adapter/        peft LoRA adapter (LoRA runs), or
        final/model/          full model via save_pretrained (full fine-tuning)

    Under ZeRO-3 the parameters are gathered on every rank first (a collective), then rank 0 writes.
    """
    import json

    import deepspeed

    module = engine.module
    zero3 = engine.zero_optimization_stage() == 3
    params = [p for p in module.parameters()]
    ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero3 else contextlib.nullcontext()
    with ctx:
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            meta = {"name": cfg.backbone.name, "path": cfg.backbone.path, "options": cfg.backbone.options}
            (out / "backbone.json").write_text(json.dumps(meta, indent=1))
            if hasattr(module, "peft_config"):
                module.save_pretrained(out / "adapter")
            else:
                module.save_pretrained(out / "model")
    barrier()


def load_trained(final_dir: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Any:
    """The backbone of a finished run with its trained weights (LoRA adapters merged in)."""
    import json

    from maskgrpo.backbones import BACKBONES

    d = Path(final_dir)
    meta_file = d / "backbone.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: not a finished run's final/ directory")
    meta = json.loads(meta_file.read_text())
    backbone = BACKBONES.get(meta["name"])(meta["path"], dtype=dtype, device=device, **meta["options"])
    if (d / "adapter").is_dir():
        from peft import PeftModel

        backbone.model = PeftModel.from_pretrained(backbone.model, d / "adapter").merge_and_unload().to(device)
    elif (d / "model").is_dir():
        backbone.model = type(backbone.model).from_pretrained(d / "model", dtype=dtype).to(device)
    else:
        raise FileNotFoundError(f"{d} has neither adapter/ nor model/")
    backbone.model.eval()
    return backbone
