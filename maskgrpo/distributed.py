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
    import deepspeed

    if not dist.is_initialized():
        backend = "gloo" if on_cpu() else "nccl"
        if "RANK" in os.environ:  # torchrun / the deepspeed launcher set the rendezvous variables
            deepspeed.init_distributed(dist_backend=backend, verbose=False)
        else:  # a plain single process: a private TCP rendezvous (no MASTER_PORT for child processes to inherit)
            os.environ.setdefault("LOCAL_RANK", "0")  # the DeepSpeed engine reads it
            deepspeed.init_distributed(
                dist_backend=backend, verbose=False, rank=0, world_size=1, auto_mpi_discovery=False,
                init_method=f"tcp://127.0.0.1:{_free_port()}",
            )  # fmt: skip
    rank, world = dist.get_rank(), dist.get_world_size()
    if on_cpu():
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return rank, world, device


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
