"""Issue 24: the reward server merges concurrent requests into one scorer call and answers each with its own slice.

Eight client threads play eight ranks, each sending 8 flat images of its own grey level and its own prompts through
the registered client. The stub scorer holds its first call until every other request is queued, so the test does
not depend on thread timing: the first call takes what arrived first, the second call everything else.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from maskgrpo.rewards import RewardSpec, build_rewards
from maskgrpo.rewards.client import RewardServerError
from maskgrpo.rewards.protocol import PROTOCOL, b64encode, encode_image
from maskgrpo.rewards.scorers import unifiedreward_scorer
from maskgrpo.rewards.serve import RewardServer, serve_in_thread

RANKS, PER_RANK = 8, 8


def rank_batch(rank: int) -> tuple[np.ndarray, list[str]]:
    """(8, 8, 8, 3) images of level 10 + 30 * rank, and prompts that name the rank and the image."""
    images = np.full((PER_RANK, 8, 8, 3), 10 + 30 * rank, dtype=np.uint8)
    return images, [f"rank {rank} image {i}" + "!" * i for i in range(PER_RANK)]


def expected(rank: int) -> list[float]:
    """What :class:`HeldScorer` gives a rank's images: level / 255 + len(prompt) / 1000."""
    _, prompts = rank_batch(rank)
    return [(10 + 30 * rank) / 255 + len(p) / 1000 for p in prompts]


class HeldScorer:
    """Scores level / 255 + len(prompt) / 1000; its first call waits until the other requests are all queued
    (``total`` requests of ``per_request`` images in all)."""

    def __init__(self, total: int = RANKS, per_request: int = PER_RANK) -> None:
        self.total, self.per_request = total, per_request
        self.server: RewardServer | None = None
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.held_too_long = False

    def __call__(self, images, prompts, metadata):
        self.entered.set()
        if not self.calls:
            deadline = time.monotonic() + 10
            while self.server.batcher.queued + len(images) // self.per_request < self.total:
                if time.monotonic() > deadline:
                    self.held_too_long = True
                    break
                time.sleep(0.005)
        self.calls.append(len(images))
        if any(p.startswith("fail") for p in prompts):
            raise ValueError("this request's prompt makes the scorer fail")
        return [float(np.asarray(im).mean()) / 255 + len(p) / 1000 for im, p in zip(images, prompts)]


def serve_held(total: int = RANKS, per_request: int = PER_RANK, **kwargs) -> tuple[RewardServer, str, HeldScorer]:
    scorer = HeldScorer(total, per_request)
    server, url = serve_in_thread(scorer, **kwargs)
    scorer.server = server
    return server, url, scorer


