"""Issue 13 fault injection through the real entry point (``python -m maskgrpo.train`` in a subprocess, tiny base):
damaged checkpoints, changed configs on resume, the run-folder lock, reused folders, rejected starts, torn metrics,
non-finite losses, a full or read-only disk, a killed launcher, another world size, and SIGKILL at every step of a
checkpoint write. Each test asserts the exit status, the one-line message and the state left on disk.

``HTGRPO_SLOW_TESTS=1`` adds the full kill-point sweep (1 and 2 ranks) and the other variants marked ``sweep``; the
default suite keeps one 2-rank kill / resume (launcher killed) and the 1-rank kill points the other tests need.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_run
from procs import alive, children
from safetensors.torch import load_file
from test_train import read_jsonl

from maskgrpo.checkpoint import MANIFEST, select_checkpoint
from maskgrpo.errors import RunError

pytestmark = pytest.mark.slow  # every case runs the trainer's CLI in subprocesses (1 and 2 ranks); most kill it

CONFIG = str(REPO / "configs/toy_maskgrpo.yaml")
sweep = pytest.mark.sweep  # a variant of a case the default suite covers: runs with HTGRPO_SLOW_TESTS=1 (conftest.py)
KEEP3 = {"checkpoint.keep": 3}
"""The reference run keeps all three checkpoints, so the damage tests have two older ones to fall back to."""


# ---- helpers ---------------------------------------------------------------------------------------------------
def train(
    args: list[str], nproc: int = 1, fault: tuple[str, str, object] | None = None
) -> subprocess.CompletedProcess:
    """Run the trainer (optionally through tests/fault_driver.py with one fault); stdout and stderr apart."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    entry = [str(REPO / "tests/fault_driver.py"), *map(str, fault), "--"] if fault else ["-m", "maskgrpo.train"]
    cmd = [sys.executable, *launch, *entry, "--config", CONFIG, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _tail(r: subprocess.CompletedProcess) -> str:
    text = "\n".join(s for s in re.split(r"[\r\n]", r.stdout + "\n" + r.stderr) if s.strip() and "it/s]" not in s)
    return f"exit status {r.returncode}\n{text[-6000:]}"


def ok(r: subprocess.CompletedProcess) -> str:
    if r.returncode != 0:
        pytest.fail(_tail(r), pytrace=False)
    return r.stdout + r.stderr


def error_line(r: subprocess.CompletedProcess) -> str:
    """The one line a failed run ends with (exit status 2, no traceback)."""
    if r.returncode != 2 or "Traceback" in r.stderr:
        pytest.fail(_tail(r), pytrace=False)
    lines = [s for s in re.split(r"[\r\n]", r.stderr) if s.strip()]
    assert lines[-1].startswith("error: "), lines[-3:]
    return lines[-1]


def snapshot(d: Path) -> dict[str, str]:
    """SHA-256 of every file under ``d`` (the lock file's holder text aside)."""
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}  # fmt: skip


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model" / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def flip(path: Path, nbytes: int = 64) -> None:
    """Invert ``nbytes`` bytes in the middle of a file (bit rot)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + nbytes] = bytes(b ^ 0xFF for b in data[mid : mid + nbytes])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _args(base: str, run: Path, **extra) -> list[str]:
    """The reference run's overrides (3 rounds, all checkpoints kept), writing into ``run``."""
    return tiny_run(base, run, rounds=3, **{**KEEP3, **extra})


def as_killed_after_round(run: Path, r: int) -> None:
    """Make a finished run look killed right after round ``r``'s checkpoint (later checkpoints and final/ gone)."""
    ckpt = run / "checkpoints"
    for p in ckpt.glob("round-*"):
        if int(p.name.split("-")[1]) > r:
            shutil.rmtree(p)
    (ckpt / "latest").write_text(f"round-{r:06d}")
    shutil.rmtree(run / "final")


@pytest.fixture(scope="module")
def base(toy_base_dir) -> str:
    return toy_base_dir


@pytest.fixture(scope="module")
def finished(base, tmp_path_factory) -> Path:
    """The uninterrupted reference: 1 rank, 3 rounds, a checkpoint every round, all three kept."""
    out = tmp_path_factory.mktemp("faults") / "finished"
    ok(train(tiny_run(base, out, rounds=3, **KEEP3)))
    return out


