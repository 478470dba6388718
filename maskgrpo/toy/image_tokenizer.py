"""ShapesWorld image tokenizer: p x p pixel patches -> nearest entry of a k-means codebook (toy_world.md).

An image (H, W, 3) is cut into a (H/p) x (W/p) grid of patches, read in raster order (row by row), so token j
covers rows [p * (j // gw), p * (j // gw + 1)) and columns [p * (j % gw), p * (j % gw + 1)). Each patch is a
p*p*3 vector (pixel order row, column, channel); encode = index of the nearest codebook row (squared L2), decode =
paste the codebook rows back. The codebook is learned by seeded k-means (k-means++ init, a fixed number of Lloyd
iterations), so the same images, size and seed give the same codebook.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

_CONFIG = "image_tokenizer.json"
_WEIGHTS = "image_tokenizer.safetensors"


def images_to_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """(B, H, W, 3) -> (B, N, p*p*3) float32, N = (H/p) * (W/p) in raster order."""
    b, h, w, c = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not a multiple of patch {patch}")
    gh, gw = h // patch, w // patch
    x = images.reshape(b, gh, patch, gw, patch, c)  # (B, gh, p, gw, p, 3)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, gh, gw, p, p, 3)
    return x.reshape(b, gh * gw, patch * patch * c).astype(np.float32)  # (B, N, D)


def patches_to_images(patches: np.ndarray, patch: int, gh: int, gw: int) -> np.ndarray:
    """(B, N, p*p*3) -> (B, gh*p, gw*p, 3), the inverse of :func:`images_to_patches`."""
    b = patches.shape[0]
    x = patches.reshape(b, gh, gw, patch, patch, 3)  # (B, gh, gw, p, p, 3)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, gh, p, gw, p, 3)
    return x.reshape(b, gh * patch, gw * patch, 3)


def _sq_dists(x: np.ndarray, c: np.ndarray, c_sq: np.ndarray) -> np.ndarray:
    """||x - c||^2 for every pair: (P, D), (K, D), (K,) -> (P, K) float32, via ||x||^2 - 2 x.c + ||c||^2."""
    x_sq = np.einsum("pd,pd->p", x, x)  # (P,)
    return x_sq[:, None] - 2.0 * (x @ c.T) + c_sq[None, :]


def nearest_code(x: np.ndarray, codebook: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest codebook row for every row of x: (P, D), (K, D) -> (P,) int64, in chunks of P."""
    c_sq = np.einsum("kd,kd->k", codebook, codebook)  # (K,)
    out = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        out[s : s + chunk] = _sq_dists(x[s : s + chunk], codebook, c_sq).argmin(axis=1)
    return out


