"""GenEval image generation in the official layout: ``python -m eval.geneval_generate --metadata FILE --outdir OUT``.

Layout (docs/benchmarks.md section 1), one folder per line of ``evaluation_metadata.jsonl`` (0-based line number)::

    OUT/00000/metadata.jsonl      the metadata line itself (one JSON object; the evaluator reads it with json.load)
    OUT/00000/samples/0000.png    sample 0 ... samples/0003.png (4 per prompt)
    OUT/generation.json           how the images were made (ignored by the evaluator: not a digit-named folder)

Folders get 5-digit names and samples 4-digit names. GenEval's reference generator writes 5-digit sample names
(``00000.png``); the evaluator scores any ``\\d+\\.png``, so the readers here (resume, ``--check``) accept both widths
and match samples by their number. Resumable: a prompt whose folder already holds its metadata and every sample is
skipped, and a partial folder only gets its missing samples. Sharded: under ``torchrun --nproc-per-node K`` rank r
takes the lines i with i % K == r. Score the folder with the official evaluator in its own environment
(``python evaluation/evaluate_images.py OUT --outfile RES/results.jsonl --model-path DET``), then summarize with
``python -m eval.geneval_summary RES/results.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from eval.common import (
    add_model_args,
    add_run_args,
    add_sampler_args,
    describe_model,
    generate_items,
    load_backbone,
    progress,
    prompts_per_call,
    sampler_config,
    sampler_record,
    save_png_atomic,
    shard,
    shard_env,
)
from maskgrpo.atomic import write_atomic
from maskgrpo.errors import one_line_errors
from maskgrpo.jsonl import iter_jsonl

OFFICIAL_SAMPLES = 4
"""Images per prompt in the official protocol."""
SAMPLE_RE = re.compile(r"^(\d+)\.png$")
"""Sample files the evaluator scores (any number of digits)."""


def read_metadata_lines(path: str | Path) -> list[str]:
    """The non-empty lines of an ``evaluation_metadata.jsonl``, verbatim; each must be a JSON object with a
    ``prompt`` and a ``tag`` (a bad line names file and line number). Line i is prompt i."""
    return [raw for _, _, raw in iter_jsonl(path, required=("prompt", "tag"))]


def folder_name(index: int) -> str:
    """The project's prompt folder name: 5 digits, 0-based line number."""
    return f"{index:05d}"


def sample_name(j: int) -> str:
    """The project's sample file name: 4 digits."""
    return f"{j:04d}.png"


def prompt_dirs(outdir: Path) -> dict[int, Path]:
    """Digit-named folders of ``outdir`` by number (``00012`` and ``12`` are both prompt 12; both at once raises)."""
    out: dict[int, Path] = {}
    if not outdir.is_dir():
        return out
    for d in sorted(outdir.iterdir()):
        if d.is_dir() and d.name.isdigit():
            i = int(d.name)
            if i in out:
                raise ValueError(f"{outdir}: folders {out[i].name} and {d.name} are both prompt {i}")
            out[i] = d
    return out


def sample_numbers(prompt_dir: Path) -> set[int]:
    """Numbers of the ``\\d+\\.png`` files in ``prompt_dir/samples`` (``0002.png`` and ``00002.png`` are both 2)."""
    samples = prompt_dir / "samples"
    if not samples.is_dir():
        return set()
    return {int(m.group(1)) for f in samples.iterdir() if (m := SAMPLE_RE.match(f.name))}


def folder_status(prompt_dir: Path | None, line: str, samples: int) -> str:
    """``"complete"``, ``"partial"`` or ``"missing"`` for one prompt; a folder whose metadata differs from ``line``
    raises (the output directory belongs to another metadata file)."""
    if prompt_dir is None:
        return "missing"
    meta_file = prompt_dir / "metadata.jsonl"
    if meta_file.is_file():
        with open(meta_file, encoding="utf-8") as f:
            if json.load(f) != json.loads(line):
                raise ValueError(f"{meta_file} does not match line {int(prompt_dir.name)} of the metadata file; "
                                 f"use a fresh --outdir for a different prompt set")  # fmt: skip
    have = sample_numbers(prompt_dir)
    if meta_file.is_file() and all(j in have for j in range(samples)):
        return "complete"
    return "partial" if have or meta_file.is_file() else "missing"


def layout_report(outdir: Path, lines: list[str], samples: int) -> dict:
    """Status of every prompt plus the things the evaluator would score that it should not (stray folders beyond
    the metadata file, samples numbered >= ``samples``)."""
    dirs = prompt_dirs(outdir)
    status = {i: folder_status(dirs.get(i), line, samples) for i, line in enumerate(lines)}
    extra_samples = {
        i: sorted(j for j in sample_numbers(d) if j >= samples) for i, d in dirs.items() if i < len(lines)
    }
    return {
        "complete": sorted(i for i, s in status.items() if s == "complete"),
        "partial": sorted(i for i, s in status.items() if s == "partial"),
        "missing": sorted(i for i, s in status.items() if s == "missing"),
        "stray_folders": sorted(d.name for i, d in dirs.items() if i >= len(lines)),
        "extra_samples": {dirs[i].name: js for i, js in extra_samples.items() if js},
    }


