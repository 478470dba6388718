"""ShapesWorld: a small text-to-image world with GenEval's six caption templates (spec: toy_world.md).

A scene is 1 to ``max_objects`` flat-coloured shapes on a plain background, drawn with numpy and no antialiasing
so the evaluator can segment it by colour. Every caption is a GenEval-style metadata dict, key for key the format
of GenEval's ``evaluation_metadata.jsonl`` (benchmarks.md section 1)::

    {"tag": "position",
     "include": [{"class": "circle", "count": 1},                                  # include[0] = target B
                 {"class": "square", "count": 1, "position": ["left of", 0]}],     # include[1] = A
     "prompt": "a photo of a square left of a circle"}

Counting prompts carry ``"exclude": [{"class": c, "count": n + 1}]``. :func:`render` draws a random scene that
satisfies a metadata dict (the ground truth the evaluator must score ~1.0); :func:`sample_scene` gives the object
list, so tests can edit it to build broken scenes, and :func:`render_scene` paints any object list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS, RELATIONS, relpos

RGB = tuple[int, int, int]

DEFAULT_PALETTE: tuple[tuple[str, RGB], ...] = (
    ("red", (210, 20, 20)),
    ("green", (30, 160, 50)),
    ("blue", (30, 70, 220)),
    ("yellow", (250, 235, 40)),
    ("purple", (140, 50, 180)),
    ("orange", (255, 140, 0)),
)
"""Six GenEval colour names. Closest pairs: yellow-orange ~103, blue-purple ~119, red-orange ~130 apart in RGB;
every colour >= 190 from the background, so nearest-colour segmentation cannot confuse them."""

MIN_COLOR_DISTANCE = 90.0
"""Smallest RGB distance allowed between two palette colours or a colour and the background."""

NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
"""Count words of the counting template (GenEval uses two, three, four)."""


def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a size x size box relative to its centre: (size, 1) rows and (1, size) cols."""
    c = (np.arange(size, dtype=np.float64) + 0.5) - size / 2.0  # (size,)
    return c[:, None], c[None, :]


def circle_mask(size: int) -> np.ndarray:
    """Filled disc of diameter ``size``: pixel centres within radius size/2. (size, size) bool."""
    y, x = _pixel_centres(size)
    return x**2 + y**2 <= (size / 2.0) ** 2


def square_mask(size: int) -> np.ndarray:
    """Axis-aligned filled square. (size, size) bool."""
    return np.ones((size, size), dtype=bool)


def triangle_mask(size: int) -> np.ndarray:
    """Upward isosceles triangle, apex at the top centre, base = the full bottom row. (size, size) bool.

    Row r (0 = top) covers |x| <= (r + 1) / 2 around the centre, so the apex row is never empty and the bottom
    row spans the whole box (the detector's box equals the drawn box).
    """
    y, x = _pixel_centres(size)
    rows = y + size / 2.0 - 0.5  # (size, 1) row index r as a float
    return np.abs(x) <= (rows + 1.0) / 2.0


def diamond_mask(size: int) -> np.ndarray:
    """A square rotated by 45 degrees: |x| + |y| <= size/2 on pixel centres. (size, size) bool. Not in the default
    world; available for a wider two-object vocabulary."""
    y, x = _pixel_centres(size)
    return np.abs(x) + np.abs(y) <= size / 2.0


SHAPE_MASKS: dict[str, Callable[[int], np.ndarray]] = {
    "circle": circle_mask,
    "square": square_mask,
    "triangle": triangle_mask,
    "diamond": diamond_mask,
}
"""Every drawable shape class: name -> ``mask(size) -> (size, size) bool``. Plurals add an "s"."""


