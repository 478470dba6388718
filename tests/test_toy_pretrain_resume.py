"""Resumable toy pretraining: a run stopped (or killed) mid-way and resumed with --resume gives the weights of an
uninterrupted run byte for byte; a damaged or foreign state stops with one line; the learning-curve evaluations
leave the weights alone; today's recipe still makes the shipped world and tokenizers byte for byte."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from fixtures_toy import TINY_PRETRAIN

from maskgrpo.toy import base_manifest as bm
from maskgrpo.toy.pretrain import CURVE_FILE, STATE_DIR, STATE_FILE, main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
TINY = [*TINY_PRETRAIN, "checkpoint.every=10"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "maskgrpo.toy.pretrain", f"run.output_dir={out}", *TINY, *extra]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def refused(capsys: pytest.CaptureFixture, out: Path, *extra: str) -> str:
    """The CLI's ``main`` in this process (a refusal needs no fresh interpreter): it exits 2 with one line on stderr,
    which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([f"run.output_dir={out}", *TINY, *extra])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "base"
    main([f"run.output_dir={out}", *TINY])
    return out


@pytest.mark.slow
def test_stop_then_resume_gives_the_uninterrupted_weights(uninterrupted, tmp_path, capsys):
    out = tmp_path / "base"
    main([f"run.output_dir={out}", *TINY, "--stop-after", "17"])  # between two periodic saves (10, 20)
    assert (out / STATE_DIR / STATE_FILE).is_file()
    assert not (out / "model").exists() and not (out / "manifest.json").exists()  # no base from half a run
    err = refused(capsys, out)  # starting over by mistake would overwrite the interrupted run: refused, untouched
    assert f"{out / STATE_DIR / STATE_FILE}: an interrupted pretraining is here; add --resume" in err
    main([f"run.output_dir={out}", *TINY, "--resume"])
    for f in (*bm.WEIGHT_FILES, "image_tokenizer/image_tokenizer.safetensors"):
        assert sha(out / f) == sha(uninterrupted / f), f
    assert not (out / STATE_DIR).exists()  # the state goes once the base is complete
    m = bm.verify_base(out)
    assert STATE_DIR not in " ".join(m["files"]) and "--resume" not in m["recipe"]["command"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_bytes(tmp_path):
    steps = ["pretrain.steps=120", "checkpoint.every=5"]
    ref = tmp_path / "ref"
    main([f"run.output_dir={ref}", *TINY, *steps])
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "maskgrpo.toy.pretrain", f"run.output_dir={out}", *TINY, *steps]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / STATE_DIR / STATE_FILE
    deadline = time.time() + 240
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert state.is_file() and not (out / "model").exists()  # killed mid-run, before the base was written
    r = run_cli(out, *steps, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout
    assert sha(out / "model/model.safetensors") == sha(ref / "model/model.safetensors")


@pytest.mark.slow
def test_damaged_or_foreign_state_stops_with_one_line(tmp_path, capsys):
    out = tmp_path / "base"
    main([f"run.output_dir={out}", *TINY, "--stop-after", "10"])
    state = out / STATE_DIR / STATE_FILE
    err = refused(capsys, out, "pretrain.lr=0.002", "--resume")
    assert f"{state}: saved by a run with other settings (pretrain differ)" in err
    state.write_bytes(state.read_bytes()[:1000])  # a copy cut short
    assert f"{state}: damaged pretraining state" in refused(capsys, out, "--resume")
    assert state.stat().st_size == 1000  # left for the user to look at
    assert "no saved pretraining state to resume" in refused(capsys, tmp_path / "empty", "--resume")


@pytest.mark.slow
def test_learning_curve_and_end_step(uninterrupted, tmp_path, capsys):
    out = tmp_path / "curve"
    main([f"run.output_dir={out}", *TINY, "checkpoint.eval_every=15", "checkpoint.eval_samples=1",
          "checkpoint.keep_all=true"])  # fmt: skip
    assert sha(out / "model/model.safetensors") == sha(uninterrupted / "model/model.safetensors")
    assert sorted(p.name for p in (tmp_path / "curve_states").iterdir()) == ["step_10.pt", "step_20.pt"]
    assert not [f for f in bm.verify_base(out)["files"] if f.endswith(".pt")]  # kept outside the base
    lines = (out / CURVE_FILE).read_text().splitlines()
    assert len(lines) == 2 and '"step": 15' in lines[0] and '"held_out"' in lines[0]
    early = tmp_path / "early"  # the base at step 17 of the 30-step schedule = stop at 17, resume with end_step 17
    main([f"run.output_dir={early}", *TINY, "checkpoint.end_step=17"])
    stopped = tmp_path / "stopped"
    main([f"run.output_dir={stopped}", *TINY, "--stop-after", "17"])
    main([f"run.output_dir={stopped}", *TINY, "checkpoint.end_step=17", "--resume"])
    assert sha(early / "model/model.safetensors") == sha(stopped / "model/model.safetensors")
    assert sha(early / "model/model.safetensors") != sha(uninterrupted / "model/model.safetensors")
    err = refused(capsys, tmp_path / "bad", "checkpoint.end_step=31")
    assert "checkpoint.end_step: 31 > pretrain.steps (30)" in err


def test_todays_recipe_still_makes_the_shipped_world_and_tokenizers(tmp_path):
    from maskgrpo.config import load_config
    from maskgrpo.config.schema import ToyPretrainRun
    from maskgrpo.toy.pretrain import build_base

    cfg = load_config(ToyPretrainRun, str(REPO / "configs/toy_pretrain.yaml"), [])
    build_base(cfg).save(tmp_path, model=False)
    shipped = REPO / "assets/toy_base"
    for f in ("world.json", "text_tokenizer.json", "image_tokenizer/image_tokenizer.safetensors"):
        assert sha(tmp_path / f) == sha(shipped / f), f


@pytest.mark.slow
def test_validation_split_changes_world_json_only(uninterrupted, tmp_path):
    import json

    out = tmp_path / "val"
    main([f"run.output_dir={out}", *TINY, "split.val_per_tag=2"])
    assert sha(out / "model/model.safetensors") == sha(uninterrupted / "model/model.safetensors")
    world = json.loads((out / "world.json").read_text())
    before = json.loads((uninterrupted / "world.json").read_text())
    val, train = world["val_prompts"], world["train_prompts"]
    assert len(val) > 0 and not [m for m in val if m in train or m in world["eval_prompts"]]
    assert sorted(map(json.dumps, train + val)) == sorted(map(json.dumps, before["train_prompts"]))
    assert "val_prompts" not in before  # no validation split asked for: world.json as before
