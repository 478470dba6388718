"""START_REWARDS=1's supervisor (``python -m maskgrpo.reward_launch``) as a user meets it: servers that load slowly
(progress lines, then the training runs), a server that dies while loading, one that never answers (a bounded wait),
a missing judge environment; the servers are always stopped and the command's exit status is returned. The
scorers are cheap stand-ins served by the real ``maskgrpo.rewards.serve``; the real launch through
``launch/mmada_maskgrpo.sh`` with START_REWARDS=1 is in tests/test_launch_plan.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, free_ports
from procs import alive

from maskgrpo.reward_launch import healthy

CONFIG = REPO / "configs" / "mmada_maskgrpo.yaml"

SCORERS = """
import time


def slow(delay):
    time.sleep(delay)  # a judge loading its weights before its port opens
    return lambda images, prompts, metadata: [0.5] * len(images)


def broken():
    raise RuntimeError("CUDA out of memory (injected)")
"""

PROBE = """
import sys, urllib.request
ok = all(urllib.request.urlopen(f"http://127.0.0.1:{p}/health").status == 200 for p in sys.argv[1:])
print("TRAINING RAN, servers healthy:", ok, flush=True)
sys.exit(3)
"""


def supervise(tmp_path: Path, ports: list[int], hpsv3: list[str], command: list[str], *extra: str,
              timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:  # fmt: skip
    """The supervisor on configs/mmada_maskgrpo.yaml, both judges on ``ports``; unifiedreward is a cheap scorer."""
    (tmp_path / "stub_scorers.py").write_text(SCORERS)
    args = [sys.executable, "-m", "maskgrpo.reward_launch", "--config", str(CONFIG), "--gpus", "0",
            "--log-dir", str(tmp_path / "logs"), "--progress-s", "1", "--python", f"unifiedreward={sys.executable}",
            *hpsv3, "--scorer", "unifiedreward=maskgrpo.rewards.scorers:mean_intensity", *extra,
            f"rewards.hpsv3.kwargs.url=http://127.0.0.1:{ports[0]}/score",
            f"rewards.unifiedreward.kwargs.url=http://127.0.0.1:{ports[1]}/score", "--", *command]  # fmt: skip
    t0 = time.monotonic()
    r = subprocess.run(args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=timeout)  # fmt: skip
    return r, time.monotonic() - t0


def server_pids(port: int) -> list[int]:
    """Live ``maskgrpo.rewards.serve`` processes whose command line names ``port``."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"maskgrpo.rewards.serve" in cmd and str(port).encode() in cmd and alive(int(d.name)):
            out.append(int(d.name))
    return out


def stub(tmp_path: Path, factory: str, kwargs: str | None = None) -> list[str]:
    out = ["--python", f"hpsv3={sys.executable}", "--scorer", f"hpsv3={tmp_path / 'stub_scorers.py'}:{factory}"]
    return out + (["--scorer-kwargs", f"hpsv3={kwargs}"] if kwargs else [])


@pytest.mark.slow
def test_servers_load_then_the_training_runs_then_they_stop(tmp_path) -> None:
    ports = free_ports(2)
    (tmp_path / "probe.py").write_text(PROBE)
    command = [sys.executable, str(tmp_path / "probe.py"), *map(str, ports)]
    r, _ = supervise(tmp_path, ports, stub(tmp_path, "slow", '{"delay": 4}'), command)
    out = r.stdout
    assert r.returncode == 3, out + r.stderr  # the training command's own exit status
    assert "of at most 900 s: hpsv3 loading" in out  # a progress line while the judge loads
    assert "[rewards] hpsv3 ready on GPU 0" in out and "[rewards] unifiedreward ready on GPU 0" in out
    assert "TRAINING RAN, servers healthy: True" in out  # the training started only once both answered
    assert out.index("hpsv3 ready") < out.index("TRAINING RAN") < out.index("[rewards] stopped hpsv3, unifiedreward")
    assert "serving" in (tmp_path / "logs" / "hpsv3.log").read_text()
    assert not any(healthy(f"http://127.0.0.1:{p}/score") or server_pids(p) for p in ports)  # stopped at exit


@pytest.mark.slow
def test_a_server_that_dies_while_loading_stops_the_launch(tmp_path) -> None:
    ports = free_ports(2)
    marker = tmp_path / "trained"
    r, _ = supervise(tmp_path, ports, stub(tmp_path, "broken", "{}"), ["touch", str(marker)])
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    log = tmp_path / "logs" / "hpsv3.log"
    assert line.startswith(f"error: reward server hpsv3 exited with status 1 before it answered (GPU 0, "
                           f"http://127.0.0.1:{ports[0]}/score); end of {log}: ")  # fmt: skip
    assert line.endswith("RuntimeError: CUDA out of memory (injected)")
    assert not marker.exists()  # the training never started
    assert not any(healthy(f"http://127.0.0.1:{p}/score") or server_pids(p) for p in ports)  # the other one stopped


@pytest.mark.slow
def test_a_server_that_never_answers_is_a_bounded_wait(tmp_path) -> None:
    ports = free_ports(2)
    marker = tmp_path / "trained"
    r, seconds = supervise(tmp_path, ports, stub(tmp_path, "slow", '{"delay": 600}'), ["touch", str(marker)],
                           "--wait-s", "3")  # fmt: skip
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]  # the quick stub may still be importing too on a loaded machine
    assert line.startswith("error: reward server(s) not ready after 3 s (REWARD_WAIT_S): ")
    assert f"hpsv3 (log {tmp_path / 'logs' / 'hpsv3.log'})" in line
    assert seconds < 60 and not marker.exists()
    assert not any(server_pids(p) for p in ports)  # the loading server was killed, not left behind


def test_a_judge_without_its_environment_is_named(tmp_path, capsys) -> None:
    """In process (nothing is started): the HPSv3 judge needs its own environment's python."""
    import pytest

    from maskgrpo.reward_launch import main

    with pytest.raises(SystemExit) as e:
        main(["--config", str(CONFIG), "--gpus", "6,7", "--log-dir", str(tmp_path / "logs"), "--", "true"])
    assert e.value.code == 2 and not (tmp_path / "logs").exists()
    assert capsys.readouterr().err.strip() == (
        "error: START_REWARDS=1: set HPSV3_PYTHON (hpsv3), UNIFIEDREWARD_PYTHON (unifiedreward) to the judge "
        "environment's python (docs/gpu.md, 'Where the reward servers go')"
    )
