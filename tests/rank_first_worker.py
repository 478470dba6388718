"""Worker of tests/test_fetch.py's two-rank test: a gloo process group on CPU, a fake download function that records
who called it and when, then two hub ids through ``resolve_checkpoint_dir``: one whose download works and one whose
download fails on local rank 0. Kept apart from the test module so the spawned ranks import little."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch.distributed as dist


def worker(rank: int, world: int, work: str) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    from maskgrpo import hub

    os.environ.update(LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    dist.init_process_group("gloo", init_method=f"file://{work}/rendezvous", rank=rank, world_size=world)
    cache = Path(work) / "cache"

    def fake(repo_id: str, patterns: list[str] | None, local_files_only: bool) -> str:
        start = time.time()
        snap = cache / repo_id.replace("/", "--")
        if not local_files_only:  # a download: slow; the "broken" repository fails
            time.sleep(1.5)
            if repo_id.endswith("broken"):
                raise OSError("503 Server Error: the hub is down")
            snap.mkdir(parents=True)
            (snap / "config.json").write_text("{}")
        elif not snap.is_dir():
            raise LocalEntryNotFoundError("not in the cache")
        with open(Path(work) / "calls.jsonl", "a") as f:
            line = {"rank": rank, "repo": repo_id, "local_only": local_files_only, "start": start, "end": time.time()}
            f.write(json.dumps(line) + "\n")
        return str(snap)

    hub.download_snapshot = fake
    results = {}
    for repo in ("owner/model", "owner/broken"):
        try:
            results[repo] = {"path": str(hub.resolve_hub_dir(repo, ("*.json",)))}
        except Exception as e:  # recorded for the parent to check
            results[repo] = {"error": f"{type(e).__name__}: {e}"}
    (Path(work) / f"result{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()
