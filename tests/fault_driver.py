"""Run ``python -m maskgrpo.train`` with one injected fault (the fault-injection tests launch this file).

    python tests/fault_driver.py FAULT TARGET N -- [train arguments]
    python -m torch.distributed.run --nproc_per_node 2 tests/fault_driver.py FAULT TARGET N -- [train arguments]

Faults (a registry; TARGET is a dotted attribute, e.g. ``maskgrpo.checkpoint._prune``):

- ``kill_before TARGET N``: SIGKILL this process when TARGET is called the N-th time (before it runs);
- ``kill_after TARGET N``: SIGKILL this process right after the N-th call of TARGET returns;
- ``kill_before_path TARGET PART``: SIGKILL at the first call of TARGET whose first argument contains PART;
- ``enospc PATH_PART N``: from the N-th ``torch.save`` into a path containing PATH_PART on, write half of the bytes
  and raise OSError(ENOSPC), as a full disk does;
- ``torn_metrics - N``: the N-th metrics line is written half (no newline), then SIGKILL (a crash mid-write).

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


def _wrap(target: str, hit: Callable[[int, tuple], bool], before: bool) -> None:
    """Replace TARGET by a wrapper that SIGKILLs the process (before or after the call) when ``hit(call number,
    args)`` is true."""
    owner, name = _resolve(target)
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        now = hit(calls[0], args)
        if before and now:
            _die()
        out = original(*args, **kwargs)
        if not before and now:
            _die()
        return out

    setattr(owner, name, wrapper)


@FAULTS.register("kill_before")
def kill_before(target: str, n: str) -> None:
    _wrap(target, lambda k, _: k == int(n), before=True)


@FAULTS.register("kill_after")
def kill_after(target: str, n: str) -> None:
    _wrap(target, lambda k, _: k == int(n), before=False)


@FAULTS.register("kill_before_path")
def kill_before_path(target: str, part: str) -> None:
    _wrap(target, lambda _, args: bool(args) and part in str(args[0]), before=True)


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
    fault, target, n = argv[:sep]
    FAULTS.get(fault)(target, n)
    from maskgrpo.train import main as train

    train(argv[sep + 1 :])


if __name__ == "__main__":
    main()
