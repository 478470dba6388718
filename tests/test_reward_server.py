"""Reward server + HTTP clients over real loopback sockets: round trips, batching, and failure injection.

Every test starts the project's own server (``serve_in_thread``) on 127.0.0.1 with a deterministic scorer, so
the client, the wire format and the server are exercised together. Backoffs are shrunk to milliseconds.
"""

from __future__ import annotations

import json
import math
import pickle
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

from maskgrpo.rewards import REWARDS, RewardError, RewardSpec, build_rewards, combine_rewards, score_all
from maskgrpo.rewards.client import RemoteReward, RewardServerError
from maskgrpo.rewards.protocol import (
    PROTOCOL,
    UnsafePickleError,
    b64encode,
    encode_image,
    restricted_loads,
)
from maskgrpo.rewards.serve import RewardServer, ScorerUnavailable, load_scorer, serve_in_thread

REPO = Path(__file__).resolve().parents[1]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def test_geneval_client_sends_metadata_and_only_strict(serve):
    scorer = RecordingScorer()
    url = serve(scorer)
    meta = [{"tag": "single_object", "include": [{"class": "circle", "count": 1}]}] * 2
    client(url, name="geneval")(constant_images([0, 255]), ["a", "b"], meta)
    assert scorer.calls[0]["metadata"] == meta and scorer.calls[0]["prompts"] is None
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


def test_timeout_is_retried_max_retries_times_then_names_url(serve):
    release = threading.Event()
    calls = []

    def slow(images, prompts, metadata):
        calls.append(len(images))
        release.wait(10)
        return [0.0] * len(images)

    url = serve(slow)
    fn = client(url + "/score", timeout=0.2, max_retries=2)
    start = time.monotonic()
    with pytest.raises(RewardServerError) as err:
        fn(constant_images([0]), ["p"], [{}])
    assert time.monotonic() - start < 3.0
    assert err.value.attempts == 3 and "timed out" in err.value.failure
    assert url in str(err.value) and "hpsv3" in str(err.value)
    release.set()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:  # the server still works through the queued requests
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(calls) == 3  # 1 attempt + max_retries = 2 retries reached the server, no more


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


def test_503_forever_gives_up_after_max_retries(serve):
    calls = []

    def never_ready(images, prompts, metadata):
        calls.append(1)
        raise ScorerUnavailable("loading weights")

    url = serve(never_ready)
    with pytest.raises(RewardServerError, match="HTTP 503: scorer unavailable: loading weights") as err:
        client(url, max_retries=3)(constant_images([0]), ["p"], [{}])
    assert err.value.attempts == 4 and len(calls) == 4


def test_connection_refused_is_retried_then_raises():
    url = f"http://127.0.0.1:{free_port()}/score"
    with pytest.raises(RewardServerError, match="connection error") as err:
        client(url, max_retries=2)(constant_images([0]), ["p"], [{}])
    assert err.value.attempts == 3 and err.value.url == url


def test_backoff_doubles_between_retries(monkeypatch):
    sleeps = []
    monkeypatch.setattr("maskgrpo.rewards.client.time.sleep", sleeps.append)
    url = f"http://127.0.0.1:{free_port()}/score"
    with pytest.raises(RewardServerError):
        client(url, max_retries=4, backoff=0.5)(constant_images([0]), ["p"], [{}])
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # backoff * 2**k for the k-th retry


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


def test_serve_command_stands_up_a_scorer_in_one_command(tmp_path):
    port = free_port()
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


def test_every_remote_entry_defaults_to_its_loopback_port():
    ports = {"geneval": 18085, "deqa": 18086, "hpsv3": 18087, "unifiedreward": 18088}
    for name, port in ports.items():
        fn = REWARDS.get(name)()
        assert fn.url == f"http://127.0.0.1:{port}/score" and fn.protocol == "json" and fn.image_format == "png"
