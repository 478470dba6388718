"""Issue 13, the parts that need no training run: torn metrics lines, the resume config diff, the run-folder lock,
the non-finite guards and how ``latest`` is read (the runs themselves: tests/test_faults_run.py); issue 26: metrics
restored from a checkpoint's copy, chunked digests hashed by the rank that wrote each file, the ZeRO-3 refusal."""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from procs import alive, children

from maskgrpo import checkpoint
from maskgrpo.checkpoint import (
    MANIFEST,
    METRICS_COPY,
    TrainerState,
    candidates,
    checkpoint_world_size,
    file_owner,
    load_resharded,
    save_checkpoint,
    select_checkpoint,
    verify_checkpoint,
)
from maskgrpo.digests import chunk_digests, num_chunks, sha256_file
from maskgrpo.errors import RunError
from maskgrpo.guards import FiniteLosses, diverged_policy_error, require_finite_grad_norm
from maskgrpo.jsonl import read_append_log
from maskgrpo.observe import MetricsLog
from maskgrpo.run_dir import RunLock, check_resume_config


# ---- item 5: metrics.jsonl ---------------------------------------------------------------------------------------
def test_append_log_drops_only_a_torn_last_line(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"round": 1}\n{"round": 2}\n{"round": 3, "rew')  # cut mid-write: no newline
    rows, torn = read_append_log(f, required=("round",))
    assert [o["round"] for _, o, _ in rows] == [1, 2] and torn == 3
    f.write_text('{"round": 1}\n{"round": 2}\n')  # intact
    assert read_append_log(f, required=("round",))[1] is None
    f.write_text('{"round": 1}\n{"round": 2}\n{"ro\x00\x00\n')  # garbage with a newline (zero-filled block)
    rows, torn = read_append_log(f, required=("round",))
    assert len(rows) == 2 and torn == 3
    f.write_text('{"round": 1}\n{"round": 2\n{"round": 3}\n')  # a bad line that is not the last
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not valid JSON"):
        read_append_log(f, required=("round",))
    f.write_text('{"round": 1}\n{"x": 2}\n{"round": 3}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: missing keys \['round'\]"):
        read_append_log(f, required=("round",))


def test_metrics_log_resume_drops_torn_line_and_names_a_bad_one(tmp_path, capsys):
    log = MetricsLog(tmp_path, enabled=True)
    for r in (1, 2, 3):
        log.log({"round": r, "reward/mean": r / 10})
    with log.path.open("a") as f:
        f.write('{"round": 4, "reward/m')
    log.truncate_after(2)
    assert "metrics.jsonl:4: dropped a torn last line" in capsys.readouterr().out
    assert log.path.read_text() == '{"round": 1, "reward/mean": 0.1}\n{"round": 2, "reward/mean": 0.2}\n'
    log.path.write_text('{"round": 1}\nnot json\n{"round": 2}\n')
    before = log.path.read_bytes()
    with pytest.raises(RunError, match=r"metrics\.jsonl:2: not valid JSON"):
        log.truncate_after(2)
    assert log.path.read_bytes() == before  # left as it was for the user to repair


# ---- item 2: config check on resume ------------------------------------------------------------------------------
def _cfg(**changes) -> dict:
    base = {
        "run": {"output_dir": "runs/a", "seed": 0, "wandb_mode": "disabled"},
        "rl": {"rounds": 4, "group_size": 8},
        "optim": {"lr": 3e-05, "betas": [0.9, 0.99]},
        "checkpoint": {"every": 1, "keep": 2},
        "rewards": {"hpsv3": {"weight": 1.0, "kwargs": {"url": "http://127.0.0.1:1/score"}}},
        "patch": None,
        "eval": None,
        "components": {"loss": "grpo", "context": "random_remask"},
    }
    for key, value in changes.items():
        *path, leaf = key.split("__")
        node = base
        for p in path:
            node = node[p]
        node[leaf] = value
    return base


def test_resume_config_diff_is_one_line_and_names_every_changed_key():
    old = _cfg()
    new = _cfg(rl__group_size=4, optim__lr=1e-4, patch="htgrpo", components__loss="ht_staged")
    with pytest.raises(RunError) as e:
        check_resume_config(old, new, "round-000002", allowed=())
    msg = str(e.value)
    assert "\n" not in msg
    assert (
        "round-000002: rl.group_size: 8 -> 4, optim.lr: 3e-05 -> 0.0001, patch: null -> htgrpo, "
        "components.loss: grpo -> ht_staged;" in msg
    )
    assert "--allow-config-change rl.group_size,optim.lr,patch,components.loss" in msg
    # every key named (patterns allowed) -> accepted, and the changes are returned for the log line
    accepted = check_resume_config(old, new, "r", allowed=("rl.group_size", "optim.*", "patch", "components.*"))
    assert [k for k, _, _ in accepted] == ["rl.group_size", "optim.lr", "patch", "components.loss"]


def test_resume_config_safe_keys_need_no_flag():
    old = _cfg()
    new = _cfg(rl__rounds=40, checkpoint__keep=5, run__output_dir="moved/a", run__wandb_mode="offline",
               rewards__hpsv3__kwargs__url="http://10.0.0.2:18087/score", eval={"samples_per_prompt": 4})  # fmt: skip
    changes = check_resume_config(old, new, "r", allowed=())
    assert {k for k, _, _ in changes} == {
        "rl.rounds", "checkpoint.keep", "run.output_dir", "run.wandb_mode", "rewards.hpsv3.kwargs.url",
        "eval", "eval.samples_per_prompt",
    }  # fmt: skip
    # a reward's weight is not an endpoint: refused
    with pytest.raises(RunError, match=r"rewards\.hpsv3\.weight: 1\.0 -> 2\.0"):
        check_resume_config(old, _cfg(rewards__hpsv3__weight=2.0), "r", allowed=())
    with pytest.raises(RunError, match=r"run\.seed: 0 -> 1"):
        check_resume_config(old, _cfg(run__seed=1), "r", allowed=())


# ---- item 3: the lock ----------------------------------------------------------------------------------------------
HOLD = "import sys, time; from maskgrpo.run_dir import RunLock; from pathlib import Path; " \
       "lock = RunLock(Path(sys.argv[1])); lock.acquire(); print('locked', flush=True); time.sleep(600)"  # fmt: skip


def test_run_lock_names_the_holder_and_dies_with_it(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError) as e:
            RunLock(run).acquire()
        assert f"{run} is in use by another run (pid {holder.pid} on " in str(e.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(run)  # the kernel dropped the dead holder's lock: no stale lock to clean up by hand
    lock.acquire()
    assert f"pid {os.getpid()} on " in (run / ".lock").read_text()
    lock.release()


def test_run_lock_on_a_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match=r"cannot write to .*file.*: Not a directory"):
        RunLock(blocker / "run").acquire()


# ---- item 7: the non-finite guards -----------------------------------------------------------------------------
def test_finite_losses_checks_once_per_update_and_names_the_micro_batch():
    guard = FiniteLosses()
    for v in (0.5, -0.25):
        guard.add(torch.tensor(v))
    guard.check("round 3, inner update 1")  # finite: no error, and the record is reset
    guard.add(torch.tensor(0.5))
    guard.add(torch.tensor(math.nan))
    with pytest.raises(RunError, match=r"^round 3, inner update 2, micro-batch 2: loss is nan; stopped before the "):
        guard.check("round 3, inner update 2")
    guard.add(torch.tensor(math.inf))
    with pytest.raises(RunError, match="micro-batch 1: loss is inf"):
        guard.check("round 4, inner update 1")


def test_grad_norm_guard_and_diverged_sampling():
    require_finite_grad_norm(None, "r")  # not computed: nothing to check
    require_finite_grad_norm(torch.tensor(3.0), "r")
    with pytest.raises(RunError, match=r"^round 2, inner update 1: global gradient norm is inf;"):
        require_finite_grad_norm(math.inf, "round 2, inner update 1")
    probs = torch.tensor([[math.nan, 1.0]])
    with pytest.raises(RunError, match=r"^round 5, rollout: the policy's probabilities are not finite"):
        with diverged_policy_error("round 5, rollout"):
            torch.multinomial(probs, 1)  # what the samplers call
    with pytest.raises(ValueError), diverged_policy_error("x"):  # other errors pass through unchanged
        raise ValueError("unrelated")


# ---- item 1: reading `latest` --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "latest, note",
    [("", "holds 'nothing'"), ("../..", "holds '../..'"), ("round-000002\x00junk", "not a checkpoint name"),
     (None, "is missing")],
)  # fmt: skip
def test_latest_that_names_no_checkpoint_never_resolves_to_the_folder(tmp_path, latest, note):
    for r in (1, 2, 3):
        (tmp_path / f"round-00000{r}").mkdir()
    (tmp_path / ".tmp-round-000004").mkdir()  # an unfinished write is never a candidate
    if latest is not None:
        (tmp_path / "latest").write_text(latest)
    paths, why = candidates(tmp_path)
    assert [p.name for p in paths] == ["round-000003", "round-000002", "round-000001"]
    assert note in why and tmp_path not in paths


def test_latest_first_then_older_checkpoints_only(tmp_path):
    for r in (1, 2, 3):
        (tmp_path / f"round-00000{r}").mkdir()
    (tmp_path / "latest").write_text("round-000002\n")  # round 3 was renamed but `latest` not yet swapped
    paths, why = candidates(tmp_path)
    assert [p.name for p in paths] == ["round-000002", "round-000001"] and why is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunError, match=r"--resume: no checkpoint under .*empty"):
        candidates(empty)


