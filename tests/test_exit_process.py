"""How a trainer process ends (``maskgrpo.distributed.exit_process``): the exit status of every ``SystemExit`` form,
output written just before the end still arrives (stdout is a pipe, so block-buffered), and with a process group
up the interpreter's finalization is skipped (an ``atexit`` hook does not run) while it runs without one."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

SCRIPT = """
import atexit, sys
from maskgrpo.distributed import exit_process
atexit.register(lambda: print("finalized", flush=True))
print("last words")  # no flush: stdout is a pipe here
exit_process({status!r}, {group})
"""


@pytest.mark.parametrize(
    "status, group, code",
    [(None, True, 0), (0, True, 0), (2, True, 2), (143, True, 143), ("error: boom", True, 1), (2, False, 2)],
)
def test_exit_status_output_and_finalization(status, group, code):
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(status=status, group=group)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == code, r.stderr
    assert r.stdout.splitlines()[0] == "last words"
    assert ("finalized" in r.stdout) is (not group)  # finalization skipped only when a group was up
    assert ("error: boom" in r.stderr) is isinstance(status, str)
