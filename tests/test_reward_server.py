"""Reward server + HTTP clients over real loopback sockets: round trips, batching, and failure injection.

Every test starts the project's own server (``serve_in_thread``) on 127.0.0.1 with a deterministic scorer, so
the client, the wire format and the server are exercised together. Backoffs are shrunk to milliseconds.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from maskgrpo.rewards import REWARDS, RewardError, RewardSpec, build_rewards, combine_rewards, score_all
from maskgrpo.rewards.client import (
    RemoteReward,
    RewardOutageError,
    RewardServerError,
    clip_error_text,
    retry_after_seconds,
    retry_delay,
)
from maskgrpo.rewards.protocol import (
    PROTOCOL,
    UnsafePickleError,
    b64encode,
    encode_image,
    restricted_loads,
)
from maskgrpo.rewards.serve import RewardServer, ScorerUnavailable, load_scorer, serve_in_thread


class RecordingScorer:
    """Deterministic scorer: mean pixel value / 255 per image (+ ``offset``); records every call."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, images, prompts, metadata, only_strict=None):
        with self.lock:
            self.calls.append({"n": len(images), "prompts": prompts, "metadata": metadata, "only_strict": only_strict})
        return [float(np.asarray(im, dtype=np.float64).mean() / 255.0) + self.offset for im in images]


@pytest.fixture
def serve():
    """Factory fixture: ``serve(scorer, **kw) -> url``; every server is closed after the test."""
    servers: list[RewardServer] = []

    def start(scorer, **kwargs) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the --allow-pickle warning has its own test
            server, url = serve_in_thread(scorer, **kwargs)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.close()


def constant_images(values: list[int], size: int = 8) -> np.ndarray:
    """(B, size, size, 3) uint8 images, image i filled with values[i]: its mean pixel / 255 is values[i] / 255."""
    return np.stack([np.full((size, size, 3), v, dtype=np.uint8) for v in values])


def client(url: str, name: str = "hpsv3", **kwargs) -> RemoteReward:
    kwargs = {"backoff": 0.001, "max_retries": 2, "timeout": 5.0, **kwargs}
    return build_rewards([RewardSpec(name, kwargs={"url": url, **kwargs})])[0]


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ------------------------------------------------------------------------------------------------ round trips


