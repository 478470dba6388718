"""DPG-Bench image generation in ELLA's layout: ``python -m eval.dpg_generate --prompts dpg_bench.jsonl --outdir OUT``.

Layout (docs/benchmarks.md section 2)::

    OUT/<item_id>.png     one per prompt (1065): a 2x2 grid of R x R tiles, sample j in row-major order, so the
                          scorer's crops (x, y) = (0, 0), (R, 0), (0, R), (R, R) are samples 0, 1, 2, 3
    OUT.json              sidecar next to the folder (never inside it: the scorer reads every file in OUT):
                          tile size R, grid size 2R, prompt source, sampler, model

Prompts: the JSONL (``{"item_id", "prompt"}`` lines) by default; ``--prompts-dir`` takes the texts from ELLA's
``prompts/<item_id>.txt`` instead (12 texts differ: 11 ASCII-fied, ``vrd2`` a raw relation list). Which source was
used is logged and recorded in the sidecar. R is the backbone's native image size.

Resumable (an existing ``<item_id>.png`` of size 2R is kept; one of another size is an error) and sharded across
torchrun ranks (rank r takes prompts i with i % world == r). Score with ELLA's tooling in its own environment
(``bash dpg_bench/dist_eval.sh OUT R``), then ``python -m eval.dpg_summary OUT/dpg-bench_*_results.txt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

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

DPG_SAMPLES = 4
"""Samples per prompt: the 2x2 grid the scorer crops (``PIC_NUM=4`` in dist_eval.sh)."""
DPG_ITEMS = 1065
"""Prompts in DPG-Bench."""


def read_prompts(jsonl: str | Path | None, prompts_dir: str | Path | None) -> tuple[list[tuple[str, str]], str]:
    """``[(item_id, text)]`` and a one-line description of the source.

    JSONL alone: its ids and texts. ``prompts_dir`` alone: every ``<item_id>.txt`` (sorted by id). Both: the JSONL's
    ids and order, texts from the txt files (a missing file raises), and the number of texts that differ.
    """
    if jsonl is None and prompts_dir is None:
        raise ValueError("give --prompts (dpg_bench.jsonl) and/or --prompts-dir (ELLA's dpg_bench/prompts)")
    items: list[tuple[str, str]] = []
    if jsonl is not None:
        for n, line in enumerate(Path(jsonl).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                rec = json.loads(line)
                if "item_id" not in rec or "prompt" not in rec:
                    raise ValueError(f"{jsonl}:{n}: need 'item_id' and 'prompt'")
                items.append((str(rec["item_id"]), rec["prompt"]))
        ids = [i for i, _ in items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{jsonl}: duplicate item ids")
    if prompts_dir is None:
        return items, f"JSONL {jsonl} ({len(items)} prompts)"
    d = Path(prompts_dir)
    if jsonl is None:
        files = sorted(d.glob("*.txt"))
        if not files:
            raise ValueError(f"{d} has no .txt prompt files")
        return [
            (f.stem, f.read_text(encoding="utf-8").strip()) for f in files
        ], f"ELLA txt files in {d} ({len(files)})"
    missing = [i for i, _ in items if not (d / f"{i}.txt").is_file()]
    if missing:
        raise ValueError(f"{d} lacks {len(missing)} prompt files, e.g. {missing[:5]}")
    txt = [(i, (d / f"{i}.txt").read_text(encoding="utf-8").strip()) for i, _ in items]
    differ = sum(a.strip() != b for (_, a), (_, b) in zip(items, txt))
    return txt, f"ELLA txt files in {d} ({len(txt)} prompts, ids from {jsonl}; {differ} texts differ from the JSONL)"


def make_grid(tiles: np.ndarray) -> np.ndarray:
    """(4, R, R, 3) uint8 tiles -> (2R, 2R, 3) grid, tile j at row j // 2, column j % 2."""
    n, r, r2, c = tiles.shape
    if n != DPG_SAMPLES or r != r2:
        raise ValueError(f"need {DPG_SAMPLES} square tiles, got {tiles.shape}")
    return tiles.reshape(2, 2, r, r, c).transpose(0, 2, 1, 3, 4).reshape(2 * r, 2 * r, c)  # (2R, 2R, 3)


