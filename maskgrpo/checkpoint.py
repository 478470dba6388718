"""Atomic, verified checkpoints: DeepSpeed engine state + trainer state (round, every generator's RNG state, data
position), with a manifest of every file's size and SHA-256.

Layout under ``<run>/checkpoints/``::

    round-000004/state/...              DeepSpeed checkpoint (model, optimizer, scheduler; ZeRO shards)
    round-000004/trainer_rank{r}.pt     TrainerState of rank r
    round-000004/manifest.json          {"format", "round", "world_size", "files": {path: {"size", "sha256"}}}
    latest                              text file naming the newest complete checkpoint

A checkpoint is written under ``.tmp-round-N``; its manifest is written last, and the folder is renamed only when
every rank has finished, so a crash mid-save never leaves a ``latest`` that does not load. ``latest`` is replaced
atomically afterwards; pruning renames an old checkpoint to ``.trash-round-N`` before deleting it.

On resume, :func:`select_checkpoint` verifies sizes and digests (each rank hashes a share of the files) and falls
back to the newest older checkpoint that verifies. A checkpoint without a manifest (written before manifests existed)
is checked by the CRC-32 of every member of its .pt archives instead, and loads with a warning. The digests assume a
filesystem that every rank sees (as the rename already does).
"""

from __future__ import annotations

import contextlib
import functools
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

from maskgrpo.digests import sha256_file
from maskgrpo.distributed import agree, barrier, broadcast_object, gather_objects
from maskgrpo.errors import RunError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "htgrpo-checkpoint/1"
ROUND_NAME = re.compile(r"round-\d{6}")
"""Name of a complete checkpoint folder (``latest`` must hold exactly such a name)."""


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