def run_ranks(url: str, ranks: int = RANKS) -> dict[int, object]:
    """Each rank scores its batch in its own thread; returns rank -> scores (or the exception)."""
    results: dict[int, object] = {}

    def rank_thread(rank: int) -> None:
        (fn,) = build_rewards([RewardSpec("unifiedreward", kwargs={"url": url + "/score", "max_outage_s": 5.0})])
        images, prompts = rank_batch(rank)
        try:
            results[rank] = fn(images, prompts, [{}] * PER_RANK).tolist()
        except Exception as exc:
            results[rank] = exc

    threads = [threading.Thread(target=rank_thread, args=(r,)) for r in range(ranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_eight_concurrent_ranks_share_scorer_calls_and_each_gets_its_own_scores():
    server, url, scorer = serve_held(batch_images=64, batch_window=0.0)
    try:
        results = run_ranks(url)
        health = json.loads(urllib.request.urlopen(url + "/health", timeout=5).read())
    finally:
        server.close()
    for rank in range(RANKS):
        np.testing.assert_allclose(results[rank], expected(rank), rtol=0, atol=1e-12, err_msg=f"rank {rank}")
    assert not scorer.held_too_long
    assert len(scorer.calls) < RANKS and len(scorer.calls) <= 2, scorer.calls  # 8 requests, at most 2 calls
    assert sum(scorer.calls) == RANKS * PER_RANK
    assert health["requests_scored"] == RANKS and health["scorer_calls"] == len(scorer.calls)


def test_without_cross_request_batching_every_request_is_one_call():
    server, url, scorer = serve_held(batch_images=0)
    try:
        results = run_ranks(url)
    finally:
        server.close()
    assert all(results[r] == pytest.approx(expected(r), abs=1e-12) for r in range(RANKS))
    assert scorer.calls == [PER_RANK] * RANKS


def test_a_batch_never_exceeds_batch_images():
    server, url, scorer = serve_held(batch_images=24, batch_window=0.0)
    try:
        results = run_ranks(url)
    finally:
        server.close()
    assert all(results[r] == pytest.approx(expected(r), abs=1e-12) for r in range(RANKS))
    assert max(scorer.calls) <= 24 and len(scorer.calls) >= RANKS * PER_RANK // 24


def test_a_failing_request_fails_alone_when_merged():
    """The merged call raises (one request's prompt breaks the scorer): each request is scored alone, so only that
    request gets the 500 and the others their scores."""
    server, url, scorer = serve_held(total=3, per_request=2, batch_window=0.0)
    results: dict[str, object] = {}

    def ask(tag: str, value: int) -> None:
        (fn,) = build_rewards([RewardSpec("hpsv3", kwargs={"url": url, "max_retries": 0})])
        try:
            results[tag] = fn(np.full((2, 8, 8, 3), value, np.uint8), [tag, tag], [{}, {}]).tolist()
        except RewardServerError as exc:
            results[tag] = exc

    threads = [threading.Thread(target=ask, args=(tag, v)) for tag, v in (("ok-a", 51), ("fail-b", 0), ("ok-c", 102))]
    try:
        threads[0].start()
        assert scorer.entered.wait(10)  # ok-a is in the scorer, held until the other two are queued
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        server.close()
    assert results["ok-a"] == pytest.approx([0.2 + 0.004] * 2) and results["ok-c"] == pytest.approx([0.4 + 0.004] * 2)
    assert isinstance(results["fail-b"], RewardServerError) and "HTTP 500" in str(results["fail-b"])
    assert "this request's prompt makes the scorer fail" in str(results["fail-b"])
    assert scorer.calls == [2, 4, 2, 2] and not scorer.held_too_long  # ok-a; fail-b + ok-c merged; each alone


def test_per_image_extra_keys_are_sliced_per_request():
    gate, entered = threading.Event(), threading.Event()
    calls = []

    def scorer(images, prompts, metadata):
        entered.set()
        gate.wait(10)
        calls.append(len(images))
        levels = [round(float(np.asarray(im).mean())) for im in images]
        return {"scores": levels, "level": levels, "by_tag": {"x": levels}, "model": "stub"}

    server, url = serve_in_thread(scorer, batch_window=0.0)
    answers: dict[int, dict] = {}

    def ask(value: int) -> None:
        body = {"protocol": PROTOCOL, "images": [b64encode(encode_image(np.full((4, 4, 3), value, np.uint8), "png"))]}
        request = urllib.request.Request(url + "/score", data=json.dumps(body).encode(), method="POST")
        answers[value] = json.loads(urllib.request.urlopen(request, timeout=10).read())

    threads = [threading.Thread(target=ask, args=(v,)) for v in (1, 2, 3)]
    try:
        threads[0].start()
        assert entered.wait(10)  # the first request is held in the scorer
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 10
        while server.batcher.queued < 2 and time.monotonic() < deadline:  # the other two wait behind it
            time.sleep(0.005)
        gate.set()
        for thread in threads:
            thread.join(10)
    finally:
        server.close()
    assert calls == [1, 2]  # the two that waited were merged
    for value in (1, 2, 3):
        assert answers[value] == {
            "protocol": PROTOCOL,
            "scores": [value],
            "level": [value],
            "by_tag": {"x": [value]},
            "model": "stub",
        }


def test_unifiedreward_scorer_judges_merged_ranks_in_one_generate_call():
    """The judge's generate step is batchable: behind a batching server, 4 ranks' 8 images each go through one
    generate call of 32 rows (batch_size 32), and each rank gets the score of its own images."""
    rows = []
    servers: list[RewardServer] = []

    def stub_generate(images: list[Image.Image], questions: list[str]) -> list[str]:
        deadline = time.monotonic() + 10
        while not rows and servers[0].batcher.queued + len(images) // PER_RANK < 4:  # the first call: hold until
            assert time.monotonic() < deadline  # the other ranks are queued
            time.sleep(0.005)
        rows.append(len(images))
        return [f"Final Score: {1 + round(np.asarray(im).mean() / 255 * 4)}" for im in images]

    scorer = unifiedreward_scorer(stub_generate, image_size=28, batch_size=32)
    server, url = serve_in_thread(scorer, batch_window=0.5)
    servers.append(server)
    try:
        results = run_ranks(url, ranks=4)
    finally:
        server.close()
    for rank in range(4):
        level = 10 + 30 * rank
        assert results[rank] == [1 + round(level / 255 * 4)] * PER_RANK, rank
    assert sum(rows) == 32 and len(rows) <= 2, rows  # 4 requests, at most 2 generate calls


def test_the_benchmark_runs_and_checks_every_score(tmp_path, capsys):
    """``eval/bench_reward_server.py`` at 1/100 of its time scale, one round: both servers, every answered score
    right (the timing numbers themselves are the benchmark's business, not this test's)."""
    from eval.bench_reward_server import main

    out = tmp_path / "bench.json"
    results = main(["--rounds", "1", "--time-scale", "0.01", "--json", str(out)])
    assert list(results) == ["one request per call", "cross-request batching (32 images)"]
    for r in results.values():
        assert r["requests"] == RANKS and r["wrong_scores"] == 0
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(results))
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith("| server | requests | scorer calls |") and len(table) == 5