def print_report(report: dict, n: int) -> bool:
    """Print :func:`layout_report`; True when the layout is complete and clean."""
    print(f"[geneval] {len(report['complete'])}/{n} prompts complete, {len(report['partial'])} partial, "
          f"{len(report['missing'])} missing")  # fmt: skip
    for key in ("partial", "missing"):
        if report[key]:
            shown = ", ".join(folder_name(i) for i in report[key][:10])
            print(f"  {key}: {shown}{' ...' if len(report[key]) > 10 else ''}")
    if report["stray_folders"]:
        print(f"  warning: folders beyond the metadata file would be scored too: {report['stray_folders'][:10]}")
    if report["extra_samples"]:
        print(f"  warning: extra samples would be scored too: {dict(list(report['extra_samples'].items())[:5])}")
    return not (report["partial"] or report["missing"] or report["stray_folders"] or report["extra_samples"])


def write_prompt(outdir: Path, index: int, line: str, images, existing: dict[int, Path]) -> None:
    """Write one prompt's folder: the metadata line (if absent) and every sample not already there.

    images: (S, H, W, 3) uint8; sample j goes to ``samples/<j:04d>.png`` unless a sample numbered j exists.
    """
    d = existing.get(index, outdir / folder_name(index))
    (d / "samples").mkdir(parents=True, exist_ok=True)
    meta_file = d / "metadata.jsonl"
    if not meta_file.is_file():
        write_atomic(meta_file, line + "\n")
    have = sample_numbers(d)
    for j, image in enumerate(images):
        if j not in have:
            save_png_atomic(image, d / "samples" / sample_name(j))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metadata", required=True, help="GenEval evaluation_metadata.jsonl (553 lines)")
    ap.add_argument("--outdir", required=True, help="output folder (created; resumable)")
    ap.add_argument("--check", action="store_true", help="only report the layout of --outdir (no model needed)")
    add_model_args(ap, dtype_default="auto")  # bf16 on GPUs
    add_sampler_args(ap)
    add_run_args(ap, samples=OFFICIAL_SAMPLES)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outdir = Path(args.outdir)
    lines = read_metadata_lines(args.metadata)
    if args.limit is not None:
        lines = lines[: args.limit]
    if args.samples != OFFICIAL_SAMPLES:
        print(f"[geneval] warning: --samples {args.samples}; the official protocol uses {OFFICIAL_SAMPLES}",
              file=sys.stderr)  # fmt: skip
    if args.check:
        return 0 if print_report(layout_report(outdir, lines, args.samples), len(lines)) else 1

    rank, world = shard_env()
    existing = prompt_dirs(outdir)
    mine = shard(range(len(lines)), rank, world)
    todo = [i for i in mine if folder_status(existing.get(i), lines[i], args.samples) != "complete"]
    print(f"[geneval] rank {rank}/{world}: {len(mine)} prompts in shard, {len(mine) - len(todo)} already "
          f"complete, {len(todo)} to generate -> {outdir}", flush=True)  # fmt: skip
    if not todo:
        return 0
    sampler_cfg = sampler_config(args)
    outdir.mkdir(parents=True, exist_ok=True)
    info = {
        "metadata": str(args.metadata),
        "metadata_sha256": hashlib.sha256(Path(args.metadata).read_bytes()).hexdigest(),
        "samples": args.samples,
        "seed": args.seed,
        "sampler": sampler_record(sampler_cfg),
        "model": describe_model(args),
    }
    info_file = outdir / "generation.json"
    if info_file.is_file() and json.loads(info_file.read_text()) != info:
        print(f"[geneval] warning: {info_file} records other settings; resuming mixes images made with both",
              file=sys.stderr)  # fmt: skip
    elif rank == 0:
        write_atomic(info_file, json.dumps(info, indent=1) + "\n")

    backbone = load_backbone(args)
    sampler = sampler_cfg.build()
    bar = progress(len(todo), "GenEval", rank, world)
    generate_items(
        backbone, sampler, [(i, json.loads(lines[i])["prompt"]) for i in todo], args.samples, args.seed,
        prompts_per_call(args.batch_size, args.samples),
        lambda i, imgs: write_prompt(outdir, i, lines[i], imgs, existing), bar,
    )  # fmt: skip
    bar.close()
    print(f"[geneval] rank {rank}/{world}: done, {len(todo)} prompts written", flush=True)
    return 0


if __name__ == "__main__":
    with one_line_errors(show_traceback=False):  # RunError / ConfigError / missing file: one line, exit 2
        sys.exit(main())
