"""Wire formats shared by the reward-server client and server (docs/benchmarks.md section 3).

**JSON (the default, ``reward-json/1``).** ``POST /score`` (``/`` is an alias) with body
``{"protocol": "reward-json/1", "images": [base64 str], "image_format": "png"|"jpeg", "prompts"?: [str],
"metadata"?: [dict], "only_strict"?: bool}``; the answer is ``{"protocol": "reward-json/1", "scores": [float|null],
...}`` where null means NaN (a failed score). Errors answer ``{"error": str}`` with 400 (bad request), 408 (body
not received within the read timeout), 413 (over :data:`MAX_BODY_BYTES`, the batch limit or :data:`MAX_PIXELS`),
500 (the scorer failed) or 503 (not ready: retry).

**Pickle (opt-in, the public reward-server protocol).** ``POST /`` with body ``pickle.dumps(dict)``: JPEG bytes
under ``images`` and, depending on the server, ``prompts`` (list of str), ``meta_datas`` (list of dict) and
``only_strict`` (bool); the answer is a pickled dict (GenEval ``scores`` + extras, DeQA ``outputs``). Requests are
plain Python objects, so a server on any numpy (the public repo pins 1.26) can load them. ``pickle.loads`` runs
arbitrary code, so both ends here use :func:`restricted_loads`, which only rebuilds plain containers, numbers,
strings, bytes, numpy arrays, numpy scalars and plain dtypes (numpy 1 and 2 module paths); it is still meant for
loopback peers you trust.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

PROTOCOL = "reward-json/1"
"""Value of the ``protocol`` field of JSON requests and responses."""
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body a server accepts (413 above); clients split their requests to stay under it."""
DEFAULT_MAX_BATCH = 64
"""Largest number of images per request a server accepts by default (413 above), and the client's batch size."""
MAX_PIXELS = 4096 * 4096
"""Largest width x height of one image a server decodes (413 above): 16.8 M pixels, 48 MiB as RGB. A 102 KiB PNG
can declare 9000 x 9000 (243 MiB decoded), so the cap is checked on the header, before decoding."""
READ_TIMEOUT_S = 30.0
"""Seconds a server allows for reading one request (headers and body together); a slower client is dropped."""
IMAGE_FORMATS = ("png", "jpeg")
JSON_CONTENT_TYPE = "application/json"
PICKLE_CONTENT_TYPE = "application/x-python-pickle"


def _safe_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """``numpy.dtype`` as a pickle rebuilds it, refusing object dtypes (they would carry arbitrary objects)."""
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise UnsafePickleError(f"pickled numpy dtype {dtype!r} holds Python objects; only plain dtypes are allowed")
    return dtype


def _numpy_core_attr(name: str) -> Any:
    """``numpy._core.multiarray.<name>`` on numpy 2, ``numpy.core.multiarray.<name>`` on numpy 1."""
    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


_PICKLE_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: _safe_dtype,
    **{
        (module, name): (lambda name=name: _numpy_core_attr(name))
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1 and numpy 2 pickles
        for name in ("_reconstruct", "scalar")
    },
}
"""The only globals a pickle may name: numpy arrays, numpy scalars and (non-object) dtypes, under both numpy 1's and
numpy 2's module paths, each resolved to the installed numpy's object."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (numpy arrays, scalars and plain dtypes)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` resolves only the numpy globals of :data:`_PICKLE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _PICKLE_GLOBALS.get((module, name))
        if resolve is None:
            raise UnsafePickleError(f"pickle global {module}.{name} is not allowed (only numpy arrays and scalars)")
        return resolve()


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` limited to builtin containers/scalars, numpy arrays and numpy scalars; anything else raises
    :class:`UnsafePickleError` (an object dtype too)."""
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


class ImageTooLarge(ValueError):
    """An image whose declared width x height is over the server's pixel cap (answered with 413)."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """PNG/JPEG bytes -> RGB PIL image.

    The header is read first: an image over ``max_pixels`` (width x height) raises :class:`ImageTooLarge` before
    any pixel is decoded, so a small compressed file cannot make the server allocate a huge canvas. Anything PIL
    cannot read, or another format, raises ValueError.
    """
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels} per image"
                )
            return image.convert("RGB")
    except ImageTooLarge:
        raise
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
