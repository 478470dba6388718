"""Shared pieces of the evaluation harnesses: model loading, sampler flags, rank sharding, seeding, atomic writes.

Every generator (``eval.geneval_generate``, ``eval.dpg_generate``) follows the same plan::

    rank, world = shard_env()                        # torchrun's RANK / WORLD_SIZE; (0, 1) without torchrun
    items = [i for i in range(n) if i % world == rank]
    todo  = [i for i in items if not finished(i)]    # resume: skip what is already on disk
    for chunk in chunks(todo):                       # one prompt per sampler call by default
        gen = Generator().manual_seed(item_seed(seed, chunk[0]))
        images = decode(sample(chunk prompts x S))   # (len(chunk) * S, H, W, 3) uint8
        write(atomically)                            # a crash never leaves a half-written file behind

No process group is created: generation is embarrassingly parallel and the ranks never talk to each other. Every
prompt gets its own generator seeded from ``(seed, prompt index)``, so with the default of one prompt per sampler
call the images do not depend on the number of ranks, on the shard, or on how often the run was resumed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from maskgrpo.atomic import write_atomic
from maskgrpo.config.schema import SamplerConfig

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------------------------------------------
# Model loading
# ----------------------------------------------------------------------------------------------------------------


def add_model_args(ap: argparse.ArgumentParser, dtype_default: str = "float32") -> None:
    """``--checkpoint DIR`` (a finished run) or ``--backbone NAME --model-path DIR`` (a base), plus dtype/device.
    ``dtype_default`` "auto" (the benchmark generators): bfloat16 on a CUDA device, float32 on CPU."""
    g = ap.add_argument_group("model (either --checkpoint, or --backbone with --model-path)")
    g.add_argument("--checkpoint", default=None,
                   help="a finished run's final/ directory (backbone.json + adapter/ or model/), or the run "
                        "directory that holds it")  # fmt: skip
    g.add_argument("--backbone", default=None, help="registered backbone name of a base model, e.g. 'shapes'")
    g.add_argument("--model-path", default=None, help="base model directory for --backbone")
    g.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra backbone loader option (repeatable; JSON-decoded when possible)")  # fmt: skip
    dtype_help = f"weight dtype; auto: bfloat16 on a GPU, float32 on CPU (default {dtype_default})"
    g.add_argument("--dtype", default=dtype_default, choices=[*sorted(DTYPES), "auto"], help=dtype_help)
    g.add_argument("--device", default=None,
                   help="torch device; default cuda:LOCAL_RANK when CUDA is available, else cpu")  # fmt: skip


def parse_key_values(pairs: Iterable[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a value is JSON-decoded when possible, else kept as a string."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def default_device() -> str:
    """``cuda:LOCAL_RANK`` when CUDA is available (one GPU per torchrun process), else ``cpu``."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def resolve_dtype(name: str, device: str | torch.device) -> str:
    """``--dtype``'s value for ``device``: "auto" is bfloat16 on CUDA (an 8B model: half the memory and the bf16
    tensor cores) and float32 elsewhere; other names as given."""
    if name != "auto":
        return name
    return "bfloat16" if torch.device(device).type == "cuda" else "float32"


def resolve_final_dir(checkpoint: str | Path) -> Path:
    """A run's ``final/`` directory from either itself or the run directory above it (error names both)."""
    d = Path(checkpoint)
    if (d / "backbone.json").is_file():
        return d
    if (d / "final" / "backbone.json").is_file():
        return d / "final"
    raise FileNotFoundError(
        f"{d} is neither a finished run's final/ directory nor a run directory containing one (no backbone.json "
        f"in {d} or {d / 'final'}); for a base model use --backbone NAME --model-path DIR"
    )


def load_backbone(args: argparse.Namespace) -> Any:
    """The backbone named by the model flags (see :func:`add_model_args`), on its device, in eval mode."""
    from maskgrpo.backbones.base import load_backbone as load_registered
    from maskgrpo.checkpoint import load_trained

    device = args.device or default_device()
    dtype = DTYPES[resolve_dtype(args.dtype, device)]
    if args.checkpoint and (args.backbone or args.model_path):
        raise SystemExit("error: give either --checkpoint or --backbone/--model-path, not both")
    if args.checkpoint:
        backbone = load_trained(resolve_final_dir(args.checkpoint), dtype=dtype, device=device)
    elif args.backbone and args.model_path:
        options = parse_key_values(args.backbone_option)
        backbone = load_registered(args.backbone, args.model_path, dtype, device, options)  # RunError: one line
    else:
        raise SystemExit("error: give --checkpoint DIR, or --backbone NAME and --model-path DIR")
    backbone.model.eval()
    return backbone


def describe_model(args: argparse.Namespace) -> dict[str, Any]:
    """What was loaded and in which dtype, for the JSON records next to the outputs."""
    dtype = resolve_dtype(args.dtype, args.device or default_device())
    if args.checkpoint:
        return {"checkpoint": str(args.checkpoint), "dtype": dtype}
    return {"backbone": args.backbone, "model_path": str(args.model_path),
            "backbone_options": parse_key_values(args.backbone_option), "dtype": dtype}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Sampler flags
# ----------------------------------------------------------------------------------------------------------------


