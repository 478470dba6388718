"""The manifest of a ShapesWorld base folder: its recipe and the SHA-256 of every file, checked when it is loaded.

``<base>/manifest.json`` (written by ``python -m maskgrpo.toy.pretrain`` at the end, or by ``write`` below for a
folder made earlier)::

    {"format": "shapes-base-manifest/1",
     "recipe": {"command", "config", "commit", "threads", "torch", "python", "pretrain_seconds", "params"},
     "shapes_eval": {"overall", "partial_mean", <six tags>, "num_images", "samples_per_prompt", "seed", "sampler"},
     "files": {"<relative path>": "<sha256 hex>", ...},     every file of the folder except manifest.json
     "kept_out": {"files": [...], "make": "<command>", "into": "<folder>"}}   optional, see below

A folder whose manifest has ``kept_out`` is a *record*: the listed files (weights too large for git) were removed
after digesting, and ``make`` rebuilds the whole base into ``into``. A record verifies (``verify`` / ``compare``) but
does not load: :func:`verify_base` names the command that makes the missing weights.

``maskgrpo.toy.backbone.load_shapes`` calls :func:`verify_base`: a listed file that is missing or whose digest
differs stops the load with a one-line :class:`RunError` naming the file. A folder without a manifest (a base you
pretrained with an older version) loads unchecked.

CLI (``python -m maskgrpo.toy.base_manifest``):
    write DIR --commit C --threads N [--command "..."]   add a manifest to an existing base folder
    verify DIR                                           check every digest (exit 2 on a mismatch)
    compare NEW SHIPPED                                  per-file same / differs, then the ShapesEval numbers
    keep-out DIR FILE... --make "..." --into DIR2        turn a base into a record (remove FILEs, keep digests)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

from maskgrpo.digests import sha256_file
from maskgrpo.errors import RunError
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS

MANIFEST = "manifest.json"
FORMAT = "shapes-base-manifest/1"
KEPT_OUT = "kept_out"
MAX_GIT_MB = 5
"""The largest file the repository tracks (MB); a base's weights over it ship as a record (``keep_out``)."""
EVAL_FILE = "base_eval.json"
"""ShapesEval of the base, written by the pretraining; it also holds the wall time, so it differs between runs."""
WEIGHT_FILES = ("model/model.safetensors", "model/config.json", "text_tokenizer.json", "world.json")
"""Files that define the base's behaviour (with everything under image_tokenizer/): a reproduction must match these."""


def file_digests(directory: str | Path) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every file under ``directory`` except the manifest, sorted by path."""
    d = Path(directory)
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.relative_to(d).as_posix() != MANIFEST)
    return {p.relative_to(d).as_posix(): sha256_file(p) for p in files}


def eval_numbers(summary: dict, eval_cfg: dict) -> dict:
    """The manifest's ``shapes_eval`` block: the numbers of a ShapesEval summary and the protocol that made them."""
    keys = [*GENEVAL_TAGS, "overall", "partial_mean", "num_images"]
    out = {k: summary[k] for k in keys if k in summary}
    out.update({k: eval_cfg[k] for k in ("samples_per_prompt", "seed", "sampler")})
    return out


def write_manifest(directory: str | Path, recipe: dict, shapes_eval: dict) -> dict:
    """Digest every file of ``directory`` and write ``manifest.json`` beside them; returns the manifest."""
    d = Path(directory)
    return save_manifest(d, {"format": FORMAT, "recipe": recipe, "shapes_eval": shapes_eval, "files": file_digests(d)})


