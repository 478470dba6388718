"""Preemption: SIGTERM / SIGUSR1 end a run at a round boundary with a checkpoint, instead of losing the rounds since
the last one.

Clusters send SIGTERM, then SIGKILL after a grace period (SLURM: ``--signal``; SIGUSR1 can be asked for earlier,
``--signal=USR1@300``). On the first signal every rank sets a flag; the trainer asks all ranks at fixed points
(:meth:`Preemption.agreed`, a collective made at the same points on every rank: round start, every sampler step,
before the reward, old / reference and update phases, round end). Where the answer is yes before the update phase,
the round is abandoned (the weights are untouched until then, so the checkpoint of the last completed round is
exact); during the update phase the round is finished first. Then the run writes its checkpoint, prints one line
``preempted at round N; resume with --resume`` and exits 0.

A second signal more than ``COALESCE_S`` after the first exits at once (status 128 + signal): checkpoints are
written atomically, so the last complete one stays good. Signals closer together are one notice: a launcher that
forwards the cluster's SIGTERM delivers it to a worker a second time within milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
COALESCE_S = 2.0
"""Signals within this many seconds of the first are the same notice."""


class Preempted(Exception):  # noqa: N818  (a stop request, not an error)
    """Raised on every rank when the ranks agree to stop; ``finished`` says whether the round completed. ``error``:
    the run stops because of a failure it cannot wait out (a reward server down past ``reward.max_outage_s``): the
    checkpoint is written all the same, then the run ends with that one-line error."""

    def __init__(self, signal_name: str, finished: bool, error: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name, self.finished, self.error = signal_name, finished, error


_received: dict[str, object] = {"name": None, "at": 0.0}
"""This process's first notice: the signal's name and when it came (set by the handler)."""


def _on_signal(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    now = time.monotonic()
    if _received["name"] is None:
        _received.update(name=name, at=now)
        print(f"[train] {name} received: stopping at the next safe point with a checkpoint", file=sys.stderr,
              flush=True)  # fmt: skip
    elif now - float(_received["at"]) > COALESCE_S:
        print(f"[train] second signal ({name}): exiting now; the last complete checkpoint stays as it is",
              file=sys.stderr, flush=True)  # fmt: skip
        os._exit(128 + signum)


def install_handlers() -> None:
    """Handle SIGTERM and SIGUSR1 from now on (main thread only, as Python requires; idempotent). ``python -m
    maskgrpo.train`` installs them before it imports anything heavy: a launcher that leaves the signals to its
    workers starts them with the signals ignored, and a notice that came before the handler would be lost.
    Imports nothing beyond the standard library, for that reason."""
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)


class Preemption:
    """The collective that turns this process's notice (if any) into one decision for all ranks."""

    def __init__(self, device: Any) -> None:
        self.device = device

    @property
    def received(self) -> str | None:
        return _received["name"]  # type: ignore[return-value]

    def install(self) -> None:
        install_handlers()

    def agreed(self) -> bool:
        """Collective: True on every rank when any rank has received a signal."""
        import torch
        import torch.distributed as dist

        flag = self.received is not None
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def check(self, finished: bool = False) -> None:
        """Raise :class:`Preempted` on every rank when the ranks agree to stop (a collective)."""
        if self.agreed():
            raise Preempted(self.received or "a signal on another rank", finished)
