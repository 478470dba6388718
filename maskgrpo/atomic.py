"""The one atomic file write of the project: a file is replaced whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], None], fsync: bool = False) -> None:
    """Write ``path`` through a hidden temporary beside it (``.<name>.<pid>.part``: unique to this process, so ranks
    writing the same file never share one, and no reader globbing ``*.png`` or ``*.json`` picks it up), then rename
    it over ``path`` (``os.replace``: atomic on POSIX). A crash leaves the old file or the new one, never a mix.

    data: bytes, text (UTF-8) or a function that writes to the open binary file (``torch.save``, PIL). ``fsync``:
    flush the data to disk before the rename (state that must survive a power loss, not only a crash).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with tmp.open("wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