def kmeans(x: np.ndarray, k: int, seed: int, iters: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Seeded weighted k-means on rows of x: (P, D) float32, weights (P,) or None -> (k, D) float32 centres.

    Init: k-means++ (each new centre drawn with probability proportional to weight * squared distance to the
    nearest chosen one). Then ``iters`` Lloyd steps: assign each row to its nearest centre, move each centre to
    the weighted mean of its rows; a centre left with no rows moves to the worst-served row. Last, every centre
    snaps to its cluster's medoid (the member nearest to it), so codes are real patches and decoded images keep
    the world's crisp colours instead of blends. Deterministic for a given (x, k, seed, iters, weights).
    """
    p = x.shape[0]
    if p < k:
        raise ValueError(f"k-means needs at least k={k} rows, got {p}")
    w = np.ones(p) if weights is None else np.asarray(weights, dtype=np.float64)  # (P,)
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(p)]
    d2 = ((x - centres[0]) ** 2).sum(axis=1)  # (P,) squared distance to the nearest chosen centre
    for j in range(1, k):
        mass = w * d2  # (P,)
        i = int(rng.choice(p, p=mass / mass.sum())) if mass.sum() > 0 else int(rng.integers(p))
        centres[j] = x[i]
        d2 = np.minimum(d2, ((x - centres[j]) ** 2).sum(axis=1))
    for _ in range(iters):
        assign = nearest_code(x, centres)  # (P,)
        mass = np.bincount(assign, weights=w, minlength=k)  # (k,)
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        np.add.at(sums, assign, x * w[:, None])
        live = mass > 0
        centres[live] = (sums[live] / mass[live, None]).astype(np.float32)
        if not live.all():
            dist = ((x - centres[assign]) ** 2).sum(axis=1)  # (P,) how badly each row is served
            centres[~live] = x[np.argsort(-dist, kind="stable")[: int((~live).sum())]]
    assign = nearest_code(x, centres)  # (P,)
    dist = ((x - centres[assign]) ** 2).sum(axis=1)  # (P,)
    for j in range(k):
        members = np.nonzero(assign == j)[0]
        if members.size:
            centres[j] = x[members[dist[members].argmin()]]
    return centres


class PatchTokenizer:
    """Patch -> code tokenizer with a learned codebook: ``encode`` (B, H, W, 3) -> (B, N), ``decode`` back.

    codebook: (K, p*p*3) float32 in pixel units [0, 255]. ``image_size`` is the canvas side the grid refers to.
    """

    def __init__(self, codebook: np.ndarray, patch: int, image_size: int) -> None:
        if codebook.ndim != 2 or codebook.shape[1] != patch * patch * 3:
            raise ValueError(f"codebook must be (K, {patch * patch * 3}), got {codebook.shape}")
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)  # (K, D)
        self.patch = patch
        self.image_size = image_size

    @property
    def codebook_size(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def grid(self) -> int:
        """Token grid side; an image is grid * grid tokens."""
        return self.image_size // self.patch

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @classmethod
    def fit(cls, images: np.ndarray, codebook_size: int = 256, seed: int = 0, iters: int = 20,
            patch: int = 4) -> PatchTokenizer:  # fmt: skip
        """Learn a ``codebook_size``-code codebook from ``images`` (M, H, W, 3) uint8.

        The data are the distinct patches, each weighted by sqrt(its count): a background patch occurs thousands
        of times but needs one code, and damping the counts leaves codes for the object edges, which decide
        whether a decoded shape is still recognisable. If there are at most ``codebook_size`` distinct patches,
        k-means' optimum is the patches themselves: they become codes 0..P-1 (sorted, so independent of image
        order) and the spare codes repeat the most frequent patch (encode never emits them: ties go to the lower
        index; a model that samples one draws background). Otherwise :func:`kmeans` runs with ``seed``, ``iters``.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
            raise ValueError(f"images must be (M, S, S, 3), got {images.shape}")
        x = images_to_patches(images, patch).reshape(-1, patch * patch * 3)  # (M*N, D)
        x, counts = np.unique(x, axis=0, return_counts=True)  # (P, D) sorted rows, (P,)
        if x.shape[0] <= codebook_size:
            spare = np.repeat(x[counts.argmax()][None], codebook_size - x.shape[0], axis=0)  # (K-P, D)
            codebook = np.concatenate([x, spare])
        else:
            codebook = kmeans(x, codebook_size, seed, iters, weights=np.sqrt(counts))
        return cls(codebook, patch, images.shape[1])

    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 (numpy or torch) -> (B, N) long codes in [0, K), raster order."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.ndim == 3:
            raise ValueError("encode takes a batch (B, H, W, 3); add a leading axis for one image")
        if images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected (B, {self.image_size}, {self.image_size}, 3), got {images.shape}")
        b = images.shape[0]
        x = images_to_patches(images, self.patch).reshape(b * self.num_tokens, -1)  # (B*N, D)
        return torch.from_numpy(nearest_code(x, self.codebook).reshape(b, self.num_tokens))  # (B, N)

    def decode(self, codes: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B, N) codes in [0, K) -> (B, H, W, 3) uint8 images (codebook patches pasted, rounded, clipped)."""
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != self.num_tokens:
            raise ValueError(f"codes must be (B, {self.num_tokens}), got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size}), got [{codes.min()}, {codes.max()}]")
        patches = self.codebook[codes]  # (B, N, D)
        img = patches_to_images(patches, self.patch, self.grid, self.grid)  # (B, H, W, 3) float32
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def save(self, directory: str | Path) -> None:
        """Write ``image_tokenizer.safetensors`` (the codebook) and ``image_tokenizer.json`` (patch, size, K)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"codebook": self.codebook}, str(d / _WEIGHTS))
        cfg = {"patch": self.patch, "image_size": self.image_size, "codebook_size": self.codebook_size}
        (d / _CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> PatchTokenizer:
        """Inverse of :meth:`save`."""
        d = Path(directory)
        cfg = json.loads((d / _CONFIG).read_text())
        codebook = load_file(str(d / _WEIGHTS))["codebook"]
        if codebook.shape[0] != cfg["codebook_size"]:
            raise ValueError(f"{d / _WEIGHTS} holds {codebook.shape[0]} codes, config says {cfg['codebook_size']}")
        return cls(codebook, cfg["patch"], cfg["image_size"])
