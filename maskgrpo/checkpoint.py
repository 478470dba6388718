"""Atomic, verified checkpoints: DeepSpeed engine state + trainer state (round, every generator's RNG state, data
position) + a copy of the run's metrics, with a manifest of every file's size and chunked SHA-256.

Layout under ``<run>/checkpoints/``::

    round-000004/state/...              DeepSpeed checkpoint (model, optimizer, scheduler; ZeRO shards); with LoRA
                                        the trained adapter only (the frozen base is backbone.path's)
    round-000004/trainer_rank{r}.pt     TrainerState of rank r
    round-000004/metrics.jsonl          metrics.jsonl as it was at the save (rounds 1..4), restored on resume
    round-000004/manifest.json          {"format", "round", "world_size", "chunk_bytes",
                                         "files": {path: {"size", "sha256": [digest of each chunk]}}}
    latest                              text file naming the newest complete checkpoint

A checkpoint is written under ``.tmp-round-N``; its manifest is written last, and the folder is renamed only when
every rank has finished, so a crash mid-save never leaves a ``latest`` that does not load. ``latest`` is replaced
atomically afterwards; pruning renames an old checkpoint to ``.trash-round-N`` before deleting it.

Digests: every file is hashed in chunks of ``CHUNK_BYTES`` (a file no larger than that has one digest, its
``sha256sum``), so threads hash one large shard in parallel. At save, each rank hashes the files it wrote itself
(:func:`file_owner`: still in its page cache, never read across nodes), with :func:`maskgrpo.digests.hash_threads`
threads. On resume, :func:`select_checkpoint` verifies sizes and digests (the chunks are shared out over the ranks
and their threads) and falls back to the newest older checkpoint that verifies; a checkpoint without a manifest is
damaged like any other. The digests assume a filesystem that every rank sees (as the rename already does).

:func:`load_checkpoint` resumes on the number of ranks that wrote the checkpoint (bit-exact);
:func:`load_resharded` on another number (ZeRO-2: weights and optimizer state resharded, per-rank random streams
re-derived, see docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from maskgrpo.atomic import write_atomic
from maskgrpo.digests import chunk_digests, hash_threads, num_chunks
from maskgrpo.distributed import agree, barrier, broadcast_object, gather_objects
from maskgrpo.errors import RunError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "htgrpo-checkpoint/2"
MANIFEST_FORMAT_WHOLE_FILE = "htgrpo-checkpoint/1"
"""The first manifest format: one SHA-256 per whole file; read as one chunk per file."""
CHUNK_BYTES = 64 << 20
"""Bytes per digest chunk (64 MiB: a 12 GB ZeRO shard is 180 chunks, enough to keep every hashing thread busy)."""
METRICS_COPY = "metrics.jsonl"
"""The checkpoint's copy of the run's metrics.jsonl (rounds 1..N), restored by MetricsLog on resume."""
ROUND_NAME = re.compile(r"round-\d{6}")
"""Name of a complete checkpoint folder (``latest`` must hold exactly such a name)."""
OWNED_FILE = re.compile(r"(?:pp_rank_|trainer_rank)(\d+)")
"""Per-rank file names: trainer_rank{r}.pt and DeepSpeed's [bf16_]zero_pp_rank_{r}_* shards."""