def test_json_round_trip_is_exact_with_png(serve):
    scorer = RecordingScorer()
    url = serve(scorer)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 12, 10, 3), dtype=np.uint8)
    prompts = [f"prompt {i}" for i in range(5)]
    scores = client(url + "/score")(images, prompts, [{}] * 5)
    expected = images.reshape(5, -1).mean(axis=1) / 255.0  # PNG is lossless: the server sees the same pixels
    assert scores.dtype == np.float64 and scores.shape == (5,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert scorer.calls[0]["prompts"] == prompts and scorer.calls[0]["metadata"] is None  # hpsv3: prompts only


def test_root_path_is_an_alias_and_health_answers(serve):
    url = serve(RecordingScorer())
    scores = client(url + "/")(constant_images([51]), ["p"], [{}])
    assert scores.tolist() == [pytest.approx(0.2)]  # 51 / 255
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["protocol"] == PROTOCOL and health["requests_scored"] == 1


def test_batching_splits_into_ceil_n_over_batch_size_requests_in_order(serve):
    scorer = RecordingScorer()
    url = serve(scorer)
    values = list(range(0, 250, 25))  # 10 images with distinct means
    scores = client(url, batch_size=4)(constant_images(values), ["p"] * 10, [{}] * 10)
    assert [c["n"] for c in scorer.calls] == [4, 4, 2]  # ceil(10 / 4) = 3 requests
    np.testing.assert_allclose(scores, np.array(values) / 255.0, atol=1e-12)


def test_geneval_client_sends_metadata_with_the_prompt_and_only_strict(serve):
    scorer = RecordingScorer()
    url = serve(scorer)
    meta = [{"tag": "single_object", "include": [{"class": "circle", "count": 1}]}] * 2
    client(url, name="geneval", protocol="json")(constant_images([0, 255]), ["a", "b"], meta)
    # the GenEval server reads metadata['prompt']: the client fills it in from the caption where absent
    assert scorer.calls[0]["metadata"] == [{**meta[0], "prompt": "a"}, {**meta[1], "prompt": "b"}]
    assert scorer.calls[0]["prompts"] is None
    assert scorer.calls[0]["only_strict"] is True  # MaskGRPO's setting, passed to scorers that take it


def test_scorer_extra_keys_pass_through_and_nan_is_null(serve):
    def scorer(images, prompts, metadata):
        return {"scores": [0.5, float("nan")], "strict_rewards": [1.0, np.float32(0.0), None]}

    url = serve(scorer)
    payload = {"protocol": PROTOCOL, "images": [b64encode(encode_image(im, "png")) for im in constant_images([1, 2])]}
    status, answer = post(url + "/score", json.dumps(payload).encode())
    assert status == 200
    assert answer == {"protocol": PROTOCOL, "scores": [0.5, None], "strict_rewards": [1.0, 0.0, None]}


def test_pickle_round_trip_is_byte_compatible_when_opted_in(serve):
    scorer = RecordingScorer()
    url = serve(scorer, allow_pickle=True)
    with pytest.warns(UserWarning, match="pickle"):
        fn = client(url + "/", protocol="pickle")
    scores = fn(constant_images([0, 102, 255]), ["x", "y", "z"], [{}] * 3)
    np.testing.assert_allclose(scores, [0.0, 0.4, 1.0], atol=2 / 255)  # JPEG of a flat image: within 2 levels
    assert scorer.calls[0]["prompts"] == ["x", "y", "z"]  # sent as a numpy <U array, received as strings
    # The DeQA client reads upstream's "outputs" key over pickle.
    with pytest.warns(UserWarning):
        deqa = client(url + "/", name="deqa", protocol="pickle")
    assert deqa.score_key == "outputs"
    np.testing.assert_allclose(deqa(constant_images([255]), ["x"], [{}]), [1.0], atol=2 / 255)


# ------------------------------------------------------------------------------------------------ failures


def test_a_server_that_stops_answering_is_an_outage_bounded_by_max_outage_s(serve, caplog):
    """A read timeout is an outage: re-sent until max_outage_s, then RewardOutageError naming the reward, the URL,
    the outage and the last failure; every attempt reached the server (none more)."""
    release = threading.Event()
    calls = []

    def slow(images, prompts, metadata):
        calls.append(len(images))
        release.wait(10)
        return [0.0] * len(images)

    url = serve(slow, batch_images=0)
    fn = client(url + "/score", timeout=0.2, timeout_per_image=0.0, max_outage_s=0.5)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="maskgrpo.rewards.client"), pytest.raises(RewardOutageError) as err:
        fn(constant_images([0]), ["p"], [{}])
    assert 0.5 <= time.monotonic() - start < 3.0
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"reward 'hpsv3': server {url}/score unreachable for ")
    assert "(max_outage_s 0.5 s); last failure: no answer within 0.2 s (" in message
    assert err.value.attempts >= 2 and err.value.outage_s >= 0.5
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"reward hpsv3: server {url}/score unreachable (no answer within 0.2 s); waiting up to 0.5 s"
    release.set()
    deadline = time.monotonic() + 5
    while len(calls) < err.value.attempts and time.monotonic() < deadline:  # the worker drains the queued requests
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(calls) == err.value.attempts


