"""Hub ids: the one place this package downloads weights, offline-first.

``resolve_hub_dir`` turns a local directory or a hub id into a local folder. A hub id goes through
``huggingface_hub.snapshot_download`` (only the files the caller's loader reads); under a process group only local
rank 0 downloads while the node's other ranks wait and then read the cache (:func:`local_rank_first`); with
``HF_HUB_OFFLINE=1`` (the GPU launchers' default) a repository missing from the cache is one line naming the fetch
command (:class:`WeightsNotCached`). Kept free of torch and transformers imports, so a process that only resolves
paths stays light.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(value: str) -> bool:
    """``owner/name`` with no leading ``.``, ``/`` or ``~`` and exactly one slash (a hub repo id, not a path)."""
    return bool(_HUB_ID.fullmatch(value)) and not value.startswith((".", "/", "~"))


FETCH_COMMAND_ENV = "HTGRPO_FETCH_COMMAND"
"""Set by the GPU launchers to the exact fetch command of their config (``bash launch/fetch_weights.sh CONFIG``); a
weight missing from the cache names it."""


class WeightsNotCached(FileNotFoundError):
    """A hub id that is not in the local Hugging Face cache and cannot be downloaded (offline or no network).

    A FileNotFoundError, so entry points print it as one line (``maskgrpo.errors.one_line_errors``)."""


def fetch_hint() -> str:
    """The command that puts a config's weights into the cache (the launcher's own when it set one)."""
    return os.environ.get(FETCH_COMMAND_ENV) or "bash launch/fetch_weights.sh CONFIG"


def download_snapshot(repo_id: str, allow_patterns: list[str] | None, local_files_only: bool) -> str:
    """``huggingface_hub.snapshot_download`` (the one place this package downloads weights; tests replace it)."""
    from huggingface_hub import snapshot_download

    cache_only = {"local_files_only": True} if local_files_only else {}  # the default call otherwise
    return snapshot_download(repo_id=repo_id, allow_patterns=allow_patterns, **cache_only)


def _cached_snapshot(repo_id: str, allow_patterns: list[str] | None, local_files_only: bool) -> Path:
    """One snapshot; a miss (offline, or the hub unreachable, and not cached) is one line naming the fetch command."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(download_snapshot(repo_id, allow_patterns, local_files_only))
    except LocalEntryNotFoundError as e:
        from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

        why = "HF_HUB_OFFLINE=1" if HF_HUB_OFFLINE else "the hub could not be reached"
        raise WeightsNotCached(
            f"{repo_id} is not in the Hugging Face cache ({HF_HUB_CACHE}) and {why}: fetch the weights first, on a "
            f"machine with network and the same cache (HF_HOME), with `{fetch_hint()}`"
        ) from e


def local_rank_first(fetch: Callable[[bool], T]) -> T:
    """``fetch(local_files_only)`` on local rank 0 first; the node's other ranks wait, then read the cache only.

    Without a process group (or with one rank) it is just ``fetch(False)``. With one, it is a collective: every rank
    must call it for the same hub ids in the same order (they do: all ranks run the same loading code). A failure on
    any local rank 0 is raised on every rank, so no rank is left waiting. The wait is a barrier of the process
    group, so a download longer than its timeout (30 min by default) fails it: fetch weights before launching.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fetch(False)
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    result: Any = None
    error: BaseException | None = None
    if first:
        try:
            result = fetch(False)
        except Exception as e:  # any failure must reach the waiting ranks, or they wait for ever
            error = e
    errors: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, None if error is None else str(error))  # the wait
    if error is not None:
        raise error
    message = next((e for e in errors if e is not None), None)
    if message is not None:
        raise WeightsNotCached(message)
    return result if first else fetch(True)


def resolve_hub_dir(path_or_hub_id: str | os.PathLike, allow_patterns: tuple[str, ...] | None) -> Path:
    """A local directory as is; anything else is a hub id fetched (or found in the cache) by ``snapshot_download``.

    Under a process group only local rank 0 downloads while the others wait (:func:`local_rank_first`). With
    ``HF_HUB_OFFLINE=1`` a hub id resolves only from the local cache; a miss is one line naming the fetch command.
    ``allow_patterns`` None fetches the whole repository.
    """
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the checkpoint directory (config.json + safetensors)")
    if not looks_like_hub_id(str(path_or_hub_id)):
        raise FileNotFoundError(f"{path_or_hub_id}: no such directory, and not a hub id of the form owner/name")
    patterns = None if allow_patterns is None else list(allow_patterns)
    return local_rank_first(lambda local_only: _cached_snapshot(str(path_or_hub_id), patterns, local_only))
