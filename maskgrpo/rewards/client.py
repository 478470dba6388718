"""HTTP clients for reward servers: HPSv3, UnifiedReward, GenEval (partial credit), DeQA, and any custom scorer.

Each client sends the images in requests of at most ``batch_size`` images and ``max_request_bytes`` encoded bytes
(ceil(B / 64) requests by default) and returns the server's raw scores; the YAML ``scale`` turns them into training
rewards (``hpsv3`` and ``unifiedreward``: 0.2 = "/5").

Protocols (:mod:`maskgrpo.rewards.protocol`), each with its own default route:

- ``protocol: json`` (default; ``POST /score``): ``reward-json/1`` with base64 PNG images (``image_format: jpeg``
  to match upstream's JPEG; PNG is the default because JPEG shifts the colours of small toy images). Speaks to
  ``python -m maskgrpo.rewards.serve``.
- ``protocol: pickle`` (``POST /``): the public reward-server (yifan123/reward-server: GenEval, DeQA) and
  MaskGRPO's HPSv3 / UnifiedReward servers, or ``serve --allow-pickle``. JPEG bytes, prompts and metadata as plain
  Python lists and dicts (never numpy, so a numpy-1 server can load a numpy-2 client's pickle). **Unsafe with an
  untrusted peer** (a pickled answer can run code): an explicit opt-in, only for loopback URLs (tunnel other hosts
  through SSH), with a warning, and answers are decoded by a restricted unpickler. The public DeQA server already
  divides by 5 (answers 0-1: ``scale: 1.0``).

A URL without a path gets its protocol's route. A request to the wrong kind of server is recognised from the answer
and named ("this endpoint speaks the pickle protocol: set protocol: pickle").

Failures. Connection errors, timeouts and HTTP 429, 502, 503 and 504 are retried at most ``max_retries`` times with
exponential backoff (``backoff * 2**k`` seconds, or the server's ``Retry-After`` when longer; one wait is at most
:data:`MAX_BACKOFF_S`). Other 4xx (413 included) and 500 (deterministic: the scorer raised) are never retried. A
request that still fails raises :class:`RewardServerError` naming the reward, the URL and the last failure (the
head and the tail of the server's error text, so a traceback keeps its last line). A server's null score comes back
as NaN, which :func:`maskgrpo.rewards.base.score_all` rejects unless the spec sets ``allow_nan: true``; nothing is
ever turned into 0 here.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import pickle
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from maskgrpo.rewards.base import REWARDS, RewardError
from maskgrpo.rewards.protocol import (
    DEFAULT_MAX_BATCH,
    IMAGE_FORMATS,
    JSON_CONTENT_TYPE,
    MAX_BODY_BYTES,
    PICKLE_CONTENT_TYPE,
    PROTOCOL,
    UnsafePickleError,
    b64encode,
    encode_image,
    is_loopback_host,
    restricted_loads,
    scores_from_json,
    url_host,
)

logger = logging.getLogger(__name__)

DEFAULT_ROUTES = {"json": "/score", "pickle": "/"}
"""Route of each protocol: the project's server answers both on both; the public reward-server only ``POST /``."""
PROTOCOLS = tuple(DEFAULT_ROUTES)
MAX_BACKOFF_S = 60.0
"""Longest single wait between retries, a server's ``Retry-After`` included."""
RETRY_STATUSES = {429: "too many requests", 502: "bad gateway", 503: "unavailable", 504: "gateway timeout"}
"""HTTP statuses that are retried (transient by definition); every other non-200 status fails at once."""
ERROR_HEAD_CHARS, ERROR_TAIL_CHARS = 500, 1500
"""How much of a long error body is kept: its start and its end (a traceback's last line names the error)."""


class RewardServerError(RewardError):
    """A reward server request failed for good (after retries where they apply)."""

    def __init__(self, reward: str, url: str, failure: str, attempts: int | None = None) -> None:
        tries = "" if attempts is None else f" ({attempts} attempt{'s' * (attempts != 1)})"
        super().__init__(f"reward {reward!r} at {url}: {failure}{tries}")
        self.reward = reward
        self.url = url
        self.failure = failure
        self.attempts = attempts


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying; ``retry_after`` = the server's Retry-After (s)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """Internal: one attempt failed in a way that retrying cannot fix (4xx, 500)."""


# ------------------------------------------------------------------------------------------------ pure helpers