@dataclass(frozen=True)
class WorldSpec:
    """Everything that defines a ShapesWorld: canvas, tokenizer patch, classes, palette, object sizes."""

    canvas: int = 32
    """Image side in pixels (square RGB canvas). 32 is the fast default; toy_world.md's full size is 64."""
    patch: int = 4
    """Side of one image token's pixel patch; the token grid is canvas / patch per side."""
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    """Object classes, in caption-enumeration order; each must be a key of ``SHAPE_MASKS``."""
    colors: tuple[tuple[str, RGB], ...] = DEFAULT_PALETTE
    """(name, (r, g, b)) palette, in caption-enumeration order."""
    background: RGB = (235, 235, 235)
    """Background colour: light grey, far from every palette colour."""
    min_size: int = 8
    """Smallest object side in pixels (2 patches at 32 px): big enough that the shape survives tokenization."""
    max_size: int = 14
    """Largest object side in pixels; four objects plus gaps must still fit on the canvas."""
    size_step: int = 2
    """Object sides are min_size + k * size_step (<= max_size)."""
    position_step: int = 4
    """Top-left corners are multiples of this. Equal to ``patch``, objects sit on the token lattice, which keeps
    the world's set of distinct patches small (about 200 at 32 px, 460 at 64 px) so a 256/512-code tokenizer
    reproduces ground-truth images exactly; set 1 for free placement (a lossy tokenizer)."""
    min_gap: int = 3
    """Pixels of background kept between any two objects' boxes, so same-colour objects never merge; with
    min_gap >= patch - 1 no patch ever holds two objects."""
    max_objects: int = 4
    """Largest count of the counting template (counts are 2..max_objects)."""
    position_shift: float = 0.25
    """Position scenes satisfy GenEval's relpos with this shift instead of the official 0.1 (a safety margin)."""

    def __post_init__(self) -> None:
        if self.canvas % self.patch:
            raise ValueError(f"canvas ({self.canvas}) must be a multiple of patch ({self.patch})")
        unknown = [s for s in self.shapes if s not in SHAPE_MASKS]
        if unknown or len(set(self.shapes)) < 2 or len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"shapes must be >= 2 distinct names from {sorted(SHAPE_MASKS)}, got {self.shapes}")
        names = [n for n, _ in self.colors]
        if len(set(names)) < 2 or len(set(names)) != len(names):
            raise ValueError(f"colors must have >= 2 distinct names, got {names}")
        rgb = np.array([self.background] + [c for _, c in self.colors], dtype=np.float64)  # (C+1, 3)
        dist = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(len(rgb)) * 1e9  # (C+1, C+1)
        if dist.min() < MIN_COLOR_DISTANCE:
            i, j = np.unravel_index(dist.argmin(), dist.shape)
            both = (["background"] + names)[i], (["background"] + names)[j]
            raise ValueError(f"{both[0]} and {both[1]} are {dist.min():.0f} apart in RGB; colour segmentation needs "
                             f">= {MIN_COLOR_DISTANCE}")  # fmt: skip
        if not 3 <= self.min_size <= self.max_size <= self.canvas:
            raise ValueError(f"need 3 <= min_size <= max_size <= canvas, got {self.min_size}, {self.max_size}")
        if self.size_step < 1 or self.position_step < 1 or self.min_gap < 1:
            raise ValueError("size_step, position_step and min_gap must be >= 1")
        if not 2 <= self.max_objects <= max(NUMBER_WORDS):
            raise ValueError(f"max_objects must be in [2, {max(NUMBER_WORDS)}], got {self.max_objects}")
        if self.position_shift < 0.1:
            raise ValueError(f"position_shift must be >= GenEval's 0.1 (it is a margin), got {self.position_shift}")

    @classmethod
    def scaled(cls, canvas: int, patch: int = 4, **overrides: object) -> WorldSpec:
        """The default world at another canvas size: object sizes and gap scale with canvas / 32."""
        f = canvas / 32.0
        base = cls()
        sizes = dict(min_size=round(base.min_size * f), max_size=round(base.max_size * f),
                     min_gap=max(patch - 1, round(base.min_gap * f)), position_step=patch)  # fmt: skip
        return cls(canvas=canvas, patch=patch, **{**sizes, **overrides})  # type: ignore[arg-type]

    @property
    def grid(self) -> int:
        """Token grid side: canvas / patch."""
        return self.canvas // self.patch

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every object side the renderer draws."""
        return tuple(range(self.min_size, self.max_size + 1, self.size_step))

    @property
    def color_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.colors)

    @property
    def palette(self) -> dict[str, RGB]:
        return dict(self.colors)


def spec_for(world: object) -> WorldSpec:
    """The WorldSpec of a world config (``canvas``, ``patch`` and optional ``shapes`` attributes, e.g.
    ShapesWorldConfig): the default world scaled to the canvas, with the config's classes when it names them."""
    shapes = getattr(world, "shapes", None)
    extra = {"shapes": tuple(shapes)} if shapes else {}
    return WorldSpec.scaled(world.canvas, world.patch, **extra)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------------------------
