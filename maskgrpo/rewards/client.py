"""HTTP clients for reward servers: HPSv3, UnifiedReward, GenEval (partial credit), DeQA, and any custom scorer.

Each client sends the images in chunks of ``batch_size`` (ceil(B / 64) requests by default) and returns the server's
raw scores; the YAML ``scale`` turns them into training rewards (``hpsv3`` and ``unifiedreward``: 0.2 = "/5").

Protocols (:mod:`maskgrpo.rewards.protocol`):

- ``protocol: json`` (default): ``reward-json/1`` with base64 PNG images (``image_format: jpeg`` to match upstream's
  JPEG; PNG is the default because JPEG shifts the colours of small toy images). Speaks to
  ``python -m maskgrpo.rewards.serve``.
- ``protocol: pickle``: byte-compatible with the public reward-server (GenEval, DeQA) and MaskGRPO's HPSv3 /
  UnifiedReward servers (JPEG bytes, numpy ``<U`` prompts). **Unsafe with an untrusted peer** (a pickled answer can
  run code): it is an explicit opt-in, only accepted for loopback URLs (tunnel other hosts through SSH), warns, and
  decodes answers with a restricted unpickler. Note that upstream DeQA already divides by 5 (use ``scale: 1.0``).

Failures. Connection errors, timeouts and HTTP 503 are retried at most ``max_retries`` times with exponential
backoff (``backoff * 2**k`` seconds); HTTP 4xx and 500 (deterministic: the scorer raised) are never retried. A
request that still fails raises :class:`RewardServerError` naming the reward, the URL and the last failure. A
server's null score comes back as NaN, which :func:`maskgrpo.rewards.base.score_all` rejects unless the spec sets
``allow_nan: true``; nothing is ever turned into 0 here.
"""

from __future__ import annotations

import http.client
import json
import logging
import pickle
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskgrpo.rewards.base import REWARDS, RewardError
from maskgrpo.rewards.protocol import (
    DEFAULT_MAX_BATCH,
    IMAGE_FORMATS,
    JSON_CONTENT_TYPE,
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

PROTOCOLS = ("json", "pickle")
MAX_BACKOFF_S = 60.0
"""Cap of one backoff sleep."""


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
    """Internal: one attempt failed in a way worth retrying."""


class _Fatal(Exception):
    """Internal: one attempt failed in a way that retrying cannot fix (4xx, 500)."""


def _json_default(value: Any) -> Any:
    """Let numpy scalars and arrays inside metadata serialise as JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable")


@dataclass
class RemoteReward:
    """A :class:`~maskgrpo.rewards.base.RewardFn` that asks an HTTP reward server.

    ``__call__(images (B, H, W, 3) uint8, prompts [B], metadata [B]) -> (B,) float64`` raw scores, NaN where the
    server answered null (or NaN, in pickle).
    """

    name: str
    """Reward name, used in error messages."""
    url: str
    """Endpoint, e.g. ``http://127.0.0.1:18087/score``."""
    protocol: str = "json"
    """``json`` (default) or ``pickle`` (legacy, unsafe with untrusted peers, loopback only)."""
    image_format: str | None = None
    """``png`` or ``jpeg``; default png for json, jpeg for pickle (what upstream servers expect)."""
    timeout: float = 120.0
    """Seconds per request (connect and each read)."""
    max_retries: int = 5
    """Retries after the first attempt, for connection errors, timeouts and HTTP 503 only."""
    backoff: float = 1.0
    """Base of the exponential backoff: the k-th retry (k = 0, 1, ...) sleeps ``min(backoff * 2**k, 60)`` s."""
    batch_size: int = DEFAULT_MAX_BATCH
    """Images per request."""
    send_prompts: bool = True
    """Include the prompts (HPSv3, UnifiedReward)."""
    send_metadata: bool = False
    """Include the per-image metadata (GenEval: ``metadata`` in JSON, ``meta_datas`` in pickle)."""
    only_strict: bool | None = None
    """GenEval's ``only_strict`` flag (MaskGRPO sends True and uses ``scores``); None = not sent."""
    score_key: str = "scores"
    """Response key holding the scores (upstream DeQA pickle answers use ``outputs``)."""
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"reward {self.name!r}: protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.image_format is None:
            self.image_format = "png" if self.protocol == "json" else "jpeg"
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"reward {self.name!r}: image_format must be one of {IMAGE_FORMATS}")
        if not (self.timeout > 0 and self.backoff >= 0 and self.max_retries >= 0 and self.batch_size >= 1):
            raise ValueError(
                f"reward {self.name!r}: need timeout > 0, backoff >= 0, max_retries >= 0, "
                f"batch_size >= 1; got {self.timeout}, {self.backoff}, {self.max_retries}, "
                f"{self.batch_size}"
            )
        loopback = is_loopback_host(url_host(self.url))
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
        scores = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            body, content_type = self._encode(images[chunk], prompts[chunk], metadata[chunk])
            scores.append(self._decode(self._post(body, content_type), len(images[chunk])))
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)  # (B,)

    def _encode(self, images: np.ndarray, prompts: Sequence[str], metadata: Sequence[dict]) -> tuple[bytes, str]:
        """One chunk -> (request body, content type) in the configured protocol."""
        encoded = [encode_image(image, self.image_format) for image in images]
        if self.protocol == "pickle":
            payload: dict[str, Any] = {"images": encoded}
            if self.send_prompts:
                payload["prompts"] = np.array(list(prompts))  # a numpy <U array, as MaskGRPO's clients send
            if self.send_metadata:
                payload["meta_datas"] = list(metadata)
            if self.only_strict is not None:
                payload["only_strict"] = self.only_strict
            return pickle.dumps(payload), PICKLE_CONTENT_TYPE
        payload = {"protocol": PROTOCOL, "images": [b64encode(b) for b in encoded], "image_format": self.image_format}
        if self.send_prompts:
            payload["prompts"] = list(prompts)
        if self.send_metadata:
            payload["metadata"] = list(metadata)
        if self.only_strict is not None:
            payload["only_strict"] = self.only_strict
        return json.dumps(payload, default=_json_default).encode("utf-8"), JSON_CONTENT_TYPE

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
            raise RewardServerError(self.name, self.url, f"malformed response: {exc}") from exc

    def _attempt(self, body: bytes, content_type: str) -> bytes:
        """One POST. Returns the body on 200, raises _Retryable or _Fatal otherwise."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": content_type})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code == 503:
                raise _Retryable(f"HTTP 503: {detail}") from exc
            raise _Fatal(f"HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:  # connection refused, DNS, connect timeout
            raise _Retryable(f"connection error: {exc.reason}") from exc
        except TimeoutError as exc:  # read timeout (socket.timeout is TimeoutError)
            raise _Retryable(f"timed out after {self.timeout} s") from exc
        except (ConnectionError, http.client.HTTPException) as exc:  # reset, remote closed, truncated answer
            raise _Retryable(f"connection error: {type(exc).__name__}: {exc}") from exc

    def _post(self, body: bytes, content_type: str) -> bytes:
        """POST with bounded retries for transient failures (connection, timeout, 503)."""
        last = "no attempt made"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
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
                last = str(exc)
            except _Fatal as exc:
                raise RewardServerError(self.name, self.url, str(exc), attempts=attempt + 1) from exc.__cause__
        raise RewardServerError(self.name, self.url, f"gave up; last failure: {last}", attempts=attempts)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's ``{"error": ...}`` message, else the start of the body, else the reason phrase."""
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
    return text[:2000] or str(exc.reason)