def plain(value: Any) -> Any:
    """Numpy scalars and arrays -> Python numbers and lists, recursively (tuples become lists).

    Requests carry only builtin types, so any server can read them: JSON cannot hold numpy values, and a pickled
    numpy value names numpy 2's ``numpy._core``, which a numpy-1 server cannot import.
    """
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def with_default_route(url: str, protocol: str) -> str:
    """``http://h:p`` -> ``http://h:p/score`` (json) or ``http://h:p/`` (pickle); a URL with a path is kept."""
    parts = urlsplit(url)
    if parts.path:
        return url
    return urlunsplit(parts._replace(path=DEFAULT_ROUTES[protocol]))


def clip_error_text(text: str, head: int = ERROR_HEAD_CHARS, tail: int = ERROR_TAIL_CHARS) -> str:
    """Keep the first ``head`` and last ``tail`` characters of a long error text, marking the cut."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]} [... {len(text) - head - tail} characters cut ...] {text[-tail:]}"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) -> seconds to wait (>= 0); None if absent/garbled."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def retry_delay(attempt: int, backoff: float, retry_after: float | None) -> float:
    """Wait before retry ``attempt`` (1, 2, ...): ``backoff * 2**(attempt-1)``, or the server's Retry-After when
    longer, at most :data:`MAX_BACKOFF_S`."""
    delay = backoff * 2 ** (attempt - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, MAX_BACKOFF_S)


def _looks_like_html(text: str) -> bool:
    return text.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))


@dataclass(frozen=True)
class _Hint:
    """One rule that recognises a protocol mismatch from a failed answer."""

    protocol: str
    """The client's protocol this rule applies to."""
    statuses: tuple[int, ...]
    """HTTP statuses it applies to (200 = an answer that could not be decoded)."""
    matches: Callable[[str], bool]
    """Predicate on the answer's text."""
    message: str


_SET_PICKLE = "this endpoint speaks the pickle protocol: set protocol: pickle (the public reward-server serves POST /)"
_SET_JSON = (
    "this endpoint speaks the JSON protocol: set protocol: json (python -m maskgrpo.rewards.serve, POST /score)"
)
PROTOCOL_HINTS = (
    _Hint("json", (404, 405), _looks_like_html, _SET_PICKLE),  # Flask's HTML 404 for /score: the public server
    _Hint("json", (400, 500), lambda t: "invalid load key" in t or "UnpicklingError" in t, _SET_PICKLE),
    _Hint("pickle", (400,), lambda t: "speaks JSON" in t or "body is not JSON" in t, _SET_JSON),
    _Hint("pickle", (200,), lambda t: t.lstrip().startswith("{"), _SET_JSON),
    _Hint(
        "pickle",
        (404, 405),
        _looks_like_html,
        "the public reward-server serves POST / only: use url http://HOST:PORT/",
    ),
    _Hint(
        "pickle",
        (500,),
        lambda t: "cannot identify image file" in t,
        "the public reward-server opens JPEG only: use image_format: jpeg (the pickle default)",
    ),
)
"""Rules for :func:`protocol_hint`, first match wins."""


def protocol_hint(protocol: str, status: int, text: str) -> str | None:
    """What to change when an answer shows the client spoke the wrong protocol (or route), else None."""
    for hint in PROTOCOL_HINTS:
        if hint.protocol == protocol and status in hint.statuses and hint.matches(text):
            return hint.message
    return None


# ------------------------------------------------------------------------------------------------ the client


