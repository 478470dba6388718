"""GenEval-style training prompts that never repeat an evaluation prompt.

``python -m eval.geneval_train_prompts --out FILE --n N --seed S [--metadata EVAL.jsonl] [--object-names FILE]``

Writes N metadata lines in the format of GenEval's ``evaluation_metadata.jsonl`` (keys tag, include, [exclude],
prompt; clause keys class, count, [color], [position]), usable as ``prompts.source`` of an RL run (docs/prompts.md).
The six tags use the official templates (docs/benchmarks.md section 1), over the 80 COCO classes and the 10 colours;
colours never go on ``person``::

    single_object  a photo of a bench                      include [{bench, 1}]
    two_object     a photo of a bench and a sports ball    two distinct classes
    counting       a photo of three clocks                 n in {2, 3, 4}; exclude [{clock, n + 1}]
    colors         a photo of a blue fire hydrant          one coloured class
    position       a photo of a dog right of a teddy bear  include[0] = teddy bear (B), include[1] = dog (A) with
                                                           position [rel, 0], rel in {left of, right of, above, below}
    color_attr     a photo of a purple cup and a red car   two distinct classes, two distinct colours

Articles: "an" before a vowel. Plurals: "es" after a final "s" (buses, wine glasses), else "s" (benchs, sheeps), as
in the official file; :func:`prompt_text` reproduces all 553 official prompts from their metadata (tested).

**Never an evaluation prompt.** A candidate is dropped if it equals an evaluation prompt or says the same thing in
another order: "a cat and a dog" for "a dog and a cat", "a cat right of a dog" for "a dog left of a cat" (also above
/ below), and swapped coloured pairs. Candidates are distinct (drawn without replacement per tag).

**Works from a fresh clone.** GenEval's official files are not in this repository. ``eval/geneval_facts.json``
(our own data file, facts from GenEval af4902f) holds the 80 class names in ``object_names.txt`` order and the
SHA-256 of every evaluation prompt and of every reordering of one (:func:`eval_digests`); a candidate whose
prompt's SHA-256 is listed is dropped. With the defaults the output is identical to a run given the official
``--metadata`` (tested when the official files are present); ``--metadata`` adds that file's prompts to the
exclusions. ``--make-facts FILE`` rebuilds the data file from the official files.

**Proportions.** By default the tags share N in the proportions of the evaluation file (80 : 99 : 80 : 94 : 100 :
100); a tag that runs out of candidates passes its share on to the others. Every single_object candidate is an
evaluation prompt (the template has only the 80 classes), so that tag always contributes 0 and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from maskgrpo.jsonl import iter_jsonl
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS, RELATIONS

COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
"""GenEval's 10 colour names."""
NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
"""Counts of the counting template."""
NO_COLOR_CLASS = "person"
"""The class GenEval never colours."""
INVERSE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
"""``A rel B`` says the same as ``B INVERSE[rel] A``."""

FACTS = Path(__file__).resolve().parent / "geneval_facts.json"
"""Shipped GenEval facts: ``classes`` (object_names.txt order) and ``eval_prompt_sha256`` (see the module doc)."""


# ----------------------------------------------------------------------------------------------------------------
# Templates
# ----------------------------------------------------------------------------------------------------------------


def with_article(phrase: str) -> str:
    """ "an apple", "an orange cup", "a bench": "an" before a vowel, as in the official prompts."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def plural(name: str) -> str:
    """The official file's plural: "es" after a final "s", else "s" (buses, wine glasses; benchs, knifes)."""
    return f"{name}es" if name.endswith("s") else f"{name}s"


def _phrase(clause: dict) -> str:
    """Noun phrase of a count-1 clause: "a bench", "a blue fire hydrant"."""
    return with_article(f"{clause['color']} {clause['class']}" if "color" in clause else clause["class"])


