"""Cross-request batching for the reward server: requests that arrive together are scored in one scorer call.

Eight ranks that each send 8 images to one UnifiedReward server would otherwise be served one after the other: 8
generate calls of 8 rows, the last rank waiting for all of them. :class:`RequestBatcher` keeps one worker thread in
front of the scorer; every request handler puts its job in the queue and waits. The worker takes the oldest job and
every later compatible one (same :attr:`Job.key`) up to ``max_images`` images, waiting at most ``window_s`` after the
oldest job arrived for more to come, and hands them to ``run`` together; the caller scores them in one call and
answers each job with its own slice. While a batch is being scored the next one fills up, so under load batches grow
by themselves (the window matters only for requests that arrive a little apart into an idle server).

One worker means one scorer call at a time: at most one batch's images are decoded and in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One request waiting for its scores."""

    payload: Any
    """What the request carries (the server's parsed request)."""
    size: int
    """Images in the request (counted against ``max_images``)."""
    key: Hashable = None
    """Jobs are merged only with jobs of the same key (e.g. the same ``only_strict`` value)."""
    arrived: float = field(default_factory=time.monotonic)
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Answer the job (a result or an error) and wake its request handler."""
        self.result, self.error = result, error
        self.done.set()


class BatcherClosed(RuntimeError):
    """The server is shutting down: queued jobs are answered with this error."""


class RequestBatcher:
    """One worker thread that runs queued jobs in batches.

    Args:
        run: ``run(jobs)`` scores a batch and calls :meth:`Job.finish` on every job (an exception it raises
            finishes the jobs it left unanswered with that error).
        max_images: most images per batch; a single larger job still runs alone. 0 = no merging (one job per
            batch), the server's ``--batch-images 0``.
        window_s: how long after the oldest queued job arrived the worker waits for more before running a batch
            that is not full.
        name: thread name suffix.
    """

    def __init__(self, run: Callable[[list[Job]], None], max_images: int, window_s: float, name: str = "scorer"):
        if max_images < 0 or not window_s >= 0:
            raise ValueError(f"need max_images >= 0 and window_s >= 0; got {max_images}, {window_s}")
        self.run = run
        self.max_images = max_images
        self.window_s = window_s
        self.batches = 0
        """Batches run so far (one scorer call each, unless the scorer failed and jobs were retried alone)."""
        self._pending: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"reward-batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Jobs waiting for the worker (not counting the batch being scored)."""
        with self._cond:
            return len(self._pending)

    def submit(self, job: Job) -> Any:
        """Queue ``job``, wait for its answer and return it (or raise its error)."""
        with self._cond:
            if self._closed:
                raise BatcherClosed("the reward server is shutting down")
            self._pending.append(job)
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        """Stop the worker after the batch in progress (not waited for); jobs still queued get
        :class:`BatcherClosed`."""
        with self._cond:
            self._closed = True
            for job in self._pending:
                job.finish(error=BatcherClosed("the reward server is shutting down"))
            self._pending.clear()
            self._cond.notify_all()

    def _pick(self) -> list[Job]:
        """The oldest job and, in arrival order, every later job with its key that still fits in ``max_images``."""
        first = self._pending[0]
        batch, images = [first], first.size
        if self.max_images == 0:
            return batch
        for job in self._pending[1:]:
            if job.key == first.key and images + job.size <= self.max_images:
                batch.append(job)
                images += job.size
        return batch

    def _next_batch(self) -> list[Job] | None:
        """Wait for jobs, then for the batch to fill or the window to close; None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                batch = self._pick()
                full = self.max_images == 0 or sum(job.size for job in batch) >= self.max_images
                wait = self._pending[0].arrived + self.window_s - time.monotonic()
                if full or wait <= 0:
                    break
                self._cond.wait(wait)
            taken = {id(job) for job in batch}
            self._pending = [job for job in self._pending if id(job) not in taken]
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self.batches += 1
            try:
                self.run(batch)
            except BaseException as exc:  # the run's own failure: every job it left unanswered gets it
                for job in batch:
                    if not job.done.is_set():
                        job.finish(error=exc)
            for job in batch:
                if not job.done.is_set():
                    job.finish(error=RuntimeError("the scorer batch ended without answering this request"))