# Captions and metadata
# ----------------------------------------------------------------------------------------------------------------


def _a(word: str) -> str:
    """English indefinite article for ``word`` ("an orange circle")."""
    return "an" if word[0] in "aeiou" else "a"


def _np(cls: str, color: str | None = None) -> str:
    """Noun phrase with article: "a circle", "an orange square"."""
    words = f"{color} {cls}" if color else cls
    return f"{_a(words)} {words}"


def _clause(cls: str, count: int = 1, color: str | None = None, position: tuple[str, int] | None = None) -> dict:
    """One include/exclude clause, keys in GenEval's order: class, count, color, position."""
    c: dict = {"class": cls, "count": count}
    if color is not None:
        c["color"] = color
    if position is not None:
        c["position"] = [position[0], position[1]]
    return c


def _metadata(tag: str, include: list[dict], prompt: str, exclude: list[dict] | None = None) -> dict:
    """A metadata dict with GenEval's key order: tag, include, [exclude], prompt."""
    meta: dict = {"tag": tag, "include": include}
    if exclude is not None:
        meta["exclude"] = exclude
    meta["prompt"] = prompt
    return meta


def enumerate_prompts(spec: WorldSpec) -> list[dict]:
    """Every distinct caption of the world as GenEval metadata, in a fixed order (tags in GENEVAL_TAGS order).

    single_object  "a photo of a circle"                          one per shape
    two_object     "a photo of a circle and a square"            ordered pairs of distinct shapes
    counting       "a photo of three triangles"                  shape x count in 2..max_objects, exclude n + 1
    colors         "a photo of a red square"                     colour x shape
    position       "a photo of a square left of a circle"        ordered distinct pairs x 4 relations
    color_attr     "a photo of a red circle and a blue square"   distinct shapes and distinct colours
    """
    shapes, colors = spec.shapes, spec.color_names
    out: list[dict] = []
    for s in shapes:
        out.append(_metadata("single_object", [_clause(s)], f"a photo of {_np(s)}"))
    for s1 in shapes:
        for s2 in shapes:
            if s1 != s2:
                out.append(_metadata("two_object", [_clause(s1), _clause(s2)], f"a photo of {_np(s1)} and {_np(s2)}"))
    for s in shapes:
        for n in range(2, spec.max_objects + 1):
            out.append(_metadata("counting", [_clause(s, n)], f"a photo of {NUMBER_WORDS[n]} {s}s",
                                 exclude=[_clause(s, n + 1)]))  # fmt: skip
    for c in colors:
        for s in shapes:
            out.append(_metadata("colors", [_clause(s, color=c)], f"a photo of {_np(s, c)}"))
    for a in shapes:  # "a photo of A rel B": include[0] = B (the target), include[1] = A
        for b in shapes:
            if a == b:
                continue
            for rel in RELATIONS:
                include = [_clause(b), _clause(a, position=(rel, 0))]
                out.append(_metadata("position", include, f"a photo of {_np(a)} {rel} {_np(b)}"))
    for c1 in colors:
        for s1 in shapes:
            for c2 in colors:
                for s2 in shapes:
                    if s1 != s2 and c1 != c2:
                        include = [_clause(s1, color=c1), _clause(s2, color=c2)]
                        out.append(_metadata("color_attr", include, f"a photo of {_np(s1, c1)} and {_np(s2, c2)}"))
    return out


