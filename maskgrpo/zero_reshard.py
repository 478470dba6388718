"""ZeRO-2 optimizer state of a checkpoint written by another number of ranks, cut for this one.

A ZeRO-2 rank r holds partition r of each parameter group's flat fp32 buffer, with the Adam moments of the same
slice; its checkpoint file (``*zero_pp_rank_{r}_mp_rank_00_optim_states.pt``) records, per group, which piece of
which parameter lies where in the partition (``param_slice_mappings``: name -> (start, numel)). A parameter cut
between ranks lies in consecutive ranks' partitions, in rank order. The new layout comes from the engine's own
``optimizer.state_dict()`` (every rank's mapping, gathered); each rank copies the overlap of every old piece with its
new pieces (fp32 master, exp_avg, exp_avg_sq), so it reads only what it needs from the memory-mapped old files, and
hands DeepSpeed a checkpoint of its own layout (``optimizer.load_state_dict``, the path of a same-size resume).
Nothing is rounded: every value is copied, so the state after the reshard equals the saved one exactly.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from maskgrpo.distributed import gather_objects
from maskgrpo.errors import RunError

OPTIM_FILE = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt")
MOMENTS = ("exp_avg", "exp_avg_sq")
"""The per-element optimizer state besides the fp32 master weights (torch Adam / AdamW)."""


def _constants() -> Any:
    from deepspeed.checkpoint import constants

    return constants


def _old_shards(state_dir: Path) -> list[dict]:
    """The optimizer-state dict of every old rank, in rank order, memory-mapped (read lazily)."""
    found = {int(m.group(1)): p for p in state_dir.iterdir() if (m := OPTIM_FILE.fullmatch(p.name))}
    if not found or sorted(found) != list(range(len(found))):
        raise RunError(f"{state_dir}: no complete set of ZeRO optimizer shards (found ranks {sorted(found)})")
    c = _constants()
    # DeepSpeed's own files (verified by the manifest first): they hold its config objects, hence weights_only=False
    shards = [torch.load(found[r], map_location="cpu", mmap=True, weights_only=False)[c.OPTIMIZER_STATE_DICT]
              for r in range(len(found))]  # fmt: skip
    for r, sd in enumerate(shards):
        if not isinstance(sd.get(c.BASE_OPTIMIZER_STATE), dict):
            raise RunError(f"{found[r]}: an elastic ZeRO checkpoint; only the default (rigid) layout is resharded")
    return shards


def _pieces(mappings: list[dict]) -> dict[str, list[tuple[int, int, int, int]]]:
    """name -> [(rank, start in that rank's partition, numel, offset in the flattened parameter)] for one group,
    from every rank's ``param_slice_mappings`` of that group (pieces of one parameter follow each other by rank)."""
    out: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    done: dict[str, int] = defaultdict(int)
    for r, mapping in enumerate(mappings):
        for name, frag in mapping.items():
            out[name].append((r, frag.start, frag.numel, done[name]))
            done[name] += frag.numel
    return out


def reshard_optimizer_state(engine: Any, state_dir: Path, rank: int) -> None:
    """Collective. Load the fp32 master weights, Adam moments and step of the ZeRO-2 checkpoint in ``state_dir``
    (written by any number of ranks) into ``engine``'s optimizer, partitioned for the current ranks.

    The module weights are loaded beforehand (``engine.load_checkpoint(..., load_optimizer_states=False)``).
    RunError when the checkpoint's parameters differ from the engine's.
    """
    c = _constants()
    old = _old_shards(state_dir)
    current = engine.optimizer.state_dict()  # this rank's layout (fresh engine: no moments yet)
    new_maps = gather_objects(current[c.PARAM_SLICE_MAPPINGS])  # every new rank's layout: offsets of cut params
    groups = len(current[c.SINGLE_PARTITION_OF_FP32_GROUPS])
    if len(old[0][c.SINGLE_PARTITION_OF_FP32_GROUPS]) != groups:
        raise RunError(f"{state_dir}: {len(old[0][c.SINGLE_PARTITION_OF_FP32_GROUPS])} parameter groups, the run "
                       f"has {groups}")  # fmt: skip
    base_old = old[0][c.BASE_OPTIMIZER_STATE]
    fp32, moments = [], {k: [] for k in MOMENTS}
    for g in range(groups):
        src = _pieces([sd[c.PARAM_SLICE_MAPPINGS][g] for sd in old])
        dst = _pieces([m[g] for m in new_maps])
        if src.keys() != dst.keys():
            missing, extra = sorted(dst.keys() - src.keys()), sorted(src.keys() - dst.keys())
            raise RunError(f"{state_dir}: the checkpoint's trainable parameters differ from the run's (missing "
                           f"{missing[:3]}, unexpected {extra[:3]})")  # fmt: skip
        size = current[c.SINGLE_PARTITION_OF_FP32_GROUPS][g].numel() + current[c.GROUP_PADDINGS][g]
        master = torch.zeros(size, dtype=torch.float32)
        moment = {k: torch.zeros(size, dtype=torch.float32) for k in MOMENTS}
        for name, pieces in dst.items():
            for r, start, numel, offset in pieces:
                if r != rank:
                    continue
                for q, q_start, q_numel, q_offset in src[name]:  # old pieces overlapping [offset, offset + numel)
                    lo, hi = max(offset, q_offset), min(offset + numel, q_offset + q_numel)
                    if lo >= hi:
                        continue
                    to = slice(start + lo - offset, start + hi - offset)
                    frm = slice(q_start + lo - q_offset, q_start + hi - q_offset)
                    master[to] = old[q][c.SINGLE_PARTITION_OF_FP32_GROUPS][g][frm]
                    for k in MOMENTS:
                        moment[k][to] = old[q][c.BASE_OPTIMIZER_STATE]["state"][g][k][frm]
        fp32.append(master[: current[c.SINGLE_PARTITION_OF_FP32_GROUPS][g].numel()])
        for k in MOMENTS:
            moments[k].append(moment[k])
    mine = dict(current)
    mine[c.SINGLE_PARTITION_OF_FP32_GROUPS] = fp32
    mine[c.BASE_OPTIMIZER_STATE] = {
        "state": {g: {"step": base_old["state"][g]["step"], **{k: moments[k][g] for k in MOMENTS}}
                  for g in range(groups)},
        "param_groups": [{**saved, "params": now["params"]} for saved, now in
                         zip(base_old["param_groups"], current[c.BASE_OPTIMIZER_STATE]["param_groups"])],
    }  # fmt: skip
    for key in (c.LOSS_SCALER, "dynamic_loss_scale", c.CLIP_GRAD):  # the saved run's loss scale (fp16) and clip
        if key in old[0]:
            mine[key] = old[0][key]
    shards = [None] * len(new_maps)
    shards[rank] = mine
    engine.optimizer.load_state_dict(shards, load_optimizer_states=True, load_from_fp32_weights=True)
