"""The run folder's guards: an exclusive lock, no silent reuse of a finished run's folder, and the config check on
``--resume``.

- :class:`RunLock`: ``fcntl.flock`` on ``<run>/.lock`` (holder's pid, host and start time written inside for the
  message). The kernel drops the lock when the process exits, however it exits, so a crash never leaves a stale lock.
- :func:`check_fresh_run`: a run without ``--resume`` into a folder holding checkpoints or metrics is refused unless
  ``--overwrite``; :func:`clear_run` then removes the old run's files (only the names in :data:`RUN_FILES`).
- :func:`config_changes` / :func:`check_resume_config`: the resolved config and component names against those the
  checkpoint stored; keys in :data:`RESUME_SAFE_KEYS` may change freely, others only when named in
  ``--allow-config-change``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from maskgrpo.errors import RunError

LOCK_FILE = ".lock"
RUN_FILES = ("config.yaml", "components.json", "metrics.jsonl", "checkpoints", "final", "images", "rollouts",
             "wandb", "eval_before*", "eval_after*", "evals")  # fmt: skip
"""What a training run writes into its folder (glob patterns); ``--overwrite`` removes exactly these."""
RESUME_SAFE_KEYS = (
    "rl.rounds",  # train longer (or stop earlier)
    "checkpoint.*",
    "log.*",
    "eval",
    "eval.*",
    "run.output_dir",  # the folder was moved
    "run.wandb_mode",
    "run.wandb_project",
    "rewards.*.kwargs.url",  # a reward server moved
    "rewards.*.kwargs.timeout",
    "rewards.*.kwargs.max_retries",
    "rewards.*.kwargs.backoff",
    "rewards.*.kwargs.timeout_per_image",
    "rewards.*.kwargs.max_outage_s",
    "reward.max_outage_s",  # how long the run waits for a reward server that is down
)
"""Dotted config keys (fnmatch patterns) that ``--resume`` accepts changed without ``--allow-config-change``: they
change when and how the run is observed, saved or reaches its reward servers, never what it computes."""


class RunLock:
    """Exclusive lock on a run folder, held until the process exits (rank 0 takes it)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.fd: int | None = None

    def acquire(self) -> None:
        """Create the folder if needed and lock it; RunError naming the holder when another process has it."""
        if self.fd is not None:
            return
        path = self.run_dir / LOCK_FILE
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot write to {e.filename or path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 300).decode(errors="replace").strip() or "a process that is starting"
            os.close(fd)
            raise RunError(
                f"{self.run_dir} is in use by another run ({holder}); wait for it to end or choose another "
                "run.output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        )
        self.fd = fd

    def release(self) -> None:
        """Unlock (closing the file); process exit does the same."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:  # an in-process Trainer that is dropped frees its folder
        self.release()


def previous_run(run_dir: Path) -> list[str]:
    """What in ``run_dir`` belongs to an earlier run: checkpoints, or a non-empty metrics.jsonl."""
    found = []
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir() and any(p.name == "latest" or p.name.startswith("round-") for p in ckpt.iterdir()):
        found.append("checkpoints/")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def check_fresh_run(run_dir: Path, overwrite: bool) -> None:
    """A run without --resume: refuse a folder that holds an earlier run unless ``overwrite``."""
    found = previous_run(run_dir)
    if found and not overwrite:
        raise RunError(
            f"{run_dir} holds an earlier run ({', '.join(found)}); pass --resume to continue it, --overwrite to "
            "replace it, or choose another run.output_dir"
        )


def clear_run(run_dir: Path) -> None:
    """Remove the files of an earlier run (RUN_FILES only; anything else in the folder is left alone)."""
    for pattern in RUN_FILES:
        for p in run_dir.glob(pattern):
            with writing(p):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()


@contextlib.contextmanager
def writing(what: Path) -> Iterator[None]:
    """Turn an OSError while writing ``what`` into RunError("cannot write PATH: <OS reason>")."""
    try:
        yield
    except OSError as e:
        raise RunError(f"cannot write {e.filename or what}: {e.strerror or e}") from e


# ---- config check on resume ------------------------------------------------------------------------------------
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted key: leaf}; lists, scalars, None and empty mappings are leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


_ABSENT = object()


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every leaf that differs, in the new config's order."""
    a, b = flatten(old), flatten(new)
    keys = [*b, *(k for k in a if k not in b)]
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _show(v: Any) -> str:
    if v is _ABSENT:
        return "<absent>"
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    return str(v)


def normalized_config(stored: dict) -> dict:
    """A checkpoint's stored config re-read through the schema (keys added since get their defaults), or as stored
    when the schema no longer accepts it (the diff then shows the differences)."""
    from maskgrpo.config import ConfigError, config_from_dict, to_dict
    from maskgrpo.config.schema import TrainRun

    try:
        return to_dict(config_from_dict(TrainRun, stored, where="the checkpoint's config"))
    except ConfigError:
        return stored


def check_resume_config(
    stored: dict, current: dict, checkpoint: str, allowed: tuple[str, ...]
) -> list[tuple[str, Any, Any]]:
    """Compare the checkpoint's config + ``components`` (``{**config, "components": names}``) with the current run's.

    Returns the accepted changes; RunError with a one-line diff when a key outside RESUME_SAFE_KEYS and ``allowed``
    (fnmatch patterns from --allow-config-change) changed.
    """
    changes = config_changes(stored, current)
    refused = [c for c in changes if not any(fnmatchcase(c[0], p) for p in (*RESUME_SAFE_KEYS, *allowed))]
    if refused:
        diff = describe_changes(refused)
        keys = ",".join(k for k, _, _ in refused)
        raise RunError(
            f"--resume: the run differs from checkpoint {checkpoint}: {diff}; resume with the checkpoint's values, "
            f"or pass --allow-config-change {keys} to continue with the new ones"
        )
    return changes


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in changes)
