"""HTTP clients for reward servers: HPSv3, UnifiedReward, GenEval (partial credit), DeQA, and any custom scorer.

Every remote reward is one row of :data:`REMOTE_REWARDS` (server port, protocol, what it sends, scale semantics,
timeouts); :func:`remote_factory` turns a row into the registered factory, so the five entries share one signature
and one set of options. Each client sends the images in requests of at most ``batch_size`` images and
``max_request_bytes`` encoded bytes and returns the server's raw scores; the YAML ``scale`` turns them into training
rewards (``hpsv3`` and ``unifiedreward``: 0.2 = "/5").

Protocols (:mod:`maskgrpo.rewards.protocol`), each with its own default route:

- ``protocol: json`` (``POST /score``): ``reward-json/1`` with base64 PNG images (``image_format: jpeg`` to match
  upstream's JPEG; PNG is the default because JPEG shifts the colours of small toy images). Speaks to
  ``python -m maskgrpo.rewards.serve``; the default of ``hpsv3``, ``unifiedreward`` and ``http``.
- ``protocol: pickle`` (``POST /``): the public reward-server (yifan123/reward-server: GenEval, DeQA; the default of
  ``geneval`` and ``deqa``, whose only server it is) and MaskGRPO's HPSv3 / UnifiedReward servers, or
  ``serve --allow-pickle``. JPEG bytes, prompts and metadata as plain Python lists and dicts (never numpy, so a
  numpy-1 server can load a numpy-2 client's pickle). **Unsafe with an untrusted peer** (a pickled answer can run
  code): loopback URLs only (tunnel other hosts through SSH), with a warning, and answers are decoded by a
  restricted unpickler. The public DeQA server already divides by 5 (answers 0-1: ``scale: 1.0``).

A URL without a path gets its protocol's route. A request to the wrong kind of server is recognised from the answer
and named ("this endpoint speaks the pickle protocol: set protocol: pickle"). Every error message is one line.

Failures, by kind:

- **Outage** (connection refused or reset, a read or connect timeout, HTTP 502, 503, 504): the server is down or
  restarting. The client re-sends the request with capped exponential backoff until the outage has lasted
  ``max_outage_s`` (the run's ``reward.max_outage_s``, 600 s by default), logging one line when it starts, at most
  one per minute while it lasts and one when the server answers again; past the limit it raises
  :class:`RewardOutageError`. Re-sending is safe: scoring is idempotent (the same images, prompts and metadata get
  the same scores), and the client keeps exactly one answer per image, so a request the server had received before
  it died is neither lost nor counted twice.
- **Busy** (HTTP 429): retried at most ``max_retries`` times, each wait ``backoff * 2**k`` s or the server's
  ``Retry-After`` when longer, at most :data:`MAX_BACKOFF_S`, one warning line per retry; then
  :class:`RewardServerError`.
- **Everything else fails at once** with :class:`RewardServerError` naming the reward, the URL and the failure:
  other 4xx (413 included), 500 (the scorer raised: retrying cannot help), a malformed answer, a wrong number of
  scores. A long error body keeps its head and tail (a traceback keeps its last line).

A server's null score comes back as NaN, which :func:`maskgrpo.rewards.base.score_all` rejects unless the spec sets
``allow_nan: true``; nothing is ever turned into 0 here.

The per-request read timeout follows the request: ``timeout + timeout_per_image * images`` seconds (a fixed number
would be too short for a 64-image request or too long to notice a dead server behind an 8-image one).
"""

from __future__ import annotations

import email.utils
import http.client
import inspect
import json
import logging
import math
import pickle
import re
import time
import typing
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
"""Longest single wait between retries of a busy (429) server, its ``Retry-After`` included."""
DEFAULT_MAX_OUTAGE_S = 600.0
"""How long a client waits for a server that stopped answering, when neither the entry nor the run says
(``reward.max_outage_s`` in the training config)."""
MAX_OUTAGE_WAIT_S = 15.0
"""Longest single wait between two attempts during an outage: a restarted server is found within 15 s."""
MIN_OUTAGE_WAIT_S = 0.05
"""Shortest wait between two attempts during an outage (``backoff: 0`` must not spin)."""
OUTAGE_REPORT_EVERY_S = 60.0
"""Seconds between two "still unreachable" lines of one outage (a module constant so tests can shorten it)."""
OUTAGE_STATUSES = {502: "bad gateway", 503: "unavailable", 504: "gateway timeout"}
"""HTTP statuses that mean the scorer is not there (a proxy without its backend, a server still loading)."""
BUSY_STATUSES = {429: "too many requests"}
"""HTTP statuses that mean the server is up but asks to come back later (bounded by ``max_retries``)."""
ERROR_HEAD_CHARS, ERROR_TAIL_CHARS = 500, 1500
"""How much of a long error body is kept: its start and its end (a traceback's last line names the error)."""