def caption_factors(metadata: dict) -> frozenset[tuple[int, str, object]]:
    """What a caption asks for, one factor per (include-clause index, field, value): the class of every clause, the
    count when above 1, the colour, the position relation. "a photo of a square left of a circle" ->
    {(0, class, circle), (1, class, square), (1, relation, left of)}."""
    out: set[tuple[int, str, object]] = set()
    for i, clause in enumerate(metadata["include"]):
        out.add((i, "class", clause["class"]))
        if int(clause["count"]) > 1:
            out.add((i, "count", int(clause["count"])))
        if "color" in clause:
            out.add((i, "color", clause["color"]))
        if "position" in clause:
            out.add((i, "relation", clause["position"][0]))
    return frozenset(out)


def _eval_quotas(sizes: dict[str, int], num_eval: int, min_per_tag: int) -> dict[str, int]:
    """Held-out captions per tag: ``min(min_per_tag, cap)`` first, then the rest of ``num_eval`` dealt
    round-robin in GENEVAL_TAGS order; a tag gives at most cap = half of its captions (a full tag passes its turn),
    or up to ``min_per_tag`` of a smaller tag while one caption stays in training (single_object)."""
    caps = {t: max(n // 2, min(min_per_tag, n - 1)) for t, n in sizes.items()}
    quota = {t: min(min_per_tag, caps[t]) for t in GENEVAL_TAGS}
    if num_eval < sum(quota.values()) or num_eval > sum(caps.values()):
        raise ValueError(f"num_eval must be in [{sum(quota.values())}, {sum(caps.values())}] for this world (at "
                         f"most half of each tag, at least min_per_tag={min_per_tag}), got {num_eval}")  # fmt: skip
    left = num_eval - sum(quota.values())
    while left:
        for t in GENEVAL_TAGS:
            if left and quota[t] < caps[t]:
                quota[t] += 1
                left -= 1
    return quota


def _covered_pick(tag_ix: list[int], order: np.ndarray, quota: int, prompts: list[dict]) -> list[int]:
    """Walk ``order`` (a permutation of ``tag_ix``) and hold a caption out only if every one of its
    :func:`caption_factors` stays in a training caption of the same tag (of any tag for a one-factor caption,
    single_object: its class is drawn by the colors captions). Returns fewer than ``quota`` when the walk runs out."""
    held: list[int] = []
    for j in order:
        if len(held) == quota:
            break
        cand = tag_ix[j]
        pool = tag_ix if len(caption_factors(prompts[cand])) > 1 else range(len(prompts))
        kept = [caption_factors(prompts[i]) for i in pool if i != cand and i not in held]
        if caption_factors(prompts[cand]) <= frozenset().union(*kept):
            held.append(cand)
    return held


COVERED_TRIES = 200
"""Permutations a covered split tries per tag before it gives up (a greedy walk can block itself)."""


def split_prompts(spec: WorldSpec, seed: int, num_eval: int, min_per_tag: int = 0,
                  covered: bool = False) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Disjoint (train, eval) caption sets, deterministic in ``seed``; eval is balanced across the six tags.

    ``num_eval`` slots are dealt round-robin over the tags (canonical order), after ``min_per_tag`` slots to every
    tag; a tag gives at most half of its captions to eval, so training keeps every template, and a full tag passes
    its turn on. Within a tag the eval captions are a seeded random subset; with ``covered`` the subset skips a
    caption whose class, count, colour or relation would leave the tag's training captions (see
    :func:`_covered_pick`), so every held-out caption is a new combination of trained parts. The defaults
    (0, False) give the split of every base made before these options existed. Both lists come back in
    :func:`enumerate_prompts` order. Raises if the world cannot give what is asked.
    """
    prompts = enumerate_prompts(spec)
    by_tag = {t: [i for i, m in enumerate(prompts) if m["tag"] == t] for t in GENEVAL_TAGS}
    quota = _eval_quotas({t: len(ix) for t, ix in by_tag.items()}, num_eval, min_per_tag)
    rng = np.random.default_rng(seed)
    eval_ix: set[int] = set()
    for t in GENEVAL_TAGS:  # one permutation per tag, drawn in canonical order, so the split depends on seed only
        perm = rng.permutation(len(by_tag[t]))
        if not covered:
            eval_ix.update(by_tag[t][j] for j in perm[: quota[t]])
            continue
        held = _covered_pick(by_tag[t], perm, quota[t], prompts)
        for _ in range(COVERED_TRIES - 1):
            if len(held) == quota[t]:
                break
            held = _covered_pick(by_tag[t], rng.permutation(len(by_tag[t])), quota[t], prompts)
        if len(held) < quota[t]:
            raise ValueError(f"no {quota[t]} {t} captions can be held out with every class, count, colour and "
                             f"relation still trained; lower num_eval or min_per_tag")  # fmt: skip
        eval_ix.update(held)
    train = [m for i, m in enumerate(prompts) if i not in eval_ix]
    evals = [m for i, m in enumerate(prompts) if i in eval_ix]
    return train, evals


def validation_pick(train: list[dict], per_tag: int, seed: int) -> list[dict]:
    """A seeded validation set carved from the training captions: ``per_tag`` of every tag, at most half of the
    tag's training captions (in-distribution: pretrained on, to be kept out of RL prompts; disjoint from the
    held-out set by construction). Returned in ``train`` order."""
    rng = np.random.default_rng(seed)
    picked: set[int] = set()
    for t in GENEVAL_TAGS:
        ix = [i for i, m in enumerate(train) if m["tag"] == t]
        picked.update(ix[j] for j in rng.permutation(len(ix))[: min(per_tag, len(ix) // 2)])
    return [m for i, m in enumerate(train) if i in picked]


# ----------------------------------------------------------------------------------------------------------------
# Scenes and rendering
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: ``shape`` in a size x size box whose top-left pixel is (x0, y0)."""

    shape: str
    color: str
    x0: int
    y0: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive right/bottom edges: the box GenEval sees for this object."""
        return (self.x0, self.y0, self.x0 + self.size, self.y0 + self.size)


def render_scene(objects: list[SceneObject], spec: WorldSpec) -> np.ndarray:
    """Paint ``objects`` (later ones on top) on the background. Returns (canvas, canvas, 3) uint8."""
    img = np.empty((spec.canvas, spec.canvas, 3), dtype=np.uint8)
    img[:] = spec.background
    palette = spec.palette
    for ob in objects:
        if ob.shape not in SHAPE_MASKS or ob.color not in palette:
            raise ValueError(f"unknown shape or colour in {ob}; shapes {sorted(SHAPE_MASKS)}, colours {list(palette)}")
        x1, y1 = ob.x0 + ob.size, ob.y0 + ob.size
        if ob.x0 < 0 or ob.y0 < 0 or x1 > spec.canvas or y1 > spec.canvas:
            raise ValueError(f"{ob} does not fit a {spec.canvas}px canvas")
        window = img[ob.y0 : y1, ob.x0 : x1]  # (size, size, 3) view
        window[SHAPE_MASKS[ob.shape](ob.size)] = palette[ob.color]
    return img


def _apart(a: SceneObject, b: SceneObject, gap: int) -> bool:
    """True if the two boxes are at least ``gap`` background pixels apart along x or y."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return bx0 - ax1 >= gap or ax0 - bx1 >= gap or by0 - ay1 >= gap or ay0 - by1 >= gap


