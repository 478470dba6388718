"""The shipped prompt files (data/, docs/prompts.md) and the GenEval training-prompt generator from a fresh clone:
the shipped facts agree with the official GenEval files (when present), the generator needs no official file and
never emits an evaluation prompt, the example files load through the trainer's reader, and the GPU launchers'
default PROMPTS is the shipped example (a dry run with no PROMPTS set works)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import pytest
from conftest import REPO
from fixtures_toy import GENEVAL_METADATA, GENEVAL_OBJECTS

from eval import geneval_train_prompts as gtp
from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.prompts import load_prompt_metadata
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS

DEFAULT_PROMPTS = REPO / "data" / "train_prompts.jsonl"
needs_data = pytest.mark.skipif(not GENEVAL_METADATA.is_file(), reason="official GenEval files not available")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@needs_data
def test_shipped_facts_match_the_official_geneval_files():
    facts = json.loads(gtp.FACTS.read_text())
    official_classes = [x for x in GENEVAL_OBJECTS.read_text().splitlines() if x.strip()]
    assert facts["classes"] == official_classes  # same names, same order (the candidate numbering depends on it)
    evals = [json.loads(x) for x in GENEVAL_METADATA.read_text().splitlines() if x.strip()]
    listed = set(facts["eval_prompt_sha256"])
    assert all(sha(m["prompt"]) in listed for m in evals)  # every official prompt, verbatim
    # 553 prompts + one reordering of each two_object (99), position (100) and color_attr (100) prompt, minus the
    # position prompts whose reordering is itself an evaluation prompt
    assert 553 < len(listed) <= 553 + 99 + 100 + 100
    assert (
        facts["source"]["evaluation_metadata.jsonl_sha256"]
        == hashlib.sha256(GENEVAL_METADATA.read_bytes()).hexdigest()
    )


@needs_data
def test_generator_without_official_files_equals_the_official_run(tmp_path):
    files = ["--metadata", str(GENEVAL_METADATA), "--object-names", str(GENEVAL_OBJECTS)]
    fresh, official = tmp_path / "fresh.jsonl", tmp_path / "official.jsonl"
    assert gtp.main(["--out", str(fresh), "--n", "400", "--seed", "3"]) == 0
    assert gtp.main(["--out", str(official), "--n", "400", "--seed", "3", *files]) == 0
    assert fresh.read_bytes() == official.read_bytes()


def test_generator_from_a_fresh_clone_never_emits_a_listed_evaluation_prompt(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    assert gtp.main(["--out", str(out), "--n", "1000", "--seed", "11"]) == 0
    metas = load_prompt_metadata(out)
    listed = set(json.loads(gtp.FACTS.read_text())["eval_prompt_sha256"])
    assert len(metas) == 1000 and len({m["prompt"] for m in metas}) == 1000
    assert not [m["prompt"] for m in metas if sha(m["prompt"]) in listed]
    # independent spot checks of the exclusion: GenEval's first evaluation prompts, and a reordering of one
    for prompt in ("a photo of a bench", "a photo of a cow", "a photo of a bicycle"):
        assert sha(prompt) in listed
    assert {m["tag"] for m in metas} == set(GENEVAL_TAGS) - {"single_object"}
    assert "1000 prompts" in capsys.readouterr().out


def test_generator_refuses_a_damaged_facts_file(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "geneval_facts.json"
    bad.write_text('{"classes": ["person"]}\n')  # no eval_prompt_sha256
    monkeypatch.setattr(gtp, "FACTS", bad)
    assert gtp.main(["--out", str(tmp_path / "x.jsonl"), "--n", "5", "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "eval_prompt_sha256" in err
    assert not (tmp_path / "x.jsonl").exists()


def test_generator_names_the_bad_line_of_a_metadata_file(tmp_path, capsys):
    meta = tmp_path / "evaluation_metadata.jsonl"
    good = {"tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a cow"}
    meta.write_text(json.dumps(good) + '\n{"tag": "counting", "prompt": "a photo of two cows"}\n')
    out = tmp_path / "x.jsonl"
    assert gtp.main(["--out", str(out), "--n", "5", "--seed", "0", "--metadata", str(meta)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{meta}:2: missing keys ['include']" in err
    assert not out.exists()


def test_shipped_default_prompt_file_is_a_fresh_clone_generator_output(tmp_path):
    """data/train_prompts.jsonl is what its documented command writes (docs/prompts.md), byte for byte."""
    out = tmp_path / "train_prompts.jsonl"
    assert gtp.main(["--out", str(out), "--n", "600", "--seed", "0"]) == 0
    assert out.read_bytes() == DEFAULT_PROMPTS.read_bytes()
    assert "--n 600 --seed 0" in (REPO / "docs" / "prompts.md").read_text()


@pytest.mark.parametrize("name", ["train_prompts.jsonl", "free_form_prompts.jsonl"])
def test_example_prompt_files_load_and_follow_the_documented_format(name):
    metas = load_prompt_metadata(REPO / "data" / name)
    assert metas and all(isinstance(m["prompt"], str) and m["prompt"].strip() for m in metas)
    for m in metas:
        if "include" in m:  # GenEval-style: what the geneval / shapes_geneval rewards read
            assert m["tag"] in GENEVAL_TAGS and m["include"]
            assert all(isinstance(c["class"], str) and c["count"] >= 1 for c in m["include"] + m.get("exclude", []))


def test_every_gpu_config_and_the_launchers_name_the_shipped_prompt_file():
    for cfg_file in sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("toy_pretrain")):
        cfg = load_config(TrainRun, str(cfg_file), [])
        assert cfg.prompts.source in ("backbone", "data/train_prompts.jsonl"), cfg_file
    gpu = (REPO / "launch" / "_gpu_common.sh").read_text()
    assert re.search(r'^PROMPTS="\$\{PROMPTS:-data/train_prompts\.jsonl\}"$', gpu, flags=re.M)


@pytest.mark.slow
def test_dry_run_with_the_default_prompt_file(tmp_path):
    """`DRY_RUN=1 bash launch/mmada_htgrpo.sh` with no PROMPTS set reads the shipped example file."""
    env = {k: v for k, v in os.environ.items() if k != "PROMPTS"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", OUTPUT_DIR=str(tmp_path / "run"))
    r = subprocess.run(["bash", "launch/mmada_htgrpo.sh"], cwd=REPO, env={**env, "DRY_RUN": "1"},
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(DEFAULT_PROMPTS.read_text().splitlines())
    assert re.search(rf"prompts.source\s+local file, {n} prompt\(s\)\s+data/train_prompts.jsonl", r.stdout), r.stdout
    assert "prompts.source=data/train_prompts.jsonl" in r.stdout and "dry run OK" in r.stdout