def test_the_read_timeout_grows_with_the_images_of_the_request(serve):
    """timeout + timeout_per_image * images: a scorer that takes 0.5 s per call times out a 1-image request
    (0.1 + 0.2 = 0.3 s) but answers a 5-image one (1.1 s) in time."""
    url = serve(lambda images, prompts, metadata: time.sleep(0.5) or [0.5] * len(images), batch_images=0)
    fn = client(url, timeout=0.1, timeout_per_image=0.2, max_outage_s=0.0)
    assert fn.request_timeout(1) == pytest.approx(0.3) and fn.request_timeout(5) == pytest.approx(1.1)
    with pytest.raises(RewardOutageError, match=r"no answer within 0\.3 s"):
        fn(constant_images([0]), ["p"], [{}])
    time.sleep(0.4)  # the server finishes the abandoned request
    assert fn(constant_images([0] * 5), ["p"] * 5, [{}] * 5).tolist() == [0.5] * 5
    defaults = {
        name: REWARDS.get(name)(url="http://127.0.0.1:1/score", protocol="json") for name in ("hpsv3", "unifiedreward")
    }
    assert defaults["hpsv3"].request_timeout(8) == 68.0 and defaults["unifiedreward"].request_timeout(8) == 84.0


def test_http_500_is_not_retried_and_carries_the_servers_message(serve):
    calls = []

    def broken(images, prompts, metadata):
        calls.append(1)
        raise ValueError("boom 42")

    url = serve(broken)
    with pytest.raises(RewardServerError) as err:
        client(url, max_retries=5)(constant_images([0]), ["p"], [{}])
    assert err.value.attempts == 1 and len(calls) == 1
    assert "HTTP 500" in str(err.value) and "ValueError: boom 42" in str(err.value) and url in str(err.value)


def test_scorer_returning_wrong_count_is_a_500(serve):
    url = serve(lambda images, prompts, metadata: [1.0])
    with pytest.raises(RewardServerError, match=r"HTTP 500.*1 scores for 2 images"):
        client(url)(constant_images([0, 0]), ["p", "q"], [{}, {}])


def test_503_is_retried_until_the_scorer_is_ready(serve):
    calls = []

    def warming_up(images, prompts, metadata):
        calls.append(1)
        if len(calls) < 3:
            raise ScorerUnavailable("loading weights")
        return [0.25] * len(images)

    url = serve(warming_up)
    assert client(url, max_retries=2)(constant_images([0]), ["p"], [{}]).tolist() == [0.25]
    assert len(calls) == 3


def test_503_forever_is_an_outage_that_ends_in_reward_outage_error(serve):
    calls = []

    def never_ready(images, prompts, metadata):
        calls.append(1)
        raise ScorerUnavailable("loading weights")

    url = serve(never_ready)
    with pytest.raises(RewardOutageError, match=r"last failure: HTTP 503: scorer unavailable: loading weights") as e:
        client(url, max_outage_s=0.3)(constant_images([0]), ["p"], [{}])
    assert e.value.attempts == len(calls) >= 2


def test_connection_refused_is_an_outage_then_raises_one_line(free_port):
    url = f"http://127.0.0.1:{free_port}/score"
    with pytest.raises(RewardOutageError, match=r"unreachable for \d\.\d s \(max_outage_s 0\.2 s\)") as err:
        client(url, max_outage_s=0.2)(constant_images([0]), ["p"], [{}])
    assert err.value.url == url and err.value.failure == "connection refused" and err.value.attempts >= 2
    assert isinstance(err.value, RewardError) and "\n" not in str(err.value)