# ---- item 6: a worker of a killed launcher chain -----------------------------------------------------------------
WORKER = "import sys, time; from maskgrpo.distributed import exit_with_launcher; exit_with_launcher(); " \
         "open(sys.argv[1], 'w').write('ready'); time.sleep(600)"  # fmt: skip
SPAWN = "import subprocess, sys, time; subprocess.Popen(sys.argv[2:], start_new_session=True).wait(); time.sleep(600)"
"""A stand-in launcher (argv[1] names what it plays): starts its child in a new POSIX session, as torchrun and the
deepspeed launcher do, and stays (so the test can see it outlive the worker)."""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux")
def test_worker_exits_when_the_outer_deepspeed_runner_dies(tmp_path):
    """runner -> launch -> worker (the deepspeed launcher's chain): SIGKILL the runner only. ``launch`` lives on, so
    PR_SET_PDEATHSIG does not fire; the worker's watchdog sees the chain broken and exits."""
    ready = tmp_path / "ready"
    worker = [sys.executable, "-c", WORKER, str(ready)]
    launch = [sys.executable, "-c", SPAWN, "deepspeed.launcher.launch", *worker]
    runner = subprocess.Popen([sys.executable, "-c", SPAWN, "deepspeed.launcher.runner", *launch], cwd=REPO)
    pids: list[int] = []
    try:
        deadline = time.time() + 120
        while not ready.is_file() and time.time() < deadline:
            time.sleep(0.05)
        assert ready.is_file(), "the worker did not start"
        (launch_pid,) = children(runner.pid)
        (worker_pid,) = children(launch_pid)
        pids = [launch_pid, worker_pid]
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        t = time.time()
        while alive(worker_pid) and time.time() - t < 10:
            time.sleep(0.05)
        assert not alive(worker_pid), "the worker outlived its launcher chain"
        assert time.time() - t < 5
        assert alive(launch_pid)  # the worker's direct parent: alone it would have kept the worker running
    finally:
        runner.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---- issue 26 item 5: metrics history restored from the checkpoint's copy ----------------------------------------