class RewardServerError(RewardError):
    """A reward server request failed for good: an answer retrying cannot fix, or a busy server past
    ``max_retries``. The message is one line."""

    def __init__(self, reward: str, url: str, failure: str, attempts: int | None = None) -> None:
        failure = one_line_text(failure)
        tries = "" if attempts is None else f" ({attempts} attempt{'s' * (attempts != 1)})"
        super().__init__(f"reward {reward!r} at {url}: {failure}{tries}")
        self.reward = reward
        self.url = url
        self.failure = failure
        self.attempts = attempts


class RewardOutageError(RewardError):
    """A reward server stayed unreachable (refused, reset, timed out, 502/503/504) for longer than ``max_outage_s``.

    The trainer catches it to checkpoint and stop. The message is one line naming the reward, the URL, how long the
    outage lasted and the last failure.
    """

    def __init__(self, reward: str, url: str, outage_s: float, limit_s: float, failure: str, attempts: int) -> None:
        failure = one_line_text(failure)
        super().__init__(
            f"reward {reward!r}: server {url} unreachable for {seconds_text(outage_s)} s "
            f"(max_outage_s {limit_s:g} s); last failure: {failure} ({attempts} attempt{'s' * (attempts != 1)})"
        )
        self.reward = reward
        self.url = url
        self.outage_s = outage_s
        self.limit_s = limit_s
        self.failure = failure
        self.attempts = attempts