# ---- writing ---------------------------------------------------------------------------------------------------
def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def _digest_share(root: Path, rels: list[str], rank: int, world: int) -> dict[str, dict]:
    """{path: {"size", "sha256"}} of this rank's share (every world-th file) of ``rels`` under ``root``."""
    return {r: {"size": (root / r).stat().st_size, "sha256": sha256_file(root / r)} for r in rels[rank::world]}


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def save_checkpoint(engine: Any, root: Path, state: TrainerState, rank: int, world: int, keep: int) -> Path:
    """Write ``root/round-N`` (N = state.round) on every rank, point ``latest`` at it, keep the newest ``keep``.

    A failed write (full disk, read-only folder) raises RunError("cannot write checkpoint to ...: <OS reason>") on
    every rank after removing the temporary folder; the previous checkpoint and ``latest`` stay as they were.
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
        engine.save_checkpoint(str(tmp), tag="state", save_latest=False)
        torch.save(state.__dict__, tmp / f"trainer_rank{rank}.pt")
    except (OSError, RuntimeError) as e:  # a full disk surfaces from torch.save as RuntimeError
        err = fail(e, tmp)
    _agree_or_clean(err, tmp, rank)
    rels = broadcast_object(_files(tmp) if rank == 0 else None)
    digests = {k: v for share in gather_objects(_digest_share(tmp, rels, rank, world)) for k, v in share.items()}
    if rank == 0:
        manifest = {"format": MANIFEST_FORMAT, "round": state.round, "world_size": world, "files": digests}
        try:
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if final.exists():  # the same round saved again: set the old copy aside, never leave `latest` dangling
                os.replace(final, root / f".trash-{name}")
            os.replace(tmp, final)
            _write_text_atomic(root / "latest", name)
        except OSError as e:
            err = fail(e, root)
            shutil.rmtree(final, ignore_errors=True)  # complete but not named by latest: drop it, keep the old state
            (root / "latest.tmp").unlink(missing_ok=True)
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
    """Collective. None if every file of the manifest is present with its size and SHA-256; "legacy" when the
    checkpoint has no manifest but its .pt archives pass their CRC-32; otherwise what is wrong
    ("trainer_rank0.pt: digest mismatch")."""
    manifest: Any = None
    if rank == 0:
        manifest = _read_manifest(path)
    manifest = broadcast_object(manifest)
    if isinstance(manifest, str) and manifest != "legacy":
        return manifest
    if manifest == "legacy":  # no digests: every .pt file is a zip archive with a CRC-32 per member
        rels = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.pt"))
        if not any(r.startswith("trainer_rank") for r in rels) or not any(r.startswith("state/") for r in rels):
            return "no trainer_rank*.pt or no state/*.pt"
        mine = [_check_archive(path, r) for r in rels[rank::world]]
    else:
        rels = sorted(manifest["files"])
        mine = [_check_file(path, r, manifest["files"][r]) for r in rels[rank::world]]
    problems = sorted(p for share in gather_objects(mine) for p in share if p)
    if not problems:
        return manifest if manifest == "legacy" else None
    return problems[0] + (f" and {len(problems) - 1} more" if len(problems) > 1 else "")


def _read_manifest(path: Path) -> dict | str:
    f = path / MANIFEST
    if not path.is_dir():
        return "folder missing"
    if not f.is_file():
        return "legacy"
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        return f"{MANIFEST}: unreadable ({type(e).__name__})"
    if not (isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT and isinstance(m.get("files"), dict)):
        return f"{MANIFEST}: not a {MANIFEST_FORMAT} manifest"
    return m


def _check_file(root: Path, rel: str, want: dict) -> str | None:
    p = root / rel
    try:
        size = p.stat().st_size
        if size != want["size"]:
            return f"{rel}: {size} bytes, expected {want['size']} (truncated)" if size < want["size"] else (
                f"{rel}: {size} bytes, expected {want['size']}")  # fmt: skip
        return None if sha256_file(p) == want["sha256"] else f"{rel}: digest mismatch"
    except FileNotFoundError:
        return f"{rel}: missing"
    except OSError as e:
        return f"{rel}: unreadable ({e.strerror})"


def _check_archive(root: Path, rel: str) -> str | None:
    """A .pt file of a checkpoint without manifest: a complete zip archive whose members match their CRC-32."""
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
    RunError when there is none. A checkpoint without a manifest is taken with a warning."""
    paths, note = candidates(root)
    damaged = []
    for path in paths:
        problem = verify_checkpoint(path, rank, world)
        if problem in (None, "legacy"):
            if rank == 0:
                bad = ", ".join(f"{n} ({why})" for n, why in damaged)
                if note:
                    _warn(f"{note}; using the newest checkpoint that verifies")
                if len(damaged) == 1:
                    _warn(f"checkpoint {damaged[0][0]} is damaged ({damaged[0][1]}); resuming from {path.name}")
                elif damaged:
                    _warn(f"checkpoints {bad} are damaged; resuming from {path.name}")
                if problem == "legacy":
                    _warn(f"checkpoint {path} has no {MANIFEST} (written before manifests): its archives' CRC-32 "
                          "match, loading it without digests")  # fmt: skip
            return path
        damaged.append((path.name, problem))
    bad = ", ".join(f"{n} ({why})" for n, why in damaged)
    raise RunError(f"--resume: no intact checkpoint under {root}: {bad}" + (f"; {note}" if note else ""))


def _warn(msg: str) -> None:
    print(f"[train] warning: {msg}", file=sys.stderr, flush=True)


def checkpoint_world_size(path: Path) -> int:
    """Ranks that wrote the checkpoint (from the manifest; counted trainer_rank*.pt files for a legacy one)."""
    m = _read_manifest(path)
    if isinstance(m, dict) and isinstance(m.get("world_size"), int):
        return m["world_size"]
    return len(list(path.glob("trainer_rank*.pt")))


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
    """Engine state (model, optimizer, scheduler) and this rank's TrainerState from a verified checkpoint."""
    state = read_trainer_state(path, rank)
    try:
        load_path, _ = engine.load_checkpoint(str(path), tag="state", load_optimizer_states=True,
                                              load_lr_scheduler_states=True)  # fmt: skip
    except (OSError, RuntimeError, EOFError, KeyError, ValueError) as e:  # damage that slipped past the checks
        archives = sorted(p.relative_to(path).as_posix() for p in (path / "state").rglob("*.pt"))
        why = next((p for p in map(functools.partial(_check_archive, path), archives) if p), None)
        raise RunError(f"cannot load checkpoint {path}: {why or f'{type(e).__name__}: {_first_line(e)}'}") from e
    if load_path is None:
        raise RunError(f"DeepSpeed could not load the checkpoint at {path / 'state'}")
    return state


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
