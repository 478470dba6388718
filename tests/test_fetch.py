"""Offline first: what a config needs from the hub, the fetch command (sizes, digests, manifest), the real cache
look-up without network, the one-line error of a missing weight, and local rank 0 downloading while the others wait
(2 gloo ranks on CPU). No test reaches the network: the download function is replaced."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from conftest import REPO

from maskgrpo import hub as hub_module
from maskgrpo.backbones.mmada import TOKENIZER_PATTERNS
from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.models import fetch
from maskgrpo.models.fetch import config_sources
from maskgrpo.models.loading import WEIGHT_PATTERNS, WeightsNotCached, resolve_checkpoint_dir
from maskgrpo.models.magvit2 import WEIGHT_FILES
from maskgrpo.rewards.clip import CLIP_FILES

HT = REPO / "configs" / "mmada_htgrpo.yaml"


def test_a_config_needs_its_backbone_vq_clip_and_the_judges() -> None:
    cfg = load_config(TrainRun, HT, [])
    got = {(s.what, s.repo_id, s.patterns) for s in config_sources(cfg)}
    assert got == {
        ("backbone.path", "Gen-Verse/MMaDA-8B-Base", (*WEIGHT_PATTERNS, *TOKENIZER_PATTERNS)),
        ("backbone.options.vq_path", "showlab/magvitv2", (*WEIGHT_FILES, "*.json")),
        ("rewards.clip.model_path", "openai/clip-vit-large-patch14", CLIP_FILES),
        ("rewards.hpsv3 (server judge)", "MizzenAI/HPSv3", ("HPSv3.safetensors",)),
        ("rewards.hpsv3 (server judge)", "Qwen/Qwen2-VL-7B-Instruct", None),
        ("rewards.unifiedreward (server judge)", "CodeGoat24/UnifiedReward-qwen-7b", None),
    }
    no_judges = [s for s in config_sources(cfg, judges=False) if "judge" in s.what]
    assert no_judges and all(s.repo_id is None and s.note.startswith("skipped (--no-judges)") for s in no_judges)
    lumina = load_config(TrainRun, REPO / "configs" / "dimoo_htgrpo.yaml", [])
    backbone = config_sources(lumina)[0]  # the vqvae/ subfolder comes with the checkpoint unless vq_path is set
    assert backbone.repo_id == "Alpha-VLLM/Lumina-DiMOO" and "vqvae/*" in backbone.patterns
    local = config_sources(load_config(TrainRun, HT, ["backbone.path=assets/toy_base"]))[0]
    assert local.repo_id is None and local.local == "assets/toy_base"


class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: each repo id maps to a folder of known bytes."""

    def __init__(self, root: Path, fail: dict[str, str] | None = None) -> None:
        self.root, self.fail, self.calls = root, fail or {}, []

    def __call__(self, repo_id: str, patterns: list[str] | None, local_files_only: bool) -> str:
        self.calls.append((repo_id, None if patterns is None else tuple(patterns), local_files_only))
        if repo_id in self.fail:
            raise OSError(self.fail[repo_id])
        snap = self.root / repo_id.replace("/", "--") / "0123456789abcdef0123"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_bytes(b'{"repo": "%s"}' % repo_id.encode())
        (snap / "model.safetensors").write_bytes(repo_id.encode() * 100)
        return str(snap)