class _Outage(Exception):
    """Internal: one attempt found no scorer (transport failure, 502/503/504); ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Busy(_Outage):
    """Internal: the server answered 429 (up, but asks to come back later)."""


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


_TAG = re.compile(r"<[^>]*>")


def _looks_like_html(text: str) -> bool:
    return text.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))


def one_line_text(text: str) -> str:
    """Any error text on one line: an HTML page reduced to its text, lines stripped and joined with `` | ``."""
    if _looks_like_html(text):
        text = _TAG.sub("\n", text)
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def seconds_text(seconds: float) -> str:
    """``0.4`` -> ``"0.4"``, ``62.3`` -> ``"62"``: tenths below 10 s, whole seconds above (log lines, errors)."""
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


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


def retry_delay(attempt: int, backoff: float, retry_after: float | None, cap: float = MAX_BACKOFF_S) -> float:
    """Wait before retry ``attempt`` (1, 2, ...): ``backoff * 2**(attempt-1)``, or the server's Retry-After when
    longer, at most ``cap`` seconds."""
    delay = backoff * 2 ** min(attempt - 1, 60)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)


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


def transport_reason(exc: BaseException) -> str:
    """A short name for a transport failure: ``connection refused``, ``connection reset``, ...

    ``urllib`` wraps socket errors in ``URLError(reason)``; ``http.client`` raises its own when a peer closes early.
    """
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return f"connection error: {type(reason).__name__}: {reason}" if isinstance(reason, Exception) else str(reason)


# ------------------------------------------------------------------------------------------------ the client


@dataclass
class RemoteReward:
    """A :class:`~maskgrpo.rewards.base.RewardFn` that asks an HTTP reward server.

    ``__call__(images (B, H, W, 3) uint8, prompts [B], metadata [B]) -> (B,) float64`` raw scores, NaN where the
    server answered null (or NaN, in pickle). The fields below ``url`` are the options of every remote reward entry.
    """

    name: str
    """Reward name, used in error messages and log lines."""
    url: str
    """Endpoint, e.g. ``http://127.0.0.1:18087/score``; without a path, the protocol's route is added."""
    protocol: str = "json"
    """``json`` (``/score``) or ``pickle`` (the public reward-server, ``/``; loopback only)."""
    image_format: str | None = None
    """``png`` or ``jpeg``; default png for json, jpeg for pickle (what upstream servers expect)."""
    timeout: float = 60.0
    """Read timeout of a request, seconds: this base plus ``timeout_per_image`` per image in the request."""
    timeout_per_image: float = 1.0
    """Seconds added to ``timeout`` per image of a request (a 64-image request may take 64 times longer)."""
    max_retries: int = 5
    """Retries of a busy server (HTTP 429) after the first attempt; outages are bounded by ``max_outage_s``."""
    backoff: float = 1.0
    """Base of the exponential backoff: the k-th retry (k = 0, 1, ...) waits ``backoff * 2**k`` s (429: or the
    server's ``Retry-After`` when longer, at most 60 s; outages: at most 15 s)."""
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S
    """How long the server may stay unreachable (refused, reset, timed out, 502/503/504) before the request fails
    with :class:`RewardOutageError`; 0 = at the first such failure. The entry's value, else ``reward.max_outage_s``."""
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
    """Metadata keys each prompt must carry for this server (GenEval: ``tag``, ``include``, ``prompt``)."""
    prompt_in_metadata: bool = False
    """Copy each prompt into its metadata as ``prompt`` where absent (the GenEval server reads it there)."""
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
            and self.timeout_per_image >= 0
            and self.backoff >= 0
            and self.max_retries >= 0
            and self.max_outage_s >= 0
            and self.batch_size >= 1
            and self.max_request_bytes >= 1024
        ):
            raise ValueError(
                f"reward {self.name!r}: need timeout > 0, timeout_per_image >= 0, backoff >= 0, max_retries >= 0, "
                f"max_outage_s >= 0, batch_size >= 1, max_request_bytes >= 1024; got {self.timeout}, "
                f"{self.timeout_per_image}, {self.backoff}, {self.max_retries}, {self.max_outage_s}, "
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
                "trusted fully; use protocol: json where the server speaks it",
                UserWarning,
                stacklevel=3,
            )
        # Reward servers live on this machine or the cluster network; environment proxies never apply to loopback.
        handlers = [urllib.request.ProxyHandler({})] if loopback else []
        self._opener = urllib.request.build_opener(*handlers)

    def request_timeout(self, images: int) -> float:
        """Read timeout of one request of ``images`` images: ``timeout + timeout_per_image * images`` seconds."""
        return self.timeout + self.timeout_per_image * images

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
        if self.prompt_in_metadata:
            metadata = [m if "prompt" in m else {**m, "prompt": p} for m, p in zip(metadata, prompts)]
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
            scores.append(self._decode(self._post(body, content_type, stop - start), stop - start))
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
            failure = (
                f"{hint} (answer: {clip_error_text(one_line_text(text))})" if hint else f"malformed response: {exc}"
            )
            raise RewardServerError(self.name, self.url, failure) from exc

    def _attempt(self, body: bytes, content_type: str, timeout: float) -> bytes:
        """One POST. Returns the body on 200, raises _Outage, _Busy or _Fatal otherwise."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": content_type})
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            text = _error_text(exc)
            hint = protocol_hint(self.protocol, exc.code, text)
            failure = f"HTTP {exc.code}: {clip_error_text(one_line_text(text))}"
            if hint is not None:
                raise _Fatal(f"{hint} ({failure})") from exc
            retry_after = retry_after_seconds(exc.headers.get("Retry-After"))
            if exc.code in BUSY_STATUSES:
                raise _Busy(failure, retry_after) from exc
            if exc.code in OUTAGE_STATUSES:
                raise _Outage(failure, retry_after) from exc
            raise _Fatal(failure) from exc
        except urllib.error.URLError as exc:  # connection refused, DNS, connect timeout, reset while sending
            raise _Outage(transport_reason(exc)) from exc
        except TimeoutError as exc:  # read timeout (socket.timeout is TimeoutError)
            raise _Outage(f"no answer within {timeout:g} s") from exc
        except (ConnectionError, http.client.HTTPException) as exc:  # reset, remote closed, truncated answer
            raise _Outage(transport_reason(exc)) from exc

    def _post(self, body: bytes, content_type: str, images: int) -> bytes:
        """POST until answered: an outage is waited out up to ``max_outage_s``, a busy server is retried
        ``max_retries`` times, anything else raises at once (module docstring)."""
        timeout = self.request_timeout(images)
        attempts, busy_retries = 0, 0
        outage: _OutageClock | None = None
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                answer = self._attempt(body, content_type, timeout)
            except _Fatal as exc:
                raise RewardServerError(self.name, self.url, str(exc), attempts=attempts) from exc.__cause__
            except _Busy as exc:
                if outage is not None:  # a 429 is an answer: the outage is over
                    outage.ended(self)
                    outage = None
                if busy_retries >= self.max_retries:
                    raise RewardServerError(
                        self.name, self.url, f"gave up; last failure: {exc}", attempts=attempts
                    ) from exc.__cause__
                busy_retries += 1
                delay = retry_delay(busy_retries, self.backoff, exc.retry_after)
                logger.warning(
                    "reward %s at %s: %s; retry %d/%d in %.2f s",
                    self.name,
                    self.url,
                    exc,
                    busy_retries,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
                continue
            except _Outage as exc:
                if outage is None:
                    outage = _OutageClock(started)
                delay = outage.failed(self, exc, attempts)  # raises RewardOutageError past max_outage_s
                time.sleep(delay)
                continue
            if outage is not None:
                outage.ended(self)
            return answer


@dataclass
class _OutageClock:
    """One outage of one request: when it started, how often it failed, when it was last reported."""

    start: float
    """time.monotonic() at the start of the first failed attempt."""
    failures: int = 0
    last_report: float | None = None
    last_failure: str = ""

    def failed(self, client: RemoteReward, failure: _Outage, attempts: int) -> float:
        """Record a failed attempt: raise RewardOutageError past the limit, else log (at most once per
        :data:`OUTAGE_REPORT_EVERY_S`) and return the seconds to wait before the next attempt."""
        now = time.monotonic()
        self.failures += 1
        self.last_failure = one_line_text(str(failure))
        elapsed = now - self.start
        limit = client.max_outage_s
        if elapsed >= limit:
            raise RewardOutageError(client.name, client.url, elapsed, limit, self.last_failure, attempts)
        if self.last_report is None:
            logger.warning(
                "reward %s: server %s unreachable (%s); waiting up to %g s",
                client.name,
                client.url,
                self.last_failure,
                limit,
            )
            self.last_report = now
        elif now - self.last_report >= OUTAGE_REPORT_EVERY_S:
            logger.warning(
                "reward %s: server %s unreachable for %s s (%s); waiting up to %g s",
                client.name,
                client.url,
                seconds_text(elapsed),
                self.last_failure,
                limit,
            )
            self.last_report = now
        delay = retry_delay(self.failures, client.backoff, failure.retry_after, cap=MAX_OUTAGE_WAIT_S)
        return min(max(delay, MIN_OUTAGE_WAIT_S), max(limit - elapsed, 0.0))

    def ended(self, client: RemoteReward) -> None:
        """The server answered again: one line (the request is re-sent as it was; nothing was scored twice)."""
        logger.warning(
            "reward %s: server %s answers again after %s s unreachable (%d failed attempt%s); continuing",
            client.name,
            client.url,
            seconds_text(time.monotonic() - self.start),
            self.failures,
            "s" * (self.failures != 1),
        )


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


@dataclass(frozen=True)
class RemoteEntry:
    """One registered remote reward: where its server listens and how its client differs from the defaults."""

    name: str
    """Registry name (the ``rewards:`` key)."""
    what: str
    """What the score is, its raw range and training scale (the factory's docstring)."""
    port: int | None
    """Loopback port of the default URL; None = ``url`` is required."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """:class:`RemoteReward` field values of this entry: the default of a user option (``protocol``,
    ``timeout_per_image``, ...), fixed otherwise (``send_metadata``, ``required_metadata``, ...)."""
    options: tuple[str, ...] = ()
    """Options users may set beyond :data:`COMMON_OPTIONS` (``only_strict`` for GenEval, ...)."""
    score_keys: Mapping[str, str] = field(default_factory=dict)
    """Response key of the scores under a protocol, where it is not ``scores`` (DeQA's pickle: ``outputs``)."""


COMMON_OPTIONS = (
    "url",
    "protocol",
    "image_format",
    "timeout",
    "timeout_per_image",
    "max_retries",
    "backoff",
    "max_outage_s",
    "batch_size",
    "max_request_bytes",
)
"""Options every remote reward takes (fields of :class:`RemoteReward`)."""

GENEVAL_METADATA = ("tag", "include", "prompt")
"""Metadata keys the GenEval server reads from each prompt (``exclude`` is optional; ``prompt`` is filled in from the
caption when absent)."""

REMOTE_REWARDS: dict[str, RemoteEntry] = {
    entry.name: entry
    for entry in (
        RemoteEntry(
            "hpsv3",
            "HPSv3 preference score (mu of (mu, sigma), about 8-13); train with ``scale: 0.2``.",
            port=18087,
        ),
        RemoteEntry(
            "unifiedreward",
            "UnifiedReward-qwen-7b judge score (1-5); train with ``scale: 0.2``. Up to 256 generated tokens per "
            "image: 3 s per image on top of the base timeout.",
            port=18088,
            settings={"timeout_per_image": 3.0},
        ),
        RemoteEntry(
            "geneval",
            "GenEval partial credit (the answer's ``scores``, <= 1) from the public reward-server (pickle on ``/``); "
            "sends the metadata (``tag``, ``include``, ``prompt``) and always ``only_strict`` (a boolean: the public "
            "server reads the key unconditionally).",
            port=18085,
            settings={
                "protocol": "pickle",
                "send_prompts": False,
                "send_metadata": True,
                "only_strict": True,
                "required_metadata": GENEVAL_METADATA,
                "prompt_in_metadata": True,
            },
            options=("only_strict",),
        ),
        RemoteEntry(
            "deqa",
            "DeQA-Score quality in 0-1 (the model's 1-5 divided by 5 by the server: train with ``scale: 1.0``) from "
            "the public reward-server (pickle on ``/``, answers ``outputs``); images only.",
            port=18086,
            settings={"protocol": "pickle", "send_prompts": False},
            score_keys={"pickle": "outputs"},
        ),
        RemoteEntry(
            "http",
            "Any scorer behind ``python -m maskgrpo.rewards.serve`` (``url`` required), e.g. "
            '``aesthetic: {entry: http, url: "http://127.0.0.1:18090/score", scale: 0.1}``.',
            port=None,
            settings={"send_metadata": True},
            options=("send_prompts", "send_metadata", "score_key"),
        ),
    )
}
"""Every remote reward, by registry name: one row each, one factory builder (:func:`remote_factory`)."""

_FIELD_DEFAULTS = {f.name: f.default for f in RemoteReward.__dataclass_fields__.values() if f.init}
_OPTION_TYPES: dict[str, Any] = {
    **typing.get_type_hints(RemoteReward),
    "url": str | None,
    "max_outage_s": float | None,
    "only_strict": bool,  # the public GenEval server reads the key unconditionally: null is refused
}
"""Annotation of each option (what ``build_rewards`` checks YAML values against)."""


def remote_factory(entry: RemoteEntry) -> Callable[..., RemoteReward]:
    """The registered factory of one :data:`REMOTE_REWARDS` row.

    Its signature lists the entry's options with their defaults and types (so ``build_rewards`` names a typo or a
    wrongly typed value), plus ``device`` and ``context``. ``url`` defaults to ``http://127.0.0.1:PORT`` + the
    protocol's route; ``max_outage_s: null`` takes ``context["max_outage_s"]`` (the run's ``reward.max_outage_s``),
    else :data:`DEFAULT_MAX_OUTAGE_S`.
    """
    fixed = {**_FIELD_DEFAULTS, **entry.settings, "url": None, "max_outage_s": None}
    del fixed["name"]
    names = (*COMMON_OPTIONS, *entry.options)
    required = {"url"} if entry.port is None else set()

    def factory(*, device: Any = None, context: dict | None = None, **options: Any) -> RemoteReward:
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"reward {entry.name!r}: unknown option(s) {unknown}; valid options: {sorted(names)}")
        if required - set(options):
            raise TypeError(f"reward {entry.name!r}: option 'url' is required")
        values = {**fixed, **options}
        if "only_strict" in entry.options and not isinstance(values["only_strict"], bool):
            raise TypeError(f"reward {entry.name!r}: only_strict must be true or false, got {values['only_strict']!r}")
        if values["protocol"] not in PROTOCOLS:
            raise ValueError(f"reward {entry.name!r}: protocol must be one of {PROTOCOLS}, got {values['protocol']!r}")
        if values["url"] is None:
            values["url"] = f"http://127.0.0.1:{entry.port}{DEFAULT_ROUTES[values['protocol']]}"
        if values["max_outage_s"] is None:
            values["max_outage_s"] = float((context or {}).get("max_outage_s", DEFAULT_MAX_OUTAGE_S))
        if "score_key" not in options:
            values["score_key"] = entry.score_keys.get(values["protocol"], "scores")
        return RemoteReward(name=entry.name, **values)

    params = [
        inspect.Parameter(
            key,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if key in required else fixed[key],
            annotation=str if key in required else _OPTION_TYPES[key],
        )
        for key in names
    ]
    params += [
        inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Any),
        inspect.Parameter("context", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict | None),
    ]
    factory.__signature__ = inspect.Signature(params, return_annotation=RemoteReward)  # type: ignore[attr-defined]
    factory.__annotations__ = {p.name: p.annotation for p in params}
    factory.__name__ = factory.__qualname__ = entry.name
    port = f"``http://127.0.0.1:{entry.port}``" if entry.port is not None else "none (``url`` is required)"
    factory.__doc__ = f"{entry.what} Default URL: {port}, protocol {fixed['protocol']}."
    factory.remote = True  # type: ignore[attr-defined]
    factory.required_metadata = fixed["required_metadata"]  # type: ignore[attr-defined]
    return factory


def is_remote_entry(factory: Callable[..., Any]) -> bool:
    """True for the registered factories that build a :class:`RemoteReward`."""
    return bool(getattr(factory, "remote", False))


for _entry in REMOTE_REWARDS.values():
    REWARDS.register(_entry.name)(remote_factory(_entry))