def _remote(
    name: str,
    default_port: int,
    url: str | None,
    protocol: str,
    **kwargs: Any,
) -> RemoteReward:
    """Build a client with the loopback default URL of ``default_port`` (``/score`` for json, ``/`` for pickle)."""
    if url is None:
        url = f"http://127.0.0.1:{default_port}/" + ("score" if protocol == "json" else "")
    return RemoteReward(name=name, url=url, protocol=protocol, **kwargs)


_TIMEOUT_S = 120.0  # MaskGRPO's clients: 120 s (UnifiedReward: 60 s)
_RETRIES = 5


@REWARDS.register("hpsv3")
def hpsv3(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """HPSv3 preference score (mu of (mu, sigma)), served on port 18087 by default. Train with ``scale: 0.2``."""
    return _remote(
        "hpsv3",
        18087,
        url,
        protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        send_prompts=True,
    )


@REWARDS.register("unifiedreward")
def unifiedreward(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = 60.0,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """UnifiedReward-qwen-7b judge score (1-5), served on port 18088 by default. Train with ``scale: 0.2``."""
    return _remote(
        "unifiedreward",
        18088,
        url,
        protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        send_prompts=True,
    )


@REWARDS.register("geneval")
def geneval(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    only_strict: bool = True,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """GenEval partial-credit reward (the response's ``scores``, <= 1), port 18085 by default; sends the metadata."""
    return _remote(
        "geneval",
        18085,
        url,
        protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        send_prompts=False,
        send_metadata=True,
        only_strict=only_strict,
    )


@REWARDS.register("deqa")
def deqa(
    url: str | None = None,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
    device: Any = None,
    context: dict | None = None,
) -> RemoteReward:
    """DeQA-Score quality, port 18086 by default; images only. Upstream's pickle server answers ``outputs``, already
    divided by 5 (``scale: 1.0``); a raw 1-5 scorer behind the JSON server wants ``scale: 0.2``."""
    return _remote(
        "deqa",
        18086,
        url,
        protocol,
        image_format=image_format,
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        batch_size=batch_size,
        send_prompts=False,
        score_key="outputs" if protocol == "pickle" else "scores",
    )


@REWARDS.register("http")
def http_reward(
    url: str,
    protocol: str = "json",
    image_format: str | None = None,
    timeout: float = _TIMEOUT_S,
    max_retries: int = _RETRIES,
    backoff: float = 1.0,
    batch_size: int = DEFAULT_MAX_BATCH,
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
        send_prompts=send_prompts,
        send_metadata=send_metadata,
        score_key=score_key,
    )
