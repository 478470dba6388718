"""Test-wide environment (no hub access, CPU DeepSpeed, quiet progress bars) and the helpers every module shares.

- ``REPO``: the repository root (``from conftest import REPO``; also the ``repo_root`` fixture).
- ``tiny_run``: the one builder of tiny-run config overrides (also the ``tiny_run`` fixture); a test changes the
  sizes it needs with its own extra overrides.
- ``free_ports(n)``: n distinct unused TCP ports (the ``free_port`` fixture is one of them).
- Markers: ``slow`` (the full suite runs it; the quick suite ``bash scripts/test.sh -m "not slow"`` leaves it out):
  a test that starts the trainer, a launcher or a server as a process, runs 2 ranks, kills and resumes, soaks,
  runs a study or the golden runs. ``sweep``: a further variant of a case the suite already covers, skipped unless
  ``HTGRPO_SLOW_TESTS=1`` (and counted as ``slow``).
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from fixtures_toy import toy_base_dir as _build_toy_base  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""

RUN_SWEEP = os.environ.get("HTGRPO_SLOW_TESTS", "") not in ("", "0")
"""``HTGRPO_SLOW_TESTS=1``: also run the tests marked ``sweep``."""

UNSET = object()
"""An override value for :func:`tiny_run` that leaves the key out, so the config file's own value applies."""

TINY_RUN: dict[str, object] = {
    "prompts.per_round": 4,
    "rollout.num_steps": 4,
    "rl.group_size": 4,
    "rl.num_inner_updates": 2,
    "rl.micro_batch_prompts": 1,
    "optim.lr": 1e-3,
    "checkpoint.every": 1,
    "log.image_every": 1,
    "log.images_in_grid": 4,
    "log.rollout_table": True,
    "eval": None,
}
"""A run small enough for CI: 4 prompts x G=4 rollouts, mu=2 inner updates, 4 sampler steps, a checkpoint, an image
grid and a rollout table every round, no evaluation."""


def tiny_run(
    base: str | Path | None, out: str | Path | None = None, rounds: int | object = 2, **extra: object
) -> list[str]:
    """``key=value`` overrides of a tiny run of ``rounds`` rounds (:data:`TINY_RUN`) on ``base`` into ``out``.

    ``extra`` keys (dotted config keys, passed as ``**{"rl.group_size": 3}``) replace or add values; an extra set to
    :data:`UNSET` (``rounds`` too) drops the key. ``base`` / ``out`` None: no ``backbone.path`` /
    ``run.output_dir`` (a launcher that takes them from the environment, a command that writes nothing).
    Values are written as JSON (which the YAML override parser reads); strings are passed as they are.
    """
    values: dict[str, object] = {}
    if base is not None:
        values["backbone.path"] = str(base)
    if out is not None:
        values["run.output_dir"] = str(out)
    values.update(TINY_RUN)
    values["rl.rounds"] = rounds
    values.update(extra)
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items() if v is not UNSET]


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nothing listens on now (all held open until every one is chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        'slow: a test the full suite runs and the quick suite leaves out (bash scripts/test.sh -m "not slow")',
    )
    config.addinivalue_line(
        "markers", "sweep: a further variant of a case the suite covers; runs only with HTGRPO_SLOW_TESTS=1 (slow too)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="set HTGRPO_SLOW_TESTS=1 (a further variant of a case the suite covers)")
    for item in items:
        if item.get_closest_marker("sweep") is not None:
            item.add_marker(pytest.mark.slow)
            if not RUN_SWEEP:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def toy_base_dir() -> str:
    """A tiny pretrained ShapesWorld base (built once per test process through the real pretraining CLI)."""
    return str(_build_toy_base())


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (:data:`REPO`)."""
    return REPO


@pytest.fixture(name="tiny_run", scope="session")
def _tiny_run_fixture():
    """The :func:`tiny_run` builder."""
    return tiny_run


@pytest.fixture(name="free_port")
def _free_port_fixture() -> int:
    """One unused TCP port on 127.0.0.1."""
    return free_ports(1)[0]
