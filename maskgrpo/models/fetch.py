"""Fetch every weight a config needs into the Hugging Face cache, once, before a launch (the launch is offline).

    bash launch/fetch_weights.sh configs/mmada_htgrpo.yaml                     # the launchers' variables apply
    python -m maskgrpo.models.fetch --config configs/mmada_htgrpo.yaml [key=value ...] [--check] [--no-judges]
    python -m maskgrpo.models.fetch --repo Gen-Verse/MMaDA-8B-Base             # one repository, whole

What a config needs (:func:`config_sources`): the backbone (its safetensors, config and tokenizer files, exactly the
files its loader asks for), its image tokenizer (MAGVIT-v2 ``vq_path`` for MMaDA; Lumina-DiMOO's ``vqvae/``
subfolder, or ``vq_path``), a separate ``tokenizer_path``, the in-trainer CLIP reward's ``model_path``, and the
weights of the reward judges served over HTTP where their source is known (:data:`JUDGES`; ``--no-judges`` skips
them, e.g. when the servers run on a machine with its own cache). A local directory is listed, never fetched.

For each repository it prints the files, their sizes and SHA-256 digests (computed here from the downloaded bytes;
``--no-digests`` skips the reading) and the snapshot's revision, and writes the same to ``--manifest`` (default
``cache/fetch/<config>.json``). ``--check`` downloads nothing: it says, for each repository, whether the cache holds
it, and exits 1 when one is missing. The cache is the usual one (``HF_HOME`` / ``HF_HUB_CACHE``): fetch on a machine
with network into a cache the GPU nodes share, then launch with ``HF_HUB_OFFLINE=1`` (the GPU launchers' default).

Exit status: 0 everything fetched (or cached, with ``--check``), 1 a repository failed or is missing, 2 a bad
config or argument.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskgrpo.errors import add_traceback_flag, one_line, one_line_errors

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Source:
    """One thing a config loads: a hub repository to fetch (``repo_id``), a local path, or a note on where it comes
    from when it is not on the hub."""

    what: str
    """Where the config names it, e.g. ``backbone.path`` or ``rewards.hpsv3 (server judge)``."""
    repo_id: str | None
    """Hub id to fetch; None when there is nothing to fetch (``local`` or ``note`` says why)."""
    patterns: tuple[str, ...] | None = None
    """The files the loader asks for (``allow_patterns``); None = the whole repository."""
    local: str | None = None
    """A local path the config names instead (listed, never fetched)."""
    note: str = ""
    """Where the weights come from, what loads them, or why nothing is fetched."""


@dataclass(frozen=True)
class Judge:
    """Weights a reward server loads (it runs in its own environment, reading the same cache when HF_HOME is
    shared)."""

    repos: tuple[tuple[str, tuple[str, ...] | None], ...]
    """(hub id, files or None for the whole repository) the server loads."""
    note: str


JUDGES: dict[str, Judge] = {
    "hpsv3": Judge((("MizzenAI/HPSv3", ("HPSv3.safetensors",)), ("Qwen/Qwen2-VL-7B-Instruct", None)),
                   "HPSv3RewardInferencer (PyPI hpsv3) downloads HPSv3.safetensors from MizzenAI/HPSv3 and builds its "
                   "Qwen2-VL-7B-Instruct base (the base its HPSv3_7B config names)"),
    "unifiedreward": Judge((("CodeGoat24/UnifiedReward-qwen-7b", None),),
                           "maskgrpo.rewards.scorers:make_unifiedreward's default model_path (Qwen2.5-VL-7B judge)"),
    "deqa": Judge((("zhiyuanyou/DeQA-Score-Mix3", None),),
                  "DeQA-Score, loaded by the public reward-server's app_deqa (its own environment)"),
}  # fmt: skip
"""Reward servers' weights by registered reward name (docs/benchmarks.md section 3)."""