def prompt_text(meta: dict) -> str:
    """The official template's prompt for a metadata dict (ignores ``meta["prompt"]``)."""
    tag, inc = meta["tag"], meta["include"]
    if tag in ("single_object", "colors"):
        return f"a photo of {_phrase(inc[0])}"
    if tag in ("two_object", "color_attr"):
        return f"a photo of {_phrase(inc[0])} and {_phrase(inc[1])}"
    if tag == "counting":
        return f"a photo of {NUMBERS[inc[0]['count']]} {plural(inc[0]['class'])}"
    if tag == "position":  # include[0] = target B, include[1] = A with [rel, 0]: "a photo of A rel B"
        return f"a photo of {_phrase(inc[1])} {inc[1]['position'][0]} {_phrase(inc[0])}"
    raise ValueError(f"unknown GenEval tag {tag!r}; valid tags: {list(GENEVAL_TAGS)}")


def _clause(cls: str, count: int = 1, color: str | None = None, position: tuple[str, int] | None = None) -> dict:
    """One clause with the official key order: class, count, [color], [position]."""
    c: dict = {"class": cls, "count": count}
    if color is not None:
        c["color"] = color
    if position is not None:
        c["position"] = [position[0], position[1]]
    return c


def make_metadata(tag: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    """A metadata dict with the official key order (tag, include, [exclude], prompt) and its templated prompt."""
    meta: dict = {"tag": tag, "include": include}
    if exclude is not None:
        meta["exclude"] = exclude
    meta["prompt"] = prompt_text(meta)
    return meta


# ----------------------------------------------------------------------------------------------------------------
# Candidate spaces: index <-> metadata, per tag
# ----------------------------------------------------------------------------------------------------------------


class CandidateSpace:
    """Every template prompt of the six tags, numbered per tag so that a permutation draws without replacement.

    Index layouts (row-major over the tuples; A != B, k1 != k2 enforced by skipping the diagonal):
    single_object c | two_object (c1, c2) | counting (c, n) | colors (c', k) | position (A, B, rel) |
    color_attr (c1', c2', k1, k2), where c' ranges over the classes other than ``person``.
    """

    def __init__(self, classes: list[str], colors: tuple[str, ...] = COLORS) -> None:
        if len(set(classes)) != len(classes) or NO_COLOR_CLASS not in classes:
            raise ValueError(f"classes must be distinct and include {NO_COLOR_CLASS!r} (GenEval's object_names.txt)")
        self.classes = list(classes)
        self.colorable = [c for c in classes if c != NO_COLOR_CLASS]
        self.colors = list(colors)
        nc, ncc, nk, nr = len(self.classes), len(self.colorable), len(self.colors), len(RELATIONS)
        self.sizes = {
            "single_object": nc,
            "two_object": nc * (nc - 1),
            "counting": nc * len(NUMBERS),
            "colors": ncc * nk,
            "position": nc * (nc - 1) * nr,
            "color_attr": ncc * (ncc - 1) * nk * (nk - 1),
        }

    @staticmethod
    def _pair(i: int, n: int) -> tuple[int, int]:
        """Index in [0, n (n - 1)) -> ordered pair (a, b), a != b."""
        a, r = divmod(i, n - 1)
        return a, r + (r >= a)

    @staticmethod
    def _pair_index(a: int, b: int, n: int) -> int:
        return a * (n - 1) + b - (b > a)

    def decode(self, tag: str, i: int) -> dict:
        """The metadata of candidate ``i`` of ``tag``."""
        cls, col, k = self.classes, self.colorable, self.colors
        if tag == "single_object":
            return make_metadata(tag, [_clause(cls[i])])
        if tag == "two_object":
            a, b = self._pair(i, len(cls))
            return make_metadata(tag, [_clause(cls[a]), _clause(cls[b])])
        if tag == "counting":
            c, n = divmod(i, len(NUMBERS))
            count = list(NUMBERS)[n]
            return make_metadata(tag, [_clause(cls[c], count)], exclude=[_clause(cls[c], count + 1)])
        if tag == "colors":
            c, kk = divmod(i, len(k))
            return make_metadata(tag, [_clause(col[c], color=k[kk])])
        if tag == "position":
            pair, r = divmod(i, len(RELATIONS))
            a, b = self._pair(pair, len(cls))  # "a photo of A rel B": include[0] = B, include[1] = A
            return make_metadata(tag, [_clause(cls[b]), _clause(cls[a], position=(RELATIONS[r], 0))])
        if tag == "color_attr":
            objs, colours = divmod(i, len(k) * (len(k) - 1))
            a, b = self._pair(objs, len(col))
            ka, kb = self._pair(colours, len(k))
            return make_metadata(tag, [_clause(col[a], color=k[ka]), _clause(col[b], color=k[kb])])
        raise ValueError(f"unknown GenEval tag {tag!r}; valid tags: {list(GENEVAL_TAGS)}")

    def encode(self, meta: dict) -> int | None:
        """Candidate index of a metadata dict of this space's kind, or None if it is not one of its candidates."""
        tag, inc = meta["tag"], meta["include"]
        try:
            c = [self.classes.index(x["class"]) for x in inc]
            if tag == "single_object":
                return c[0]
            if tag == "two_object":
                return self._pair_index(c[0], c[1], len(self.classes)) if c[0] != c[1] else None
            if tag == "counting":
                return c[0] * len(NUMBERS) + list(NUMBERS).index(inc[0]["count"])
            cc = [self.colorable.index(x["class"]) for x in inc] if tag in ("colors", "color_attr") else []
            if tag == "colors":
                return cc[0] * len(self.colors) + self.colors.index(inc[0]["color"])
            if tag == "position":
                a, b, rel = c[1], c[0], inc[1]["position"][0]
                return self._pair_index(a, b, len(self.classes)) * len(RELATIONS) + RELATIONS.index(rel)
            if tag == "color_attr":
                ka, kb = (self.colors.index(x["color"]) for x in inc)
                if cc[0] == cc[1] or ka == kb:
                    return None
                nk = len(self.colors)
                return self._pair_index(cc[0], cc[1], len(self.colorable)) * nk * (nk - 1) + self._pair_index(
                    ka, kb, nk
                )
        except (ValueError, KeyError, IndexError):
            return None
        raise ValueError(f"unknown GenEval tag {tag!r}; valid tags: {list(GENEVAL_TAGS)}")


def equivalents(meta: dict) -> list[dict]:
    """``meta`` and the metadata that say the same thing in another order (two_object / color_attr swapped,
    position "A rel B" -> "B inverse(rel) A")."""
    tag, inc = meta["tag"], meta["include"]
    if tag in ("two_object", "color_attr") and len(inc) == 2:
        return [meta, make_metadata(tag, [inc[1], inc[0]])]
    if tag == "position" and len(inc) == 2:
        a, b, rel = inc[1]["class"], inc[0]["class"], inc[1]["position"][0]
        return [meta, make_metadata(tag, [_clause(a), _clause(b, position=(INVERSE[rel], 0))])]
    return [meta]


def prompt_digest(prompt: str) -> str:
    """SHA-256 (hex) of a prompt's UTF-8 bytes: how the shipped facts name an evaluation prompt."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def eval_digests(eval_metadata: list[dict]) -> set[str]:
    """SHA-256 of every evaluation prompt and of every :func:`equivalents` of one."""
    return {prompt_digest(eq["prompt"]) for meta in eval_metadata for eq in equivalents(meta)}


def excluded_candidates(space: CandidateSpace, eval_metadata: list[dict], digests: set[str]) -> dict[str, set[int]]:
    """Per tag, the candidate indices to drop: the evaluation prompts and their equivalents (by index), plus every
    candidate whose prompt's SHA-256 is in ``digests`` (a scan of the whole space, about 0.6 M prompts, seconds)."""
    excluded: dict[str, set[int]] = {t: set() for t in GENEVAL_TAGS}
    for meta in eval_metadata:
        for eq in equivalents(meta):
            i = space.encode(eq)
            if i is not None:
                excluded[meta["tag"]].add(i)
    if digests:
        for tag in GENEVAL_TAGS:
            excluded[tag].update(
                i for i in range(space.sizes[tag]) if prompt_digest(space.decode(tag, i)["prompt"]) in digests
            )
    return excluded


def load_facts(path: Path) -> tuple[list[str], set[str]]:
    """(classes, evaluation-prompt digests) of a facts file; a damaged file names itself and the key."""
    try:
        facts = json.loads(path.read_text())
        classes, digests = facts["classes"], set(facts["eval_prompt_sha256"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a GenEval facts file ({type(e).__name__}: {e}); restore it from git") from e
    return classes, digests


def make_facts(eval_metadata: list[dict], classes: list[str], source: dict) -> dict:
    """The content of ``geneval_facts.json`` from the official files (``source``: their SHA-256, for the record)."""
    return {
        "about": "GenEval facts for eval.geneval_train_prompts (facts from djghosh13/geneval af4902f, written here): "
        "the 80 object classes in object_names.txt order, and the SHA-256 of the UTF-8 bytes of every evaluation "
        "prompt and of every prompt that says the same in another order (eval.geneval_train_prompts.eval_digests).",
        "source": source,
        "classes": classes,
        "eval_prompt_sha256": sorted(eval_digests(eval_metadata)),
    }


# ----------------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------------


def allocate(n: int, weights: dict[str, float], capacity: dict[str, int]) -> dict[str, int]:
    """Split ``n`` over the tags in proportion to ``weights`` without exceeding ``capacity``; a full tag passes
    its share on. Each pass gives every open tag floor(share); when every share is below 1, the largest shares
    get one each. Raises if the open tags cannot hold ``n``."""
    alloc = dict.fromkeys(weights, 0)
    total = sum(capacity[t] for t in weights if weights[t] > 0)
    if n > total:
        raise ValueError(f"asked for {n} prompts, but the selected tags have only {total} non-evaluation candidates")
    left = n
    while left > 0:
        open_tags = [t for t in weights if weights[t] > 0 and alloc[t] < capacity[t]]
        w = sum(weights[t] for t in open_tags)
        shares = {t: left * weights[t] / w for t in open_tags}
        step = {t: min(int(shares[t]), capacity[t] - alloc[t]) for t in open_tags}
        if sum(step.values()) == 0:
            for t in sorted(open_tags, key=lambda t: -shares[t])[:left]:
                step[t] = 1
        for t, s in step.items():
            alloc[t] += s
            left -= s
    return alloc


EVAL_TAG_COUNTS: dict[str, int] = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94,
                                   "position": 100, "color_attr": 100}  # fmt: skip
"""Prompts per tag in GenEval's evaluation_metadata.jsonl (553): the default mix of the training prompts."""


def generate_train_prompts(
    n: int,
    seed: int,
    eval_metadata: list[dict],
    classes: list[str],
    tags: tuple[str, ...] = GENEVAL_TAGS,
    digests: set[str] | None = None,
) -> tuple[list[dict], dict]:
    """N training metadata dicts (tag blocks in canonical order) and a report ``{"per_tag", "capacity",
    "excluded"}``. Deterministic in ``seed``; no output is an evaluation prompt or an :func:`equivalents` of one
    (given as ``eval_metadata``, or as ``digests`` of their prompts, or both). Tags share N in the proportions of
    :data:`EVAL_TAG_COUNTS`."""
    space = CandidateSpace(classes)
    excluded = excluded_candidates(space, eval_metadata, digests or set())
    capacity = {t: space.sizes[t] - len(excluded[t]) for t in GENEVAL_TAGS}
    weights = {t: float(EVAL_TAG_COUNTS[t]) if t in tags else 0.0 for t in GENEVAL_TAGS}
    alloc = allocate(n, weights, capacity)
    rng = np.random.default_rng(seed)
    eval_prompts = {m["prompt"] for m in eval_metadata}
    out: list[dict] = []
    for tag in GENEVAL_TAGS:  # one permutation per tag, drawn in canonical order
        perm = rng.permutation(space.sizes[tag])
        picked = [int(i) for i in perm if int(i) not in excluded[tag]][: alloc[tag]]
        for i in picked:
            meta = space.decode(tag, i)
            # cannot happen: `excluded` holds every evaluation prompt
            if meta["prompt"] in eval_prompts or (digests and prompt_digest(meta["prompt"]) in digests):
                raise RuntimeError(f"internal error: drew the evaluation prompt {meta['prompt']!r}")
            out.append(meta)
    report = {"per_tag": alloc, "capacity": capacity, "excluded": {t: len(v) for t, v in excluded.items()}}
    return out, report


def read_lines(path: str) -> list[str]:
    return [x.strip() for x in Path(path).read_text().splitlines() if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output JSONL of training metadata")
    ap.add_argument("--n", type=int, help="number of prompts")
    ap.add_argument("--seed", type=int, help="seed of the draw")
    ap.add_argument("--metadata", default=None,
                    help="GenEval's evaluation_metadata.jsonl: its prompts are excluded too (optional: the shipped "
                         f"digests in {FACTS.name} already exclude the official ones)")  # fmt: skip
    ap.add_argument("--object-names", default=None,
                    help=f"object_names.txt, one class a line (default: the 80 classes in {FACTS.name})")  # fmt: skip
    ap.add_argument("--tags", nargs="+", default=list(GENEVAL_TAGS), choices=GENEVAL_TAGS,
                    help="tags to draw from (default: all six)")  # fmt: skip
    ap.add_argument("--make-facts", metavar="FILE", default=None,
                    help=f"write a file like {FACTS.name} from --metadata and --object-names, then exit")  # fmt: skip
    args = ap.parse_args(argv)
    for path in (args.metadata, args.object_names):
        if path is not None and not Path(path).is_file():
            ap.error(f"{path} not found (GenEval's prompts/ folder has both official files)")
    if args.make_facts and not (args.metadata and args.object_names):
        ap.error("--make-facts needs the official --metadata and --object-names")
    missing = [f"--{k}" for k in ("out", "n", "seed") if getattr(args, k) is None]
    if missing and not args.make_facts:
        ap.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        return run(args)
    except ValueError as e:  # a bad metadata line (FILE:LINE), a damaged facts file, more prompts than candidates
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    eval_metadata = (
        [meta for _, meta, _ in iter_jsonl(args.metadata, ("tag", "include", "prompt"))] if args.metadata else []
    )
    if args.make_facts:
        source = {Path(f).name + "_sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()
                  for f in (args.metadata, args.object_names)}  # fmt: skip
        facts = make_facts(eval_metadata, read_lines(args.object_names), source)
        Path(args.make_facts).write_text(json.dumps(facts, indent=1) + "\n")
        print(f"[train-prompts] {args.make_facts}: {len(facts['classes'])} classes, "
              f"{len(facts['eval_prompt_sha256'])} evaluation-prompt digests")  # fmt: skip
        return 0
    classes, digests = load_facts(FACTS)
    if args.object_names:
        classes = read_lines(args.object_names)
    prompts, report = generate_train_prompts(args.n, args.seed, eval_metadata, classes, tuple(args.tags), digests)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(m) + "\n" for m in prompts))
    print(f"[train-prompts] {len(prompts)} prompts -> {out}")
    for tag in GENEVAL_TAGS:
        print(f"  {tag:14s} {report['per_tag'][tag]:6d}  (candidates left after removing "
              f"{report['excluded'][tag]} evaluation prompts and equivalents: {report['capacity'][tag]})")  # fmt: skip
    if "single_object" in args.tags and report["capacity"]["single_object"] == 0:
        print("  note: every single_object template prompt is an evaluation prompt; its share went to the others")
    return 0


if __name__ == "__main__":
    sys.exit(main())
