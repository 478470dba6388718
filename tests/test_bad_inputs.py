"""Bad inputs a user meets: each through the real trainer entry point, each one line on stderr
naming the file (and line / key), exit status 2, no traceback, no run folder left behind.

Most cases run ``maskgrpo.train.main`` in this process (it raises SystemExit like the CLI); two run the CLI in a
subprocess to show the same line there and that ``HTGRPO_TRACEBACK=1`` / ``--traceback`` give the trace back.
Damaged bases are copies of the session's tiny ShapesWorld base (``toy_base_dir``) or of a tiny MMaDA checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN, UNSET, tiny_run
from safetensors.torch import load_file, save_file

CONFIG = str(REPO / "configs/toy_maskgrpo.yaml")
SHAPES_META = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}


def train_main(capsys, *args: str) -> tuple[int, str]:
    """Run the trainer's main() in-process; (exit status, stderr)."""
    from maskgrpo.train import main

    with pytest.raises(SystemExit) as info:
        main(["--config", CONFIG, *args])
    return info.value.code, capsys.readouterr().err


def assert_one_line(status: int, err: str, *parts: str) -> str:
    """Exit status 2, exactly one ``error:`` line holding every part, no traceback, no internal loader objects."""
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert status == 2, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err and "_Val(" not in err and "_Src(" not in err, err[-3000:]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def run_args(out: Path, base: str | Path, *extra: str) -> list[str]:
    """A run of 4 prompts x G=2 into ``out``, every other size the config's (never reached: every case fails while
    validating)."""
    sizes = {**dict.fromkeys(TINY_RUN, UNSET), "prompts.per_round": 4, "rl.group_size": 2, "eval": None}
    return [*tiny_run(base, out, rounds=UNSET, **sizes), *extra]


def copy_base(base: str, dest: Path) -> Path:
    """A copy of the tiny base without its manifest (so the loader itself meets the damage, not the digest check)."""
    shutil.copytree(base, dest)
    (dest / "manifest.json").unlink(missing_ok=True)
    return dest