# ---- item 1: damaged checkpoints -------------------------------------------------------------------------------
STATE, OPTIM = "state/mp_rank_00_model_states.pt", "state/zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _bad(r: int, rel: str, how: Callable[[Path], object]) -> Callable[[Path], object]:
    return lambda root: how(root / f"round-{r:06d}" / rel)


def _no_manifest(*rounds: int) -> Callable[[Path], None]:
    """Checkpoints without manifest.json (as the pre-manifest format wrote them, or a lost manifest)."""

    def apply(root: Path) -> None:
        for r in rounds:
            (root / f"round-{r:06d}" / MANIFEST).unlink()

    return apply


def _damaged(why: str, resumed: int) -> str:
    return rf"checkpoint round-000003 is damaged \({why}\); resuming from round-00000{resumed}"


TRUNCATED = r"\d+ bytes, expected \d+ \(truncated\)"
DAMAGE = {  # name -> (damage, checkpoint resumed from, expected warning regex; None = RunError)
    "trainer_flip": (_bad(3, "trainer_rank0.pt", flip), 2, _damaged("trainer_rank0.pt: digest mismatch", 2)),
    "model_flip": (_bad(3, STATE, flip), 2, _damaged(f"{STATE}: digest mismatch", 2)),
    "optim_truncated": (_bad(3, OPTIM, truncate), 2, _damaged(f"{OPTIM}: {TRUNCATED}", 2)),
    "trainer_missing": (_bad(3, "trainer_rank0.pt", Path.unlink), 2, _damaged("trainer_rank0.pt: missing", 2)),
    "manifest_garbled": (_bad(3, MANIFEST, lambda p: p.write_text("{not json")), 2,
                         _damaged(r"manifest.json: unreadable \(JSONDecodeError\)", 2)),
    "folder_deleted": (lambda root: shutil.rmtree(root / "round-000003"), 2, _damaged("folder missing", 2)),
    "two_damaged": (lambda root: [flip(root / "round-000003" / STATE), truncate(root / "round-000002" / OPTIM)], 1,
                    rf"checkpoints round-000003 \({STATE}: digest mismatch\), round-000002 \({OPTIM}: {TRUNCATED}\) "
                    r"are damaged; resuming from round-000001"),
    "latest_empty": (lambda root: (root / "latest").write_text(""), 3, r"holds 'nothing', not a checkpoint name"),
    "latest_garbage": (lambda root: (root / "latest").write_text("../../etc"), 3, r"holds '../../etc'"),
    "all_damaged": (lambda root: [flip(root / f"round-00000{r}" / "trainer_rank0.pt") for r in (1, 2, 3)], None,
                    r"no intact checkpoint under .*round-000003 \(trainer_rank0.pt: digest mismatch\), round-000002"),
    "manifest_missing": (_no_manifest(3), 2, _damaged("no manifest.json", 2)),
    "no_manifests": (_no_manifest(1, 2, 3), None, r"no intact checkpoint under .*: round-000003 \(no manifest.json\), "
                     r"round-000002 \(no manifest.json\), round-000001 \(no manifest.json\)$"),
    "manifest_entry_malformed": (lambda root: _edit_manifest(root / "round-000003", "trainer_rank0.pt", {"size": 1}),
                                 2, _damaged(r"manifest.json: not a htgrpo-checkpoint/2 manifest", 2)),
}  # fmt: skip
"""Each case damages a copy of the reference run's real checkpoints the way a user meets it (bit rot, a truncated
copy, a lost file, a garbled or empty file); the README's "corruption cases detected" count is this table."""


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_is_detected_and_skipped(case, finished, tmp_path, capsys):
    """Item 1, detection: select_checkpoint (what --resume calls) on the reference run's real checkpoints."""
    root = shutil.copytree(finished / "checkpoints", tmp_path / "checkpoints")
    damage, resumed, expected = DAMAGE[case]
    damage(root)
    if resumed is None:
        with pytest.raises(RunError, match=expected):
            select_checkpoint(root, rank=0, world=1)
        return
    assert select_checkpoint(root, rank=0, world=1) == root / f"round-{resumed:06d}"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[train] warning: ") and re.search(expected, lines[0]), lines