def _relation_ok(a: SceneObject, b: SceneObject, rel: str, spec: WorldSpec) -> bool:
    """A is ``rel`` of B with the world's margin (shift ``position_shift`` > 0.1) and no other relation even at
    shift 0, so the caption is the scene's only reading and a one-pixel box error cannot flip it."""
    return rel in relpos(a.box, b.box, spec.position_shift) and relpos(a.box, b.box, 0.0) == {rel}


def sample_scene(
    metadata: dict, spec: WorldSpec, rng: np.random.Generator, max_tries: int = 4000
) -> list[SceneObject]:
    """Objects satisfying ``metadata``'s include clauses: ``count`` objects per clause, the clause's colour (else a
    uniform palette colour per object), boxes ``min_gap`` apart, and every position clause ``[rel, g]`` satisfied
    between each of its objects and each object of clause g. Exclude clauses hold automatically (exact counts).

    Rejection sampling: sizes uniform over ``spec.sizes`` up to hi, top-left corners uniform on the
    ``position_step`` lattice; hi steps down towards min_size every ``max_tries // 16`` failures, so crowded scenes
    (four objects) still fit.
    """
    wanted: list[tuple[int, str, str | None]] = []  # (clause index, shape, colour or None)
    for i, clause in enumerate(metadata["include"]):
        wanted += [(i, clause["class"], clause.get("color"))] * int(clause["count"])
    colors, sizes, step = spec.color_names, spec.sizes, spec.position_step
    hi = len(sizes)
    for attempt in range(max_tries):
        if attempt and attempt % max(1, max_tries // 16) == 0:
            hi = max(1, hi - 1)
        objs: list[SceneObject] = []
        for _, shape, color in wanted:
            size = sizes[int(rng.integers(hi))]
            x0, y0 = (step * int(v) for v in rng.integers(0, (spec.canvas - size) // step + 1, size=2))
            col = color if color is not None else colors[int(rng.integers(len(colors)))]
            objs.append(SceneObject(shape, col, x0, y0, size))
        if not all(_apart(a, b, spec.min_gap) for j, a in enumerate(objs) for b in objs[j + 1 :]):
            continue
        ok = True
        for i, clause in enumerate(metadata["include"]):
            if "position" in clause:
                rel, g = clause["position"]
                ok = ok and all(_relation_ok(a, b, rel, spec) for (ia, _, _), a in zip(wanted, objs) if ia == i
                                for (ib, _, _), b in zip(wanted, objs) if ib == g)  # fmt: skip
        if ok:
            return objs
    raise RuntimeError(f"no scene for {metadata['prompt']!r} in {max_tries} tries on a {spec.canvas}px canvas; "
                       f"lower min_size/min_gap or raise canvas")  # fmt: skip


def render(metadata: dict, spec: WorldSpec, rng: np.random.Generator) -> np.ndarray:
    """A random ground-truth image for ``metadata``: (canvas, canvas, 3) uint8. See :func:`sample_scene`."""
    return render_scene(sample_scene(metadata, spec, rng), spec)


def render_batch(metadatas: list[dict], spec: WorldSpec, rng: np.random.Generator) -> np.ndarray:
    """One ground-truth image per metadata dict: (B, canvas, canvas, 3) uint8."""
    return np.stack([render(m, spec, rng) for m in metadatas])


def swatches(spec: WorldSpec) -> np.ndarray:
    """One image per (shape, colour, size, sub-patch offset): the world's full object catalogue. (M, S, S, 3) uint8.

    An object's patches depend only on these four things (objects never share a patch, see ``min_gap``), so a
    tokenizer fitted on images that include the swatches has seen every patch the renderer can produce. Offsets
    are the lattice positions inside one patch: (patch / position_step)^2 of them, 1 when objects sit on the
    token lattice.
    """
    offsets = sorted({(k * spec.position_step) % spec.patch for k in range(spec.patch)})
    objs = [SceneObject(shape, color, ox, oy, size) for shape in spec.shapes for color in spec.color_names
            for size in spec.sizes for oy in offsets for ox in offsets]  # fmt: skip
    return np.stack([render_scene([ob], spec) for ob in objs])


def tokenizer_fit_images(spec: WorldSpec, prompts: list[dict], num_images: int, seed: int) -> np.ndarray:
    """Images to fit the patch tokenizer on: :func:`swatches` plus ``num_images`` renders of ``prompts`` (cycled
    in a seeded order). (M, S, S, 3) uint8, deterministic in ``seed``. Pass training prompts only."""
    rng = np.random.default_rng(seed)
    order = [prompts[int(i) % len(prompts)] for i in rng.permutation(max(num_images, len(prompts)))[:num_images]]
    return np.concatenate([swatches(spec), render_batch(order, spec, rng)]) if order else swatches(spec)
