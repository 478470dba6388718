"""Linux /proc helpers for the tests that kill launchers and watch their workers."""

from __future__ import annotations

from pathlib import Path

from maskgrpo.distributed import parent_of  # the trainer's own /proc reader


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and parent_of(int(d.name)) == pid]


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