def test_outage_waits_back_off_to_15_s_report_once_a_minute_and_stop_at_the_limit(monkeypatch, caplog, free_port):
    """On a fake clock (sleep advances it): waits 1, 2, 4, 8, then 15 s each; the last wait is cut at the limit
    (100 s); one line at the start, one per 60 s after it; attempts stop once the outage has lasted 100 s."""
    clock = [1000.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr("maskgrpo.rewards.client.time.sleep", sleep)
    monkeypatch.setattr("maskgrpo.rewards.client.time.monotonic", lambda: clock[0])
    url = f"http://127.0.0.1:{free_port}/score"
    fn = client(url, backoff=1.0, max_outage_s=100)
    with caplog.at_level("WARNING", logger="maskgrpo.rewards.client"), pytest.raises(RewardOutageError) as err:
        fn(constant_images([0]), ["p"], [{}])
    # 1+2+4+8 = 15 s, then 15 s waits: 30, 45, 60, 75, 90; the next one is cut to the 10 s left: 100
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 15.0, 15.0, 10.0]
    assert err.value.attempts == 11 and err.value.outage_s == 100.0  # attempts at 0, 1, 3, 7, 15, 30, ..., 90, 100 s
    assert str(err.value).startswith(f"reward 'hpsv3': server {url} unreachable for 100 s (max_outage_s 100 s)")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"reward hpsv3: server {url} unreachable (connection refused); waiting up to 100 s",
        f"reward hpsv3: server {url} unreachable for 60 s (connection refused); waiting up to 100 s",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"protocol": PROTOCOL}).encode(), "missing 'images'"),
        (json.dumps({"protocol": "other/9", "images": []}).encode(), "not supported"),
        (json.dumps({"images": ["%%%"]}).encode(), "images[0]"),
        (json.dumps({"images": [b64encode(b"not an image")]}).encode(), "cannot decode image"),
        (
            json.dumps(
                {"images": [b64encode(encode_image(np.zeros((2, 2, 3), np.uint8), "png"))], "prompts": ["a", "b"]}
            ).encode(),
            "2 prompts for 1 images",
        ),
    ],
)
def test_malformed_request_is_a_400_with_an_error_message(serve, body, message):
    scorer = RecordingScorer()
    url = serve(scorer)
    status, answer = post(url + "/score", body)
    assert status == 400 and message in answer["error"]
    assert scorer.calls == []


def test_too_many_images_is_a_413_and_not_retried(serve):
    scorer = RecordingScorer()
    url = serve(scorer, max_batch=2)
    with pytest.raises(RewardServerError, match="HTTP 413") as err:
        client(url, batch_size=3)(constant_images([0, 1, 2]), ["p"] * 3, [{}] * 3)
    assert err.value.attempts == 1 and scorer.calls == []


def test_malformed_response_raises_instead_of_scoring():
    class Garbage(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"scores": [0.1, "high"]}' if self.path == "/typed" else b"<html>oops</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(RewardServerError, match="malformed response"):
            client(base + "/score")(constant_images([0, 0]), ["p", "q"], [{}, {}])
        with pytest.raises(RewardServerError, match=r"'scores'\[1\] is 'high'"):
            client(base + "/typed")(constant_images([0, 0]), ["p", "q"], [{}, {}])
    finally:
        server.shutdown()
        server.server_close()


def test_nan_score_raises_by_default_and_is_kept_with_allow_nan(serve):
    url = serve(lambda images, prompts, metadata: [0.5, float("nan")])
    images, prompts, meta = constant_images([0, 0]), ["p", "q"], [{}, {}]
    raw = client(url)(images, prompts, meta)
    assert raw[0] == 0.5 and math.isnan(raw[1])  # null -> NaN, never 0

    strict = RewardSpec("hpsv3", scale=0.2, kwargs={"url": url})
    fns = build_rewards([strict])
    with pytest.raises(RewardError, match=r"'hpsv3'.*non-finite.*images \[1\]") as err:
        score_all(fns, [strict], images, prompts, meta)
    assert url in str(err.value)

    lenient = RewardSpec("hpsv3", scale=0.2, allow_nan=True, kwargs={"url": url})
    with pytest.warns(RuntimeWarning, match="allow_nan"):
        scaled = score_all(build_rewards([lenient]), [lenient], images, prompts, meta)
    assert scaled[0, 0] == pytest.approx(0.1) and math.isnan(scaled[1, 0])
    with pytest.warns(RuntimeWarning, match="no finite reward term"):
        total, metrics = combine_rewards(scaled, [1.0], ["hpsv3"])
    assert total.tolist() == [pytest.approx(0.1), 0.0] and metrics["reward/nan_frac/hpsv3"] == 0.5


# ------------------------------------------------------------------------------------------------ pickle safety


