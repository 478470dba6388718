"""One timer for the phases of a round, used by the trainer and by the round-cost benchmark (eval.bench_round_cost).

``with timer.phase("update"):`` times the block (wall and CPU seconds, device-synchronised on CUDA so queued kernels
count where they ran), points the forward counter at the phase, and on CUDA records the memory allocated at the
start and the peak inside (outermost phases only: the peak counter is global). Phases nest: ``optimizer`` inside
``update`` is also counted in ``update``, and the counter returns to ``update`` when it ends. A phase entered
several times in a round (``optimizer``, once per inner update) accumulates.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch


def device_sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock phase times are real (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Seconds, CPU seconds and (CUDA) memory per phase; ``take()`` returns them and starts over.

    counter: a ``maskgrpo.observe.ForwardCounter`` (or None) whose ``phase`` follows the innermost open phase.
    """

    def __init__(self, device: torch.device, counter: Any = None) -> None:
        self.device, self.counter = device, counter
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.memory: dict[str, int] = {}
        self.open: list[str] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        outer = self.counter.phase if self.counter is not None else None
        if self.counter is not None:
            self.counter.phase = name
        device_sync(self.device)
        cuda = self.device.type == "cuda" and not self.open
        self.open.append(name)
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.memory[f"{name}_start_bytes"] = torch.cuda.memory_allocated(self.device)
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            device_sync(self.device)
            self.open.pop()
            self.wall[name] += time.perf_counter() - t
            self.cpu[name] += time.process_time() - c
            if cuda:
                peak = torch.cuda.max_memory_allocated(self.device)
                self.memory[f"{name}_peak_bytes"] = max(peak, self.memory.get(f"{name}_peak_bytes", 0))
            if self.counter is not None:
                self.counter.phase = outer

    def take(self) -> dict[str, float]:
        """``perf/seconds_<phase>`` of every phase since the last take (wall seconds), then reset."""
        out = {f"perf/seconds_{k}": round(v, 3) for k, v in self.wall.items()}
        self.wall.clear()
        self.cpu.clear()
        self.memory.clear()
        return out