@dataclass
class TrainerState:
    """Everything besides the engine needed to continue bit-exactly."""

    round: int = 0
    """Rounds completed."""
    prompt_position: int = 0
    """Global index of the next prompt in the prompt stream."""
    generators: dict[str, Any] = field(default_factory=dict)
    """name -> torch.Generator.get_state() of every dedicated generator of this rank."""
    torch_rng: Any = None
    """Global torch CPU RNG state (LoRA dropout draws from it)."""
    components: dict[str, str] = field(default_factory=dict)
    """Resolved component names (sampler, context, loss, ...) of the run that wrote the checkpoint."""
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved config of the run that wrote the checkpoint."""
    budget: dict[str, float] = field(default_factory=dict)
    """Compute spent by the completed rounds (``maskgrpo.budget``): model forwards per phase summed over the ranks,
    forward-equivalents, training wall seconds."""


# ---- writing ---------------------------------------------------------------------------------------------------
def _io_reason(exc: BaseException, where: Path) -> str:
    """Why a write failed, in the OS's words. torch.save reports a full disk as ``[enforce fail at
    inline_container.cc] unexpected pos``: a 1 MiB probe write then names the OS error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    probe = where / ".write-probe"
    try:
        with probe.open("wb") as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.strerror or str(e)
    finally:
        probe.unlink(missing_ok=True)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def file_owner(rel: str, world: int) -> int:
    """The rank that wrote a checkpoint file: rank r for ``trainer_rank{r}.pt`` and DeepSpeed's
    ``*zero_pp_rank_{r}_*`` shards, rank 0 for the rest (ZeRO-1/2 model states, DeepSpeed's scripts, the metrics
    copy). A rank number beyond ``world`` falls to rank 0."""
    m = OWNED_FILE.search(Path(rel).name)
    r = int(m.group(1)) if m else 0
    return r if r < world else 0


def _digest_files(root: Path, rels: list[str]) -> dict[str, dict] | OSError:
    """{path: {"size", "sha256": [digest of each CHUNK_BYTES chunk]}} of ``rels`` under ``root``, hashed by this
    process's share of the node's CPUs; the first OSError when a file cannot be read."""
    try:
        sizes = {r: (root / r).stat().st_size for r in rels}
    except OSError as e:
        return e
    tasks = [(root / r, i) for r in rels for i in range(num_chunks(sizes[r], CHUNK_BYTES))]
    found = chunk_digests(tasks, CHUNK_BYTES, hash_threads())
    error = next((d for d in found.values() if isinstance(d, OSError)), None)
    if error is not None:
        return error
    return {r: {"size": sizes[r], "sha256": [found[root / r, i] for i in range(num_chunks(sizes[r], CHUNK_BYTES))]}
            for r in rels}  # fmt: skip


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def save_checkpoint(
    engine: Any, root: Path, state: TrainerState, rank: int, world: int, keep: int, metrics: Path | None = None
) -> Path:
    """Write ``root/round-N`` (N = state.round) on every rank, point ``latest`` at it, keep the newest ``keep``.

    ``metrics``: the run's metrics.jsonl, copied into the checkpoint by rank 0 (when it exists) so that a deleted or
    truncated metrics file can be restored on resume (``MetricsLog.truncate_after``). Each rank hashes the files it
    wrote. A failed write (full disk, read-only folder) raises RunError("cannot write checkpoint to ...: <OS
    reason>") on every rank after removing the temporary folder; the previous checkpoint and ``latest`` stay as
    they were.
    """
    name = f"round-{state.round:06d}"
    tmp, final = root / f".tmp-{name}", root / name
    kept = f"{root / 'latest'} still names {_read_latest(root) or 'no checkpoint'}"

    def fail(exc: BaseException, where: Path) -> str:
        return f"cannot write checkpoint to {final}: {_io_reason(exc, where)}; {kept}"

    err = None
    if rank == 0:
        try:
            _remove_leftovers(root)
            tmp.mkdir(parents=True)
        except OSError as e:
            err = fail(e, root if root.is_dir() else root.parent)
    _agree_or_clean(err, tmp, rank)
    try:
        engine.save_checkpoint(str(tmp), tag="state", save_latest=False, exclude_frozen_parameters=_frozen(engine))
        torch.save(state.__dict__, tmp / f"trainer_rank{rank}.pt")
        if rank == 0 and metrics is not None and metrics.is_file():
            shutil.copyfile(metrics, tmp / METRICS_COPY)
    except (OSError, RuntimeError) as e:  # a full disk surfaces from torch.save as RuntimeError
        err = fail(e, tmp)
    _agree_or_clean(err, tmp, rank)
    rels = broadcast_object(_files(tmp) if rank == 0 else None)
    mine = _digest_files(tmp, [r for r in rels if file_owner(r, world) == rank])
    err = fail(mine, tmp) if isinstance(mine, OSError) else None
    _agree_or_clean(err, tmp, rank)
    digests = {k: v for share in gather_objects(mine) for k, v in share.items()}
    if rank == 0:
        manifest = {"format": MANIFEST_FORMAT, "round": state.round, "world_size": world, "chunk_bytes": CHUNK_BYTES,
                    "files": digests}  # fmt: skip
        try:
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if final.exists():  # the same round saved again: set the old copy aside, never leave `latest` dangling
                os.replace(final, root / f".trash-{name}")
            os.replace(tmp, final)
            write_atomic(root / "latest", name)
        except OSError as e:
            err = fail(e, root)
            shutil.rmtree(final, ignore_errors=True)  # complete but not named by latest: drop it, keep the old state
            for part in root.glob(".latest.*.part"):
                part.unlink(missing_ok=True)
        else:
            _prune(root, keep)
            _remove_leftovers(root)  # the set-aside copy of a re-saved round
    _agree_or_clean(err, tmp, rank)
    return final