def add_sampler_args(ap: argparse.ArgumentParser, sampler: str = "maskgit", steps: int = 15, cfg: float = 3.5) -> None:
    """``--sampler --steps --cfg --sampler-option --seed``; defaults follow MMaDA's evaluation (MaskGIT, 15, 3.5)."""
    g = ap.add_argument_group("sampling")
    g.add_argument("--sampler", default=sampler, help=f"registered sampler name (default {sampler})")
    g.add_argument("--steps", type=int, default=steps, help=f"denoising steps T (default {steps})")
    g.add_argument("--cfg", type=float, default=cfg, help=f"classifier-free guidance scale w (default {cfg})")
    g.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sampler argument, e.g. tau0=1.0 (repeatable)")  # fmt: skip
    g.add_argument("--seed", type=int, default=1234, help="base seed; prompt i uses a seed derived from (seed, i)")


def sampler_config(args: argparse.Namespace) -> SamplerConfig:
    """The validated :class:`SamplerConfig` of the sampler flags (unknown names list the valid ones)."""
    return SamplerConfig(name=args.sampler, num_steps=args.steps, cfg_scale=args.cfg,
                         options=parse_key_values(args.sampler_option))  # fmt: skip


def sampler_record(cfg: SamplerConfig) -> dict[str, Any]:
    """The sampler settings as a JSON-ready dict, for the records written next to the outputs."""
    return {"name": cfg.name, "num_steps": cfg.num_steps, "cfg_scale": cfg.cfg_scale, "options": dict(cfg.options)}


# ----------------------------------------------------------------------------------------------------------------
# Sharding, seeding, generation
# ----------------------------------------------------------------------------------------------------------------


def shard_env(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(rank, world_size) from torchrun's ``RANK`` / ``WORLD_SIZE``; (0, 1) when they are unset."""
    env = os.environ if env is None else env
    rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad RANK={rank} / WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return rank, world


def shard(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """The indices this rank owns: ``i % world == rank`` (disjoint across ranks, together all of them)."""
    return [i for i in indices if i % world == rank]


def item_seed(seed: int, index: int) -> int:
    """A 63-bit seed for prompt ``index`` under base ``seed`` (numpy SeedSequence mixing, so nearby pairs differ)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def progress(total: int, desc: str, rank: int, world: int) -> tqdm:
    """A per-rank progress bar over prompts (one line per rank under torchrun)."""
    label = f"{desc} [rank {rank}/{world}]" if world > 1 else desc
    return tqdm(total=total, desc=label, position=rank, unit="prompt", dynamic_ncols=True)


def generate_items(
    backbone: Any,
    sampler: Any,
    todo: list[tuple[int, str]],
    samples: int,
    seed: int,
    prompts_per_call: int,
    on_done: Callable[[int, np.ndarray], None],
    bar: tqdm | None = None,
) -> None:
    """Sample ``samples`` images for every ``(index, prompt)`` in ``todo`` and hand them to ``on_done``.

    Prompts go to the sampler ``prompts_per_call`` at a time (``prompts_per_call * samples`` rows per call). Each
    call draws from its own generator seeded with ``item_seed(seed, first index of the call)``, so with
    ``prompts_per_call == 1`` the images of a prompt depend only on (seed, index, model, sampler).
    ``on_done(index, images)`` receives (samples, H, W, 3) uint8 per prompt, in ``todo`` order.
    """
    from maskgrpo.backbones.base import generate_codes

    device = next(backbone.model.parameters()).device
    for s in range(0, len(todo), prompts_per_call):
        chunk = todo[s : s + prompts_per_call]
        generator = torch.Generator(device=device).manual_seed(item_seed(seed, chunk[0][0]))
        prompts = [p for _, p in chunk for _ in range(samples)]
        codes = generate_codes(backbone, prompts, sampler, generator, batch_size=len(prompts))  # (C*S, N)
        images = backbone.decode(codes)  # (C*S, H, W, 3) uint8
        images = images.reshape(len(chunk), samples, *images.shape[1:])  # (C, S, H, W, 3)
        for (index, _), imgs in zip(chunk, images):
            on_done(index, imgs)
            if bar is not None:
                bar.update(1)


def prompts_per_call(batch_size: int | None, samples: int) -> int:
    """Prompts per sampler call from ``--batch-size`` (images per call; default = one prompt's samples)."""
    if batch_size is None:
        return 1
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    return max(1, batch_size // samples)


def add_run_args(ap: argparse.ArgumentParser, samples: int | None) -> None:
    """``--limit --batch-size`` (and ``--samples`` when the benchmark lets it vary)."""
    if samples is not None:
        ap.add_argument("--samples", type=int, default=samples, help=f"images per prompt (default {samples})")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per sampler call, a multiple of the samples per prompt (default: one prompt per "
                         "call, which makes every image independent of sharding and resumption)")  # fmt: skip
    ap.add_argument("--limit", type=int, default=None, help="only the first N prompts (smoke tests)")


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def save_png_atomic(image: np.ndarray, path: Path) -> None:
    """Write (H, W, 3) uint8 as PNG, whole or not at all (``maskgrpo.atomic.write_atomic``)."""
    from PIL import Image

    write_atomic(path, lambda f: Image.fromarray(np.ascontiguousarray(image)).save(f, format="PNG"))
