"""Run ``python -m maskgrpo.train`` with one injected fault (the fault-injection tests launch this file).

    python tests/fault_driver.py FAULT TARGET N -- [train arguments]
    python -m torch.distributed.run --nproc_per_node 2 tests/fault_driver.py FAULT TARGET N -- [train arguments]

Faults (a registry; TARGET is a dotted attribute, e.g. ``maskgrpo.checkpoint._prune``):

- ``kill_before TARGET N``: SIGKILL this process when TARGET is called the N-th time (before it runs);
- ``kill_after TARGET N``: SIGKILL this process right after the N-th call of TARGET returns;
- ``kill_before_path TARGET PART[#K]``: SIGKILL at the K-th (default first) call of TARGET whose first argument
  contains PART (calls from several threads count in the order they start);
- ``enospc PATH_PART N``: from the N-th ``torch.save`` into a path containing PATH_PART on, write half of the bytes
  and raise OSError(ENOSPC), as a full disk does;
- ``torn_metrics - N``: the N-th metrics line is written half (no newline), then SIGKILL (a crash mid-write);
- ``signal_before TARGET N[@RANK][:SIGNAL][+DELAY]``: send SIGNAL (default TERM) to this process before the N-th
  call of TARGET, on rank RANK only when given (a cluster's preemption notice arriving at that point).

Several ``FAULT TARGET N`` triples may precede ``--``.

Only the process that reaches the fault dies; under torchrun the launcher then stops the other rank.
"""

from __future__ import annotations

import errno
import functools
import importlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskgrpo.registry import Registry  # noqa: E402

FAULTS: Registry[Callable[[str, str], None]] = Registry("fault")


def _resolve(target: str) -> tuple[object, str]:
    """'pkg.mod.Class.attr' -> (owner object, 'attr'), importing the longest module prefix."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for p in parts[i:-1]:
            owner = getattr(owner, p)
        return owner, parts[-1]
    raise SystemExit(f"fault_driver: cannot resolve {target}")


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(target: str, hit: Callable[[int, tuple], bool], before: bool, action: Callable[[], None] = _die) -> None:
    """Replace TARGET by a wrapper that runs ``action`` (default: SIGKILL this process) before or after the call when
    ``hit(call number, args)`` is true."""
    owner, name = _resolve(target)
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        now = hit(calls[0], args)
        if before and now:
            action()
        out = original(*args, **kwargs)
        if not before and now:
            action()
        return out

    setattr(owner, name, wrapper)


@FAULTS.register("kill_before")
def kill_before(target: str, n: str) -> None:
    _wrap(target, lambda k, _: k == int(n), before=True)


@FAULTS.register("kill_after")
def kill_after(target: str, n: str) -> None:
    _wrap(target, lambda k, _: k == int(n), before=False)


@FAULTS.register("kill_before_path")
def kill_before_path(target: str, spec: str) -> None:
    part, _, k = spec.partition("#")
    seen = [0]
    lock = threading.Lock()

    def hit(_: int, args: tuple) -> bool:
        if not (args and part in str(args[0])):
            return False
        with lock:
            seen[0] += 1
            return seen[0] == int(k or 1)

    _wrap(target, hit, before=True)


@FAULTS.register("signal_before")
def signal_before(target: str, spec: str) -> None:
    """SPEC = ``N[@RANK][:SIGNAL][+DELAY]``: before the N-th call of TARGET (on rank RANK only, when given), wait
    DELAY seconds, then send SIGNAL (default TERM) to this process; the call then goes on (a cluster's notice)."""
    spec, _, delay = spec.partition("+")
    spec, _, sig = spec.partition(":")
    n, _, rank = spec.partition("@")
    if rank and os.environ.get("RANK", "0") != rank:
        return

    def notice() -> None:
        time.sleep(float(delay or 0))
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'TERM'}"))

    _wrap(target, lambda k, _: k == int(n), before=True, action=notice)


@FAULTS.register("enospc")
def enospc(path_part: str, n: str) -> None:
    import torch

    original = torch.save
    calls = [0]

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and path_part in str(f):
            calls[0] += 1
            if calls[0] >= int(n):
                buf = io.BytesIO()
                original(obj, buf, *args, **kwargs)
                Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # what fitted on the disk
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return original(obj, f, *args, **kwargs)

    torch.save = save


@FAULTS.register("torn_metrics")
def torn_metrics(_: str, n: str) -> None:
    import json

    from maskgrpo.observe import MetricsLog

    original = MetricsLog.log
    calls = [0]

    def log(self, metrics):
        calls[0] += 1
        if calls[0] == int(n) and self.enabled:
            line = json.dumps(metrics)
            with self.path.open("a") as f:
                f.write(line[: len(line) // 2])
            _die()
        return original(self, metrics)

    MetricsLog.log = log


def main() -> None:
    argv = sys.argv[1:]
    sep = argv.index("--")
    for i in range(0, sep, 3):  # one or more FAULT TARGET N triples
        FAULTS.get(argv[i])(argv[i + 1], argv[i + 2])
    from maskgrpo.train import cli as train

    train(argv[sep + 1 :])


if __name__ == "__main__":
    main()
