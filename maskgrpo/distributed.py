"""Process-group set-up for DeepSpeed on GPUs (nccl) and CPUs (gloo), plus the two collectives the loop needs."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def on_cpu() -> bool:
    return not torch.cuda.is_available()


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Works under torchrun / the deepspeed launcher and as a plain single process.

    On CPU: gloo backend, and DeepSpeed's shared-memory comm op is switched off before it would JIT-compile
    (infra.md: ~45 s on first initialize; plain gloo is used instead).
    """
    if on_cpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(k, v)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(29500 + os.getpid() % 2000)
    import deepspeed

    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo" if on_cpu() else "nccl", verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    if on_cpu():
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return rank, world, device


def all_gather_rows(x: np.ndarray) -> np.ndarray:
    """Concatenate every rank's (n, ...) float array in rank order (same n on every rank) -> (world * n, ...)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return torch.cat(out).cpu().numpy()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
