"""``eval.geneval``: a GenEval prompt subset judged by the detector reward server during training (the 8B backbones'
evaluation; here on the toy base, with a stand-in server whose verdict depends only on the prompt's tag)."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tiny_run
from test_train import finish, read_jsonl, run_train

from maskgrpo.config import ConfigError
from maskgrpo.config.loader import load_config
from maskgrpo.config.schema import GenEvalServerConfig, TrainRun
from maskgrpo.errors import RunError
from maskgrpo.geneval_eval import GenEvalServerEval, pick_per_tag, shard
from maskgrpo.prompts import PromptSet
from maskgrpo.rewards.serve import serve_in_thread
from maskgrpo.scoring.geneval_rules import summarize_verdicts

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
PASSING = ("single_object", "colors")
"""The stand-in judge passes every image of these tags and fails the others: overall = 2 / 6."""


def test_pick_per_tag_keeps_file_order_and_lines():
    metas = [{"tag": t, "prompt": str(i)} for i, t in enumerate(["a", "b", "a", "a", "b", "c"])]
    picked = pick_per_tag(PromptSet(metas, "m.jsonl", [10, 11, 12, 13, 14, 15]), 2)
    assert [m["prompt"] for m in picked.prompts] == ["0", "1", "2", "4", "5"]
    assert picked.lines == [10, 11, 12, 14, 15] and picked.where(3) == "m.jsonl:14"


def test_shard_pads_every_rank_to_the_same_number_of_images():
    assert shard(5, 0, 2) == [0, 2, 4] and shard(5, 1, 2) == [1, 3, 3]  # rank 1 samples image 3 twice
    assert shard(1, 1, 2) == [0] and shard(4, 3, 4) == [3]


def test_summarize_verdicts_by_hand():
    metas = [{"tag": "single_object", "prompt": "p"}] * 2 + [{"tag": "counting", "prompt": "q"}] * 4
    with pytest.warns(UserWarning, match="missing tags"):  # GenEval's overall over the tags present
        s = summarize_verdicts(metas, [True, False, True, True, False, True])
    assert (s["single_object"], s["counting"], s["overall"]) == (0.5, 0.75, 0.625)  # (1/2 + 3/4) / 2
    assert s["num_images"] == 6 and s["tag_images"] == {"single_object": 2, "counting": 4}
    assert s["caption_correct"] == {"p": ["single_object", 1, 2], "q": ["counting", 3, 4]}
    assert "| **overall** | **0.625** |" in s["table"]


def eval_section(metadata: str, **kwargs: object) -> SimpleNamespace:
    return SimpleNamespace(geneval=GenEvalServerConfig(metadata=metadata, per_tag=2, kwargs=dict(kwargs)))


BACKBONE = SimpleNamespace(unknown_words=lambda captions: [])


def write_metadata(path: Path, metas: list[dict]) -> str:
    path.write_text("".join(json.dumps(m) + "\n" for m in metas))
    return str(path)


def test_bad_inputs_are_one_line_errors_naming_key_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^eval\.geneval\.metadata: give GenEval's prompt metadata"):
        GenEvalServerEval(eval_section(""), BACKBONE, 600.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "colors", "include": [], "prompt": "a red circle"}\n{"tag": \n')
    with pytest.raises(RunError, match=rf"^{bad}:2: "):
        GenEvalServerEval(eval_section(str(bad)), BACKBONE, 600.0)
    no_include = write_metadata(tmp_path / "m.jsonl", [{"tag": "colors", "include": [], "prompt": "a"},
                                                       {"tag": "counting", "prompt": "b"}])  # fmt: skip
    missing = rf"^{no_include}:2: missing metadata key 'include' needed by reward 'geneval'"
    with pytest.raises(RunError, match=missing), pytest.warns(UserWarning, match="pickle"):
        GenEvalServerEval(eval_section(no_include), BACKBONE, 600.0)
    good = write_metadata(tmp_path / "g.jsonl", [{"tag": "colors", "include": [], "prompt": "a"}])
    with pytest.raises(ConfigError, match=r"^eval\.geneval\.kwargs: reward 'geneval': unknown option\(s\) \['urll'\]"):
        GenEvalServerEval(eval_section(good, urll="http://127.0.0.1:1/"), BACKBONE, 600.0)
    with pytest.warns(UserWarning, match="pickle"):  # the public server's protocol by default
        ev = GenEvalServerEval(eval_section(good), BACKBONE, 600.0)
    assert (ev.scorer.url, ev.scorer.score_key, ev.scorer.max_outage_s) == ("http://127.0.0.1:18085/",
                                                                          "strict_rewards", 600.0)  # fmt: skip


class TagJudge:
    """A GenEval server stand-in: ``strict_rewards`` 1.0 for the :data:`PASSING` tags; counts the images judged."""

    def __init__(self) -> None:
        self.images = 0
        self.lock = threading.Lock()

    def __call__(self, images, prompts, metadata):
        with self.lock:
            self.images += len(images)
        strict = [float(m["tag"] in PASSING) for m in metadata]
        return {"scores": [0.5] * len(images), "strict_rewards": strict}


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [pytest.param(1, marks=pytest.mark.sweep), 2])  # 2 ranks cover 1 rank's path
def test_geneval_subset_is_judged_by_the_server_during_training(nproc, toy_base_dir, tmp_path):
    world = json.loads((Path(toy_base_dir) / "world.json").read_text())
    by_tag = {t: [m for m in world["eval_prompts"] if m["tag"] == t] for t in TAGS}
    # 2 prompts per tag but 1 for single_object: 11 prompts, so 2 ranks get 6 and 5 (+1 padding, sampled, not judged)
    metas = [m for t in TAGS for m in by_tag[t][: 1 if t == "single_object" else 2]]
    metadata = write_metadata(tmp_path / "geneval.jsonl", metas)
    judge = TagJudge()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server, url = serve_in_thread(judge)
    out = tmp_path / "run"
    try:
        args = tiny_run(toy_base_dir, out, rounds=2, **{
            "eval": {"samples_per_prompt": 1, "batch_size": 64, "seed": 7, "every": 2,
                     "sampler": {"name": "emerge", "num_steps": 2, "cfg_scale": 3.5},
                     "geneval": {"metadata": metadata, "per_tag": 2,
                                 "kwargs": {"url": f"{url}/score", "protocol": "json"}}},
            "log.image_every": 0, "log.rollout_table": False})  # fmt: skip
        if nproc == 2:
            args += ["prompts.per_round=4"]
        log = finish(run_train(args, nproc=nproc))
    finally:
        server.close()
    rows = read_jsonl(out / "metrics.jsonl")
    evaluated = [r for r in rows if "eval/geneval/overall" in r]
    assert [r["round"] for r in evaluated] == [2]
    r = evaluated[0]
    assert {t: r[f"eval/geneval/{t}"] for t in TAGS} == {t: float(t in PASSING) for t in TAGS}
    assert r["eval/geneval/overall"] == pytest.approx(2 / 6) and r["eval/geneval/num_images"] == 11
    assert "eval/heldout/overall" in r  # ShapesEval of the toy base still runs beside it
    saved = json.loads((out / "evals" / "round_00002_geneval.json").read_text())
    assert saved["overall"] == r["eval/geneval/overall"] and saved["tag_images"]["single_object"] == 1
    before = json.loads((out / "eval_before_geneval.json").read_text())
    after = json.loads((out / "eval_after_geneval.json").read_text())
    assert before["overall"] == after["overall"] == pytest.approx(2 / 6)
    # before and round 2 (= after, copied): 2 evaluations x 11 images, every image judged once, no padding judged
    assert judge.images == 2 * 11
    assert "[eval] eval_before_geneval: overall 0.333" in log


@pytest.mark.parametrize("name", ["mmada_maskgrpo", "mmada_htgrpo", "dimoo_maskgrpo", "dimoo_htgrpo"])
def test_the_gpu_configs_documented_eval_block_loads_when_uncommented(name, tmp_path, repo_root):
    text = (repo_root / "configs" / f"{name}.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("# eval:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    edited = [x for x in lines if not x.startswith("eval: null")] + block  # the block in place of `eval: null`
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(edited) + "\n")
    cfg = load_config(TrainRun, path)
    assert cfg.eval.every == 50 and cfg.eval.samples_per_prompt == 4 and cfg.eval.geneval.per_tag == 8
    assert cfg.eval.geneval.kwargs == {"url": "http://127.0.0.1:18085/"}
    assert cfg.eval.sampler.name == ("maskgit" if name.startswith("mmada") else "lumina")
    assert load_config(TrainRun, repo_root / "configs" / f"{name}.yaml").eval is None  # off as shipped