def _remove_leftovers(root: Path) -> None:
    """Delete an unfinished ``.tmp-round-N`` and a set-aside or half-pruned ``.trash-round-N`` of a killed run."""
    for stale in [*root.glob(".tmp-round-*"), *root.glob(".trash-round-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def tidy_checkpoints(root: Path, keep: int) -> None:
    """What a killed run left undone (rank 0, on resume): leftovers removed, pruned to the newest ``keep``."""
    _remove_leftovers(root)
    _prune(root, keep)


def _agree_or_clean(err: str | None, tmp: Path, rank: int) -> None:
    """Collective: on any rank's error, rank 0 removes the temporary folder and every rank raises RunError."""
    try:
        agree(err)
    except RunError:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints (renamed first, so a half-deleted one never looks complete)."""
    for p in sorted(p for p in root.iterdir() if ROUND_NAME.fullmatch(p.name) and p.is_dir())[:-keep]:
        trash = root / f".trash-{p.name}"
        with contextlib.suppress(OSError):
            os.replace(p, trash)
            shutil.rmtree(trash, ignore_errors=True)


# ---- choosing and verifying on resume --------------------------------------------------------------------------
def _read_latest(root: Path) -> str | None:
    try:
        return (root / "latest").read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def candidates(root: Path) -> tuple[list[Path], str | None]:
    """(checkpoints to try, newest first: the one ``latest`` names, then older ones; a note when ``latest`` is
    missing, empty or names no checkpoint, in which case every complete checkpoint folder is a candidate).
    RunError when there is nothing to try."""
    rounds = sorted((p for p in root.glob("round-*") if ROUND_NAME.fullmatch(p.name) and p.is_dir()), reverse=True)
    if not (root / "latest").exists():
        if not rounds:
            raise RunError(f"--resume: no checkpoint under {root} (no 'latest' file and no round-* folder)")
        return rounds, f"{root / 'latest'} is missing"
    name = _read_latest(root)
    if name is None or not ROUND_NAME.fullmatch(name):
        return rounds, f"{root / 'latest'} holds {name or 'nothing'!r}, not a checkpoint name"
    return [root / name, *(p for p in rounds if p.name < name)], None


def verify_checkpoint(path: Path, rank: int, world: int) -> str | None:
    """Collective. None if every file of the manifest is present with its size and chunk digests; otherwise what is
    wrong ("trainer_rank0.pt: digest mismatch", "no manifest.json"). The chunks are shared out over the ranks."""
    manifest = broadcast_object(_read_manifest(path) if rank == 0 else None)
    if isinstance(manifest, str):
        return manifest
    files, chunk = manifest["files"], manifest["chunk_bytes"]
    tasks = [(rel, i) for rel in sorted(files) for i in range(num_chunks(files[rel]["size"], chunk))]
    problems = sorted({p for share in gather_objects(_check_chunks(path, files, chunk, tasks[rank::world]))
                       for p in share})  # fmt: skip
    if not problems:
        return None
    return problems[0] + (f" and {len(problems) - 1} more" if len(problems) > 1 else "")


def _read_manifest(path: Path) -> dict | str:
    """The manifest, normalised to chunked digests (a whole-file format-1 manifest has ``chunk_bytes`` None), or why
    the checkpoint cannot be verified."""
    f = path / MANIFEST
    if not path.is_dir():
        return "folder missing"
    if not f.is_file():
        return f"no {MANIFEST}"
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        return f"{MANIFEST}: unreadable ({type(e).__name__})"
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        return f"{MANIFEST}: not a {MANIFEST_FORMAT} manifest"
    if m.get("format") == MANIFEST_FORMAT_WHOLE_FILE:  # one digest per file: a single chunk of any size
        files = {r: {**e, "sha256": [e.get("sha256")]} if isinstance(e, dict) else e for r, e in m["files"].items()}
        m = {**m, "format": MANIFEST_FORMAT, "chunk_bytes": None, "files": files}
    if not (m.get("format") == MANIFEST_FORMAT and _valid_entries(m["files"], m.get("chunk_bytes"))):
        return f"{MANIFEST}: not a {MANIFEST_FORMAT} manifest"
    return m


def _valid_entries(files: dict, chunk: Any) -> bool:
    """Every entry is {"size": int, "sha256": [one str per chunk]} and the chunk size a positive int (or None)."""
    if not (chunk is None or (isinstance(chunk, int) and chunk > 0)):
        return False
    return all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), list)
        and len(e["sha256"]) == num_chunks(e["size"], chunk) and all(isinstance(d, str) for d in e["sha256"])
        for e in files.values()
    )  # fmt: skip


def _check_chunks(root: Path, files: dict, chunk: int | None, tasks: list[tuple[str, int]]) -> list[str]:
    """What is wrong with this rank's share of the chunks: a missing, unreadable or resized file once, then every
    chunk whose digest differs."""
    problems, todo = [], []
    for rel in dict.fromkeys(rel for rel, _ in tasks):
        want = files[rel]["size"]
        try:
            size = (root / rel).stat().st_size
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        except OSError as e:
            problems.append(f"{rel}: unreadable ({e.strerror})")
            continue
        if size != want:
            problems.append(f"{rel}: {size} bytes, expected {want}" + (" (truncated)" if size < want else ""))
            continue
        todo += [(rel, i) for r, i in tasks if r == rel]
    found = chunk_digests([(root / rel, i) for rel, i in todo], chunk, hash_threads())
    for rel, i in todo:
        got = found[root / rel, i]
        if isinstance(got, OSError):
            problems.append(f"{rel}: unreadable ({got.strerror})")
        elif got != files[rel]["sha256"][i]:
            problems.append(f"{rel}: digest mismatch")
    return problems


def _check_archive(root: Path, rel: str) -> str | None:
    """Why a .pt file that DeepSpeed could not load is damaged (zip CRC-32 / archive end), for the load error."""
    try:
        with zipfile.ZipFile(root / rel) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        return f"{rel}: not a complete archive (truncated)"
    except OSError as e:
        return f"{rel}: unreadable ({e.strerror})"
    return None if bad is None else f"{rel}: CRC mismatch in {bad}"


def select_checkpoint(root: Path, rank: int, world: int) -> Path:
    """Collective. The newest checkpoint that verifies, saying in one line (rank 0) which newer ones were damaged;
    RunError when there is none. A checkpoint without a manifest is damaged ("no manifest.json")."""
    paths, note = candidates(root)
    damaged = []
    for path in paths:
        problem = verify_checkpoint(path, rank, world)
        if problem is None:
            if rank == 0:
                bad = ", ".join(f"{n} ({why})" for n, why in damaged)
                if note:
                    _warn(f"{note}; using the newest checkpoint that verifies")
                if len(damaged) == 1:
                    _warn(f"checkpoint {damaged[0][0]} is damaged ({damaged[0][1]}); resuming from {path.name}")
                elif damaged:
                    _warn(f"checkpoints {bad} are damaged; resuming from {path.name}")
            return path
        damaged.append((path.name, problem))
    bad = ", ".join(f"{n} ({why})" for n, why in damaged)
    raise RunError(f"--resume: no intact checkpoint under {root}: {bad}" + (f"; {note}" if note else ""))


def _warn(msg: str) -> None:
    print(f"[train] warning: {msg}", file=sys.stderr, flush=True)


def checkpoint_world_size(path: Path) -> int:
    """Ranks that wrote a verified checkpoint (from its manifest)."""
    m = _read_manifest(path)
    if not (isinstance(m, dict) and isinstance(m.get("world_size"), int)):
        raise RunError(f"{path / MANIFEST}: no world_size")
    return m["world_size"]


def read_trainer_state(path: Path, rank: int) -> TrainerState:
    f = path / f"trainer_rank{rank}.pt"
    try:
        data = torch.load(f, weights_only=True)  # tensors, numbers, strings: nothing executable
        return TrainerState(**data)
    except FileNotFoundError as e:
        raise RunError(f"{f}: missing") from e
    except (OSError, RuntimeError, EOFError, TypeError, ValueError) as e:  # damage that slipped past the checks
        raise RunError(f"{f}: cannot be read, damaged or truncated ({type(e).__name__}: {_first_line(e)})") from e


def load_checkpoint(engine: Any, path: Path, rank: int) -> TrainerState:
    """Engine state (model, optimizer, scheduler) and this rank's TrainerState from a verified checkpoint written by
    the current number of ranks (bit-exact continuation)."""
    state = read_trainer_state(path, rank)
    _engine_load(engine, path, optimizer=True)
    return state


def _frozen(engine: Any) -> bool:
    """Whether checkpoints leave out the frozen parameters (LoRA's base model, under ZeRO-1/2): they are the weights
    of ``backbone.path``, loaded at every start, and the resume's config check pins that path. DeepSpeed would store
    them in full in every checkpoint (twice on GPUs: in the module state and as ``frozen_param_fragments``)."""
    return engine.zero_optimization_stage() <= 2 and any(not p.requires_grad for p in engine.module.parameters())


def _engine_load(engine: Any, path: Path, optimizer: bool) -> None:
    frozen = _frozen(engine)
    if frozen:  # the file holds the trained parameters only: all of them must be there (the load is not strict)
        models = sorted((path / "state").glob("mp_rank_*_model_states.pt"))
        saved = torch.load(models[0], map_location="cpu", mmap=True, weights_only=False)["module"] if models else {}
        missing = [n for n, p in engine.module.named_parameters() if p.requires_grad and n not in saved]
        if missing:
            raise RunError(f"cannot load checkpoint {path}: its model states lack {len(missing)} trained "
                           f"parameter(s), e.g. {missing[0]}")  # fmt: skip
    try:
        load_path, _ = engine.load_checkpoint(str(path), tag="state", load_optimizer_states=optimizer,
                                              load_lr_scheduler_states=True,
                                              load_module_strict=not frozen)  # fmt: skip
    except (OSError, RuntimeError, EOFError, KeyError, ValueError) as e:  # damage that slipped past the checks
        archives = sorted(p.relative_to(path).as_posix() for p in (path / "state").rglob("*.pt"))
        why = next((p for p in map(functools.partial(_check_archive, path), archives) if p), None)
        raise RunError(f"cannot load checkpoint {path}: {why or f'{type(e).__name__}: {_first_line(e)}'}") from e
    if load_path is None:
        raise RunError(f"DeepSpeed could not load the checkpoint at {path / 'state'}")


def load_resharded(engine: Any, path: Path, rank: int, world: int) -> TrainerState:
    """Collective. Resume a verified checkpoint written by another number of ranks (ZeRO-2, DeepSpeed's ZeRO
    optimizer).

    Loaded exactly: model weights, fp32 master weights, Adam moments and step (resharded for ``world`` ranks by
    :func:`maskgrpo.zero_reshard.reshard_optimizer_state`), the LR scheduler, the round, the prompt position, config
    and components. Re-derived: every rank's generators and global torch RNG state, from (run.seed, round, rank,
    stream name) by :func:`derived_seed` (the old ranks' streams do not map onto the new ranks), so the run goes on
    deterministically for this world size. Prints one note (rank 0). RunError under ZeRO-3 or ZeRO-1 with bf16
    (other optimizer layouts), naming the way out.
    """
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    from maskgrpo.zero_reshard import reshard_optimizer_state

    old = checkpoint_world_size(path)
    stage = engine.zero_optimization_stage()
    if not isinstance(getattr(engine, "optimizer", None), DeepSpeedZeroOptimizer):  # ZeRO-2; ZeRO-1 unless bf16
        raise RunError(f"checkpoint {path} was written by {old} rank{'s' * (old != 1)}, this run has {world}: a "
                       f"ZeRO-{stage} checkpoint resumes only on {old} (NPROC={old}, torchrun "
                       f"--nproc_per_node={old})")  # fmt: skip
    saved = read_trainer_state(path, 0)
    _engine_load(engine, path, optimizer=False)  # module weights (exact), LR scheduler, step counters
    reshard_optimizer_state(engine, path / "state", rank)
    seed, device = saved.config["run"]["seed"], engine.device
    gens = {name: torch.Generator(device=device).manual_seed(derived_seed(seed, saved.round, rank, name)).get_state()
            for name in saved.generators}  # fmt: skip
    torch_rng = torch.Generator().manual_seed(derived_seed(seed, saved.round, rank, "torch")).get_state()
    if rank == 0:
        print(f"[train] note: checkpoint {path.name} was written by {old} rank{'s' * (old != 1)}, this run has "
              f"{world}: weights and optimizer state resharded; random streams re-derived from (run.seed, round, "
              "rank), so the rounds from here differ from a run on the old rank count", flush=True)  # fmt: skip
    return TrainerState(round=saved.round, prompt_position=saved.prompt_position, generators=gens,
                        torch_rng=torch_rng, components=saved.components, config=saved.config)  # fmt: skip


def derived_seed(seed: int, round_: int, rank: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one rank after a world-size change (SHA-256 of the four)."""
    digest = hashlib.sha256(f"htgrpo-reshard/{seed}/{round_}/{rank}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def export_final(engine: Any, cfg: Any, out: Path, rank: int) -> None:
    """Trained weights for evaluation, loadable by ``load_trained`` without DeepSpeed::

        final/backbone.json   {"name", "path", "options"} of the base backbone
        final/adapter/        peft LoRA adapter (LoRA runs), or
        final/model/          full model via save_pretrained (full fine-tuning)

    Under ZeRO-3 the parameters are gathered on every rank first (a collective), then rank 0 writes.
    """
    import deepspeed

    module = engine.module
    zero3 = engine.zero_optimization_stage() == 3
    params = [p for p in module.parameters()]
    ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero3 else contextlib.nullcontext()
    with ctx:
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            meta = {"name": cfg.backbone.name, "path": cfg.backbone.path, "options": cfg.backbone.options}
            (out / "backbone.json").write_text(json.dumps(meta, indent=1))
            if hasattr(module, "peft_config"):
                module.save_pretrained(out / "adapter")
            else:
                module.save_pretrained(out / "model")
    barrier()


def load_trained(final_dir: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Any:
    """The backbone of a finished run with its trained weights (LoRA adapters merged in)."""
    from maskgrpo.backbones import BACKBONES

    d = Path(final_dir)
    meta_file = d / "backbone.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: not a finished run's final/ directory")
    meta = json.loads(meta_file.read_text())
    backbone = BACKBONES.get(meta["name"])(meta["path"], dtype=dtype, device=device, **meta["options"])
    if (d / "adapter").is_dir():
        from peft import PeftModel

        backbone.model = PeftModel.from_pretrained(backbone.model, d / "adapter").merge_and_unload().to(device)
    elif (d / "model").is_dir():
        backbone.model = type(backbone.model).from_pretrained(d / "model", dtype=dtype).to(device)
    else:
        raise FileNotFoundError(f"{d} has neither adapter/ nor model/")
    backbone.model.eval()
    return backbone
