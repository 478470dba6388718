"""A small HTTP reward server that puts any Python scoring function behind the JSON reward protocol.

Stand a scorer up on a spare GPU with one command, then point a reward's ``url`` at it::

    python -m maskgrpo.rewards.serve --scorer maskgrpo.rewards.scorers:make_hpsv3 \\
        --scorer-kwargs '{"device": "cuda:0"}' --port 18087

The scorer is ``module:attr`` (or ``path/to/file.py:attr``) naming a function
``fn(images: list[PIL.Image.Image], prompts: list[str] | None, metadata: list[dict] | None) -> list[float]``
(NaN = a failed score, sent as null). With ``--scorer-kwargs JSON`` the named object is instead a factory, called
once at start-up with those keyword arguments, that returns such a function (load the model once there). A scorer
may also return ``{"scores": [...], **extra}``: the extra keys (GenEval's ``rewards``, ``strict_rewards``, ...) are
passed through. A scorer that accepts an ``only_strict`` keyword receives the request's value. Raising
:class:`ScorerUnavailable` answers 503 (the client retries); any other exception answers 500 (never retried).

Endpoints: ``POST /score`` (``/`` is an alias), ``GET /health`` (answers as soon as the scorer is loaded, also while
a batch is being scored). Both protocols are answered on both routes: JSON always, pickle when ``--allow-pickle`` is
given (the public reward-server's clients POST to ``/``). The server binds 127.0.0.1 unless ``--host`` says
otherwise, and warns then. ``pickle`` is remote code execution for anyone who can reach the port, so pickled
requests are decoded by a restricted unpickler (numpy arrays and scalars only) and refused on a non-loopback host.

Cross-request batching (:mod:`maskgrpo.rewards.batching`): one worker thread decodes and scores; requests that
arrive together (8 ranks asking at once) are merged into one scorer call of up to ``--batch-images`` images (32),
waiting at most ``--batch-window`` seconds (0.05) after the oldest for more, and each request gets its own slice of
the scores (and of any per-image list among the extra keys). Requests are merged only when they carry the same
fields (prompts, metadata, ``only_strict``). If a merged call raises, each request is scored alone, so one bad
request fails only itself. ``--batch-images 0`` scores one request per call. At most one batch's pixels are in
memory.

Limits (each a flag): a body over ``--max-body-bytes`` (64 MiB) is answered 413 and then drained (up to 256 MiB),
so the client reads the 413 instead of a broken pipe; more than ``--max-batch`` images (64) is 413; an image whose
header declares more than ``--max-pixels`` (4096 x 4096) is 413 before any pixel is decoded; a request not fully
received within ``--read-timeout`` seconds (30; headers and body together, however slowly the bytes trickle in) is
dropped (408 once the headers are in).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import logging
import math
import pickle
import socket
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskgrpo.rewards.batching import BatcherClosed, Job, RequestBatcher
from maskgrpo.rewards.protocol import (
    DEFAULT_MAX_BATCH,
    IMAGE_FORMATS,
    JSON_CONTENT_TYPE,
    MAX_BODY_BYTES,
    MAX_PIXELS,
    PICKLE_CONTENT_TYPE,
    PROTOCOL,
    READ_TIMEOUT_S,
    ImageTooLarge,
    UnsafePickleError,
    b64decode,
    decode_image,
    is_loopback_host,
    restricted_loads,
    scores_to_json,
)

logger = logging.getLogger(__name__)

Scorer = Callable[..., Sequence[float] | Mapping[str, Any]]
"""``fn(images: list[PIL.Image.Image], prompts: list[str] | None, metadata: list[dict] | None) -> list[float]``."""


class ScorerUnavailable(RuntimeError):
    """Raise from a scorer to answer HTTP 503 (temporarily unable to score, e.g. still loading): clients retry."""


BATCH_IMAGES = 32
"""Default ``--batch-images``: most images per merged scorer call. Keep it at most the scorer's own rows per model
call (``make_unifiedreward``'s ``batch_size``, 32): a merged batch that needs several generate calls makes every
request in it wait for all of them (docs/rewards.md, the measured table)."""
BATCH_WINDOW_S = 0.05
"""Default ``--batch-window``: seconds the worker waits after the oldest queued request for others to merge with."""
DRAIN_MAX_BYTES = 4 * MAX_BODY_BYTES
"""An answered request's unread body is read and discarded up to this many bytes (256 MiB, within the read timeout,
nothing kept), so a client still sending reads the answer instead of a reset; beyond it the connection is closed."""


class RequestError(ValueError):
    """A request the server rejects, with its HTTP status (400, 408 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ScoreRequest:
    """One parsed request, whichever protocol carried it; images still encoded (decoded by the scoring worker)."""

    images: list[bytes]
    prompts: list[str] | None
    metadata: list[dict] | None
    only_strict: bool | None
    pickled: bool


def _jsonable(value: Any) -> Any:
    """Numpy values -> Python, non-finite floats -> None, recursively (so ``json.dumps`` never writes NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _slice(value: Any, start: int, stop: int, total: int) -> Any:
    """One request's share of a merged scorer's extra value: a per-image list (length ``total``, also as the values
    of a mapping) is cut to ``[start:stop]``; anything else is the same for every request."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == total:
        return list(value[start:stop])
    if isinstance(value, Mapping):
        return {k: _slice(v, start, stop, total) for k, v in value.items()}
    return value


def _check_lists(n: int, prompts: Any, metadata: Any) -> tuple[list[str] | None, list[dict] | None]:
    """Validate the optional per-image prompts (strings) and metadata (dicts): n of each."""
    if prompts is not None:
        if isinstance(prompts, np.ndarray):
            prompts = prompts.tolist()
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise RequestError(400, "'prompts' must be a list of strings")
        if len(prompts) != n:
            raise RequestError(400, f"{len(prompts)} prompts for {n} images")
        prompts = list(prompts)
    if metadata is not None:
        if not isinstance(metadata, (list, tuple)) or not all(isinstance(m, dict) for m in metadata):
            raise RequestError(400, "'metadata' must be a list of objects")
        if len(metadata) != n:
            raise RequestError(400, f"{len(metadata)} metadata entries for {n} images")
        metadata = list(metadata)
    return prompts, metadata


class RewardServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` serving one scorer over the JSON protocol (and pickle, if allowed).

    Args:
        address: (host, port); port 0 picks a free port (see :attr:`url`).
        scorer: the scoring function (module docstring).
        allow_pickle: also accept pickled requests (restricted unpickler; loopback hosts only).
        max_batch: most images per request (413 above).
        max_body_bytes: largest request body (413 above; the body is drained so the client reads the 413).
        max_pixels: largest width x height of one image (413 above, checked before decoding).
        read_timeout: seconds to receive one request, headers and body together (then the client is dropped).
        batch_images: most images per scorer call when merging concurrent requests; 0 = one request per call.
        batch_window: seconds to wait after the oldest queued request for more to merge with.
        name: label for logs and ``/health``.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        scorer: Scorer,
        *,
        allow_pickle: bool = False,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_pixels: int = MAX_PIXELS,
        read_timeout: float = READ_TIMEOUT_S,
        batch_images: int = BATCH_IMAGES,
        batch_window: float = BATCH_WINDOW_S,
        name: str = "scorer",
    ) -> None:
        host = address[0]
        if not is_loopback_host(host):
            if allow_pickle:
                raise ValueError(
                    f"--allow-pickle is loopback only (pickle is remote code execution); got host {host!r}"
                )
            warnings.warn(
                f"reward server binds {host!r}, reachable beyond this machine: anyone who can reach the "
                "port can use the GPU behind it",
                UserWarning,
                stacklevel=2,
            )
        if allow_pickle:
            warnings.warn(
                "reward server accepts pickled requests (--allow-pickle): keep it on loopback with "
                "trusted clients only",
                UserWarning,
                stacklevel=2,
            )
        if max_batch < 1 or max_body_bytes < 1 or max_pixels < 1 or not read_timeout > 0:
            raise ValueError(
                f"need max_batch, max_body_bytes, max_pixels >= 1 and read_timeout > 0; got {max_batch}, "
                f"{max_body_bytes}, {max_pixels}, {read_timeout}"
            )
        self.scorer = scorer
        self.allow_pickle = allow_pickle
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.max_pixels = max_pixels
        self.read_timeout = read_timeout
        self.name = name
        self.requests_scored = 0
        self.scorer_calls = 0
        self._thread: threading.Thread | None = None
        try:
            params = inspect.signature(scorer).parameters
            self._takes_only_strict = "only_strict" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
            )
        except (TypeError, ValueError):  # builtins and some C callables have no signature
            self._takes_only_strict = False
        super().__init__(address, _Handler)
        self.batcher = RequestBatcher(self._score_batch, batch_images, batch_window, name=name)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:18087`` (POST to it or to ``/score``)."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def decode(self, images: list[bytes]) -> list[Image.Image]:
        """Encoded images -> RGB PIL images; RequestError 413 over ``max_pixels`` (nothing decoded), 400 if corrupt."""
        decoded = []
        for i, data in enumerate(images):
            try:
                decoded.append(decode_image(data, self.max_pixels))
            except ImageTooLarge as exc:
                raise RequestError(413, f"images[{i}]: {exc} (--max-pixels)") from exc
            except ValueError as exc:
                raise RequestError(400, f"images[{i}]: {exc}") from exc
        return decoded

    def score(self, request: ScoreRequest) -> tuple[list[float], dict[str, Any]]:
        """Queue the request for the scoring worker and wait: (scores, extra keys) of this request's images.
        RequestError for undecodable images; the scorer's own exceptions as raised."""
        key = (request.only_strict, request.prompts is None, request.metadata is None)
        try:
            return self.batcher.submit(Job(request, len(request.images), key))
        except BatcherClosed as exc:
            raise ScorerUnavailable(str(exc)) from exc

    def _score_batch(self, jobs: list[Job]) -> None:
        """The worker's step: decode each job's images (a bad image fails its own job), score the rest in one call,
        answer each job with its slice; if a merged call raises, score each job alone."""
        ready = []
        for job in jobs:
            try:
                ready.append((job, self.decode(job.payload.images)))
            except RequestError as exc:
                job.finish(error=exc)
        if len(ready) > 1:
            try:
                self._score_together(ready)
                return
            except ScorerUnavailable:
                raise  # not ready for anyone: every job answers 503
            except Exception:
                logger.warning("scorer %s failed on %d merged requests; scoring each alone", self.name, len(ready))
        for job, images in ready:
            try:
                self._score_together([(job, images)])
            except Exception as exc:
                job.finish(error=exc)

    def _score_together(self, ready: list[tuple[Job, list[Image.Image]]]) -> None:
        """One scorer call on the decoded images of ``ready`` (jobs of one key), then each job's slice."""
        first: ScoreRequest = ready[0][0].payload
        images = [image for _, decoded in ready for image in decoded]
        prompts = None if first.prompts is None else [p for job, _ in ready for p in job.payload.prompts]
        metadata = None if first.metadata is None else [m for job, _ in ready for m in job.payload.metadata]
        kwargs = {} if first.only_strict is None or not self._takes_only_strict else {"only_strict": first.only_strict}
        self.scorer_calls += 1
        result = self.scorer(images, prompts, metadata, **kwargs)
        extra: dict[str, Any] = {}
        if isinstance(result, Mapping):
            if "scores" not in result:
                raise TypeError(f"scorer returned a mapping without 'scores' (keys {sorted(result)})")
            extra = {k: v for k, v in result.items() if k != "scores"}
            result = result["scores"]
        if isinstance(result, np.ndarray):
            result = result.reshape(-1).tolist()
        scores = [float("nan") if s is None else float(s) for s in result]  # None, like NaN, marks a failed score
        if len(scores) != len(images):
            raise ValueError(f"scorer returned {len(scores)} scores for {len(images)} images")
        start = 0
        for job, decoded in ready:
            stop = start + len(decoded)
            share = extra if len(ready) == 1 else {k: _slice(v, start, stop, len(images)) for k, v in extra.items()}
            self.requests_scored += 1
            job.finish((scores[start:stop], share))
            start = stop

    def server_close(self) -> None:
        """Close the socket and stop the scoring worker (queued requests are answered 503)."""
        super().server_close()
        self.batcher.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout) before its answer was written is routine: log it, no traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.info("client %s went away before its answer was sent", client_address)
            return
        super().handle_error(request, client_address)

    def start_thread(self) -> threading.Thread:
        """Serve in a daemon thread (see :func:`serve_in_thread`)."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=f"reward-server-{self.name}", daemon=True
        )  # fast close()
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stop the serving thread (if any) and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    """Request handler of :class:`RewardServer`: routing, parsing, status codes."""

    server: RewardServer
    server_version = "maskgrpo-reward-server/1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(_jsonable(payload), allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error_json(self, status: int, message: str) -> None:
        """Answer ``{"error": message}`` (logged as a warning, first line)."""
        logger.warning("%s %s -> %d: %s", self.command, self.path, status, message.splitlines()[0] if message else "")
        self._send_json(status, {"error": message})

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/health":
            self._send_error_json(404, f"unknown path {self.path!r}; GET /health or POST /score")
            return
        self._send_json(
            200,
            {
                "status": "ok",
                "protocol": PROTOCOL,
                "scorer": self.server.name,
                "max_batch": self.server.max_batch,
                "allow_pickle": self.server.allow_pickle,
                "requests_scored": self.server.requests_scored,
                "scorer_calls": self.server.scorer_calls,
                "queued_requests": self.server.batcher.queued,
                "batch_images": self.server.batcher.max_images,
                "batch_window_s": self.server.batcher.window_s,
            },
        )

    def setup(self) -> None:
        """Bound the request's reading: per recv (socket timeout) and in total (a watchdog timer)."""
        self.timeout = self.server.read_timeout  # StreamRequestHandler.setup applies it to the socket
        super().setup()
        self._unread = 0  # declared body bytes not read yet (drained before an early answer closes)
        self._read_lock = threading.Lock()
        self._received = False
        self._timed_out = False
        self._watchdog = threading.Timer(self.server.read_timeout, self._drop_slow_client)
        self._watchdog.daemon = True
        self._watchdog.start()

    def finish(self) -> None:
        self._watchdog.cancel()
        super().finish()

    def _drop_slow_client(self) -> None:
        """Watchdog: the request is not in after ``read_timeout`` s; end its reads (the handler answers 408)."""
        with self._read_lock:
            if self._received:
                return
            self._timed_out = True
        logger.warning("client %s: request not received within %s s; dropped", self.client_address, self.timeout)
        try:
            self.connection.shutdown(socket.SHUT_RD)  # a blocked read returns EOF at once
        except OSError:
            pass

    def _mark_received(self) -> None:
        with self._read_lock:
            self._received = True

    def do_POST(self) -> None:
        declared = (self.headers.get("Content-Length") or "").strip()
        self._unread = int(declared) if declared.isdigit() else 0  # drained if answered before it is read
        if self.path.split("?")[0] not in ("/", "/score"):
            self._answer_error(404, f"unknown path {self.path!r}; POST /score (or /)")
            return
        try:
            request = self._read_request()
            scores, extra = self.server.score(request)
        except RequestError as exc:
            self._answer_error(exc.status, str(exc))
            return
        except ScorerUnavailable as exc:
            self._send_error_json(503, f"scorer unavailable: {exc}")
            return
        except Exception as exc:  # the scorer's own failure: report it, keep serving
            logger.error("scorer %s failed:\n%s", self.server.name, traceback.format_exc())
            self._send_error_json(500, f"scorer {self.server.name} failed: {type(exc).__name__}: {exc}")
            return
        if request.pickled:
            body = pickle.dumps({"scores": scores, "outputs": scores, **extra})
            self.send_response(200)
            self.send_header("Content-Type", PICKLE_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._send_json(200, {"protocol": PROTOCOL, "scores": scores_to_json(scores), **extra})

    def _answer_error(self, status: int, message: str) -> None:
        """Answer an error, then drain the unread body (at most DRAIN_MAX_BYTES, within the read timeout) so that
        closing does not reset the connection: the client reads this answer, not a broken pipe."""
        self.close_connection = True
        self._send_error_json(status, message)
        budget = 0 if self._timed_out else min(self._unread, DRAIN_MAX_BYTES)  # a timed-out client is not waited for
        try:
            while budget > 0:
                chunk = self.rfile.read1(min(budget, 1 << 20))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:  # timed out or reset: the connection is closed next anyway
            pass
        self._mark_received()

    def _read_body(self, length: int) -> bytes:
        """Read exactly ``length`` body bytes; RequestError 408 when the read timeout ends it, 400 on early EOF."""
        self._unread = length
        chunks = []
        try:
            while self._unread:
                chunk = self.rfile.read1(min(self._unread, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                self._unread -= len(chunk)
        except TimeoutError:
            self._timed_out = True
        received = length - self._unread
        if self._timed_out:
            raise RequestError(
                408, f"request not received within {self.timeout} s ({received} of {length} body bytes)"
            )
        if self._unread:
            raise RequestError(400, f"body ended after {received} of {length} bytes")
        self._mark_received()
        return b"".join(chunks)

    def _read_request(self) -> ScoreRequest:
        """Read and parse the body (images stay encoded); RequestError(400/408/413) on anything wrong."""
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            raise RequestError(400, "a Content-Length header is required")
        length = int(length_header)
        if length > self.server.max_body_bytes:
            self._unread = length
            raise RequestError(
                413, f"body of {length} bytes is over the limit of {self.server.max_body_bytes} (--max-body-bytes)"
            )
        body = self._read_body(length)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type == PICKLE_CONTENT_TYPE or body[:1] == b"\x80":  # pickle protocol >= 2 starts with PROTO
            if not self.server.allow_pickle:
                raise RequestError(
                    400,
                    "pickled request refused: this server speaks JSON (reward-json/1); start it "
                    "with --allow-pickle for the legacy reward-server protocol",
                )
            return self._parse_pickle(body)
        return self._parse_json(body)

    def _image_bytes(self, images: Any, as_base64: bool) -> list[bytes]:
        """The request's ``images`` -> encoded bytes per image (decoded later, by the scoring worker)."""
        if not isinstance(images, (list, tuple)):
            raise RequestError(400, "'images' must be a list")
        if len(images) > self.server.max_batch:
            raise RequestError(
                413, f"{len(images)} images is over the limit of {self.server.max_batch} per request (--max-batch)"
            )
        out = []
        for i, item in enumerate(images):
            try:
                if as_base64:
                    if not isinstance(item, str):
                        raise ValueError(f"expected a base64 string, got {type(item).__name__}")
                    item = b64decode(item)
                elif not isinstance(item, (bytes, bytearray)):
                    raise ValueError(f"expected image bytes, got {type(item).__name__}")
            except ValueError as exc:
                raise RequestError(400, f"images[{i}]: {exc}") from exc
            out.append(bytes(item))
        return out

    def _parse_json(self, body: bytes) -> ScoreRequest:
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"body is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise RequestError(400, "body must be a JSON object")
        if payload.get("protocol", PROTOCOL) != PROTOCOL:
            raise RequestError(400, f"protocol {payload.get('protocol')!r} is not supported; use {PROTOCOL!r}")
        if payload.get("image_format", "png") not in IMAGE_FORMATS:
            raise RequestError(400, f"image_format must be one of {IMAGE_FORMATS}")
        if "images" not in payload:
            raise RequestError(400, "missing 'images'")
        images = self._image_bytes(payload["images"], as_base64=True)
        prompts, metadata = _check_lists(len(images), payload.get("prompts"), payload.get("metadata"))
        only_strict = payload.get("only_strict")
        if only_strict is not None and not isinstance(only_strict, bool):
            raise RequestError(400, "'only_strict' must be true or false")
        return ScoreRequest(images, prompts, metadata, only_strict, pickled=False)

    def _parse_pickle(self, body: bytes) -> ScoreRequest:
        try:
            payload = restricted_loads(body)
        except UnsafePickleError as exc:
            raise RequestError(400, f"pickled request refused: {exc}") from exc
        except Exception as exc:  # truncated or corrupt pickles raise many types
            raise RequestError(400, f"body is not a readable pickle: {type(exc).__name__}: {exc}") from exc
        if not isinstance(payload, dict) or "images" not in payload:
            raise RequestError(400, "pickled body must be a dict with 'images'")
        images = self._image_bytes(payload["images"], as_base64=False)
        metadata = payload.get("meta_datas", payload.get("metadata"))
        prompts, metadata = _check_lists(len(images), payload.get("prompts"), metadata)
        only_strict = payload.get("only_strict")
        if only_strict is not None and not isinstance(only_strict, (bool, np.bool_)):
            raise RequestError(400, "'only_strict' must be True or False")
        return ScoreRequest(images, prompts, metadata, None if only_strict is None else bool(only_strict), True)


def serve_in_thread(
    scorer: Scorer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_pickle: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    name: str = "scorer",
    **limits: Any,
) -> tuple[RewardServer, str]:
    """Start a :class:`RewardServer` in a daemon thread; returns ``(server, base_url)``.

    ``port=0`` picks a free port; ``limits`` are the server's other keywords (``max_body_bytes``, ``max_pixels``,
    ``read_timeout``, ``batch_images``, ``batch_window``).
    Stop it with ``server.close()`` (or use it as a context manager).
    """
    server = RewardServer((host, port), scorer, allow_pickle=allow_pickle, max_batch=max_batch, name=name, **limits)
    server.start_thread()
    return server, server.url


def load_scorer(spec: str, scorer_kwargs: dict[str, Any] | None = None) -> Scorer:
    """Resolve ``module:attr`` or ``path/to/file.py:attr``; with kwargs, call it once as a factory."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--scorer must look like module:function or file.py:function, got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if scorer_kwargs is not None:
        obj = obj(**scorer_kwargs)
    if not callable(obj):
        raise TypeError(f"{spec} resolved to {obj!r}, which is not callable")
    return obj


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m maskgrpo.rewards.serve --scorer module:function [...]``."""
    parser = argparse.ArgumentParser(prog="python -m maskgrpo.rewards.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scorer", required=True, help="module:function or path/to/file.py:function")
    parser.add_argument(
        "--scorer-kwargs",
        default=None,
        help="JSON object; when given, --scorer names a factory called once with these kwargs",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; others warn)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free port, printed at start)")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also accept the legacy pickle protocol (restricted unpickler, loopback only; UNSAFE "
        "with untrusted peers)",
    )
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most images per request (413)")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="largest request body (413)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest width x height per image (413)")
    parser.add_argument(
        "--read-timeout", type=float, default=READ_TIMEOUT_S, help="seconds to receive one request (then dropped)"
    )
    parser.add_argument(
        "--batch-images",
        type=int,
        default=BATCH_IMAGES,
        help="most images per scorer call when merging concurrent requests (0: one request per call)",
    )
    parser.add_argument(
        "--batch-window",
        type=float,
        default=BATCH_WINDOW_S,
        help="seconds to wait after the oldest queued request for others to merge with",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kwargs = json.loads(args.scorer_kwargs) if args.scorer_kwargs is not None else None
    if kwargs is not None and not isinstance(kwargs, dict):
        parser.error("--scorer-kwargs must be a JSON object")
    scorer = load_scorer(args.scorer, kwargs)
    server = RewardServer(
        (args.host, args.port),
        scorer,
        allow_pickle=args.allow_pickle,
        max_batch=args.max_batch,
        max_body_bytes=args.max_body_bytes,
        max_pixels=args.max_pixels,
        read_timeout=args.read_timeout,
        batch_images=args.batch_images,
        batch_window=args.batch_window,
        name=args.scorer,
    )
    pickle_note = f"; pickle on {server.url}/" if args.allow_pickle else ""
    print(f"serving {args.scorer} on {server.url}/score (health: {server.url}/health{pickle_note})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
