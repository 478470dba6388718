"""A stand-in for the public reward-server (yifan123/reward-server at 92ac29f), for tests on loopback.

Written from the protocol facts only (docs/benchmarks.md section 3 and issue 18), not from its code:

- one route, ``POST /``; anything else gets an HTML "404 Not Found" page and ``GET /`` a 405, as Flask answers;
- request body ``pickle.dumps(dict)`` with JPEG bytes under ``images`` (opened as JPEG only), loaded with
  ``pickle.loads`` in an environment pinned to numpy 1.26: a pickle that names numpy 2's ``numpy._core`` fails
  there with ``ModuleNotFoundError`` (simulated by the unpickler below);
- answers ``pickle.dumps(dict)``: GenEval ``{"scores", "rewards", "strict_rewards", "group_rewards",
  "group_strict_rewards"}`` (group lists hold -10.0 under tags other than the image's own), DeQA ``{"outputs"}``
  already divided by 5, the MaskGRPO HPSv3 / UnifiedReward stand-ins ``{"scores"}`` raw. Scores are Python
  floats; the extras and DeQA's outputs are numpy scalars pickled as numpy 1 writes them
  (``numpy.core.multiarray.scalar``);
- a failure is HTTP 500 with the Python traceback as text (GenEval reads ``data["only_strict"]`` and each
  metadata's ``tag`` and ``prompt`` unconditionally, hence ``KeyError`` when they are missing).

Run as a program (``python tests/reward_server_mimic.py APP --port P [--delay S]``) it serves one app in the
foreground, printing ``serving ...`` when it listens and ``received`` when a request is in (before an optional delay),
so a test can kill it in the middle of a request and start it again on the same port.

The models are stubs on flat test images: the level ``q = round(mean_pixel / 255 * 4)`` (0..4, robust to JPEG) is
the "detector" / "judge" output, so scores are exact and their order checkable.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


class Numpy126Unpickler(pickle.Unpickler):
    """``pickle.loads`` as the public server's numpy 1.26 runs it: numpy 2's module paths do not exist there."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy._core" or module.startswith("numpy._core."):
            raise ModuleNotFoundError(f"No module named {module!r}")
        return super().find_class(module, name)


