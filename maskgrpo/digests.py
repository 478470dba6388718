"""SHA-256 of files, streamed: the one digest that checkpoint manifests and the shipped toy base's manifest use.

A file can be hashed whole (:func:`sha256_file`, what ``sha256sum`` prints) or as consecutive chunks of a fixed size
(:func:`chunk_digests`), which threads hash in parallel: SHA-256 of one stream is sequential, so a checkpoint shard of
tens of GB hashes only as fast as one core unless it is cut into chunks. hashlib releases the GIL while it hashes a
block, so Python threads use as many cores as they are given.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BLOCK = 1 << 20
"""Bytes read per call (memory stays flat for files of any size)."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a whole file, read in 1 MiB blocks."""
    return sha256_range(path, 0, None)


def sha256_range(path: Path, start: int, length: int | None) -> str:
    """Hex SHA-256 of ``length`` bytes of a file from byte ``start`` (to the end when ``length`` is None). A file
    shorter than the range hashes what is there (a truncated file then fails its digest)."""
    h = hashlib.sha256()
    remaining = length
    with Path(path).open("rb") as f:
        f.seek(start)
        while remaining is None or remaining > 0:
            block = f.read(BLOCK if remaining is None else min(BLOCK, remaining))
            if not block:
                break
            h.update(block)
            if remaining is not None:
                remaining -= len(block)
    return h.hexdigest()


def num_chunks(size: int, chunk_bytes: int | None) -> int:
    """Chunks of a ``size``-byte file: ceil(size / chunk_bytes), at least 1 (an empty file has one, empty, chunk);
    1 when ``chunk_bytes`` is None (the whole file)."""
    return 1 if chunk_bytes is None or size <= chunk_bytes else -(-size // chunk_bytes)


def chunk_digests(
    tasks: Iterable[tuple[Path, int]], chunk_bytes: int | None, threads: int
) -> dict[tuple[Path, int], str | OSError]:
    """{(path, chunk index): hex SHA-256 of bytes [i * chunk_bytes, (i + 1) * chunk_bytes), or the OSError that reading
    them raised} for every task, hashed by ``threads`` threads (chunk_bytes None: index 0 is the whole file)."""
    tasks = list(tasks)

    def one(task: tuple[Path, int]) -> str | OSError:
        path, i = task
        try:
            return sha256_range(path, 0 if chunk_bytes is None else i * chunk_bytes, chunk_bytes)
        except OSError as e:
            return e

    if threads <= 1 or len(tasks) <= 1:
        return {t: one(t) for t in tasks}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sha256") as pool:
        return dict(zip(tasks, pool.map(one, tasks)))


def hash_threads(local_ranks: int | None = None) -> int:
    """Threads one process should hash with: the CPUs it may run on, shared by the ranks of its node
    (``LOCAL_WORLD_SIZE``, set by torchrun and the deepspeed launcher), at least 1."""
    if local_ranks is None:
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, local_ranks))