def _metrics_run(tmp_path, rounds: int) -> tuple[MetricsLog, Path]:
    """A run folder whose metrics.jsonl holds ``rounds`` rounds, and a checkpoint folder of round 3 with its copy."""
    log = MetricsLog(tmp_path, enabled=True)
    for r in range(1, rounds + 1):
        log.log({"round": r, "reward/mean": r / 10})
    ckpt = tmp_path / "checkpoints" / "round-000003"
    ckpt.mkdir(parents=True)
    (ckpt / METRICS_COPY).write_text("".join(line + "\n" for line in log.path.read_text().splitlines()[:3]))
    return log, ckpt


ROUNDS_1_3 = '{"round": 1, "reward/mean": 0.1}\n{"round": 2, "reward/mean": 0.2}\n{"round": 3, "reward/mean": 0.3}\n'


@pytest.mark.parametrize(
    "damage, note",
    [(lambda p: p.unlink(), "lacked rounds 1-3: restored from"),
     (lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), "lacked rounds 2-3: restored from"),
     (lambda p: p.write_text(p.read_text()[:50]), "lacked rounds 2-3: restored from"),  # cut mid-line
     (lambda p: p.write_text("".join(x + "\n" for i, x in enumerate(p.read_text().splitlines()) if i != 1)),
      "lacked round 2: restored from")],
    ids=["deleted", "first_line_only", "cut_mid_line", "one_line_lost"],
)  # fmt: skip
def test_metrics_lost_after_a_checkpoint_are_restored_from_its_copy(tmp_path, capsys, damage, note):
    log, ckpt = _metrics_run(tmp_path, rounds=4)  # round 4 ran after the checkpoint of round 3
    damage(log.path)
    log.truncate_after(3, ckpt)
    out = capsys.readouterr().out
    assert f"{note} {ckpt / METRICS_COPY}" in out, out
    assert log.path.read_text() == ROUNDS_1_3  # rounds 1..3 back, round 4 (after the checkpoint) still dropped