def test_fetch_prints_sizes_and_digests_and_writes_a_manifest(tmp_path, monkeypatch, capsys) -> None:
    hub = FakeHub(tmp_path / "hub", fail={"Qwen/Qwen2-VL-7B-Instruct": "401 Client Error: gated repository"})
    monkeypatch.setattr(hub_module, "download_snapshot", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    manifest = tmp_path / "m.json"
    rc = fetch.main(["--config", str(HT), "--manifest", str(manifest)])
    out, err = capsys.readouterr()
    assert rc == 1  # one repository failed; the others were still fetched
    assert "1 of 6 repositories failed: Qwen/Qwen2-VL-7B-Instruct" in err
    assert "FAILED   Qwen/Qwen2-VL-7B-Instruct" in out and "401 Client Error: gated repository" in out
    fetched = {c[0]: c[1] for c in hub.calls}
    assert all(not c[2] for c in hub.calls)  # downloads, not cache look-ups
    assert fetched["Gen-Verse/MMaDA-8B-Base"] == (*WEIGHT_PATTERNS, *TOKENIZER_PATTERNS)  # the loader's own files
    assert fetched["MizzenAI/HPSv3"] == ("HPSv3.safetensors",) and fetched["CodeGoat24/UnifiedReward-qwen-7b"] is None
    for repo in ("Gen-Verse/MMaDA-8B-Base", "showlab/magvitv2", "openai/clip-vit-large-patch14"):
        weights = repo.encode() * 100
        # the file's size in decimal units and the SHA-256 of its bytes, printed per file
        assert f"sha256 {hashlib.sha256(weights).hexdigest()}  model.safetensors" in out, repo
        assert f"{len(weights) / 1000:.2f} kB" in out
        assert f"fetched  {repo}" in out
    record = json.loads(manifest.read_text())
    mmada = next(r for r in record["repositories"] if r["repo_id"] == "Gen-Verse/MMaDA-8B-Base")
    assert mmada["revision"] == "0123456789abcdef0123" and mmada["error"] is None
    assert {f["path"]: f["bytes"] for f in mmada["files"]} == {
        "config.json": len(b'{"repo": "Gen-Verse/MMaDA-8B-Base"}'),
        "model.safetensors": len(b"Gen-Verse/MMaDA-8B-Base") * 100,
    }


def test_fetch_refuses_to_run_offline_and_check_reads_only_the_cache(tmp_path, monkeypatch, capsys) -> None:
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(hub_module, "download_snapshot", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch.main(["--config", str(HT)]) == 2
    assert "HF_HUB_OFFLINE is set: fetching needs the hub" in capsys.readouterr().err
    assert fetch.main(["--config", str(HT), "--check", "--no-judges"]) == 0  # the fake "cache" has everything
    assert hub.calls and all(c[2] for c in hub.calls)  # local_files_only on every look-up
    assert "cached   showlab/magvitv2" in capsys.readouterr().out


def _hf_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face hub cache entry as huggingface_hub lays it out (refs/main -> snapshots/<rev>/...)."""
    rev = hashlib.sha1(repo_id.encode()).hexdigest()
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(rev)
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


def test_check_against_a_real_cache_offline(tmp_path, monkeypatch, capsys) -> None:
    """No fake: huggingface_hub's own offline look-up in a cache that holds one of the six repositories."""
    import huggingface_hub.constants as hfc

    cache = tmp_path / "hub"
    snap = _hf_cache(cache, "showlab/magvitv2", {"pytorch_model.safetensors": b"w" * 10, "config.json": b"{}"})
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(cache))
    assert fetch.main(["--config", str(HT), "--check"]) == 1
    out, err = capsys.readouterr()
    assert "cached   showlab/magvitv2" in out and f"rev {snap.name[:12]}" in out
    assert "MISSING  Gen-Verse/MMaDA-8B-Base" in out
    assert "5 of 6 repositories missing" in err and "bash launch/fetch_weights.sh CONFIG" in err
    # the loaders resolve the cached repository offline, and a missing one is one line naming the fetch
    assert resolve_checkpoint_dir("showlab/magvitv2", (*WEIGHT_FILES, "*.json")) == snap
    monkeypatch.setenv("HTGRPO_FETCH_COMMAND", "bash launch/fetch_weights.sh configs/mmada_htgrpo.yaml")
    with pytest.raises(WeightsNotCached) as e:
        resolve_checkpoint_dir("Gen-Verse/MMaDA-8B-Base")
    assert str(e.value) == (
        f"Gen-Verse/MMaDA-8B-Base is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1: fetch the weights "
        "first, on a machine with network and the same cache (HF_HOME), with "
        "`bash launch/fetch_weights.sh configs/mmada_htgrpo.yaml`"
    )


# ---------------------------------------------------------------------------------------------------------------
# Local rank 0 downloads, the others wait (2 gloo ranks)


@pytest.mark.slow
def test_only_local_rank_0_downloads_while_the_other_rank_waits(tmp_path) -> None:
    """Two gloo ranks resolve two hub ids: the first downloads on rank 0 only while rank 1 waits, then reads the
    cache; the second's download fails on rank 0 (fault injected) and both ranks raise its message, none hangs."""
    from rank_first_worker import worker

    ctx = mp.start_processes(worker, args=(2, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + 120
    while not ctx.join(timeout=2):
        assert time.time() < deadline, "a rank did not finish: the wait hangs"
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    downloads = [c for c in calls if not c["local_only"]]
    assert [(c["rank"], c["repo"]) for c in downloads] == [(0, "owner/model")]  # rank 1 never downloaded
    (r1,) = [c for c in calls if c["rank"] == 1]
    assert r1["local_only"] and r1["start"] >= downloads[0]["end"]  # it read the cache after rank 0 finished
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1)]
    assert {r["owner/model"]["path"] for r in results} == {str(tmp_path / "cache" / "owner--model")}
    assert results[0]["owner/broken"] == {"error": "OSError: 503 Server Error: the hub is down"}
    assert results[1]["owner/broken"] == {"error": "WeightsNotCached: 503 Server Error: the hub is down"}
    assert not any(c["repo"] == "owner/broken" for c in calls)  # nobody got a snapshot of it