class Numpy1Pickler(pickle._Pickler):
    """Pickles numpy values with numpy 1's module paths (``numpy.core.multiarray``), as a numpy 1.26 server does."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        if not module.startswith("numpy._core"):
            super().save_global(obj, name)
            return
        self.save(module.replace("numpy._core", "numpy.core", 1))
        self.save(name or obj.__qualname__)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def numpy1_dumps(obj: Any) -> bytes:
    """``pickle.dumps(obj)`` (protocol 4, Python 3's default) as written under numpy 1."""
    buffer = io.BytesIO()
    Numpy1Pickler(buffer, protocol=4).dump(obj)
    return buffer.getvalue()


def level(jpeg: bytes) -> int:
    """The stub model's reading of one image: round(mean pixel / 255 * 4), in 0..4. JPEG only, as upstream opens
    them (a PNG fails with PIL's "cannot identify image file")."""
    pixels = np.asarray(Image.open(io.BytesIO(jpeg), formats=["JPEG"]).convert("RGB"), dtype=np.float64)
    return int(round(pixels.mean() / 255.0 * 4))


def _detector_failure(depth: int, image_index: int) -> None:
    """A deep stack, like a detector's, so the traceback is long and its last line names the error (two functions
    in turn: Python would fold a run of identical frames into one line)."""
    if depth:
        _detector_stage(depth - 1, image_index)
        return
    raise RuntimeError(f"CUDA error: an illegal memory access was encountered (image {image_index})")


def _detector_stage(depth: int, image_index: int) -> None:
    _detector_failure(depth, image_index)


def geneval_app(data: dict) -> dict:
    """GenEval partial credit: q / 4 per image; ``rewards`` is all 0 when ``only_strict``."""
    only_strict = data["only_strict"]  # read unconditionally upstream: a missing key is a KeyError (500)
    scores, strict, groups, group_strict = [], [], {t: [] for t in GENEVAL_TAGS}, {t: [] for t in GENEVAL_TAGS}
    for i, (image, meta) in enumerate(zip(data["images"], data["meta_datas"])):
        q = level(image)
        _ = meta["prompt"]  # read unconditionally upstream (its result rows carry the prompt)
        if meta.get("stub_fail"):
            _detector_failure(30, i)
        score = q / 4
        scores.append(score)
        strict.append(np.float64(score == 1.0))
        for tag in GENEVAL_TAGS:
            mine = tag == meta["tag"]
            groups[tag].append(np.float64(score if mine else -10.0))
            group_strict[tag].append(np.float64(float(score == 1.0) if mine else -10.0))
    rewards = [0.0] * len(scores) if only_strict else list(scores)
    return {
        "scores": scores,
        "rewards": rewards,
        "strict_rewards": strict,
        "group_rewards": groups,
        "group_strict_rewards": group_strict,
    }


def deqa_app(data: dict) -> dict:
    """DeQA: the model's 1-5 (here 1 + q), divided by 5 by the server."""
    return {"outputs": [np.float64((1 + level(image)) / 5) for image in data["images"]]}


def unifiedreward_app(data: dict) -> dict:
    """MaskGRPO's UnifiedReward stand-in: raw 1-5 (1 + q); prompts required."""
    prompts = data["prompts"]
    if len(prompts) != len(data["images"]):
        raise ValueError(f"{len(prompts)} prompts for {len(data['images'])} images")
    return {"scores": [float(1 + level(image)) for image in data["images"]]}


def hpsv3_app(data: dict) -> dict:
    """MaskGRPO's HPSv3 stand-in: raw mu = 8 + q + len(prompt) / 100; prompts required."""
    return {"scores": [8.0 + level(im) + len(p) / 100 for im, p in zip(data["images"], data["prompts"])]}


APPS: dict[str, Callable[[dict], dict]] = {
    "geneval": geneval_app,
    "deqa": deqa_app,
    "unifiedreward": unifiedreward_app,
    "hpsv3": hpsv3_app,
}

_NOT_FOUND = (
    b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    b"<p>No such URL on this server.</p>\n"
)
_NOT_ALLOWED = (
    b"<!doctype html>\n<html lang=en>\n<title>405 Method Not Allowed</title>\n<h1>Method Not Allowed</h1>\n"
    b"<p>The method is not allowed for the requested URL.</p>\n"
)


class _Handler(BaseHTTPRequestHandler):
    server: MimicServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(405, _NOT_ALLOWED, "text/html; charset=utf-8")
        else:
            self._send(404, _NOT_FOUND, "text/html; charset=utf-8")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/":
            self._send(404, _NOT_FOUND, "text/html; charset=utf-8")
            return
        with self.server.lock:
            self.server.bodies.append(body)
        if self.server.delay:
            print("received", flush=True)
            time.sleep(self.server.delay)
        try:
            data = Numpy126Unpickler(io.BytesIO(body)).load()
            with self.server.lock:
                self.server.requests.append(data)
            answer = numpy1_dumps(self.server.app(data))
        except Exception:
            self._send(500, traceback.format_exc().encode(), "text/plain; charset=utf-8")
            return
        with self.server.lock:
            self.server.answers.append(answer)
        self._send(200, answer, "application/octet-stream")


class MimicServer(ThreadingHTTPServer):
    """One public-server app on loopback. Records every POST body to ``/`` (``bodies``), every request it could
    unpickle (``requests``) and every pickled answer (``answers``)."""

    daemon_threads = True

    def __init__(self, app: str, port: int = 0, delay: float = 0.0, thread: bool = True) -> None:
        self.app = APPS[app]
        self.delay = delay
        self.bodies: list[bytes] = []
        self.requests: list[dict] = []
        self.answers: list[bytes] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)
        if thread:
            self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self._thread.join()
        self.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve one public reward-server stand-in on loopback")
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to sleep in each request before answering")
    args = parser.parse_args()
    mimic = MimicServer(args.app, args.port, args.delay, thread=False)
    print(f"serving {args.app} on {mimic.base_url}", flush=True)
    try:
        mimic.serve_forever(poll_interval=0.05)
    finally:
        mimic.server_close()
        sys.exit(0)