def save_manifest(directory: str | Path, manifest: dict) -> dict:
    """Write ``manifest`` as ``<directory>/manifest.json``; returns it."""
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(directory: str | Path) -> dict | None:
    """The manifest of a base folder, or None when it has none; a damaged one raises RunError naming it."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e})") from e
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise RunError(f"{path}: not a {FORMAT} manifest (no 'format': '{FORMAT}' or no 'files' mapping)")
    kept = manifest.get(KEPT_OUT)
    fields = {"files": list, "make": str, "into": str}
    well_formed = isinstance(kept, dict) and all(isinstance(kept.get(k), t) for k, t in fields.items())
    if kept is not None and not well_formed:
        raise RunError(f"{path}: '{KEPT_OUT}' must be {{'files': [...], 'make': '<command>', 'into': '<folder>'}}")
    return manifest


def verify_base(directory: str | Path, record_ok: bool = False) -> dict | None:
    """Check every file listed in the manifest against its SHA-256; RunError names the first bad file.

    A file the manifest's ``kept_out`` lists may be absent only with ``record_ok`` (comparing with a record);
    otherwise (loading) the error names the command that makes the base."""
    d = Path(directory)
    manifest = read_manifest(d)
    if manifest is None:
        return None
    kept = manifest.get(KEPT_OUT) or {}
    for rel, digest in manifest["files"].items():
        path = d / rel
        if not path.is_file() and rel in kept.get("files", ()):
            if record_ok:
                continue
            raise RunError(f"{path}: kept out of git (a file over {MAX_GIT_MB} MB), so {d} is a record of the base, "
                           f"not a loadable base; make it with `{kept['make']}` and load {kept['into']}")  # fmt: skip
        if not path.is_file():
            raise RunError(f"{path}: missing, but listed in {d / MANIFEST}; restore it, e.g. `git checkout -- {d}`")
        if sha256_file(path) != digest:
            raise RunError(
                f"{path}: SHA-256 differs from {d / MANIFEST}; the base was changed after it was made "
                f"(restore it, e.g. `git checkout -- {d}`, or make a new one with `bash launch/toy_pretrain.sh`)"
            )
    return manifest


def compare_bases(new: str | Path, shipped: str | Path) -> tuple[bool, list[str]]:
    """(whether the behaviour-defining files are identical, report lines): a reproduced base vs the shipped one.

    Every file is compared by SHA-256 (``missing``: only in the shipped base, ``extra``: only in the new one). The
    verdict uses :data:`WEIGHT_FILES` and image_tokenizer/; base_eval.json holds the wall time, so it differs even
    when the weights are identical: its ShapesEval numbers are printed side by side instead."""
    new_files, old = file_digests(new), verify_base(shipped, record_ok=True)
    if old is None:
        raise RunError(f"{Path(shipped) / MANIFEST}: not found; the shipped base has no manifest to compare with")
    lines, differs = [], []
    for rel in sorted(set(new_files) | set(old["files"])):
        a, b = new_files.get(rel), old["files"].get(rel)
        state = "same" if a == b else "differs" if a and b else "missing" if a is None else "extra"
        lines.append(f"  {state:>7s}  {rel}")
        if state != "same" and (rel in WEIGHT_FILES or rel.startswith("image_tokenizer/")):
            differs.append(rel)
    eval_file = Path(new) / EVAL_FILE
    if eval_file.is_file():
        got = json.loads(eval_file.read_text())
        want = old["shapes_eval"]
        for k in ("overall", "partial_mean"):
            lines.append(f"  ShapesEval {k}: reproduced {got[k]:.4f}, shipped {want[k]:.4f}")
    recipe = old["recipe"]
    lines.append(f"  shipped recipe: commit {recipe['commit']}, {recipe['threads']} threads, torch {recipe['torch']}")
    return not differs, lines


def keep_out(directory: str | Path, files: list[str], make: str, into: str) -> dict:
    """Turn a verified base folder into a record: remove ``files`` (their digests stay in the manifest) and note the
    command that makes the whole base again, and where."""
    d = Path(directory)
    manifest = verify_base(d, record_ok=True)
    if manifest is None:
        raise RunError(f"{d / MANIFEST}: not found; only a base with a manifest can become a record")
    unknown = [f for f in files if f not in manifest["files"]]
    if unknown:
        raise RunError(f"{d / MANIFEST}: lists no {unknown}; keep-out takes files of the base")
    for f in files:
        (d / f).unlink(missing_ok=True)
    kept = set((manifest.get(KEPT_OUT) or {}).get("files", [])) | set(files)
    manifest[KEPT_OUT] = {"files": sorted(kept), "make": make, "into": into}
    return save_manifest(d, manifest)


def base_title(path: str | Path, assets: str | Path = "assets") -> str:
    """How a plot names a base: ``path`` itself, or for a base made from a record under ``assets`` (its ``into``),
    "<record> (made into <path>)" when the weights match the record's digest, "... other weights" when not."""
    d = Path(path)
    mine = read_manifest(d) if d.is_dir() else None
    for f in sorted(Path(assets).glob(f"*/{MANIFEST}")):
        record = read_manifest(f.parent)
        kept = (record or {}).get(KEPT_OUT)
        if not kept or Path(kept["into"]).resolve() != d.resolve():  # cwd-relative in the record, any form here
            continue
        same = mine is not None and all(mine["files"].get(k) == record["files"].get(k) for k in kept["files"])
        return f"{f.parent.as_posix()} (made into {d.as_posix()}{'' if same else ', other weights'})"
    return str(path)