@dataclass
class RemoteReward:
    """A :class:`~maskgrpo.rewards.base.RewardFn` that asks an HTTP reward server.

    ``__call__(images (B, H, W, 3) uint8, prompts [B], metadata [B]) -> (B,) float64`` raw scores, NaN where the
    server answered null (or NaN, in pickle).
    """

    name: str
    """Reward name, used in error messages."""
    url: str
    """Endpoint, e.g. ``http://127.0.0.1:18087/score``; without a path, the protocol's route is added."""
    protocol: str = "json"
    """``json`` (default, ``/score``) or ``pickle`` (the public reward-server, ``/``; loopback only)."""
    image_format: str | None = None
    """``png`` or ``jpeg``; default png for json, jpeg for pickle (what upstream servers expect)."""
    timeout: float = 120.0
    """Seconds per request (connect and each read)."""
    max_retries: int = 5
    """Retries after the first attempt, for connection errors, timeouts and HTTP 429/502/503/504 only."""
    backoff: float = 1.0
    """Base of the exponential backoff: the k-th retry (k = 0, 1, ...) waits ``backoff * 2**k`` s, or the server's
    ``Retry-After`` when longer, at most 60 s."""
    batch_size: int = DEFAULT_MAX_BATCH
    """Most images per request."""
    max_request_bytes: int = MAX_BODY_BYTES
    """Most encoded bytes per request (the server answers 413 above its limit, 64 MiB by default)."""
    send_prompts: bool = True
    """Include the prompts (HPSv3, UnifiedReward)."""
    send_metadata: bool = False
    """Include the per-image metadata (GenEval: ``metadata`` in JSON, ``meta_datas`` in pickle)."""
    only_strict: bool | None = None
    """GenEval's ``only_strict`` flag, always sent when set (MaskGRPO sends True and uses ``scores``); None = a
    server without the flag."""
    score_key: str = "scores"
    """Response key holding the scores (upstream DeQA pickle answers use ``outputs``)."""
    required_metadata: tuple[str, ...] = ()
    """Metadata keys each prompt must carry for this server (GenEval: ``tag``, ``include``)."""
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"reward {self.name!r}: protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.image_format is None:
            self.image_format = "png" if self.protocol == "json" else "jpeg"
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"reward {self.name!r}: image_format must be one of {IMAGE_FORMATS}")
        if not (
            self.timeout > 0
            and self.backoff >= 0
            and self.max_retries >= 0
            and self.batch_size >= 1
            and self.max_request_bytes >= 1024
        ):
            raise ValueError(
                f"reward {self.name!r}: need timeout > 0, backoff >= 0, max_retries >= 0, batch_size >= 1, "
                f"max_request_bytes >= 1024; got {self.timeout}, {self.backoff}, {self.max_retries}, "
                f"{self.batch_size}, {self.max_request_bytes}"
            )
        if self.only_strict is not None and not isinstance(self.only_strict, bool):
            raise ValueError(f"reward {self.name!r}: only_strict must be true or false, got {self.only_strict!r}")
        loopback = is_loopback_host(url_host(self.url))
        self.url = with_default_route(self.url, self.protocol)
        if self.protocol == "pickle":
            if not loopback:
                raise ValueError(
                    f"reward {self.name!r}: protocol 'pickle' is loopback only (a pickled answer can "
                    f"run code); got {self.url}. Use json, or an SSH tunnel to a trusted host."
                )
            warnings.warn(
                f"reward {self.name!r} uses the legacy pickle protocol with {self.url}: the server is "
                "trusted fully; use protocol: json where you can",
                UserWarning,
                stacklevel=3,
            )
        # Reward servers live on this machine or the cluster network; environment proxies never apply to loopback.
        handlers = [urllib.request.ProxyHandler({})] if loopback else []
        self._opener = urllib.request.build_opener(*handlers)

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"reward {self.name!r}: images must be (B, H, W, 3) uint8, got {images.shape} {images.dtype}"
            )
        if len(prompts) != len(images) or len(metadata) != len(images):
            raise ValueError(
                f"reward {self.name!r}: {len(images)} images, {len(prompts)} prompts, {len(metadata)} metadata entries"
            )
        encoded = [encode_image(image, self.image_format) for image in images]
        prompts, metadata = [str(p) for p in prompts], plain(list(metadata))
        scores = []
        pending = self._chunks(encoded, prompts, metadata)  # [(start, stop)] in order
        while pending:
            start, stop = pending.pop(0)
            body, content_type = self._encode(encoded[start:stop], prompts[start:stop], metadata[start:stop])
            if len(body) > self.max_request_bytes:
                if stop - start == 1:  # one image alone: splitting cannot help
                    raise RewardServerError(
                        self.name,
                        self.url,
                        f"image {start} alone makes a request of {len(body)} bytes, over max_request_bytes="
                        f"{self.max_request_bytes} (the server's body limit); send smaller images",
                    )
                middle = (start + stop) // 2  # the size estimate was short: halve the run
                pending[:0] = [(start, middle), (middle, stop)]
                continue
            scores.append(self._decode(self._post(body, content_type), stop - start))
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)  # (B,)

    def _chunks(self, encoded: list[bytes], prompts: list[str], metadata: list) -> list[tuple[int, int]]:
        """Split [0, B) into (start, stop) runs of at most ``batch_size`` images and ``max_request_bytes``.

        Greedy on an estimate of each item's share of the body (base64 grows 4/3; prompts and metadata as JSON,
        doubled for metadata); :meth:`__call__` still measures every body and halves a run that is over.
        """
        runs: list[tuple[int, int]] = []
        start, used = 0, 1024  # 1 KiB for the envelope (protocol, image_format, only_strict, pickle framing)
        for i, data in enumerate(encoded):
            cost = 4 * (len(data) // 3 + 1) + 8
            cost += len(json.dumps(prompts[i])) + 16 if self.send_prompts else 0
            cost += len(json.dumps(metadata[i])) * 2 if self.send_metadata else 0
            if i > start and (i - start >= self.batch_size or used + cost > self.max_request_bytes):
                runs.append((start, i))
                start, used = i, 1024
            used += cost
        if encoded:
            runs.append((start, len(encoded)))
        return runs

    def _encode(self, images: list[bytes], prompts: list[str], metadata: list) -> tuple[bytes, str]:
        """One request's images (encoded), prompts and metadata -> (request body, content type)."""
        if self.protocol == "pickle":  # plain Python only: any numpy on the server can load it
            payload: dict[str, Any] = {"images": images}
            if self.send_prompts:
                payload["prompts"] = prompts
            if self.send_metadata:
                payload["meta_datas"] = metadata
            if self.only_strict is not None:
                payload["only_strict"] = self.only_strict
            return pickle.dumps(payload), PICKLE_CONTENT_TYPE
        payload = {"protocol": PROTOCOL, "images": [b64encode(b) for b in images], "image_format": self.image_format}
        if self.send_prompts:
            payload["prompts"] = prompts
        if self.send_metadata:
            payload["metadata"] = metadata
        if self.only_strict is not None:
            payload["only_strict"] = self.only_strict
        return json.dumps(payload).encode("utf-8"), JSON_CONTENT_TYPE

    def _decode(self, body: bytes, expected: int) -> np.ndarray:
        """Response body -> (expected,) float64 with NaN for null; RewardServerError if malformed."""
        try:
            if self.protocol == "pickle":
                payload = restricted_loads(body)
            else:
                payload = json.loads(body.decode("utf-8"))
            if not isinstance(payload, dict) or self.score_key not in payload:
                keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
                raise ValueError(f"response has no {self.score_key!r} (got {keys})")
            return scores_from_json(payload[self.score_key], expected)
        except (UnsafePickleError, ValueError, UnicodeDecodeError, pickle.UnpicklingError, EOFError) as exc:
            text = body[:2000].decode("utf-8", errors="replace")
            hint = protocol_hint(self.protocol, 200, text)
            failure = f"{hint} (answer: {clip_error_text(text)})" if hint else f"malformed response: {exc}"
            raise RewardServerError(self.name, self.url, failure) from exc

    def _attempt(self, body: bytes, content_type: str) -> bytes:
        """One POST. Returns the body on 200, raises _Retryable or _Fatal otherwise."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": content_type})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            text = _error_text(exc)
            hint = protocol_hint(self.protocol, exc.code, text)
            failure = f"HTTP {exc.code}: {clip_error_text(text)}"
            if hint is not None:
                raise _Fatal(f"{hint} ({failure})") from exc
            if exc.code in RETRY_STATUSES:
                raise _Retryable(failure, retry_after_seconds(exc.headers.get("Retry-After"))) from exc
            raise _Fatal(failure) from exc
        except urllib.error.URLError as exc:  # connection refused, DNS, connect timeout, reset while sending
            raise _Retryable(f"connection error: {exc.reason}") from exc
        except TimeoutError as exc:  # read timeout (socket.timeout is TimeoutError)
            raise _Retryable(f"timed out after {self.timeout} s") from exc
        except (ConnectionError, http.client.HTTPException) as exc:  # reset, remote closed, truncated answer
            raise _Retryable(f"connection error: {type(exc).__name__}: {exc}") from exc

    def _post(self, body: bytes, content_type: str) -> bytes:
        """POST with bounded retries for transient failures (connection, timeout, 429/502/503/504)."""
        last = _Retryable("no attempt made")
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                delay = retry_delay(attempt, self.backoff, last.retry_after)
                logger.warning(
                    "reward %s at %s: %s; retry %d/%d in %.2f s",
                    self.name,
                    self.url,
                    last,
                    attempt,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
            try:
                return self._attempt(body, content_type)
            except _Retryable as exc:
                last = exc
            except _Fatal as exc:
                raise RewardServerError(self.name, self.url, str(exc), attempts=attempt + 1) from exc.__cause__
        raise RewardServerError(self.name, self.url, f"gave up; last failure: {last}", attempts=attempts)


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The server's ``{"error": ...}`` message, else the whole body as text, else the reason phrase."""
    try:
        raw = exc.read()
    except Exception:  # the body of an error response is best effort
        raw = b""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
        if isinstance(payload, dict) and "error" in payload:
            return str(payload["error"])
    except ValueError:
        pass
    return text or str(exc.reason)


# ------------------------------------------------------------------------------------------------ registered entries


def _remote_entry(
    name: str, required_metadata: tuple[str, ...] = ()
) -> Callable[[Callable[..., RemoteReward]], Callable[..., RemoteReward]]:
    """Register a factory under ``name``, marked as an HTTP client (``python -m maskgrpo.rewards.check``) and with
    the metadata keys its server reads from each prompt (as the ShapesWorld rewards declare theirs)."""

    def register(factory: Callable[..., RemoteReward]) -> Callable[..., RemoteReward]:
        factory.remote = True  # type: ignore[attr-defined]
        factory.required_metadata = required_metadata  # type: ignore[attr-defined]
        return REWARDS.register(name)(factory)

    return register


def is_remote_entry(factory: Callable[..., Any]) -> bool:
    """True for the registered factories that build a :class:`RemoteReward`."""
    return bool(getattr(factory, "remote", False))


def _default_url(url: str | None, port: int, protocol: str) -> str:
    """The given URL, or the loopback default of ``port`` with the protocol's route."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return url if url is not None else f"http://127.0.0.1:{port}{DEFAULT_ROUTES[protocol]}"


_TIMEOUT_S = 120.0  # MaskGRPO's clients: 120 s (UnifiedReward: 60 s)
_RETRIES = 5


@_remote_entry("hpsv3")
def hpsv3(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    max_request_bytes: int = MAX_BODY_BYTES,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """HPSv3 preference score (mu of (mu, sigma), about 8-13), port 18087 by default. Train with ``scale: 0.2``."""
    return RemoteReward(
        name="hpsv3",
        url=_default_url(url, 18087, protocol),
        protocol=protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        max_request_bytes=max_request_bytes,
        send_prompts=True,
    )


@_remote_entry("unifiedreward")
def unifiedreward(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = 60.0,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    max_request_bytes: int = MAX_BODY_BYTES,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """UnifiedReward-qwen-7b judge score (1-5), port 18088 by default. Train with ``scale: 0.2``."""
    return RemoteReward(
        name="unifiedreward",
        url=_default_url(url, 18088, protocol),
        protocol=protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        max_request_bytes=max_request_bytes,
        send_prompts=True,
    )


GENEVAL_METADATA = ("tag", "include")
"""Metadata keys the GenEval server reads from each prompt (``exclude`` is optional)."""


@_remote_entry("geneval", GENEVAL_METADATA)
def geneval(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    max_request_bytes: int = MAX_BODY_BYTES,
    only_strict: bool = True,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """GenEval partial-credit reward (the response's ``scores``, <= 1), port 18085 by default; sends the metadata
    and always ``only_strict`` (a boolean: the public server reads the key unconditionally)."""
    if not isinstance(only_strict, bool):
        raise TypeError(f"reward 'geneval': only_strict must be true or false, got {only_strict!r}")
    return RemoteReward(
        name="geneval",
        url=_default_url(url, 18085, protocol),
        protocol=protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        max_request_bytes=max_request_bytes,
        send_prompts=False,
        send_metadata=True,
        only_strict=only_strict,
        required_metadata=GENEVAL_METADATA,
    )


@_remote_entry("deqa")
def deqa(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    max_request_bytes: int = MAX_BODY_BYTES,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """DeQA-Score quality in 0-1 (the model's 1-5 divided by 5 by the server: train with ``scale: 1.0``), port
    18086 by default; images only. The public pickle server answers ``outputs``, the JSON server ``scores``."""
    return RemoteReward(
        name="deqa",
        url=_default_url(url, 18086, protocol),
        protocol=protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        max_request_bytes=max_request_bytes,
        send_prompts=False,
        score_key="outputs" if protocol == "pickle" else "scores",
    )


@_remote_entry("http")
def http_reward(
    url: str,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    max_request_bytes: int = MAX_BODY_BYTES,
    send_prompts: bool = True,
    send_metadata: bool = True,
    score_key: str = "scores",
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """Any scorer behind ``python -m maskgrpo.rewards.serve`` (``url`` required), e.g.
    ``aesthetic: {entry: http, url: "http://127.0.0.1:18090/score", scale: 0.1}``."""
    return RemoteReward(
        name="http",
        url=url,
        protocol=protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        max_request_bytes=max_request_bytes,
        send_prompts=send_prompts,
        send_metadata=send_metadata,
        score_key=score_key,
    )