NO_HUB_WEIGHTS: dict[str, str] = {
    "geneval": "not fetched: GenEval's Mask2Former detector comes from download.openmmlab.com, not the hub; the "
               "public reward-server's environment fetches it (docs/rewards.md, docs/after_training.md)",
    "http": "not fetched: an arbitrary scorer behind maskgrpo.rewards.serve; its weights are its own business",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# What a config needs


def _hub_or_local(what: str, value: Any, patterns: tuple[str, ...] | None, note: str = "") -> Source:
    from maskgrpo.hub import looks_like_hub_id

    text = str(value)
    if Path(text).expanduser().exists() or not looks_like_hub_id(text):
        return Source(what, None, patterns, local=text, note=note)
    return Source(what, text, patterns, note=note)


def backbone_sources(name: str, path: str, options: dict[str, Any]) -> list[Source]:
    """The backbone's own files, image tokenizer and tokenizer, with the patterns its loader fetches."""
    from maskgrpo.models.loading import WEIGHT_PATTERNS

    if name == "mmada":
        from maskgrpo.backbones.mmada import TOKENIZER_PATTERNS
        from maskgrpo.models.magvit2 import WEIGHT_FILES

        out = [_hub_or_local("backbone.path", path, (*WEIGHT_PATTERNS, *TOKENIZER_PATTERNS), "MMaDA checkpoint")]
        vq = options.get("vq_path", "showlab/magvitv2")
        out.append(_hub_or_local("backbone.options.vq_path", vq, (*WEIGHT_FILES, "*.json"),
                                 "MAGVIT-v2 image tokenizer (MIT), loaded by maskgrpo/models/magvit2.py"))  # fmt: skip
    elif name == "lumina":
        from maskgrpo.backbones.lumina import TOKENIZER_PATTERNS, VQ_SUBFOLDER

        sub = options.get("vq_subfolder", VQ_SUBFOLDER)
        vq = options.get("vq_path")
        own = (*WEIGHT_PATTERNS, *TOKENIZER_PATTERNS, f"{sub}/*")  # the loader asks for its VQ subfolder too
        out = [_hub_or_local("backbone.path", path, own, f"Lumina-DiMOO checkpoint with its {sub}/ VQ")]
        if vq is not None:
            out.append(_hub_or_local("backbone.options.vq_path", vq, (f"{sub}/*",), f"the VQ's {sub}/ subfolder"))
    else:
        return [Source("backbone.path", None, local=path, note=f"backbone {name!r}: local weights, nothing to fetch")]
    tok = options.get("tokenizer_path")
    if tok is not None:
        from maskgrpo.backbones.mmada import TOKENIZER_PATTERNS as TOK

        out.append(_hub_or_local("backbone.options.tokenizer_path", tok, TOK, "text tokenizer"))
    return out


def reward_sources(rewards: dict[str, Any], judges: bool) -> list[Source]:
    """The in-trainer CLIP model and, with ``judges``, the weights the config's reward servers load."""
    import inspect

    from maskgrpo.rewards.base import REWARDS
    from maskgrpo.rewards.clip import CLIP_FILES

    out: list[Source] = []
    for name, entry in rewards.items():
        reg = entry.entry or name
        if reg == "clip":
            default = inspect.signature(REWARDS.get("clip")).parameters["model_path"].default
            out.append(_hub_or_local(f"rewards.{name}.model_path", entry.kwargs.get("model_path", default),
                                     CLIP_FILES, "CLIP, loaded by the trainer on every rank"))  # fmt: skip
        elif reg in JUDGES:
            judge = JUDGES[reg]
            for repo_id, patterns in judge.repos:
                if judges:
                    out.append(Source(f"rewards.{name} (server judge)", repo_id, patterns, note=judge.note))
                else:
                    skipped = f"skipped (--no-judges): {repo_id}"
                    out.append(Source(f"rewards.{name} (server judge)", None, note=skipped))
        elif reg in NO_HUB_WEIGHTS:
            out.append(Source(f"rewards.{name}", None, note=NO_HUB_WEIGHTS[reg]))
        elif reg.startswith("shapes"):
            continue  # ShapesWorld rewards: rule-based, no weights
        else:
            out.append(Source(f"rewards.{name}", None, note=f"unknown weight source for reward {reg!r}: not fetched"))
    return out


def config_sources(cfg: Any, judges: bool = True) -> list[Source]:
    """Everything a ``TrainRun`` loads from the hub or disk, in load order (backbone first)."""
    from maskgrpo.backbones import BACKBONES
    from maskgrpo.backbones.base import loader_defaults

    options = {**loader_defaults(BACKBONES.get(cfg.backbone.name)), **cfg.backbone.options}
    return backbone_sources(cfg.backbone.name, cfg.backbone.path, options) + reward_sources(cfg.rewards, judges)


# ---------------------------------------------------------------------------------------------------------------
# Cache look-ups and downloads


def cached_snapshot(repo_id: str, patterns: tuple[str, ...] | None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (no network), or None when the cache does not hold it."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from maskgrpo import hub

    try:
        return Path(hub.download_snapshot(repo_id, None if patterns is None else list(patterns), True))
    except LocalEntryNotFoundError:
        return None


@dataclass
class Fetched:
    """One repository after the fetch: its snapshot, files and digests."""

    source: Source
    snapshot: Path | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    """``{"path", "bytes", "sha256"}`` per file of the snapshot (sha256 None with --no-digests)."""
    error: str | None = None
    seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(f["bytes"] for f in self.files)


def list_files(snapshot: Path, digests: bool) -> list[dict[str, Any]]:
    """Files of a snapshot folder (symlinks into the cache's blobs resolved), sorted, with size and SHA-256."""
    from maskgrpo.digests import sha256_file

    out = []
    for f in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        out.append({"path": f.relative_to(snapshot).as_posix(), "bytes": f.stat().st_size,
                    "sha256": sha256_file(f) if digests else None})  # fmt: skip
    return out


def fetch_one(source: Source, check_only: bool, digests: bool) -> Fetched:
    """Download (or, with ``check_only``, look up) one repository through the loaders' own download function."""
    from maskgrpo import hub

    t0 = time.perf_counter()
    out = Fetched(source)
    patterns = None if source.patterns is None else list(source.patterns)
    try:
        if check_only:
            out.snapshot = cached_snapshot(source.repo_id, source.patterns)
            if out.snapshot is None:
                out.error = "not in the cache"
        else:
            out.snapshot = Path(hub.download_snapshot(source.repo_id, patterns, False))
        if out.snapshot is not None:
            out.files = list_files(out.snapshot, digests)
            if not out.files:
                out.error = f"no files matching {patterns} in the snapshot"
    except Exception as e:  # a 404, a gated repository, no network: reported per repository, the others go on
        out.error = one_line(e)
    out.seconds = time.perf_counter() - t0
    return out


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def report(results: list[Fetched], others: list[Source], check_only: bool) -> str:
    """The printed summary: per repository its status, size, revision and files with digests; then local paths
    and notes."""
    lines = []
    for r in results:
        s = r.source
        status = ("MISSING" if check_only else "FAILED") if r.error else ("cached" if check_only else "fetched")
        rev = r.snapshot.name[:12] if r.snapshot is not None else "-"
        lines.append(f"{status:<8} {s.repo_id:<36} {_size(r.total_bytes):>10}  {len(r.files):>3} files  rev {rev}  "
                     f"{s.what}" + (f": {r.error}" if r.error else ""))  # fmt: skip
        if s.note:
            lines.append(f"         {s.note}")
        for f in r.files:
            digest = f["sha256"] or "(digest skipped)"
            lines.append(f"           {_size(f['bytes']):>10}  sha256 {digest}  {f['path']}")
    for s in others:
        lines.append(f"{'local':<8} {s.local:<36} {'':>10}  {s.what}" if s.local else f"{'-':<8} {s.what}: {s.note}")
    total = sum(r.total_bytes for r in results)
    lines.append(f"{len(results)} hub repositories, {_size(total)}; {sum(bool(r.error) for r in results)} "
                 + ("missing" if check_only else "failed"))  # fmt: skip
    return "\n".join(lines)


def manifest(results: list[Fetched], others: list[Source], config: str | None) -> dict[str, Any]:
    from huggingface_hub.constants import HF_HUB_CACHE

    return {"config": config, "cache": str(HF_HUB_CACHE), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "repositories": [{"what": r.source.what, "repo_id": r.source.repo_id, "patterns": r.source.patterns,
                              "revision": r.snapshot.name if r.snapshot else None, "error": r.error,
                              "bytes": r.total_bytes, "files": r.files, "note": r.source.note} for r in results],
            "not_fetched": [{"what": s.what, "local": s.local, "note": s.note} for s in others]}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TrainRun YAML whose weights to fetch")
    ap.add_argument("--repo", action="append", default=[], metavar="ID", help="a hub repository to fetch, whole "
                    "(repeatable; instead of or besides --config)")  # fmt: skip
    ap.add_argument("--check", action="store_true", help="download nothing; report what the cache holds")
    ap.add_argument("--no-judges", action="store_true", help="skip the reward servers' weights")
    ap.add_argument("--no-digests", action="store_true", help="do not read the files for their SHA-256")
    ap.add_argument("--manifest", default=None, help="JSON record (default cache/fetch/<config name>.json)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, as passed to maskgrpo.train")
    add_traceback_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors(args.traceback):
        return run(args)


def run(args: argparse.Namespace) -> int:
    from maskgrpo.config import load_config
    from maskgrpo.config.schema import TrainRun

    if not args.config and not args.repo:
        print("error: give --config FILE (and overrides) or --repo ID", file=sys.stderr)
        return 2
    sources: list[Source] = []
    if args.config:
        cfg = load_config(TrainRun, args.config, args.overrides)  # ConfigError: one line, exit 2
        sources += config_sources(cfg, judges=not args.no_judges)
    sources += [Source("--repo", r, None) for r in args.repo]
    hub = list({(s.repo_id, s.patterns): s for s in sources if s.repo_id}.values())  # one fetch per repo + files
    others = [s for s in sources if not s.repo_id]
    if not args.check and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
        print("error: HF_HUB_OFFLINE is set: fetching needs the hub; run with HF_HUB_OFFLINE=0 on a machine with "
              "network (or --check to see what the cache holds)", file=sys.stderr)  # fmt: skip
        return 2
    results = []
    for s in hub:
        print(f"[fetch] {'checking' if args.check else 'fetching'} {s.repo_id} ({s.what})", flush=True)
        results.append(fetch_one(s, args.check, digests=not args.no_digests))
    print(report(results, others, args.check))
    name = Path(args.config).stem if args.config else "repos"
    out = Path(args.manifest) if args.manifest else REPO / "cache" / "fetch" / f"{name}.json"
    if not args.check:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(manifest(results, others, args.config), indent=1) + "\n")
        print(f"[fetch] wrote {out}")
    missing = [r.source.repo_id for r in results if r.error]
    if missing:
        how = "fetch them (on a machine with network): bash launch/fetch_weights.sh CONFIG" if args.check else \
              "see the errors above (a gated repository needs `hf auth login`; a 404 is a wrong id)"  # fmt: skip
        print(f"{len(missing)} of {len(results)} repositories {'missing' if args.check else 'failed'}: "
              f"{', '.join(missing)}; {how}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
