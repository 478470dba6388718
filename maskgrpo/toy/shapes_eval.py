"""ShapesEval: GenEval's decision rules on ShapesWorld images, with a colour-segmentation "detector".

Pipeline for one image (docs/toy_world.md, "Evaluator and reward")::

    labels = segment(image)            # (H, W) palette index per pixel: 0 background, 1..C colours, -1 neither
    blobs  = components(labels)        # 8-connected regions of one colour, tiny ones (decoding noise) dropped
    dets   = {shape: [Detection]}      # shape from (fill ratio, top-half mass) vs. prototypes, with a confidence
    colour = nearest palette colour of the blob's mean pixel
    evaluate / partial_credit          # maskgrpo.scoring.geneval_rules, the same code as real GenEval
    graded_verdict                     # maskgrpo.scoring.geneval_graded: GenEval's checks graded in [0, 1]

The detection score is a confidence in (0, 1]: ~0.97+ for a clean blob, lower for blobs between two prototypes,
elongated or undersized ones, so GenEval's 0.3 / 0.9 (counting) thresholds act as they do on a real detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskgrpo.scoring.geneval_graded import graded_verdict
from maskgrpo.scoring.geneval_rules import (
    ClassifyColors,
    Detection,
    GenEvalThresholds,
    evaluate,
    partial_credit,
    summarize_tags,
)
from maskgrpo.toy.world import SHAPE_MASKS, WorldSpec

_NEIGHBOURS_8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def shape_features(mask: np.ndarray) -> tuple[float, float]:
    """(fill, top) of a blob mask cropped to its box: fill = area / box area; top = share of the area in the upper
    half of the box rows (an odd middle row counts half). Circle ~(0.8, 0.5), square (1, 0.5), triangle ~(0.6, 0.3).
    """
    h, w = mask.shape
    area = float(mask.sum())
    rows = mask.sum(axis=1).astype(np.float64)  # (h,)
    top = rows[: h // 2].sum() + (rows[h // 2] / 2.0 if h % 2 else 0.0)
    return area / (h * w), top / area


def label_components(fg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """8-connected components of ``fg`` pixels with equal ``labels``: (H, W) bool, (H, W) int -> (H, W) int64.

    Each component gets the flat index of its first pixel (raster order) as id; non-foreground pixels get -1.
    Vectorised min-label propagation with pointer jumping: every pass takes the minimum id over same-label
    neighbours, then ``comp = comp[comp]`` shortcuts chains; stops when nothing changes.
    """
    h, w = fg.shape
    big = h * w
    comp = np.where(fg, np.arange(big).reshape(h, w), big)  # (H, W)
    lab = np.where(fg, labels, -2)  # (H, W), -2 never matches a real label
    pad_lab = np.full((h + 2, w + 2), -3, dtype=lab.dtype)
    pad_lab[1:-1, 1:-1] = lab
    while True:
        pad = np.full((h + 2, w + 2), big, dtype=comp.dtype)
        pad[1:-1, 1:-1] = comp
        new = comp.copy()
        for dy, dx in _NEIGHBOURS_8:
            nb = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]  # (H, W) neighbour ids
            same = pad_lab[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] == lab  # (H, W)
            new = np.where(same & fg, np.minimum(new, nb), new)
        flat = np.append(new.ravel(), big)  # index `big` maps to itself
        new = np.where(fg, flat[new], big)  # pointer jumping
        if np.array_equal(new, comp):
            break
        comp = new
    return np.where(fg, comp, -1)


@dataclass(frozen=True)
class Blob:
    """One connected single-colour region. box = (x0, y0, x1, y1) with exclusive x1, y1 (GenEval pixels)."""

    color: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    area: int


@dataclass(frozen=True)
class ImageResult:
    """ShapesEval verdict on one image: GenEval's yes/no and reason, the clipped partial-credit reward, and the
    graded verdict (GenEval's checks in [0, 1], exclude clauses charged; 1.0 iff ``correct``)."""

    tag: str
    prompt: str
    correct: bool
    reason: str
    partial: float
    graded: float


class ShapesDetector:
    """Colour segmentation + connected components + shape prototypes -> GenEval ``Detection`` lists.

    color_tolerance: a pixel is assigned to its nearest palette/background colour only within this fraction of the
        smallest distance between two palette entries (0.5 = unambiguous); blended decoding pixels stay unassigned.
    min_area_frac:   blobs smaller than this fraction of the smallest object's area (a min_size triangle) are noise.
    temperature:     softness of the class posterior over the prototypes, in feature units.
    spread:          scale of the "looks like any shape at all" term, in feature units.
    """

    def __init__(self, spec: WorldSpec, color_tolerance: float = 0.5, min_area_frac: float = 0.3,
                 temperature: float = 0.05, spread: float = 0.15) -> None:  # fmt: skip
        self.spec = spec
        self.color_names = spec.color_names
        self.colors = np.array([spec.background] + [rgb for _, rgb in spec.colors], dtype=np.float32)  # (C+1, 3)
        pair = np.sqrt(((self.colors[:, None] - self.colors[None]) ** 2).sum(-1))  # (C+1, C+1)
        self.max_color_dist = color_tolerance * float(pair[~np.eye(len(self.colors), dtype=bool)].min())
        smallest = min(int(SHAPE_MASKS[s](spec.min_size).sum()) for s in spec.shapes)  # px of the smallest object
        self.min_area = max(2, int(min_area_frac * smallest))
        self.temperature = temperature
        self.spread = spread
        # Prototype (fill, top) per shape: the mean over every drawable size, measured on the renderer's own masks.
        sizes = range(spec.min_size, spec.max_size + 1)
        self.prototypes = np.array(
            [np.mean([shape_features(SHAPE_MASKS[s](n)) for n in sizes], axis=0) for s in spec.shapes]
        )  # (S, 2)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) int: 0 background, 1..C palette colour, -1 no colour within tolerance."""
        x = image.astype(np.float32)[:, :, None, :]  # (H, W, 1, 3)
        d = np.sqrt(((x - self.colors) ** 2).sum(-1))  # (H, W, C+1)
        idx = d.argmin(-1)  # (H, W)
        return np.where(d.min(-1) <= self.max_color_dist, idx, -1)

    def blobs(self, image: np.ndarray) -> list[Blob]:
        """Connected single-colour regions of ``image`` (H, W, 3), noise-sized ones dropped, in raster order."""
        labels = self.segment(image)  # (H, W)
        comp = label_components(labels > 0, labels)  # (H, W)
        out = []
        ids, areas = np.unique(comp[comp >= 0], return_counts=True)
        for cid, area in zip(ids, areas):
            if area < self.min_area:
                continue
            mask = comp == cid  # (H, W)
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            color = self.color_names[int(labels.flat[cid]) - 1]
            out.append(Blob(color=color, mask=mask, box=box, area=int(area)))
        return out

    def classify(self, blob: Blob) -> tuple[str, float]:
        """(shape, confidence) for a blob. confidence = posterior * fit * aspect * size, each factor in [0, 1]:

        posterior = softmax_s(-d_s^2 / (2 tau^2))[best]   d_s = feature distance to prototype s
        fit       = exp(-d_best^2 / (2 spread^2))           how much the blob looks like any shape at all
        aspect    = clip((min(w, h) / max(w, h) - 0.5) / 0.3, 0, 1)   every shape has a square box
        size      = clip((max(w, h) / min_size - 0.4) / 0.4, 0, 1)    fragments are smaller than any object
        """
        x0, y0, x1, y1 = blob.box
        feats = np.array(shape_features(blob.mask[y0:y1, x0:x1]))  # (2,)
        d2 = ((self.prototypes - feats) ** 2).sum(-1)  # (S,)
        best = int(d2.argmin())
        logits = -(d2 - d2[best]) / (2 * self.temperature**2)  # (S,), 0 at the best
        posterior = 1.0 / np.exp(logits).sum()
        fit = np.exp(-d2[best] / (2 * self.spread**2))
        w, h = x1 - x0, y1 - y0
        aspect = np.clip((min(w, h) / max(w, h) - 0.5) / 0.3, 0.0, 1.0)
        size = np.clip((max(w, h) / self.spec.min_size - 0.4) / 0.4, 0.0, 1.0)
        return self.spec.shapes[best], float(posterior * fit * aspect * size)

    def detect(self, image: np.ndarray) -> dict[str, list[Detection]]:
        """``{shape: [Detection(box, score, mask)]}`` for one image (H, W, 3) uint8; every shape has a list."""
        dets: dict[str, list[Detection]] = {s: [] for s in self.spec.shapes}
        for blob in self.blobs(image):
            shape, score = self.classify(blob)
            if score > 0:
                dets[shape].append(Detection(box=blob.box, score=score, mask=blob.mask))
        return dets

    def color_classifier(self, image: np.ndarray) -> ClassifyColors:
        """GenEval's ``classify_colors`` for this image: the palette colour nearest to each detection's mean pixel
        (under its mask; the whole box when the mask is missing)."""
        palette = self.colors[1:]  # (C, 3) without the background

        def classify(cls: str, dets: list[Detection]) -> list[str]:
            out = []
            for det in dets:
                if det.mask is not None:
                    pix = image[det.mask]  # (n, 3)
                else:
                    x0, y0, x1, y1 = (int(round(v)) for v in det.box)
                    pix = image[y0:y1, x0:x1].reshape(-1, 3)
                mean = pix.astype(np.float32).mean(0)  # (3,)
                out.append(self.color_names[int(((palette - mean) ** 2).sum(-1).argmin())])
            return out

        return classify


class ShapesEvaluator:
    """Scores ShapesWorld images against their metadata with GenEval's rules (``maskgrpo.scoring.geneval_rules``).

    ``score`` gives one :class:`ImageResult` per image: the official yes/no (``evaluate``), the partial-credit
    reward (``partial_credit``, variant ``clipped``: every term in [0, 1]) and the graded verdict
    (``graded_verdict``); the ``shapes_geneval*`` rewards read one of the three.
    """

    def __init__(self, spec: WorldSpec, thresholds: GenEvalThresholds = GenEvalThresholds(),
                 detector: ShapesDetector | None = None) -> None:  # fmt: skip
        self.spec = spec
        self.thresholds = thresholds
        self.detector = detector if detector is not None else ShapesDetector(spec)

    def score_one(self, image: np.ndarray, metadata: dict) -> ImageResult:
        """One image (H, W, 3) uint8 against one metadata dict."""
        dets = self.detector.detect(image)
        colours = self.detector.color_classifier(image)
        correct, reason = evaluate(metadata, dets, colours, self.thresholds)
        pc = partial_credit(metadata, dets, colours, self.thresholds, variant="clipped")
        graded = graded_verdict(metadata, dets, colours, self.thresholds)
        return ImageResult(tag=metadata["tag"], prompt=metadata["prompt"], correct=correct, reason=reason,
                           partial=pc.score, graded=graded.score)  # fmt: skip

    def score(self, images: np.ndarray | torch.Tensor, metadatas: list[dict]) -> list[ImageResult]:
        """(B, H, W, 3) uint8 images and B metadata dicts -> B results."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(metadatas):
            raise ValueError(f"need (B, H, W, 3) images and B metadata dicts, got {images.shape}, {len(metadatas)}")
        return [self.score_one(img, meta) for img, meta in zip(images, metadatas)]

    @staticmethod
    def summarize(results: list[ImageResult]) -> dict[str, float]:
        """Per-tag accuracy in GenEval's order plus ``overall`` = unweighted mean of the tags present."""
        return summarize_tags((r.tag, r.correct) for r in results)