def test_metrics_intact_or_without_copy(tmp_path, capsys):
    log, ckpt = _metrics_run(tmp_path, rounds=4)
    log.truncate_after(3, ckpt)  # nothing lost: no note, round 4 dropped as before
    assert capsys.readouterr().out == "" and log.path.read_text() == ROUNDS_1_3
    (ckpt / METRICS_COPY).unlink()  # a checkpoint without a copy: the lost rounds are named, nothing refused
    log.path.write_text(ROUNDS_1_3.splitlines()[0] + "\n")
    log.truncate_after(3, ckpt)
    err = capsys.readouterr().err
    assert f"warning: {log.path} lacks rounds 2-3 (no copy to restore from): their metrics are lost" in err
    assert log.path.read_text() == ROUNDS_1_3.splitlines()[0] + "\n"


# ---- issue 26 item 6: chunked digests, each rank hashing its own files ---------------------------------------------
def test_chunk_digests_match_hashlib_on_every_range(tmp_path):
    f = tmp_path / "shard.bin"
    data = os.urandom(5 * 1000 + 17)
    f.write_bytes(data)
    tasks = [(f, i) for i in range(num_chunks(len(data), 1000))]
    assert len(tasks) == 6 and num_chunks(0, 1000) == 1 and num_chunks(1000, 1000) == 1 and num_chunks(9, None) == 1
    for threads in (1, 3):
        got = chunk_digests(tasks, 1000, threads)
        assert [got[t] for t in tasks] == [hashlib.sha256(data[i * 1000 : (i + 1) * 1000]).hexdigest() for i in
                                           range(6)]  # fmt: skip
    assert chunk_digests([(f, 0)], None, 2)[f, 0] == hashlib.sha256(data).hexdigest() == sha256_file(f)
    assert isinstance(chunk_digests([(tmp_path / "gone", 0)], 1000, 1)[tmp_path / "gone", 0], FileNotFoundError)


def test_each_rank_hashes_the_files_it_wrote():
    owners = {rel: file_owner(rel, 8) for rel in (
        "state/mp_rank_00_model_states.pt", "state/zero_pp_rank_3_mp_rank_00_optim_states.pt",
        "state/bf16_zero_pp_rank_7_mp_rank_00_optim_states.pt", "trainer_rank5.pt", "zero_to_fp32.py",
        METRICS_COPY)}  # fmt: skip
    assert list(owners.values()) == [0, 3, 7, 5, 0, 0]
    assert file_owner("trainer_rank9.pt", 8) == 0  # a rank beyond the world falls to rank 0


