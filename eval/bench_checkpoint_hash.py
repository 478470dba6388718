"""Checkpoint digest cost: SHA-256 throughput on this machine and the projected seconds per save for MMaDA-8B.

    python -m eval.bench_checkpoint_hash [--dir DIR] [--files 4] [--file-mib 1024] [--threads 1,2]
                                          [--repeats 5] [--json FILE]

Writes ``--files`` files of ``--file-mib`` MiB into a temporary folder under ``--dir`` (removed at the end; the
total is cut to half the free space when the disk is smaller), then measures, best of ``--repeats``:

- write throughput (``write`` + ``fsync`` per file, what a checkpoint save does before any digest; measured once);
- SHA-256 of whole files, one after the other in one thread (the manifest's digest before chunking);
- SHA-256 of 64 MiB chunks (``maskgrpo.checkpoint.CHUNK_BYTES``) in 1..N threads (``maskgrpo.digests``, what a save
  and a resume run now); hashlib releases the GIL on each block, so threads use several cores;
- BLAKE2b in one thread, the fastest other stdlib digest, to decide whether to switch.

The files were just written, so reads come from the page cache (as they do at a save, when each rank hashes the
files it wrote). Each method reports wall-clock MiB/s and MiB per CPU second (the rate of one free core: on a shared
machine the wall rate also counts the time other jobs held the cores; with T threads the CPU seconds of all T are
summed, so an unchanged per-core rate means the threads cost nothing extra). Then it projects the bytes each rank
writes and hashes per checkpoint of MMaDA-8B (8 ranks, ZeRO-2, bf16; LoRA r=128 on the 7 block linears, and full
fine-tuning) and the seconds at the per-core rate, against a round of 2.4 min (checkpoint.every = 25 rounds, about
an hour).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from maskgrpo.checkpoint import CHUNK_BYTES
from maskgrpo.digests import BLOCK, chunk_digests, num_chunks, sha256_file

MIB, GB = 1 << 20, 1e9

# ---- MMaDA-8B: 32 LLaDA blocks, d_model 4096, SiLU-gated MLP 12288, vocabulary 134656 ------------------------------
PARAMS = 8_082_690_048
"""MMaDA-8B parameters (V = 134656)."""
D_MODEL, MLP, LAYERS = 4096, 12288, 32
LORA_TARGETS = [(D_MODEL, D_MODEL)] * 4 + [(D_MODEL, MLP)] * 2 + [(MLP, D_MODEL)]
"""(in, out) of the 7 block linears: q, k, v, attn_out; ff_proj, up_proj; ff_out."""
RANKS = 8
ROUND_S = 144.0
"""Seconds per round assumed: the MMaDA configs save every 25 rounds, about an hour apart -> 3600 / 25."""
SAVE_EVERY = 25


def lora_params(r: int = 128) -> int:
    """A LoRA adapter of rank r on every target: r * (in + out) per linear, per block."""
    return LAYERS * sum(r * (i + o) for i, o in LORA_TARGETS)


def rank_bytes(mode: str, ranks: int = RANKS) -> list[float]:
    """Bytes each rank writes per checkpoint under ZeRO-2 + bf16 (DeepSpeed 0.19): rank 0 the module state dict
    (bf16, 2 B per parameter), every rank its partition of the fp32 master weights and both Adam moments
    (12 B per trainable parameter / ranks). LoRA: the module state dict holds the frozen base too, and under ZeRO-2
    DeepSpeed also saves the frozen parameters as ``frozen_param_fragments`` (a CPU copy of GPU tensors: stored
    again); ``lora_lean`` is the same with ``exclude_frozen_parameters=True`` (adapter only)."""
    trainable = PARAMS if mode == "full" else lora_params()
    optim = 12 * trainable / ranks
    module = {"full": 2 * PARAMS, "lora": 2 * PARAMS + 2 * trainable + 2 * PARAMS, "lora_lean": 2 * trainable}[mode]
    return [module + optim] + [optim] * (ranks - 1)


def old_split_bytes(per_rank: list[float]) -> list[float]:
    """Bytes each rank hashed before: rank 0's sorted listing of the files split by index (``rels[rank::world]``)."""
    n = len(per_rank)
    files = {f"state/bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt": per_rank[-1] for r in range(n)}
    files["state/mp_rank_00_model_states.pt"] = per_rank[0] - per_rank[-1]
    files.update({f"trainer_rank{r}.pt": 0.0 for r in range(n)})
    rels = sorted(files)
    return [sum(files[f] for f in rels[r::n]) for r in range(n)]


