"""``python -m maskgrpo.rewards.check``: one probe per configured HTTP reward, one line each, exit status.

Servers on loopback: the project's server with a deterministic scorer (a good endpoint), a port nobody listens on
(a down endpoint), and the public reward-server stand-in for a pickle entry. The command runs as a user runs it, in
a subprocess.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from reward_server_mimic import MimicServer

from maskgrpo.rewards import check
from maskgrpo.rewards.scorers import mean_intensity
from maskgrpo.rewards.serve import serve_in_thread

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def servers():
    """(json_url, geneval_pickle_url, down_url); stopped after the module."""
    good, url = serve_in_thread(mean_intensity)
    geneval = MimicServer("geneval")
    yield url + "/score", geneval.base_url + "/", f"http://127.0.0.1:{free_port()}/score"
    good.close()
    geneval.close()


def run_check(tmp_path: Path, rewards_yaml: str, *overrides: str) -> subprocess.CompletedProcess:
    config = tmp_path / "run.yaml"
    config.write_text("rewards:\n" + rewards_yaml)
    cmd = [sys.executable, "-m", "maskgrpo.rewards.check", "--config", str(config), *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_check_prints_one_line_per_reward_and_fails_on_a_down_endpoint(servers, tmp_path):
    json_url, geneval_url, down_url = servers
    result = run_check(
        tmp_path,
        f'  hpsv3: {{scale: 0.2, kwargs: {{url: "{json_url}"}}}}\n'
        "  clip: {kwargs: {model_path: /nonexistent/clip}}\n"
        f'  unifiedreward: {{scale: 0.2, kwargs: {{url: "{down_url}", timeout: 5}}}}\n'
        f'  geneval: {{kwargs: {{url: "{geneval_url}", protocol: pickle}}}}\n',
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(lines) == 5, lines
    assert re.fullmatch(rf"OK    hpsv3          raw 0\.5020  \d+ ms  json    {re.escape(json_url)}", lines[0])
    assert lines[1] == "SKIP  clip           local reward (loaded by the trainer, no endpoint)"  # nothing loaded
    assert lines[2].startswith(f"FAIL  unifiedreward  reward 'unifiedreward' at {down_url}: gave up; last failure: ")
    assert "Connection refused" in lines[2] and lines[2].endswith("(1 attempt)")  # --retries 0 by default
    assert re.fullmatch(rf"OK    geneval        raw 0\.5000  \d+ ms  pickle  {re.escape(geneval_url)}", lines[3])
    assert lines[4] == "2 of 3 reward endpoints OK; failed: unifiedreward"


def _main(tmp_path: Path, rewards_yaml: str, *args: str) -> int:
    """The command's main() in-process (the subprocess test above covers the module entry point)."""
    config = tmp_path / "run.yaml"
    config.write_text("rewards:\n" + rewards_yaml)
    return check.main(["--config", str(config), *args])


def test_check_exits_0_when_every_endpoint_answers_and_takes_trainer_overrides(servers, tmp_path, capsys):
    json_url, _, down_url = servers
    rc = _main(
        tmp_path, f'  hpsv3: {{scale: 0.2, kwargs: {{url: "{down_url}"}}}}\n', f"rewards.hpsv3.kwargs.url={json_url}"
    )
    assert rc == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 of 1 reward endpoints OK"


def test_check_names_a_bad_option_and_a_bad_config(servers, tmp_path, capsys):
    _, geneval_url, _ = servers
    entry = f'  geneval: {{kwargs: {{url: "{geneval_url}", protocol: pickle, only_strict: null}}}}\n'
    assert _main(tmp_path, entry) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        "FAIL  geneval  bad options: reward 'geneval': option 'only_strict' must be bool, got None"
    )
    with pytest.raises(SystemExit) as exit_info:
        check.main(["--config", str(tmp_path / "nope.yaml")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err.startswith("error: ") and "nope.yaml" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