class _FakeEngine:
    """Writes what DeepSpeed writes, at sizes that span several digest chunks."""

    module = torch.nn.Linear(2, 2)

    def zero_optimization_stage(self) -> int:
        return 2

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool, exclude_frozen_parameters: bool) -> None:
        d = Path(save_dir) / tag
        d.mkdir()
        (d / "mp_rank_00_model_states.pt").write_bytes(os.urandom(5000))
        (d / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(os.urandom(2500))


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(checkpoint, "CHUNK_BYTES", 1024)


def test_chunked_manifest_verifies_and_names_a_damaged_chunk(tmp_path, small_chunks, capsys):
    root = tmp_path / "checkpoints"
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(ROUNDS_1_3)
    for r in (1, 2):
        save_checkpoint(_FakeEngine(), root, TrainerState(round=r), rank=0, world=1, keep=2, metrics=metrics)
    ckpt = root / "round-000002"
    m = json.loads((ckpt / MANIFEST).read_text())
    assert m["format"] == "htgrpo-checkpoint/2" and m["chunk_bytes"] == 1024 and m["world_size"] == 1
    model = "state/mp_rank_00_model_states.pt"
    assert len(m["files"][model]["sha256"]) == 5 and m["files"][METRICS_COPY]["size"] == len(ROUNDS_1_3)
    assert (ckpt / METRICS_COPY).read_text() == ROUNDS_1_3
    assert verify_checkpoint(ckpt, 0, 1) is None
    data = bytearray((ckpt / model).read_bytes())
    data[4100] ^= 1  # one bit in the last chunk
    (ckpt / model).write_bytes(bytes(data))
    assert verify_checkpoint(ckpt, 0, 1) == f"{model}: digest mismatch"
    assert select_checkpoint(root, 0, 1).name == "round-000001"
    assert "checkpoint round-000002 is damaged (state/mp_rank_00_model_states.pt: digest mismatch)" in (
        capsys.readouterr().err)  # fmt: skip
    (ckpt / model).write_bytes(bytes(data[:3000]))
    assert verify_checkpoint(ckpt, 0, 1) == f"{model}: 3000 bytes, expected 5000 (truncated)"


def test_whole_file_manifest_of_format_1_still_verifies(tmp_path, small_chunks):
    """Checkpoints written before chunked digests (format 1: one SHA-256 per file) verify as one chunk per file."""
    root = tmp_path / "checkpoints"
    ckpt = save_checkpoint(_FakeEngine(), root, TrainerState(round=1), rank=0, world=1, keep=2)
    m = json.loads((ckpt / MANIFEST).read_text())
    files = {rel: {"size": e["size"], "sha256": hashlib.sha256((ckpt / rel).read_bytes()).hexdigest()}
             for rel, e in m["files"].items()}  # fmt: skip
    (ckpt / MANIFEST).write_text(json.dumps({"format": "htgrpo-checkpoint/1", "round": 1, "world_size": 1,
                                             "files": files}))  # fmt: skip
    assert verify_checkpoint(ckpt, 0, 1) is None and checkpoint_world_size(ckpt) == 1
    (ckpt / "trainer_rank0.pt").write_bytes(b"x" * m["files"]["trainer_rank0.pt"]["size"])
    assert verify_checkpoint(ckpt, 0, 1) == "trainer_rank0.pt: digest mismatch"


def test_zero3_checkpoint_on_another_world_size_is_refused_with_the_way_out(tmp_path):
    ckpt = tmp_path / "round-000004"
    ckpt.mkdir()
    (ckpt / MANIFEST).write_text(json.dumps({"format": "htgrpo-checkpoint/2", "round": 4, "world_size": 2,
                                             "chunk_bytes": 1024, "files": {}}))  # fmt: skip

    class Zero3:
        def zero_optimization_stage(self) -> int:
            return 3

    with pytest.raises(RunError) as e:
        load_resharded(Zero3(), ckpt, rank=0, world=1)
    assert str(e.value) == (f"checkpoint {ckpt} was written by 2 ranks, this run has 1: a ZeRO-3 checkpoint resumes "
                            "only on 2 (NPROC=2, torchrun --nproc_per_node=2)")  # fmt: skip


def test_read_metrics_one_record_per_round_last_line_wins_and_a_torn_tail_is_dropped(tmp_path):
    from maskgrpo.jsonl import read_metrics

    f = tmp_path / "metrics.jsonl"
    f.write_text('{"round": 2, "x": 1}\n{"round": 1, "x": 2}\n{"round": 2, "x": 3}\n{"round": 3, "x"')
    assert read_metrics(f) == [{"round": 1, "x": 2}, {"round": 2, "x": 3}]  # sorted; round 2's last line; tail torn
    f.write_text('{"round": 1}\n[1, 2]\n{"round": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: expected a JSON object"):
        read_metrics(f)
    f.write_text('{"round": 1}\n{"x": 1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: missing keys \['round'\]"):
        read_metrics(f)