def crop_tiles(grid: np.ndarray, r: int) -> np.ndarray:
    """The scorer's four crops of a (2R, 2R, 3) grid, (x0, y0) = (0,0), (R,0), (0,R), (R,R) -> (4, R, R, 3)."""
    return np.stack([grid[y : y + r, x : x + r] for x, y in ((0, 0), (r, 0), (0, r), (r, r))])


def sidecar_path(outdir: Path) -> Path:
    """``OUT.json`` next to the image folder (outside it, so the scorer never reads it)."""
    return outdir.parent / f"{outdir.name}.json"


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header."""
    with Image.open(path) as im:
        return im.size


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=None, help="dpg_bench.jsonl ({'item_id', 'prompt'} per line)")
    ap.add_argument("--prompts-dir", default=None, help="ELLA's dpg_bench/prompts folder (<item_id>.txt files)")
    ap.add_argument("--outdir", required=True, help="image folder (only the PNGs go in it; OUT.json beside it)")
    add_model_args(ap, dtype_default="auto")  # bf16 on GPUs
    add_sampler_args(ap)
    add_run_args(ap, samples=None)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outdir = Path(args.outdir.rstrip("/"))
    items, source = read_prompts(args.prompts, args.prompts_dir)
    if args.limit is not None:
        items = items[: args.limit]
    rank, world = shard_env()
    print(f"[dpg] prompt source: {source}", flush=True)
    sidecar = sidecar_path(outdir)
    info_old = json.loads(sidecar.read_text()) if sidecar.is_file() else None
    tile = info_old["tile_size"] if info_old else None

    mine = shard(range(len(items)), rank, world)
    todo = []
    for i in mine:
        path = outdir / f"{items[i][0]}.png"
        for part in path.parent.glob(f".{path.name}.*part"):  # left by a crash mid-write (maskgrpo.atomic)
            part.unlink(missing_ok=True)
        if not path.is_file():
            todo.append(i)
        elif tile is not None and image_size(path) != (2 * tile, 2 * tile):
            raise SystemExit(f"error: {path} is {image_size(path)}, the sidecar {sidecar} says R = {tile} "
                             f"(grid {2 * tile}); use a fresh --outdir")  # fmt: skip
    print(f"[dpg] rank {rank}/{world}: {len(mine)} prompts in shard, {len(mine) - len(todo)} already done, "
          f"{len(todo)} to generate -> {outdir}", flush=True)  # fmt: skip
    if not todo:
        return 0
    sampler_cfg = sampler_config(args)
    settings = {
        "prompt_source": source,
        "seed": args.seed,
        "sampler": sampler_record(sampler_cfg),
        "model": describe_model(args),
    }
    if info_old is not None and info_old.get("settings") != settings:
        print(f"[dpg] warning: {sidecar} records other settings; resuming mixes images made with both",
              file=sys.stderr)  # fmt: skip
    outdir.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(args)
    sampler = sampler_cfg.build()

    def write(i: int, imgs: np.ndarray) -> None:
        nonlocal tile
        r = imgs.shape[1]
        if tile is None:  # first image of a fresh folder: record R outside it
            tile = r
            record = {"tile_size": r, "grid_size": 2 * r, "samples": DPG_SAMPLES, "settings": settings,
                      "score_command": f"bash dpg_bench/dist_eval.sh {outdir.resolve()} {r}"}  # fmt: skip
            write_atomic(sidecar, json.dumps(record, indent=1) + "\n")
            print(f"[dpg] tile size R = {r} (grid {2 * r}) recorded in {sidecar}", flush=True)
        elif r != tile:
            raise SystemExit(f"error: the backbone makes {r}px tiles, {sidecar} says R = {tile}")
        save_png_atomic(make_grid(imgs), outdir / f"{items[i][0]}.png")

    bar = progress(len(todo), "DPG-Bench", rank, world)
    generate_items(backbone, sampler, [(i, items[i][1]) for i in todo], DPG_SAMPLES, args.seed,
                   prompts_per_call(args.batch_size, DPG_SAMPLES), write, bar)  # fmt: skip
    bar.close()
    print(f"[dpg] rank {rank}/{world}: done, {len(todo)} grids written; score with: bash dpg_bench/dist_eval.sh "
          f"{outdir} {tile}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    with one_line_errors(show_traceback=False):  # RunError / ConfigError / missing file: one line, exit 2
        sys.exit(main())