def git_commit() -> str:
    """The short commit of the working directory's checkout, "+ (with uncommitted changes)" when tracked files differ
    from it, or "unknown" outside git: what a recipe or a study row was made with."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def recipe_info(command: str, config: dict, commit: str, threads: int, pretrain_seconds: float, params: int) -> dict:
    """The manifest's ``recipe`` block: what made the base, and on which software."""
    import torch

    return {"command": command, "config": config, "commit": commit, "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "pretrain_seconds": pretrain_seconds, "params": params}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="add a manifest to an existing base folder (made by maskgrpo.toy.pretrain)")
    w.add_argument("dir")
    w.add_argument("--commit", required=True, help="commit the base was pretrained on")
    w.add_argument("--threads", type=int, required=True, help="torch threads of the pretraining (OMP_NUM_THREADS)")
    w.add_argument("--command", required=True, help="the command that pretrained it")
    v = sub.add_parser("verify", help="check every digest of a base folder")
    v.add_argument("dir")
    c = sub.add_parser("compare", help="compare a reproduced base with the shipped one")
    c.add_argument("new")
    c.add_argument("shipped")
    k = sub.add_parser("keep-out", help="remove files too large for git from a base; their digests stay")
    k.add_argument("dir")
    k.add_argument("files", nargs="+", help="paths relative to DIR, e.g. model/model.safetensors")
    k.add_argument("--make", required=True, help="the command that makes the whole base again")
    k.add_argument("--into", required=True, help="the folder that command writes")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "write":
            return _write_existing(Path(args.dir), args.commit, args.threads, args.command)
        if args.cmd == "verify":
            m = verify_base(args.dir, record_ok=True)
            if m is None:
                print(f"{args.dir}: no manifest")
                return 0
            absent = [f for f in (m.get(KEPT_OUT) or {}).get("files", []) if not (Path(args.dir) / f).is_file()]
            tail = f" ({len(absent)} kept out of git: {', '.join(absent)})" if absent else ""
            print(f"{args.dir}: all {len(m['files']) - len(absent)} files match{tail}")
            return 0
        if args.cmd == "keep-out":
            m = keep_out(args.dir, args.files, args.make, args.into)
            print(f"[toy] {args.dir} is now a record: {', '.join(m[KEPT_OUT]['files'])} removed, digests kept")
            return 0
        same, lines = compare_bases(args.new, args.shipped)
        print("\n".join(lines))
        verdict = "IDENTICAL to" if same else "DIFFERENT from"
        print(f"[toy] weights and tokenizers of {args.new} are {verdict} the shipped base {args.shipped}")
        return 0
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _write_existing(d: Path, commit: str, threads: int, command: str) -> int:
    """Manifest for a base folder made by the pretraining CLI: recipe from pretrain.yaml + base_eval.json."""
    import yaml

    for f in ("pretrain.yaml", EVAL_FILE):
        if not (d / f).is_file():
            raise RunError(f"{d / f}: not found; `write` needs a base folder made by python -m maskgrpo.toy.pretrain")
    config = yaml.safe_load((d / "pretrain.yaml").read_text())
    summary = json.loads((d / EVAL_FILE).read_text())
    recipe = recipe_info(command, config, commit, threads, summary["pretrain_seconds"], summary["params"])
    m = write_manifest(d, recipe, eval_numbers(summary, config["eval"]))
    print(f"[toy] {d / MANIFEST}: {len(m['files'])} files digested")
    return 0


if __name__ == "__main__":
    sys.exit(main())