class _Exploit:
    """A pickle payload that would create a file when unpickled by a plain ``pickle.loads``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickle_is_refused_unless_the_server_opts_in(serve):
    scorer = RecordingScorer()
    url = serve(scorer)
    body = pickle.dumps({"images": [encode_image(constant_images([0])[0], "jpeg")]})
    status, answer = post(url + "/", body, "application/octet-stream")
    assert status == 400 and "--allow-pickle" in answer["error"] and scorer.calls == []
    with pytest.warns(UserWarning, match="pickle"):
        fn = client(url + "/", protocol="pickle")
    with pytest.raises(RewardServerError, match="HTTP 400") as err:
        fn(constant_images([0]), ["p"], [{}])
    assert err.value.attempts == 1


def test_malicious_pickle_is_refused_even_when_pickle_is_allowed(serve, tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps({"images": [], "prompts": _Exploit(target)})
    with pytest.raises(UnsafePickleError, match="pathlib"):
        restricted_loads(payload)
    scorer = RecordingScorer()
    url = serve(scorer, allow_pickle=True)
    status, answer = post(url + "/", payload, "application/octet-stream")
    assert status == 400 and "not allowed" in answer["error"]
    assert not target.exists() and scorer.calls == []


def test_restricted_unpickler_still_reads_numpy_string_arrays():
    prompts = np.array(["a red circle", "two squares"])
    assert restricted_loads(pickle.dumps({"prompts": prompts}))["prompts"].tolist() == prompts.tolist()


def test_restricted_unpickler_reads_numpy_scalars_but_refuses_object_dtypes():
    values = {"a": np.float64(0.25), "b": np.float32(1.5), "c": np.bool_(True), "d": np.int64(3)}
    assert restricted_loads(pickle.dumps(values)) == values
    for payload in (np.array([1, "x"], dtype=object), np.dtype("O"), {"scores": [np.array([0.5, None])]}):
        with pytest.raises(UnsafePickleError, match="holds Python objects"):
            restricted_loads(pickle.dumps(payload))


def test_pickle_is_loopback_only_on_both_ends():
    with pytest.raises(ValueError, match="loopback only"):
        RemoteReward(name="hpsv3", url="http://10.1.2.3:18087/", protocol="pickle")
    with pytest.raises(ValueError, match="loopback only"):
        RewardServer(("10.1.2.3", 0), RecordingScorer(), allow_pickle=True)


def test_allow_pickle_warns():
    with pytest.warns(UserWarning, match="pickled requests"):
        server = RewardServer(("127.0.0.1", 0), RecordingScorer(), allow_pickle=True)
    server.close()


# ------------------------------------------------------------------------------------------------ command line


def test_load_scorer_from_module_file_and_factory(tmp_path):
    file = tmp_path / "my_scorer.py"
    file.write_text("def make(offset):\n    return lambda images, prompts, metadata: [offset] * len(images)\n")
    assert load_scorer(f"{file}:make", {"offset": 0.75})([None, None], None, None) == [0.75, 0.75]
    assert load_scorer("maskgrpo.rewards.scorers:mean_intensity").__name__ == "mean_intensity"
    with pytest.raises(ValueError, match="module:function"):
        load_scorer("no_colon")


def test_serve_command_stands_up_a_scorer_in_one_command(tmp_path, free_port):
    port = free_port
    cmd = [
        sys.executable,
        "-m",
        "maskgrpo.rewards.serve",
        "--scorer",
        "maskgrpo.rewards.scorers:mean_intensity",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/score" in line, line
        scores = client(f"http://127.0.0.1:{port}/score")(constant_images([0, 255]), ["a", "b"], [{}, {}])
        np.testing.assert_allclose(scores, [0.0, 1.0])
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_hpsv3_scorer_passes_image_files_and_returns_mu(monkeypatch):
    seen = {}

    class FakeInferencer:
        def __init__(self, device):
            seen["device"] = device

        def reward(self, paths, prompts):
            from PIL import Image

            seen["sizes"] = [Image.open(p).size for p in paths]
            seen["prompts"] = prompts
            return [[10.0 + i, 0.5] for i in range(len(paths))]  # (mu, sigma) rows

    fake = type(sys)("hpsv3")
    fake.HPSv3RewardInferencer = FakeInferencer
    monkeypatch.setitem(sys.modules, "hpsv3", fake)
    from PIL import Image

    from maskgrpo.rewards.scorers import make_hpsv3

    score = make_hpsv3(device="cuda:3")
    images = [Image.new("RGB", (6, 4)), Image.new("RGB", (5, 5))]
    assert score(images, ["a", "b"], None) == [10.0, 11.0]
    assert seen == {"device": "cuda:3", "sizes": [(6, 4), (5, 5)], "prompts": ["a", "b"]}


def test_every_remote_entry_defaults_to_its_loopback_port_and_its_servers_protocol():
    """The project's servers (HPSv3, UnifiedReward) speak JSON on /score; GenEval and DeQA have one server, the
    public reward-server, which speaks pickle on / (issue 24: an entry with no options must reach it)."""
    defaults = {
        "geneval": ("http://127.0.0.1:18085/", "pickle", "jpeg"),
        "deqa": ("http://127.0.0.1:18086/", "pickle", "jpeg"),
        "hpsv3": ("http://127.0.0.1:18087/score", "json", "png"),
        "unifiedreward": ("http://127.0.0.1:18088/score", "json", "png"),
    }
    for name, expected in defaults.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the pickle warning
            fn = REWARDS.get(name)()
        assert (fn.url, fn.protocol, fn.image_format) == expected, name


# ------------------------------------------------------------------------------------------------ limits


def _vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (VmHWM in /proc/PID/status), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _wait_health(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"server at {url} not healthy after {timeout} s")


def test_body_over_the_limit_is_a_413_the_client_reads_and_never_retries(serve):
    """Item 10: the server answers 413 without reading the 8 MiB body, then drains it, so the client reads the 413
    (not "Broken pipe"), does not retry, and the server serves the next request."""
    scorer = RecordingScorer()
    url = serve(scorer, max_body_bytes=1024 * 1024)
    big = np.random.default_rng(0).integers(0, 256, size=(1, 1448, 1448, 3), dtype=np.uint8)  # ~8.4 MB as base64
    fn = client(url, max_retries=3, max_request_bytes=64 * 1024 * 1024)
    with pytest.raises(RewardServerError) as err:
        fn(big, ["p"], [{}])
    assert err.value.attempts == 1, str(err.value)
    assert "HTTP 413: body of" in str(err.value) and "over the limit of 1048576" in str(err.value)
    assert scorer.calls == []
    assert client(url)(constant_images([51]), ["p"], [{}]).tolist() == [pytest.approx(0.2)]


def test_client_splits_requests_by_encoded_bytes_and_refuses_one_image_over_the_limit(serve, monkeypatch):
    """Item 10: requests stay under max_request_bytes as well as batch_size; scores stay in order."""
    scorer = RecordingScorer()
    url = serve(scorer)
    sizes = []
    real_post = RemoteReward._post

    def recording_post(self, body, content_type, images):
        sizes.append(len(body))
        return real_post(self, body, content_type, images)

    monkeypatch.setattr(RemoteReward, "_post", recording_post)
    images = np.random.default_rng(1).integers(0, 256, size=(7, 48, 48, 3), dtype=np.uint8)  # ~9 KB PNG each
    fn = client(url, max_request_bytes=32 * 1024, batch_size=64)
    scores = fn(images, [f"p{i}" for i in range(7)], [{}] * 7)
    np.testing.assert_allclose(scores, images.reshape(7, -1).mean(axis=1) / 255.0, atol=1e-12)
    assert len(sizes) >= 3 and max(sizes) <= 32 * 1024, sizes
    assert sum(c["n"] for c in scorer.calls) == 7 and len(scorer.calls) == len(sizes)
    sizes.clear()
    calls_before = len(scorer.calls)
    huge = np.random.default_rng(2).integers(0, 256, size=(1, 128, 128, 3), dtype=np.uint8)  # ~49 KB PNG
    with pytest.raises(RewardServerError, match=r"image 0 alone makes a request of \d+ bytes, over max_request_bytes"):
        fn(huge, ["p"], [{}])
    assert sizes == [] and len(scorer.calls) == calls_before  # nothing was sent


def test_image_over_the_pixel_cap_is_a_413_before_decoding_and_server_memory_stays_flat(free_port):
    """Item 11: a 9,912-byte PNG declaring 9000 x 9000 (243 MB as RGB) is refused from its header; the server
    process's peak RSS (VmHWM) does not move; the server then scores a normal image."""
    port = free_port
    cmd = [sys.executable, "-m", "maskgrpo.rewards.serve", "--scorer", "maskgrpo.rewards.scorers:mean_intensity"]
    proc = subprocess.Popen([*cmd, "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, proc)
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("1", (9000, 9000)).save(buffer, format="PNG")  # 1 bit per pixel: small here, huge decoded
        payload = {"protocol": PROTOCOL, "images": [b64encode(buffer.getvalue())] * 4}
        before = _vm_hwm_kib(proc.pid)
        status, answer = post(url + "/score", json.dumps(payload).encode())
        after = _vm_hwm_kib(proc.pid)
        print(f"4 x 9000x9000 PNG, {len(buffer.getvalue())} bytes each: HTTP {status}, VmHWM {before} -> {after} KiB")
        assert status == 413
        assert answer["error"] == (
            "images[0]: 9000x9000 = 81000000 pixels is over the limit of 16777216 per image (--max-pixels)"
        )
        assert after - before < 32 * 1024, (before, after)  # KiB; decoding one image would add ~237,000 KiB
        scores = client(url + "/score")(constant_images([0, 255]), ["a", "b"], [{}, {}])
        np.testing.assert_allclose(scores, [0.0, 1.0])
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_pixel_cap_is_configurable_and_its_413_is_not_retried(serve):
    scorer = RecordingScorer()
    url = serve(scorer, max_pixels=15 * 15)
    with pytest.raises(RewardServerError, match=r"HTTP 413: images\[0\]: 16x16 = 256 pixels is over") as err:
        client(url, max_retries=3)(constant_images([0, 0], size=16), ["p", "q"], [{}, {}])
    assert err.value.attempts == 1 and scorer.calls == []
    assert client(url)(constant_images([51], size=15), ["p"], [{}]).tolist() == [pytest.approx(0.2)]


def test_decoding_and_scoring_run_one_batch_at_a_time(serve, monkeypatch):
    """Item 11: with 4 clients at once, one worker decodes and scores: never two decodes or calls at a time."""
    import maskgrpo.rewards.serve as serve_module

    active, peak, lock = [0], [0], threading.Lock()

    def enter():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])

    def leave():
        with lock:
            active[0] -= 1

    real_decode = serve_module.decode_image

    def counting_decode(data, max_pixels):
        enter()
        try:
            time.sleep(0.02)
            return real_decode(data, max_pixels)
        finally:
            leave()

    def counting_scorer(images, prompts, metadata):
        enter()
        time.sleep(0.02)
        leave()
        return [float(np.asarray(im).mean() / 255.0) for im in images]

    monkeypatch.setattr(serve_module, "decode_image", counting_decode)
    url = serve(counting_scorer)
    results: dict[int, list[float]] = {}

    def run(k: int) -> None:
        results[k] = client(url)(constant_images([k * 50, k * 50]), ["p", "q"], [{}, {}]).tolist()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == {k: [pytest.approx(k * 50 / 255)] * 2 for k in range(4)}
    assert peak[0] == 1