# ---- measurements ----------------------------------------------------------------------------------------------
def write_files(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` files of ``size`` bytes (a 64 MiB random block repeated: digests do not depend on the data)."""
    block = os.urandom(64 * MIB)
    paths = []
    for i in range(count):
        p = folder / f"shard_{i}.bin"
        with p.open("wb") as f:
            left = size
            while left > 0:
                left -= f.write(block[: min(left, len(block))])
            f.flush()
            os.fsync(f.fileno())
        paths.append(p)
    return paths


def blake2b_file(path: Path) -> str:
    h = hashlib.blake2b()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def measure(folder: Path, count: int, size: int, threads: list[int], repeats: int) -> dict:
    """MiB/s of each method, best of ``repeats``; the methods take turns within each repeat, so a change in the
    machine's load during the run hits them alike."""
    total = count * size
    t = time.perf_counter()
    paths = write_files(folder, count, size)  # writing once is enough (and slow)
    out = {"bytes": total, "files": count, "write_MiBps": total / MIB / (time.perf_counter() - t)}
    tasks = [(p, i) for p in paths for i in range(num_chunks(size, CHUNK_BYTES))]
    methods: dict[str, Callable[[], object]] = {
        "sha256_whole_1thread": lambda: [sha256_file(p) for p in paths],
        "blake2b_whole_1thread": lambda: [blake2b_file(p) for p in paths],
        **{f"sha256_chunked_{n}threads": lambda n=n: chunk_digests(tasks, CHUNK_BYTES, n) for n in threads},
    }
    best = dict.fromkeys(methods, (float("inf"), float("inf")))  # (wall s, CPU s of that run)
    for _ in range(repeats):
        for name, fn in methods.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], (time.perf_counter() - t, time.process_time() - c))
    out.update({f"{name}_MiBps": total / MIB / wall for name, (wall, _) in best.items()})
    out.update({f"{name}_per_core_MiBps": total / MIB / cpu for name, (_, cpu) in best.items()})
    return out


def projection(rates: dict, threads: list[int]) -> list[dict]:
    """Per mode: bytes of the busiest rank, and its hashing seconds before (split by index, whole files, 1 thread)
    and now (own files, chunks, T threads), at the per-core SHA-256 rate (bytes per CPU second of one thread: what a
    free core does) times T, i.e. T free cores per rank; with the write seconds at this disk's rate for context."""
    one = rates["sha256_chunked_1threads_per_core_MiBps"] * MIB  # what one free core hashes (CPU seconds)
    per_thread = one
    rows = []
    for mode in ("full", "lora", "lora_lean"):
        per_rank = rank_bytes(mode)
        busiest = max(per_rank)
        row = {"mode": mode, "total_GB": sum(per_rank) / GB, "rank0_GB": per_rank[0] / GB,
               "other_rank_GB": per_rank[1] / GB, "write_s": busiest / (rates["write_MiBps"] * MIB),
               "old_hash_s": max(old_split_bytes(per_rank)) / one}  # fmt: skip
        for t in (1, 8):
            row[f"hash_s_{t}threads"] = busiest / (per_thread * t)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="folder for the temporary files (default: the system temp folder)")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--file-mib", type=int, default=1024)
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1..CPUs)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    threads = [int(x) for x in args.threads.split(",")] if args.threads else list(range(1, cpus + 1))
    root = Path(args.dir or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    size = args.file_mib * MIB
    free = shutil.disk_usage(root).free
    if args.files * size > free // 2:
        size = max(MIB, free // 2 // args.files // MIB * MIB)
        print(f"[bench] {free / GB:.1f} GB free under {root}: files cut to {size // MIB} MiB each")
    folder = Path(tempfile.mkdtemp(prefix="bench_ckpt_hash_", dir=root))
    try:
        rates = measure(folder, args.files, size, threads, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = projection(rates, threads)
    print(f"[bench] {args.files} files x {size // MIB} MiB = {rates['bytes'] / GB:.2f} GB, {cpus} CPUs, best of "
          f"{args.repeats}; chunks of {CHUNK_BYTES // MIB} MiB; reads from the page cache")  # fmt: skip
    print("| measured | MiB/s (wall) | MiB/s per core (CPU time) |\n|---|---:|---:|")
    for k, v in rates.items():
        if k.endswith("MiBps") and not k.endswith("per_core_MiBps"):
            core = rates.get(k.replace("_MiBps", "_per_core_MiBps"))
            print(f"| {k.removesuffix('_MiBps')} | {v:,.0f} | {'' if core is None else f'{core:,.0f}'} |")
    cols = [k for k in rows[0] if k.startswith("hash_s_")]
    print(f"\nMMaDA-8B, {RANKS} ranks, ZeRO-2, bf16 (LoRA r=128 on 7 linears: {lora_params() / 1e6:.1f} M params); "
          f"round assumed {ROUND_S:.0f} s, a save every {SAVE_EVERY} rounds")  # fmt: skip
    head = " | ".join(c.removeprefix("hash_s_") + " s" for c in cols)
    print(f"| mode | GB per save | rank 0 GB | other ranks GB | write s (rank 0) | old hash s | {head} | share of a "
          "round (8 threads) |")  # fmt: skip
    print("|---|" + "---:|" * (6 + len(cols)))
    for r in rows:
        share = r["hash_s_8threads"] / ROUND_S
        print(f"| {r['mode']} | {r['total_GB']:.1f} | {r['rank0_GB']:.2f} | {r['other_rank_GB']:.2f} | "
              f"{r['write_s']:.1f} | {r['old_hash_s']:.1f} | " + " | ".join(f"{r[c]:.1f}" for c in cols)
              + f" | {share:.1%} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "projection": rows, "cpus": cpus}, indent=1))


if __name__ == "__main__":
    main()
