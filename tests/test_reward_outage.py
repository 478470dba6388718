"""Issue 26 (client side): a reward server killed in the middle of a request and started again on the same port.

The server is ``tests/reward_server_mimic.py`` run as a program (the public reward-server stand-in, HPSv3 app over
pickle on loopback; it starts in 0.3 s where the project's server imports torch): it prints ``received`` when a
request is in, then sleeps, so the test kills it (SIGKILL) while the request is being scored. The client must wait,
say so, and return the right scores once the server is back; with a small ``max_outage_s`` it must stop with one
line. The once-a-minute report period and the 15 s wait cap are shortened through their module constants.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from conftest import REPO

from maskgrpo.rewards import RewardError, RewardSpec, build_rewards
from maskgrpo.rewards.client import RewardOutageError

MIMIC = REPO / "tests" / "reward_server_mimic.py"
PROMPTS = ["a red apple", "two cats", "a blue car"]
IMAGES = np.stack([np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 128, 255)])  # levels 0, 2, 4
EXPECTED = [8.0 + q + len(p) / 100 for q, p in zip((0, 2, 4), PROMPTS)]
"""The HPSv3 stand-in's raw mu: 8 + level + len(prompt) / 100."""


class Mimic:
    """``python tests/reward_server_mimic.py hpsv3 --port P --delay D`` in a subprocess."""

    def __init__(self, port: int, delay: float) -> None:
        cmd = [sys.executable, str(MIMIC), "hpsv3", "--port", str(port), "--delay", str(delay)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith(f"serving hpsv3 on http://127.0.0.1:{port}"), line + self.proc.stdout.read()

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        """Block until the server prints ``text`` (readline blocks; a watchdog kills a stuck server)."""
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                if line.strip() == text:
                    return
            raise AssertionError(f"server exited before printing {text!r}")
        finally:
            timer.cancel()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()


def client(url: str, **kwargs):
    kwargs = {"url": url, "protocol": "pickle", "backoff": 0.05, "timeout": 10.0, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the pickle opt-in warning
        return build_rewards([RewardSpec("hpsv3", kwargs=kwargs)])[0]


@pytest.fixture
def fast_outage_clock(monkeypatch):
    """Report an ongoing outage every 0.5 s (not 60 s) and wait at most 0.3 s between attempts (not 15 s)."""
    monkeypatch.setattr("maskgrpo.rewards.client.OUTAGE_REPORT_EVERY_S", 0.5)
    monkeypatch.setattr("maskgrpo.rewards.client.MAX_OUTAGE_WAIT_S", 0.3)


def test_server_killed_mid_request_and_restarted_gives_the_right_scores(fast_outage_clock, caplog, free_port):
    port = free_port
    url = f"http://127.0.0.1:{port}/"
    server = Mimic(port, delay=5.0)  # the first request is still being "scored" when the server dies
    fn = client(url, max_outage_s=30.0)
    result: dict = {}

    def score() -> None:
        try:
            result["scores"] = fn(IMAGES, PROMPTS, [{}] * 3)
        except Exception as exc:  # reported by the assertions below
            result["error"] = exc

    with caplog.at_level("WARNING", logger="maskgrpo.rewards.client"):
        thread = threading.Thread(target=score)
        thread.start()
        server.wait_for("received")
        server.kill()
        killed = time.monotonic()
        time.sleep(2.0)  # down for 2 s: refused connections meanwhile
        restarted = Mimic(port, delay=0.0)
        thread.join(30)
        recovered = time.monotonic()
    try:
        assert not thread.is_alive() and "error" not in result, result
        np.testing.assert_allclose(result["scores"], EXPECTED, rtol=0, atol=1e-12)  # exact, in order
        lines = [r.getMessage() for r in caplog.records]
        print(f"down {recovered - killed:.1f} s:", *lines, sep="\n  ")
        died = r"\((connection reset|connection closed without an answer)\)"  # the kernel's choice on SIGKILL
        assert re.fullmatch(rf"reward hpsv3: server {url} unreachable {died}; waiting up to 30 s", lines[0]), lines
        server_s = rf"reward hpsv3: server {url}"
        waiting = [line for line in lines[1:-1] if "unreachable for" in line]
        still = rf"{server_s} unreachable for \d+(\.\d)? s \(connection refused\); waiting up to 30 s"
        assert waiting and all(re.fullmatch(still, line) for line in waiting), lines
        assert len(waiting) <= (recovered - killed) / 0.5 + 1  # at most one line per report period
        again = rf"{server_s} answers again after \d+(\.\d)? s unreachable \(\d+ failed attempts\); continuing"
        assert re.fullmatch(again, lines[-1]), lines
    finally:
        restarted.proc.terminate()
        restarted.proc.wait(10)
        restarted.proc.stdout.close()


def test_server_that_stays_down_ends_in_one_line_outage_error(fast_outage_clock, caplog, free_port):
    port = free_port
    url = f"http://127.0.0.1:{port}/"
    server = Mimic(port, delay=5.0)
    fn = client(url, max_outage_s=1.0)
    errors: list[BaseException] = []

    def score() -> None:
        try:
            fn(IMAGES, PROMPTS, [{}] * 3)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=score)
    thread.start()
    server.wait_for("received")
    start = time.monotonic()
    server.kill()
    thread.join(10)
    assert not thread.is_alive() and len(errors) == 1
    error = errors[0]
    assert isinstance(error, RewardOutageError) and isinstance(error, RewardError)
    message = str(error)
    assert "\n" not in message
    assert re.fullmatch(
        rf"reward 'hpsv3': server {url} unreachable for [1-9]\.\d s \(max_outage_s 1 s\); "
        r"last failure: connection refused \(\d+ attempts\)",
        message,
    ), message
    assert time.monotonic() - start < 4.0  # the outage clock started with the request, before the kill