@pytest.mark.parametrize("target", ["trainer_rank0.pt", pytest.param(STATE, marks=sweep)])
def test_resume_skips_a_bit_flip_and_matches_the_uninterrupted_run(base, target, finished, tmp_path):
    """Item 1, end to end: 64 flipped bytes in the newest checkpoint -> resume from the one before, bit-exact."""
    run = copy_run(finished, tmp_path / "run")
    shutil.rmtree(run / "final")
    flip(run / "checkpoints" / "round-000003" / target)
    log = ok(train([*_args(base, run), "--resume"]))
    assert f"checkpoint round-000003 is damaged ({target}: digest mismatch); resuming from round-000002" in log
    assert "resumed from" in log and "round    3 |" in log
    assert same_weights(run, finished), "resumed weights differ from the uninterrupted run"
    got, want = read_jsonl(run / "metrics.jsonl"), read_jsonl(finished / "metrics.jsonl")
    assert [m["round"] for m in got] == [1, 2, 3]
    assert all(got[2][k] == want[2][k] for k in ("reward/mean", "loss/policy", "policy/kl_k3"))
    assert select_checkpoint(run / "checkpoints", 0, 1).name == "round-000003"  # rewritten, verifies


def test_resume_stops_when_no_checkpoint_verifies(base, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    for r in (1, 2, 3):
        flip(run / "checkpoints" / f"round-00000{r}" / STATE)
    before = snapshot(run)
    line = error_line(train([*_args(base, run, **{"rl.rounds": 4}), "--resume"]))
    assert f"--resume: no intact checkpoint under {run / 'checkpoints'}: round-000003 ({STATE}: digest mismatch), " \
           f"round-000002 ({STATE}: digest mismatch), round-000001 ({STATE}: digest mismatch)" in line  # fmt: skip
    assert snapshot(run) == before  # config.yaml, metrics and checkpoints untouched


def _edit_manifest(ckpt: Path, rel: str, entry: dict) -> None:
    m = json.loads((ckpt / MANIFEST).read_text())
    m["files"][rel] = entry
    (ckpt / MANIFEST).write_text(json.dumps(m))


@sweep
def test_checkpoint_without_manifest_is_skipped_like_a_damaged_one(base, finished, tmp_path):
    """Issue 25: no pre-manifest path. The newest checkpoint without manifest.json is damaged ("no manifest.json"):
    the run resumes from the one before, bit-exact, and rewrites it with a manifest; a run none of whose checkpoints
    has one stops with one line and is left as it was."""
    run = copy_run(finished, tmp_path / "run")
    _no_manifest(3)(run / "checkpoints")
    shutil.rmtree(run / "final")
    log = ok(train([*_args(base, run), "--resume"]))
    assert "checkpoint round-000003 is damaged (no manifest.json); resuming from round-000002" in log, log[-3000:]
    assert same_weights(run, finished)
    assert select_checkpoint(run / "checkpoints", 0, 1).name == "round-000003"  # rewritten, with a manifest
    old = copy_run(finished, tmp_path / "old")
    _no_manifest(1, 2, 3)(old / "checkpoints")
    before = snapshot(old)
    line = error_line(train([*_args(base, old, **{"rl.rounds": 4}), "--resume"]))
    assert f"--resume: no intact checkpoint under {old / 'checkpoints'}: round-000003 (no manifest.json), " in line
    assert snapshot(old) == before


# ---- item 2: a changed config on resume ------------------------------------------------------------------------
def test_resume_refuses_a_changed_config_unless_the_keys_are_named(base, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    line = error_line(train([*_args(base, run, **{"rl.rounds": 4, "rl.group_size": 2, "optim.lr": 1e-4}), "--resume"]))
    assert "the run differs from checkpoint round-000003: rl.group_size: 4 -> 2, optim.lr: 0.001 -> 0.0001;" in line
    assert line.endswith("pass --allow-config-change rl.group_size,optim.lr to continue with the new ones")
    htgrpo = {"rl.rounds": 4, "patch": "htgrpo", "patch_options.budgets": [1, 0, 1]}
    line = error_line(train([*_args(base, run, **htgrpo), "--resume"]))
    assert "patch: null -> htgrpo" in line and "components.preset: maskgrpo -> htgrpo" in line
    assert "components.loss: grpo -> ht_staged" in line
    assert snapshot(run) == before  # the rejected resumes left config.yaml (and everything else) as it was
    log = ok(
        train(
            [*_args(base, run, **{"rl.rounds": 4, "optim.lr": 1e-4}), "--resume", "--allow-config-change", "optim.*"]
        )
    )
    assert "config changes accepted on resume: " in log and "rl.rounds: 3 -> 4, optim.lr: 0.001 -> 0.0001" in log
    assert "lr: 0.0001" in (run / "config.yaml").read_text()  # what ran from round 4 on
    stored = torch.load(run / "checkpoints" / "round-000004" / "trainer_rank0.pt", weights_only=True)
    assert stored["config"]["optim"]["lr"] == 1e-4 and stored["config"]["rl"]["rounds"] == 4
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]


# ---- items 3 and 4: the lock, reused folders, rejected starts ----------------------------------------------------
def test_fresh_run_into_an_earlier_run_is_refused_unless_overwrite(base, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    line = error_line(train(_args(base, run, **{"rl.rounds": 1})))
    assert f"{run} holds an earlier run (checkpoints/, metrics.jsonl); pass --resume to continue it" in line
    assert snapshot(run) == before
    line = error_line(train([*_args(base, run), "--resume", "--overwrite"]))
    assert "--overwrite and --resume exclude each other" in line
    ok(train([*_args(base, run, **{"rl.rounds": 1}), "--overwrite"]))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "round-000001"]
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == [1]
    assert "rounds: 1" in (run / "config.yaml").read_text()


def test_second_run_into_a_running_folder_fails_at_once(base, tmp_path):
    run = tmp_path / "run"
    log = (tmp_path / "a.log").open("w")
    a = subprocess.Popen([sys.executable, "-m", "maskgrpo.train", "--config", CONFIG,
                          *tiny_run(base, run, rounds=50)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        latest = run / "checkpoints" / "latest"
        deadline = time.time() + 300
        while a.poll() is None and time.time() < deadline and not (latest.is_file() and latest.read_text()):
            time.sleep(0.05)
        assert a.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
        b = train(tiny_run(base, run, rounds=50))
        line = error_line(b)
        assert f"{run} is in use by another run (pid {a.pid} on " in line, line
        assert "[train] components" not in b.stdout  # refused before loading anything
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    rounds = [m["round"] for m in read_jsonl(run / "metrics.jsonl")]
    assert rounds == list(range(1, len(rounds) + 1))  # one writer only
    # the killed run's lock died with it: the next run gets past the lock (and stops at the earlier run's files)
    assert "holds an earlier run" in error_line(train(tiny_run(base, run, rounds=50)))


@pytest.mark.parametrize(
    "override",
    [
        "backbone.path=/nonexistent/base",
        pytest.param("rl.context=no_such_context", marks=sweep),
        pytest.param("rewards.no_such_reward={}", marks=sweep),
    ],
)
def test_rejected_start_leaves_no_folder(override, base, tmp_path):
    run = tmp_path / "new_run"
    error_line(train([*tiny_run(base, run), override]))
    assert not run.exists()


# ---- item 5: torn metrics line ---------------------------------------------------------------------------------
def test_crash_mid_metrics_write_then_resume(base, finished, tmp_path):
    """SIGKILL while round 3's metrics line is half written: resume drops it, reruns round 3, bit-exact."""
    run = tmp_path / "run"
    r = train(_args(base, run), fault=("torn_metrics", "-", 3))
    assert r.returncode == -signal.SIGKILL
    assert not (run / "metrics.jsonl").read_text().endswith("\n")
    log = ok(train([*_args(base, run), "--resume"]))
    assert f"{run / 'metrics.jsonl'}:3: dropped a torn last line" in log
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert same_weights(run, finished)


@sweep  # the same check at the MetricsLog level runs by default (tests/test_faults_units.py)
def test_bad_metrics_line_names_file_and_line(base, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:40]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    before = snapshot(run)
    line = error_line(train([*_args(base, run, **{"rl.rounds": 4}), "--resume"]))
    assert f"{run / 'metrics.jsonl'}:2: not valid JSON" in line
    assert snapshot(run) == before  # config.yaml untouched: the metrics are checked before anything is written


# ---- item 7: non-finite loss / gradient norm -------------------------------------------------------------------
@pytest.mark.parametrize(
    "lr, expected, kept",
    [(1e3, r"round 1, inner update 2, micro-batch 1: loss is (inf|nan); stopped before the optimizer step", None),
     (1e30, r"round 1, inner update 2: global gradient norm is (inf|nan); stopped before writing a checkpoint", None),
     pytest.param(1e6, r"round 2, rollout: the policy's probabilities are not finite", "round-000001", marks=sweep)],
)  # fmt: skip
def test_non_finite_values_stop_the_run(lr, expected, kept, base, tmp_path):
    run = tmp_path / "run"
    line = error_line(train(tiny_run(base, run, rounds=3, **{"optim.lr": lr})))
    assert re.search(expected, line), line
    assert not (run / "final").exists()
    if kept is None:
        assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    else:  # the last good round's checkpoint stays; nothing after it
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", kept]


# ---- item 8 (A's part): full disk, read-only folder ---------------------------------------------------------------
def _assert_round2_write_failed(run: Path, line: str) -> None:
    ckpt = run / "checkpoints"
    assert f"cannot write checkpoint to {ckpt / 'round-000002'}: No space left on device; " \
           f"{ckpt / 'latest'} still names round-000001" in line, line  # fmt: skip
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "round-000001"]  # temp folder removed
    assert (ckpt / "latest").read_text() == "round-000001"
    assert select_checkpoint(ckpt, 0, 1).name == "round-000001"  # the previous checkpoint verifies
    assert not (run / "final").exists()


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(base, finished, tmp_path):
    run = tmp_path / "run"
    line = error_line(train(_args(base, run), fault=("enospc", ".tmp-round-000002", 1)))
    _assert_round2_write_failed(run, line)
    ok(train([*_args(base, run), "--resume"]))  # once there is space again, the run completes bit-exactly
    assert same_weights(run, finished)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@sweep
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_real_full_tmpfs_during_a_checkpoint(base, tmp_path):
    """The same with a real full disk: a tmpfs that holds one checkpoint (torch.save fails with inline_container)."""
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    ckpt.mkdir(parents=True)
    if not _mount("-t", "tmpfs", "-o", "size=400k", "tmpfs", str(ckpt)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        line = error_line(train(tiny_run(base, run, rounds=3)))
        _assert_round2_write_failed(run, line)
    finally:
        subprocess.run(["umount", "-l", str(ckpt)])


def _make_read_only(path: Path) -> bool:
    """Read-only for this user: chmod for a normal user; a read-only bind mount for root (chmod does not bind)."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return True
    return _mount("--bind", str(path), str(path)) and _mount("-o", "remount,bind,ro", str(path))


def test_read_only_run_folder_is_one_line_and_untouched(base, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    if not _make_read_only(tmp_path):
        pytest.skip("cannot make a folder read-only here")
    try:
        line = error_line(train([*_args(base, run, **{"rl.rounds": 4}), "--resume"]))
        lock = re.escape(str(run / ".lock"))
        assert re.search(rf"cannot write to {lock}: (Read-only file system|Permission denied)", line), line
        # a fresh run into a read-only parent: validated first, then creating its folder fails
        line = error_line(train(_args(base, tmp_path / "new_run")))
        assert re.search(r"cannot write to .*new_run.*: (Read-only file system|Permission denied)", line), line
        assert snapshot(run) == before
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(tmp_path)])
        else:
            for p in [tmp_path, *tmp_path.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


# ---- items 6 and 8: a killed launcher, 2 ranks, another world size -----------------------------------------------
@pytest.fixture(scope="module")
def finished_2ranks(base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults2") / "finished"
    ok(train(tiny_run(base, out, rounds=3, **KEEP3), nproc=2))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux")
def test_killed_launcher_stops_its_workers_then_2_rank_resume_is_bit_exact(base, finished_2ranks, tmp_path):
    """(Resuming on another number of ranks: tests/test_world_size.py.)"""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    log = (tmp_path / "launcher.log").open("w")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "maskgrpo.train",
         "--config", CONFIG, *tiny_run(base, run, rounds=3, **KEEP3)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 600
    while launcher.poll() is None and time.time() < deadline and not (latest.is_file() and latest.read_text()):
        time.sleep(0.02)
    workers = children(launcher.pid)
    assert launcher.poll() is None and len(workers) == 2, (tmp_path / "launcher.log").read_text()[-3000:]
    launcher.send_signal(signal.SIGKILL)  # the launcher only: its workers run in their own sessions
    launcher.wait()
    t = time.time()
    while any(map(alive, workers)) and time.time() - t < 10:
        time.sleep(0.05)
    gone_after = time.time() - t
    assert not any(map(alive, workers)), f"workers still running {gone_after:.1f} s after the launcher died"
    assert gone_after < 5
    state = snapshot(run / "checkpoints")
    time.sleep(3)
    assert snapshot(run / "checkpoints") == state, "a worker went on writing checkpoints"
    assert not (run / "final").exists()
    # the 2-rank resume finishes bit-exactly like the uninterrupted 2-rank run
    out = ok(train([*tiny_run(base, run, rounds=3, **KEEP3), "--resume"], nproc=2))
    assert "resumed from" in out
    assert same_weights(run, finished_2ranks)
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]


# ---- the kill-point sweep: SIGKILL at each step of a checkpoint write, then --resume -----------------------------
KILL_POINTS = {  # name -> (fault, target, n): n counts calls in the killed process (round 2's checkpoint unless said)
    "mid_round_2": ("kill_before", "maskgrpo.train.Trainer.inner_updates", 2),
    "ckpt_2_start": ("kill_before", "deepspeed.runtime.engine.DeepSpeedEngine.save_checkpoint", 2),
    "ckpt_2_model_written": ("kill_before", "deepspeed.runtime.engine.DeepSpeedEngine._save_zero_checkpoint", 2),
    "ckpt_2_files_written": ("kill_before", "maskgrpo.checkpoint._files", 2),
    "ckpt_2_mid_digest": ("kill_before_path", "maskgrpo.digests.sha256_range", ".tmp-round-000002#3"),
    "ckpt_2_manifest_written": ("kill_before", "os.replace", 3),
    "ckpt_2_renamed": ("kill_before", "maskgrpo.checkpoint.write_atomic", 2),
    "ckpt_2_latest_swapped": ("kill_after", "maskgrpo.checkpoint.write_atomic", 2),
    "ckpt_3_before_prune": ("kill_before", "maskgrpo.checkpoint._prune", 3),
    "ckpt_3_mid_prune": ("kill_before_path", "shutil.rmtree", ".trash-round-000001"),
    "export": ("kill_before", "maskgrpo.train.export_final", 1),
}
KILLED_STATE = {  # what the checkpoints folder must look like after the kill (the fault hit where it was meant to)
    "ckpt_2_manifest_written": lambda c: (c / ".tmp-round-000002" / MANIFEST).is_file(),
    "ckpt_2_renamed": lambda c: (c / "round-000002").is_dir() and (c / "latest").read_text() == "round-000001",
    "ckpt_2_latest_swapped": lambda c: (c / "latest").read_text() == "round-000002" and (c / "round-000001").is_dir(),
    "ckpt_3_mid_prune": lambda c: (
        (c / ".trash-round-000001").is_dir() and (c / "latest").read_text() == "round-000003"
    ),
}
SWEEP = [(name, 1) for name in KILL_POINTS] + [
    (name, 2) for name in ("mid_round_2", "ckpt_2_model_written", "ckpt_2_mid_digest", "ckpt_2_renamed")
]
DEFAULT_POINTS = {("ckpt_2_renamed", 1)}
"""Run without HTGRPO_SLOW_TESTS: a step the manifest added (the 2-rank kill / resume of the default suite is the
killed-launcher test; test_train.py kills right after `latest` is swapped)."""


@pytest.mark.parametrize(
    "point, nproc", [pytest.param(*case, marks=() if case in DEFAULT_POINTS else sweep) for case in SWEEP]
)
def test_sigkill_at_a_kill_point_then_resume_is_bit_exact(point, nproc, base, tmp_path, request):
    reference = request.getfixturevalue("finished" if nproc == 1 else "finished_2ranks")
    run = tmp_path / "run"
    args = tiny_run(base, run, rounds=3, **{"checkpoint.keep": 2})  # keep 2: round 3 prunes round 1
    killed = train(args, nproc=nproc, fault=KILL_POINTS[point])
    assert killed.returncode != 0 and not (run / "final" / "model").is_dir(), killed.stderr[-3000:]
    assert KILLED_STATE.get(point, lambda c: True)(run / "checkpoints"), sorted(os.listdir(run / "checkpoints"))
    out = ok(train([*args, "--resume"], nproc=nproc))
    assert "resumed from" in out
    assert same_weights(run, reference), f"{point} x {nproc} ranks: weights differ from the uninterrupted run"
    assert [m["round"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    ckpt = run / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "round-000002", "round-000003"]
    assert select_checkpoint(ckpt, 0, 1).name == "round-000003"