def write_jsonl(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


# ---- config values: fail at load, before any model work --------------------------------------------------------

CONFIG_CASES = [
    # (override, parts of the one line)
    ("optim.lr=.inf", ["optim.lr=inf is not a finite number"]),
    ("optim.lr=.nan", ["optim.lr=nan is not a finite number"]),
    ("optim.lr=nan", ["optim.lr must be a number, got 'nan'"]),  # YAML reads a bare nan as a string
    ("optim.betas=[0.9, .nan]", ["optim.betas[1]=nan is not a finite number"]),
    ("optim.betas=[0.9, 1.0]", ["optim.betas[1]=1.0 is out of range (must be >= 0.0 and < 1.0)"]),
    ("rewards.shapes_geneval.weight=.nan", ["rewards.shapes_geneval.weight=nan is not a finite number"]),
    ("rollout.options={probs_dtype: .inf}", ["rollout.options.probs_dtype=inf is not a finite number"]),
    ("optim.lr={a: 1}", ["optim.lr must be a number, got {'a': 1}"]),
    ("rl.group_size={a: [1, 2]}", ["rl.group_size must be an integer, got {'a': [1, 2]}"]),
    ("rollout.name=emerg", ["rollout.name='emerg' is not a registered sampler", "Did you mean 'emerge'?"]),
    ("backbone.name=mmadda", ["backbone.name='mmadda' is not a registered backbone", "Did you mean 'mmada'?"]),
    ("rl.micro_batch_prompts=3", ["rl.micro_batch_prompts: 3 does not divide prompts.per_round=4"]),
]


@pytest.mark.parametrize("override,parts", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_value_is_one_line_naming_the_key(override, parts, tmp_path, capsys):
    out = tmp_path / "run"
    status, err = train_main(capsys, *run_args(out, tmp_path / "no_base"), override)
    assert_one_line(status, err, f"command-line override {override!r}", *parts)
    assert not out.exists()


def test_bad_value_in_a_yaml_file_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"base: {CONFIG}\noptim:\n  lr: .inf\nrewards:\n  shapes_geneval: {{weight: .nan}}\n")
    from maskgrpo.train import main

    with pytest.raises(SystemExit) as info:
        main(["--config", str(cfg), f"run.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err  # sections are checked in TrainRun's field order: rewards before optim
    assert_one_line(info.value.code, err, f"{cfg}:5: rewards.shapes_geneval.weight=nan is not a finite number")
    cfg.write_text(f"base: {CONFIG}\noptim:\n  lr: .inf\n")
    with pytest.raises(SystemExit) as info:
        main(["--config", str(cfg)])
    assert_one_line(info.value.code, capsys.readouterr().err, f"{cfg}:3: optim.lr=inf is not a finite number")
    cfg.write_text(f"base: {CONFIG}\nrl:\n  micro_batch_prompts: 3\n")  # prompts.per_round 8 in the base config
    with pytest.raises(SystemExit) as info:
        main(["--config", str(cfg)])
    assert_one_line(info.value.code, capsys.readouterr().err, f"{cfg}:3: rl.micro_batch_prompts: 3 does not divide")
    cfg.write_bytes(b"rl:\n  group_size: 4\n  # caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(SystemExit) as info:
        main(["--config", str(cfg)])
    assert_one_line(info.value.code, capsys.readouterr().err, f"{cfg}:3: not UTF-8 text (byte 0xe9)")
    cfg.write_text("rl:\n  group_size: [4\n")
    with pytest.raises(SystemExit) as info:
        main(["--config", str(cfg)])
    assert_one_line(info.value.code, capsys.readouterr().err, f"{cfg}:", "invalid YAML")


# ---- prompt files -----------------------------------------------------------------------------------------------

PROMPT_CASES = {
    "empty": ([], ["no prompts (the file is empty)"]),
    "malformed_jsonl": ([SHAPES_META, '{"prompt": "a photo of a circle", '], [":2: not valid JSON"]),
    "not_an_object": ([SHAPES_META, '["a photo of a circle"]'], [":2: expected a JSON object, got list"]),
    "no_prompt_key": ([SHAPES_META, {"tag": "single_object", "include": []}], [":2: missing keys ['prompt']"]),
    "prompt_not_a_string": ([{**SHAPES_META, "prompt": 3}], [":1: 'prompt' must be a non-empty string, got 3"]),
    "no_tag_for_the_reward": (
        [SHAPES_META, SHAPES_META, {"prompt": "a photo of a square", "include": []}],
        [":3: missing metadata key 'tag' needed by reward 'shapes_geneval' (1 of 3 prompts lack it)"],
    ),
    "no_include_for_the_reward": (
        [{"prompt": "a photo of a square", "tag": "single_object"}],
        [":1: missing metadata key 'include' needed by reward 'shapes_geneval'"],
    ),
}


@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_bad_prompt_file_is_one_line_naming_file_and_line(case, toy_base_dir, tmp_path, capsys):
    lines, parts = PROMPT_CASES[case]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", lines)
    out = tmp_path / "run"
    status, err = train_main(capsys, *run_args(out, toy_base_dir, f"prompts.source={prompts}"))
    line = assert_one_line(status, err, str(prompts), *parts)
    assert line.startswith(f"error: {prompts}")
    assert not out.exists()


def test_non_utf8_and_missing_prompt_files(toy_base_dir, tmp_path, capsys):
    prompts = tmp_path / "latin1.jsonl"
    prompts.write_bytes(json.dumps(SHAPES_META).encode() + b'\n{"prompt": "a photo of a caf\xe9"}\n')
    out = tmp_path / "run"
    status, err = train_main(capsys, *run_args(out, toy_base_dir, f"prompts.source={prompts}"))
    assert_one_line(status, err, f"{prompts}:2: not UTF-8 text (byte 0xe9)")
    status, err = train_main(capsys, *run_args(out, toy_base_dir, f"prompts.source={tmp_path / 'nope.jsonl'}"))
    assert_one_line(status, err, f"prompt file {tmp_path / 'nope.jsonl'}: cannot read: No such file or directory")
    assert not out.exists()


def test_caption_words_the_shapes_reward_cannot_score_are_refused(toy_base_dir, tmp_path, capsys):
    """'a photo of a giraffe' no longer trains silently with reward 0 (every word <unk>)."""
    giraffe = {"tag": "single_object", "include": [{"class": "giraffe", "count": 1}], "prompt": "a photo of a giraffe"}
    zebra = {**giraffe, "prompt": "a photo of a striped zebra"}
    prompts = write_jsonl(tmp_path / "zoo.jsonl", [SHAPES_META, giraffe, zebra])
    out = tmp_path / "run"
    status, err = train_main(capsys, *run_args(out, toy_base_dir, f"prompts.source={prompts}"))
    assert_one_line(status, err, f"{prompts}:2: reward 'shapes_geneval' cannot score caption word(s) "
                    "['giraffe', 'striped', 'zebra'] (2 of 3 prompts, first: 'a photo of a giraffe')")  # fmt: skip
    assert not out.exists()


def test_unknown_words_warn_once_per_file_when_every_reward_can_score_them(toy_base_dir, tmp_path):
    """An open-vocabulary reward (declares no vocabulary: CLIP, HTTP servers) can score any caption: the backbone's
    unknown words are listed in one warning instead. A ShapesWorld reward declares the world's words."""
    from maskgrpo.prompts import check_prompts, read_prompt_file
    from maskgrpo.rewards import RewardSpec, build_rewards
    from maskgrpo.toy.backbone import load_shapes

    backbone = load_shapes(toy_base_dir)
    prompts = read_prompt_file(write_jsonl(tmp_path / "p.jsonl", [SHAPES_META] + [
        {"prompt": f"a photo of a giraffe number {i}"} for i in range(5)]))  # fmt: skip

    class OpenReward:  # declares neither required_metadata nor vocabulary
        name = "open"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_prompts(prompts, [OpenReward()], backbone)
    texts = [str(w.message) for w in caught]
    assert len(texts) == 1, texts  # once for the file, not once per prompt
    assert texts[0] == (f"{tmp_path / 'p.jsonl'}: 7 caption word(s) are not in the backbone's vocabulary and are "
                        "encoded as an unknown token: ['0', '1', '2', '3', '4', 'giraffe', 'number']")  # fmt: skip
    (shapes,) = build_rewards([RewardSpec("shapes_geneval")], context={"world_spec": backbone.spec})
    assert shapes.vocabulary == frozenset(backbone.text_tokenizer.vocab[4:])  # the world's words, all of them
    with pytest.raises(Exception, match=r"p.jsonl:2: missing metadata key 'tag'"):
        check_prompts(prompts, [shapes], backbone)
    with warnings.catch_warnings(record=True) as caught:  # known words only: no warning at all
        warnings.simplefilter("always")
        check_prompts(read_prompt_file(write_jsonl(tmp_path / "ok.jsonl", [SHAPES_META])), [shapes], backbone)
    assert not caught


# ---- damaged bases --------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_key(path: Path) -> str:
    tensors = load_file(path)
    key = sorted(tensors)[0]
    del tensors[key]
    save_file(tensors, path, metadata={"format": "pt"})
    return key


def test_damaged_toy_base_files_are_one_line_naming_the_file(toy_base_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cases = {
        "truncated": (lambda d: _truncate(d / "model/model.safetensors"),
                      ["model/model.safetensors: not a readable safetensors file, truncated or damaged?"]),
        "garbled_config": (lambda d: (d / "model/config.json").write_text('{"d_model": 32,,\n'),
                           ["model/config.json:1: not valid JSON"]),
        "garbled_world": (lambda d: (d / "world.json").write_text("{\n  oops\n"), ["world.json:2: not valid JSON"]),
        "world_key": (lambda d: (d / "world.json").write_text('{"world": {}}'),
                      ["world.json: missing key(s) ['text_window', 'train_prompts', 'eval_prompts']"]),
        "garbled_tokenizer": (lambda d: (d / "text_tokenizer.json").write_text("[1, 2"),
                              ["text_tokenizer.json: not a valid JSON tokenizer file"]),
    }  # fmt: skip
    for name, (damage, parts) in cases.items():
        base = copy_base(toy_base_dir, tmp_path / name)
        damage(base)
        status, err = train_main(capsys, *run_args(out, base))
        assert_one_line(status, err, f"cannot load backbone 'shapes' from {base}: {base}/", *parts)
        assert not out.exists(), name
    base = copy_base(toy_base_dir, tmp_path / "missing_key")
    key = _drop_key(base / "model/model.safetensors")
    status, err = train_main(capsys, *run_args(out, base))
    assert_one_line(status, err, f"{base}/model/model.safetensors: the key set is not", f"missing (1): [{key}]")
    assert not out.exists()


def test_truncated_mmada_shard_is_one_line_naming_the_shard(tmp_path, capsys):
    from tiny_models import build_tiny_mmada, write_prompts

    tiny = build_tiny_mmada(tmp_path / "mmada")
    shard = sorted(tiny.model_dir.glob("model-*.safetensors"))[1]
    _truncate(shard)
    out = tmp_path / "run"
    mmada = ["backbone.name=mmada", "backbone.dtype=float32", f"backbone.options={json.dumps(tiny.options)}"]
    prompts = write_prompts(tmp_path / "p.jsonl")
    status, err = train_main(capsys, *run_args(out, tiny.model_dir, f"prompts.source={prompts}", *mmada))
    assert_one_line(status, err, f"cannot load backbone 'mmada' from {tiny.model_dir}: {shard}: not a readable "
                    "safetensors file, truncated or damaged?")  # fmt: skip
    assert not out.exists()


def test_missing_local_clip_path_is_one_line(toy_base_dir, tmp_path, capsys):
    """Not huggingface_hub's "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" for a path."""
    missing = tmp_path / "no_clip_here"
    out = tmp_path / "run"
    status, err = train_main(capsys, *run_args(out, toy_base_dir, f"rewards.clip.kwargs.model_path={missing}"))
    assert_one_line(status, err, f"rewards: clip: model_path {missing}: no such directory", "not a hub id")
    assert "Repo id" not in err and not out.exists()


def test_other_component_mistakes_are_one_line(toy_base_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cases = {
        "rewards.shapes_genval={}": "rewards: unknown reward 'shapes_genval'",
        "patch=htgrpp": "patch: 'htgrpp': no preset registered and no package htgrpp_patch",
        f"deepspeed.config={tmp_path / 'zero9.json'}": f"deepspeed.config: {tmp_path / 'zero9.json'} not found",
        "rewards.shapes_geneval.kwargs.temperature=2": "got unknown option(s) ['temperature']",
    }
    for override, part in cases.items():
        status, err = train_main(capsys, *run_args(out, toy_base_dir, override))
        assert_one_line(status, err, part)
        assert not out.exists(), override
    status, err = train_main(capsys, "--config", str(tmp_path / "nope.yaml"))  # the later --config wins
    assert_one_line(status, err, f"config file not found: {tmp_path / 'nope.yaml'}")


def test_non_finite_patch_option_and_pretraining_value_are_one_line(toy_base_dir, tmp_path, capsys):
    out = tmp_path / "run"
    status, err = train_main(capsys, *run_args(out, toy_base_dir, "patch=htgrpo",
                                               "patch_options.weight_structure=.inf"))  # fmt: skip
    assert_one_line(status, err, "patch_options.weight_structure=inf is not a finite number")
    assert not out.exists()
    from maskgrpo.toy.pretrain import main as pretrain_main

    with pytest.raises(SystemExit) as info:
        pretrain_main([f"run.output_dir={tmp_path / 'base'}", "pretrain.lr=.nan"])
    assert_one_line(info.value.code, capsys.readouterr().err, "pretrain.lr=nan is not a finite number")
    assert not (tmp_path / "base").exists()


def test_micro_batch_must_divide_the_prompts_per_rank():
    """With 2 ranks, P = 4 gives 2 prompts per rank: a micro-batch of 4 prompts divides P but not a rank's share."""
    from maskgrpo.config import ConfigError, load_config
    from maskgrpo.config.schema import TrainRun, check_world_size

    cfg = load_config(TrainRun, CONFIG, ["prompts.per_round=4", "rl.micro_batch_prompts=4"])
    check_world_size(cfg, 1)
    with pytest.raises(ConfigError, match=r"rl.micro_batch_prompts=4 must divide the prompts per rank "
                       r"\(prompts.per_round=4 / 2 ranks = 2\)"):  # fmt: skip
        check_world_size(cfg, 2)
    with pytest.raises(ConfigError, match="prompts.per_round=4 must divide by the 3 ranks"):
        check_world_size(cfg, 3)


@pytest.mark.slow
def test_eval_cli_damaged_base_is_one_line(toy_base_dir, tmp_path):
    base = copy_base(toy_base_dir, tmp_path / "base")
    _truncate(base / "model/model.safetensors")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("HTGRPO_TRACEBACK", None)
    cmd = [sys.executable, "-m", "eval.shapes_eval", "--backbone", "shapes", "--model-path", str(base), "--device",
           "cpu", "--out", str(tmp_path / "eval")]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line(r.returncode, r.stderr, f"cannot load backbone 'shapes' from {base}: {base}/model/model.safet")
    assert not (tmp_path / "eval").exists()


# ---- the CLI itself: one line by default, the full trace on request --------------------------------------------


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_2_and_traceback_on_request(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    env.pop("HTGRPO_TRACEBACK", None)
    cmd = [sys.executable, "-m", "maskgrpo.train", "--config", CONFIG, f"run.output_dir={tmp_path / 'run'}"]
    r = subprocess.run([*cmd, "optim.lr={a: 1}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: command-line override 'optim.lr={a: 1}': optim.lr must be a number, got {'a': 1}\n"
    r = subprocess.run([*cmd, "optim.lr=.inf"], cwd=REPO, env={**env, "HTGRPO_TRACEBACK": "1"}, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr
    assert r.stderr.rstrip().endswith("optim.lr=inf is not a finite number (inf and nan are not accepted)")
    assert "ConfigError" in r.stderr and not (tmp_path / "run").exists()


def test_traceback_flag_reraises_in_process(tmp_path):
    from maskgrpo.config import ConfigError
    from maskgrpo.train import main

    with pytest.raises(ConfigError, match="optim.lr=inf is not a finite number"):
        main(["--config", CONFIG, "--traceback", "optim.lr=.inf", f"run.output_dir={tmp_path / 'run'}"])


def test_one_line_joins_multi_line_messages_and_strips_errno():
    from maskgrpo.errors import RunError, one_line

    assert one_line(RunError("first\n  second\n\nthird")) == "first | second | third"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x/y")) == "/x/y: No such file or directory"
    assert one_line(RunError("")) == "RunError"
