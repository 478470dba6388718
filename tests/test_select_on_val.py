"""eval/select_on_val.py: an HT-GRPO setting chosen on the validation captions, with no held-out caption sampled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_toy import TINY_PRETRAIN

from eval.select_on_val import choose, complete_json, main
from eval.toy_compare import QUICK


def test_choose_hand_computed():
    means = {"0.1": 0.40, "0.3": 0.39, "0.5": 0.42}
    assert choose(means, "0.3", 0.02) == "0.5"  # 0.42 - 0.39 = 0.03 >= 0.02
    assert choose(means, "0.3", 0.05) == "0.3"  # not beaten by 0.05: the default stays
    assert choose({"a": 0.5, "b": 0.5, "c": 0.1}, "c", 0.0) == "a"  # a tie goes to the first value
    assert choose({"a": 0.2, "b": 0.3}, "b", 0.02) == "b"  # the default itself is best


def test_complete_json_refuses_a_file_cut_short(tmp_path):
    f = tmp_path / "eval_before_val.json"
    f.write_text('{"overall": 0.25}')
    assert complete_json(f)
    f.write_text('{"overall": 0.2')  # another run is still writing it
    assert not complete_json(f) and not complete_json(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def base_with_val(tmp_path_factory) -> Path:
    """A tiny base whose world keeps one training caption per tag as the validation split."""
    from maskgrpo.toy.pretrain import main as pretrain

    out = tmp_path_factory.mktemp("val_base") / "base"
    pretrain([f"run.output_dir={out}", *TINY_PRETRAIN, "split.val_per_tag=1"])
    return out


@pytest.mark.slow
def test_selection_runs_read_validation_only_and_resume(base_with_val, tmp_path, capsys):
    world = json.loads((base_with_val / "world.json").read_text())
    assert world["val_prompts"] and not {m["prompt"] for m in world["val_prompts"]} & {
        m["prompt"] for m in world["eval_prompts"]}  # fmt: skip
    out = tmp_path / "sel"
    tiny = [*QUICK, f"backbone.path={base_with_val}", "rl.rounds=1", "rollout.num_steps=3", "eval.sampler.num_steps=2",
            "eval.samples_per_prompt=1", "eval.train_prompts_per_tag=0"]  # fmt: skip
    # one job: value 0.1's runs end before value 0.3's start, so the reuse below is certain (with two jobs it is a
    # race: a run whose sibling has not yet written its base evaluation makes its own, which is correct but slower)
    args = ["--values", "0.1", "0.3", "--default", "0.3", "--seeds", "0", "1", "--jobs", "1", "--out", str(out), *tiny]
    assert main(args) == 0
    rec = json.loads((out / "selection.json").read_text())
    assert rec["picked"] in ("0.1", "0.3") and set(rec["accuracy"]) == {"0.1", "0.3"}
    for v in ("0.1", "0.3"):
        for s in (0, 1):
            d = out / f"value_{v}" / f"seed{s}"
            assert not (d / "eval_after.json").exists() and not (d / "eval_before.json").exists()
            val = json.loads((d / "eval_after_val.json").read_text())
            assert val["num_images"] == len(world["val_prompts"]) and val["overall"] == rec["accuracy"][v][s]
            cfg = (d / "config.yaml").read_text()
            assert f"structure_ratio: {v}" in cfg and f"seed: {s}" in cfg
    # value 0.3 reused value 0.1's base evaluation of the same seed
    assert "[eval] eval_before_val" in (out / "value_0.1" / "seed0.log").read_text()
    assert "[eval] eval_before_val" not in (out / "value_0.3" / "seed0.log").read_text()
    assert "| 0.1 |" in (out / "selection.md").read_text() and "**Picked" in (out / "selection.md").read_text()
    capsys.readouterr()
    assert main(args) == 0  # everything finished: nothing runs again
    assert "0 runs to do" in capsys.readouterr().out
    # a folder that evaluated held-out captions (e.g. made without eval.heldout=false) stops the selection
    (out / "value_0.1" / "seed0" / "eval_after.json").write_text("{}")
    with pytest.raises(SystemExit, match="evaluated held-out captions"):
        main(args)
