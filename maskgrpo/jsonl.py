"""Reading JSON-lines files with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e


def _parse_line(path: str | Path, n: int, line: str, required: tuple[str, ...]) -> dict:
    """One line -> its JSON object; ValueError("FILE:LINE: ...") when it is not a mapping with ``required``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{path}:{n}: missing keys {missing}")
    return obj


def iter_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict, str]]:
    """(1-based line number, parsed object, raw stripped line) for each non-empty line.

    Every object must be a JSON mapping holding the ``required`` keys; otherwise ValueError("FILE:LINE: ...").
    """
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            yield n, _parse_line(path, n, line, required), line.strip()


def read_append_log(path: str | Path, required: tuple[str, ...]) -> tuple[list[tuple[int, dict, str]], int | None]:
    """An append-only JSONL log (one ``write(json + "\\n")`` per record) that a crash may have cut short.

    Returns ((line number, object, raw line) of every intact record, number of the torn last line or None). The last
    line is torn when it has no trailing newline or is not valid JSON (a write cut by a crash or a full disk); it is
    dropped. Any other bad line raises ValueError("FILE:LINE: ...") as in ``iter_jsonl``.
    """
    text = _read_text(path)
    lines = text.split("\n")  # a complete file ends with "\n": the last piece is ""
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
    torn = None
    if numbered and (numbered[-1][0] == len(lines) or not _is_json(numbered[-1][1])):
        torn = numbered.pop()[0]
    return [(n, _parse_line(path, n, ln, required), ln.strip()) for n, ln in numbered], torn


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def read_metrics(path: str | Path, required: tuple[str, ...] = ("round",)) -> list[dict]:
    """A run's ``metrics.jsonl``, one record per round in round order: the one reader of every tool.

    A round logged twice (a run killed after logging a round and resumed before the trim of the next start) keeps
    its last line; a torn last line (a crash mid-write) is dropped; any other bad line, or a line without the
    ``required`` keys, raises ValueError("FILE:LINE: ..."). Test: tests/test_faults_units.py.
    """
    rows, _ = read_append_log(path, required=required)
    by_round = {int(obj["round"]): obj for _, obj, _ in rows}
    return [by_round[r] for r in sorted(by_round)]
