"""Wire formats shared by the reward-server client and server (benchmarks.md section 3).

**JSON (the default, ``reward-json/1``).** ``POST /score`` (``/`` is an alias) with body
``{"protocol": "reward-json/1", "images": [base64 str], "image_format": "png"|"jpeg", "prompts"?: [str],
"metadata"?: [dict], "only_strict"?: bool}``; the answer is ``{"protocol": "reward-json/1", "scores": [float|null],
...}`` where null means NaN (a failed score). Errors answer ``{"error": str}`` with 400 (bad request), 413 (over
:data:`MAX_BODY_BYTES` or the server's batch limit), 500 (the scorer failed) or 503 (not ready: retry).

**Pickle (opt-in, for the public reward-server and MaskGRPO clients).** The body is ``pickle.dumps(dict)`` with
JPEG bytes under ``images`` and, depending on the server, ``prompts`` (a numpy ``<U`` array), ``meta_datas`` and
``only_strict``; the answer is a pickled dict. ``pickle.loads`` runs arbitrary code, so both ends here use
:func:`restricted_loads`, which only rebuilds plain containers, numbers, strings, bytes and numpy arrays; it is
still meant for loopback peers you trust.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import math
import pickle
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

PROTOCOL = "reward-json/1"
"""Value of the ``protocol`` field of JSON requests and responses."""
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body a server accepts (413 above)."""
DEFAULT_MAX_BATCH = 64
"""Largest number of images per request a server accepts by default (413 above), and the client's batch size."""
IMAGE_FORMATS = ("png", "jpeg")
JSON_CONTENT_TYPE = "application/json"
PICKLE_CONTENT_TYPE = "application/x-python-pickle"

_ALLOWED_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (numpy ndarray, dtype and _reconstruct)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` resolves only numpy's array-rebuilding globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise UnsafePickleError(f"pickle global {module}.{name} is not allowed (only numpy arrays)")
        return super().find_class(module, name)


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` limited to builtin containers/scalars and numpy arrays; anything else raises."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(url: str) -> str:
    """The host part of an http(s) URL, raising ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"reward server URL must look like http://HOST:PORT/score, got {url!r}")
    return parts.hostname


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG (lossless) or JPEG (PIL's default quality, as upstream) bytes."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=image_format.upper())
    return buffer.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """PNG/JPEG bytes -> RGB PIL image; raises ValueError on anything PIL cannot read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Exception as exc:  # PIL raises several unrelated types for corrupt data
        raise ValueError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict base64 decoding (``validate=True``): stray characters are an error, not silently dropped."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def scores_to_json(scores: Sequence[float]) -> list[float | None]:
    """Floats -> JSON-safe list, with every non-finite value written as null (a failed score)."""
    return [float(s) if math.isfinite(float(s)) else None for s in scores]


def scores_from_json(values: Any, expected: int) -> np.ndarray:
    """The ``scores`` field of a response -> (expected,) float64, null -> NaN; ValueError if malformed."""
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise ValueError(f"'scores' must be a list, got {type(values).__name__}")
    if len(values) != expected:
        raise ValueError(f"'scores' has {len(values)} entries for {expected} images")
    out = np.empty(expected, dtype=np.float64)
    for i, value in enumerate(values):
        if value is None:
            out[i] = np.nan
        elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"'scores'[{i}] is {value!r}, not a number or null")
        else:
            out[i] = float(value)
    return out
