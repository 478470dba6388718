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

Endpoints: ``POST /score`` (``/`` is an alias), ``GET /health``. Scorer calls are serialised by a lock (one model,
one device); ``/health`` still answers while a batch is being scored. The server binds 127.0.0.1 unless ``--host``
says otherwise, and warns then. ``--allow-pickle`` additionally accepts the public reward-server pickle protocol;
``pickle`` is remote code execution for anyone who can reach the port, so the requests are decoded by a restricted
unpickler (numpy arrays only) and pickle is refused on a non-loopback ``--host``.
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

from maskgrpo.rewards.protocol import (
    DEFAULT_MAX_BATCH,
    IMAGE_FORMATS,
    JSON_CONTENT_TYPE,
    MAX_BODY_BYTES,
    PICKLE_CONTENT_TYPE,
    PROTOCOL,
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


class RequestError(ValueError):
    """A request the server rejects, with its HTTP status (400 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ScoreRequest:
    """One decoded request, whichever protocol carried it."""

    images: list[Image.Image]
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
        max_body_bytes: largest request body (413 above).
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
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.scorer = scorer
        self.allow_pickle = allow_pickle
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.name = name
        self.score_lock = threading.Lock()
        self.requests_scored = 0
        self._thread: threading.Thread | None = None
        try:
            params = inspect.signature(scorer).parameters
            self._takes_only_strict = "only_strict" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
            )
        except (TypeError, ValueError):  # builtins and some C callables have no signature
            self._takes_only_strict = False
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:18087`` (POST to it or to ``/score``)."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def score(self, request: ScoreRequest) -> tuple[list[float], dict[str, Any]]:
        """Run the scorer under the lock; validate its answer into (scores, extra keys)."""
        kwargs = (
            {} if request.only_strict is None or not self._takes_only_strict else {"only_strict": request.only_strict}
        )
        with self.score_lock:
            result = self.scorer(request.images, request.prompts, request.metadata, **kwargs)
            self.requests_scored += 1
        extra: dict[str, Any] = {}
        if isinstance(result, Mapping):
            if "scores" not in result:
                raise TypeError(f"scorer returned a mapping without 'scores' (keys {sorted(result)})")
            extra = {k: v for k, v in result.items() if k != "scores"}
            result = result["scores"]
        if isinstance(result, np.ndarray):
            result = result.reshape(-1).tolist()
        scores = [float("nan") if s is None else float(s) for s in result]  # None, like NaN, marks a failed score
        if len(scores) != len(request.images):
            raise ValueError(f"scorer returned {len(scores)} scores for {len(request.images)} images")
        return scores, extra

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
            },
        )

    def do_POST(self) -> None:
        if self.path.split("?")[0] not in ("/", "/score"):
            self._send_error_json(404, f"unknown path {self.path!r}; POST /score (or /)")
            return
        try:
            request = self._read_request()
        except RequestError as exc:
            self.close_connection = True
            self._send_error_json(exc.status, str(exc))
            return
        try:
            scores, extra = self.server.score(request)
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

    def _read_request(self) -> ScoreRequest:
        """Read and decode the body; RequestError(400/413) on anything wrong."""
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.strip().isdigit():
            raise RequestError(400, "a Content-Length header is required")
        length = int(length_header)
        if length > self.server.max_body_bytes:
            raise RequestError(413, f"body of {length} bytes is over the limit of {self.server.max_body_bytes}")
        body = self.rfile.read(length)
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

    def _decode_images(self, images: Any, as_base64: bool) -> list[Image.Image]:
        if not isinstance(images, (list, tuple)):
            raise RequestError(400, "'images' must be a list")
        if len(images) > self.server.max_batch:
            raise RequestError(413, f"{len(images)} images is over the limit of {self.server.max_batch} per request")
        decoded = []
        for i, item in enumerate(images):
            try:
                if as_base64:
                    if not isinstance(item, str):
                        raise ValueError(f"expected a base64 string, got {type(item).__name__}")
                    item = b64decode(item)
                elif not isinstance(item, (bytes, bytearray)):
                    raise ValueError(f"expected image bytes, got {type(item).__name__}")
                decoded.append(decode_image(bytes(item)))
            except ValueError as exc:
                raise RequestError(400, f"images[{i}]: {exc}") from exc
        return decoded

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
        images = self._decode_images(payload["images"], as_base64=True)
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
        images = self._decode_images(payload["images"], as_base64=False)
        metadata = payload.get("meta_datas", payload.get("metadata"))
        prompts, metadata = _check_lists(len(images), payload.get("prompts"), metadata)
        only_strict = payload.get("only_strict")
        return ScoreRequest(images, prompts, metadata, None if only_strict is None else bool(only_strict), True)


def serve_in_thread(
    scorer: Scorer,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_pickle: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    name: str = "scorer",
) -> tuple[RewardServer, str]:
    """Start a :class:`RewardServer` in a daemon thread; returns ``(server, base_url)``.

    ``port=0`` picks a free port. Stop it with ``server.close()`` (or use it as a context manager).
    """
    server = RewardServer((host, port), scorer, allow_pickle=allow_pickle, max_batch=max_batch, name=name)
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
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most images per request")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kwargs = json.loads(args.scorer_kwargs) if args.scorer_kwargs is not None else None
    if kwargs is not None and not isinstance(kwargs, dict):
        parser.error("--scorer-kwargs must be a JSON object")
    scorer = load_scorer(args.scorer, kwargs)
    server = RewardServer(
        (args.host, args.port), scorer, allow_pickle=args.allow_pickle, max_batch=args.max_batch, name=args.scorer
    )
    print(f"serving {args.scorer} on {server.url}/score (health: {server.url}/health)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