def _read_all(sock: socket.socket, deadline: float) -> bytes:
    """Read until the peer closes or the deadline passes."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_slow_body_is_dropped_after_the_read_timeout_even_when_it_trickles(serve):
    """Item 11: a client that sends its body one byte every 50 ms (never idle for a full timeout) is answered 408
    and disconnected after read_timeout = 0.5 s; nothing is scored and the server serves the next client."""
    scorer = RecordingScorer()
    url = serve(scorer, read_timeout=0.5)
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    start = time.monotonic()
    try:
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        for _ in range(60):  # at most 3 s of trickling
            try:
                sock.sendall(b" ")
            except OSError:  # the server closed the connection
                break
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                break
        answer = _read_all(sock, time.monotonic() + 2)
    finally:
        sock.close()
    elapsed = time.monotonic() - start
    print(f"trickling client answered {answer[:12]!r} and dropped after {elapsed:.2f} s (read_timeout 0.5 s)")
    assert answer.startswith(b"HTTP/1.0 408"), answer[:200]
    assert b"request not received within 0.5 s" in answer
    assert 0.45 <= elapsed < 2.0, elapsed
    assert scorer.calls == []
    assert client(url)(constant_images([51]), ["p"], [{}]).tolist() == [pytest.approx(0.2)]


def test_slow_headers_are_dropped_after_the_read_timeout(serve):
    url = serve(RecordingScorer(), read_timeout=0.5)
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    start = time.monotonic()
    try:
        closed = False
        for byte in b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60:  # bounded: 93 bytes, 4.6 s max
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable and sock.recv(1024) == b"":
                closed = True
                break
    finally:
        sock.close()
    assert closed and time.monotonic() - start < 2.0


class _Scripted(BaseHTTPRequestHandler):
    """Answers the statuses of ``server.script`` in turn (status, headers), then 200 with a score."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.hits += 1
        status, headers = self.server.script.pop(0) if self.server.script else (200, {})
        body = json.dumps({"scores": [0.75]} if status == 200 else {"error": f"status {status}"}).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    servers = []

    def start(script: list[tuple[int, dict]]) -> tuple[ThreadingHTTPServer, str]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
        server.script, server.hits = list(script), 0
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/score"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_429_then_an_outage_are_waited_out_honouring_retry_after(scripted, monkeypatch, caplog):
    """429 is a busy server: max(backoff, Retry-After) = 7 s. 502, 504, 503 are an outage: 0.5, 1 s, then
    min(max(2, Retry-After 100000), 15) = 15 s. One line per retry, one when the outage starts, one when it ends."""
    sleeps = []
    monkeypatch.setattr("maskgrpo.rewards.client.time.sleep", sleeps.append)
    server, url = scripted([(429, {"Retry-After": "7"}), (502, {}), (504, {}), (503, {"Retry-After": "100000"})])
    with caplog.at_level("WARNING", logger="maskgrpo.rewards.client"):
        assert client(url, max_retries=5, backoff=0.5)(constant_images([0]), ["p"], [{}]).tolist() == [0.75]
    assert server.hits == 5
    assert sleeps == [7.0, 0.5, 1.0, 15.0]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"reward hpsv3 at {url}: HTTP 429: status 429; retry 1/5 in 7.00 s"
    assert lines[1] == f"reward hpsv3: server {url} unreachable (HTTP 502: status 502); waiting up to 600 s"
    assert re.fullmatch(
        rf"reward hpsv3: server {url} answers again after 0\.\d s unreachable \(3 failed attempts\); continuing",
        lines[2],
    )
    assert len(lines) == 3


def test_429_forever_gives_up_after_max_retries_naming_the_status(scripted, monkeypatch):
    monkeypatch.setattr("maskgrpo.rewards.client.time.sleep", lambda s: None)
    server, url = scripted([(429, {"Retry-After": "1"})] * 10)
    with pytest.raises(RewardServerError, match=r"gave up; last failure: HTTP 429: status 429") as err:
        client(url, max_retries=2)(constant_images([0]), ["p"], [{}])
    assert err.value.attempts == 3 and server.hits == 3


def test_retry_after_header_forms():
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0  # in the past
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_delay(1, 1.0, None) == 1.0 and retry_delay(3, 1.0, 0.5) == 4.0 and retry_delay(9, 1.0, None) == 60.0


def test_error_text_keeps_head_and_tail():
    text = "Traceback (most recent call last):\n" + "x" * 5000 + "\nKeyError: 'only_strict'"
    clipped = clip_error_text(text)
    assert clipped.startswith("Traceback (most recent call last):") and clipped.endswith("KeyError: 'only_strict'")
    assert len(clipped) < 2100 and clip_error_text("short") == "short"
