"""Anticipated failures that entry points turn into one line and exit status 2 (``--traceback`` shows the trace).

``ConfigError`` (a bad config value, ``maskgrpo.config``) is one of them; ``RunError`` is every other failure a
user can meet and fix: a damaged checkpoint, a locked run folder, a changed config on resume, a non-finite loss,
a bad prompt file. Raise it with a message that names the file (and line / key) and says what to do.

Entry points wrap their work in :func:`one_line_errors`::

    with one_line_errors(args.traceback):
        ...  # a RunError / ConfigError / FileNotFoundError becomes "error: <message>" on stderr, exit status 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

EXIT_STATUS = 2
"""Exit status of an anticipated failure (argparse uses 2 for a bad command line too)."""

TRACEBACK_ENV = "HTGRPO_TRACEBACK"
"""Set to 1 to get the full traceback of an anticipated failure (same as ``--traceback``)."""


class RunError(RuntimeError):
    """A failure with a one-line message for the user (no traceback unless asked for)."""


ANTICIPATED: tuple[type[BaseException], ...] = (RunError, FileNotFoundError)
"""What :func:`one_line_errors` prints as one line: RunError (ConfigError is one) and a missing file (its message
names the path). Anything else is a bug and keeps its traceback."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message, e.g. a YAML parser's, is joined with ' | ')."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"  # OSError(errno, strerror, filename): no "[Errno 2]" noise
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def add_traceback_flag(parser: argparse.ArgumentParser) -> None:
    """``--traceback``: show the full trace of an anticipated failure instead of one line."""
    parser.add_argument(
        "--traceback",
        action="store_true",
        help=f"print the full traceback of an anticipated error (or set {TRACEBACK_ENV}=1)",
    )


@contextlib.contextmanager
def one_line_errors(show_traceback: bool, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Print an anticipated error (:data:`ANTICIPATED` plus ``also``) as ``error: <message>`` and exit 2.

    ``show_traceback`` (``--traceback``) or ``HTGRPO_TRACEBACK=1`` re-raises it with its traceback instead.
    """
    try:
        yield
    except (*ANTICIPATED, *also) as e:
        if show_traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)
