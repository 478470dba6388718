"""Reading JSON-lines files with errors that name the file and the line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def iter_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict, str]]:
    """(1-based line number, parsed object, raw stripped line) for each non-empty line.

    Every object must be a JSON mapping holding the ``required`` keys; otherwise ValueError("FILE:LINE: ...").
    """
    import json

    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise ValueError(f"{path}:{n}: missing keys {missing}")
        yield n, obj, line.strip()
