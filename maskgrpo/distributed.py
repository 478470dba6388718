"""Process-group set-up for DeepSpeed on GPUs (nccl) and CPUs (gloo), the collectives the loop needs, and the
launcher-death watch that stops a worker whose torchrun / deepspeed launcher is gone."""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def on_cpu() -> bool:
    return not torch.cuda.is_available()


def init_distributed(timeout_s: float | None = None) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Works under torchrun / the deepspeed launcher and as a plain single process.

    ``timeout_s``: how long a collective may wait for a slow rank before the group fails (DeepSpeed's default is
    10 minutes; a run that waits out a reward server's outage on one rank needs longer).

    On CPU: gloo backend, and DeepSpeed's shared-memory comm op is switched off before it would JIT-compile
    (about 45 s on the first initialize, measured on the 2-core CPU machine; plain gloo is used instead).
    """
    if on_cpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    import deepspeed

    if "RANK" in os.environ:  # a launcher's worker: die with the launcher
        exit_with_launcher()
    if not dist.is_initialized():
        backend = "gloo" if on_cpu() else "nccl"
        extra = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
        if "RANK" in os.environ:  # torchrun / the deepspeed launcher set the rendezvous variables
            deepspeed.init_distributed(dist_backend=backend, verbose=False, **extra)
        else:  # a plain single process: a private TCP rendezvous (no MASTER_PORT for child processes to inherit)
            os.environ.setdefault("LOCAL_RANK", "0")  # the DeepSpeed engine reads it
            deepspeed.init_distributed(
                dist_backend=backend, verbose=False, rank=0, world_size=1, auto_mpi_discovery=False,
                init_method=f"tcp://127.0.0.1:{_free_port()}", **extra,
            )  # fmt: skip
    rank, world = dist.get_rank(), dist.get_world_size()
    if on_cpu():
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return rank, world, device


def shutdown_distributed() -> bool:
    """Destroy the process group, if one is up: the last step of every exit path of a run, errors included (a
    process that exits with a live gloo / NCCL group can abort in the group's destructor). Returns whether there
    was one, for :func:`exit_process`."""
    if not dist.is_initialized():
        return False
    dist.destroy_process_group()
    return True


def exit_process(status: object, group_was_up: bool) -> None:
    """End the process with ``status`` (a ``SystemExit`` code: None -> 0, an int, or a message -> printed, 1).

    With a process group that was up, the interpreter's finalization is skipped (``os._exit`` after flushing
    stdout, stderr and logging): ``destroy_process_group`` drops the group from torch's registry, but DeepSpeed
    keeps the world group in ``deepspeed.utils.groups._WORLD_GROUP`` (seen after a 2-rank toy run, deepspeed
    0.19.8), so the gloo group is only torn down during finalization, where it can abort the process (SIGABRT,
    "terminate called without an active exception"), seen on one rank of a preempted 2-rank run after its
    checkpoint was complete. Everything the run writes is closed by then; skipping finalization loses
    nothing but that abort."""
    import logging

    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:
        print(status, file=sys.stderr)
        code = 1
    if not group_was_up:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to flush to
            pass
    os._exit(code)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LAUNCHER_MARKERS = (
    "torch.distributed.run",
    "torchrun",
    "torch/distributed/run.py",
    "deepspeed.launcher",
    "deepspeed/launcher",
    "bin/deepspeed",
)
"""Substrings of a process's command line that make it a launcher: the worker watches it and launchers above it."""
WATCH_PERIOD_S = 1.0
"""Seconds between two looks of the watchdog thread at the launcher chain."""
_watching: list[int] = []


def exit_with_launcher() -> None:
    """Make this worker exit when its launcher dies (the launcher starts workers in their own POSIX session, so a
    killed launcher process group does not take them along).

    Two mechanisms (Linux): ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` kills the worker when its parent exits; a daemon
    thread checks every WATCH_PERIOD_S that each process of the launcher chain still has its parent (the deepspeed
    runner starts ``deepspeed.launcher.launch``, which starts the workers: a killed runner is seen as a changed
    parent of ``launch``). SIGKILL is safe: checkpoints are written atomically. Idempotent.
    """
    if _watching or not sys.platform.startswith("linux"):
        return
    chain = [os.getpid(), os.getppid()]  # chain[i + 1] is the parent of chain[i]
    while _is_launcher(chain[-1]) and (parent := parent_of(chain[-1])) not in (None, 0, 1):
        chain.append(parent)
    if not _is_launcher(chain[-1]) and len(chain) > 2:
        chain.pop()  # the process above the outermost launcher (a shell, a scheduler) may come and go
    _watching.extend(chain)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # no prctl: the thread below still works
        pass
    if os.getppid() != chain[1]:  # the launcher died before prctl was in place
        _die(chain[1])
    threading.Thread(target=_watch, args=(tuple(chain),), name="launcher-watch", daemon=True).start()


def _watch(chain: tuple[int, ...]) -> None:
    while True:
        time.sleep(WATCH_PERIOD_S)
        for child, parent in zip(chain, chain[1:]):
            now = os.getppid() if child == chain[0] else parent_of(child)
            if now is not None and now != parent:
                _die(parent)


def _die(launcher: int) -> None:
    print(
        f"[train] rank {os.environ.get('RANK', '?')}: launcher process {launcher} is gone; exiting",
        file=sys.stderr,
        flush=True,
    )
    os.kill(os.getpid(), signal.SIGKILL)


def parent_of(pid: int) -> int | None:
    """Parent pid from /proc/PID/stat (None if the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])  # after "pid (comm) state": ppid


def _is_launcher(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(m in cmd for m in LAUNCHER_MARKERS)


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


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order (a collective; [obj] without a process group)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's picklable ``obj`` on every rank (a collective)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(error: str | None) -> None:
    """Collective: every rank raises RunError with the first rank's error message when any rank has one."""
    from maskgrpo.errors import RunError

    first = next((e for e in gather_objects(error) if e is not None), None)
    if first is not None:
        raise RunError(first)
