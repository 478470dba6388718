"""``python -m maskgrpo.rewards.check``: one probe per configured HTTP reward, one line each, exit status.

Servers on loopback: the project's server with a deterministic scorer (a good endpoint), a port nobody listens on
(a down endpoint), and the public reward-server stand-in for a pickle entry. The command runs as a user runs it, in
a subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, free_ports
from reward_server_mimic import MimicServer

from maskgrpo.rewards import check
from maskgrpo.rewards.scorers import mean_intensity
from maskgrpo.rewards.serve import serve_in_thread


@pytest.fixture(scope="module")
def servers():
    """(json_url, geneval_pickle_url, down_url); stopped after the module."""
    good, url = serve_in_thread(mean_intensity)
    geneval = MimicServer("geneval")
    yield url + "/score", geneval.base_url + "/", f"http://127.0.0.1:{free_ports()[0]}/score"
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
    assert re.fullmatch(
        rf"FAIL  unifiedreward  reward 'unifiedreward': server {re.escape(down_url)} unreachable for 0\.\d s "
        r"\(max_outage_s 0 s\); last failure: connection refused \(1 attempt\)",
        lines[2],
    ), lines[2]  # --wait 0 by default: no waiting for a server that does not answer
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


def test_check_exits_2_on_a_bad_option_of_any_entry_and_names_it(servers, tmp_path, capsys):
    """Issue 24: a bad option value is a bad config (exit 2, as documented), also on a local reward (nothing is
    loaded for it); the other entries are still checked and printed."""
    json_url, geneval_url, _ = servers
    entries = (
        f'  hpsv3: {{kwargs: {{url: "{json_url}"}}}}\n'
        f'  geneval: {{kwargs: {{url: "{geneval_url}", protocol: pickle, only_strict: null}}}}\n'
        "  clip: {kwargs: {model_path: /nonexistent/clip, batch_size: many}}\n"
    )
    assert _main(tmp_path, entries) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("OK    hpsv3    raw 0.5020")
    assert lines[1] == "FAIL  geneval  bad options: reward 'geneval': option 'only_strict' must be bool, got None"
    assert lines[2] == "FAIL  clip     bad options: reward 'clip': option 'batch_size' must be int, got 'many'"
    assert lines[3] == "1 of 3 reward endpoints OK; failed: geneval, clip; bad config: geneval, clip"


def test_check_exits_2_on_a_bad_config_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check.main(["--config", str(tmp_path / "nope.yaml")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err.startswith("error: ") and "nope.yaml" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_check_waits_for_a_server_only_when_asked(tmp_path, capsys, free_port):
    """``--wait S`` lets the probe wait out an outage of up to S seconds (here: nothing comes back)."""
    down = f"http://127.0.0.1:{free_port}/score"
    assert _main(tmp_path, f'  hpsv3: {{kwargs: {{url: "{down}", backoff: 0.05}}}}\n', "--wait", "0.3") == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(
        rf"FAIL  hpsv3  reward 'hpsv3': server {re.escape(down)} unreachable for \d\.\d s \(max_outage_s 0\.3 s\); "
        r"last failure: connection refused \([2-9] attempts\)",
        line,
    ), line
