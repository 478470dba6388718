"""GenEval harnesses: generation layout, resumption and sharding on the official metadata with a tiny toy model;
the results.jsonl summary on hand-made results; the training-prompt generator against the official prompts."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from fixtures_toy import GENEVAL_METADATA, GENEVAL_OBJECTS, model_args

from eval import geneval_generate, geneval_summary, geneval_train_prompts
from eval.common import item_seed, shard, shard_env
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS, RELATIONS

needs_data = pytest.mark.skipif(not GENEVAL_METADATA.is_file(), reason="official GenEval files not available")

LIMIT = 3


def official_lines(n: int | None = None) -> list[str]:
    lines = [x for x in GENEVAL_METADATA.read_text().splitlines() if x.strip()]
    return lines if n is None else lines[:n]


def generate(outdir: Path, *extra: str) -> int:
    return geneval_generate.main(["--metadata", str(GENEVAL_METADATA), "--outdir", str(outdir), "--limit",
                                  str(LIMIT), *model_args(), *extra])  # fmt: skip


def snapshot(outdir: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file (generation.json excluded) under outdir."""
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted(outdir.rglob("*"))
            if p.is_file() and p.name != "generation.json"}  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """One unsharded run over the first 3 official prompts, and its files."""
    out = tmp_path_factory.mktemp("geneval") / "out"
    assert generate(out) == 0
    return out, snapshot(out)


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


@needs_data
def test_layout_folder_and_sample_names_and_metadata_lines(full_run):
    out, files = full_run
    lines = official_lines(LIMIT)
    # 5-digit folders (0-based line number), 4-digit sample names, 4 samples, nothing else in the folders.
    expected = {f"{i:05d}/metadata.jsonl" for i in range(LIMIT)}
    expected |= {f"{i:05d}/samples/{j:04d}.png" for i in range(LIMIT) for j in range(4)}
    assert set(files) == expected
    for i, line in enumerate(lines):
        with open(out / f"{i:05d}" / "metadata.jsonl") as f:
            assert json.load(f) == json.loads(line)  # the evaluator reads it with json.load
        assert (out / f"{i:05d}" / "metadata.jsonl").read_text().strip() == line  # verbatim official line
    from PIL import Image

    with Image.open(out / "00000" / "samples" / "0000.png") as im:
        assert im.mode == "RGB" and im.size[0] == im.size[1] > 0
    info = json.loads((out / "generation.json").read_text())
    assert info["samples"] == 4 and info["sampler"]["num_steps"] == 2
    assert info["model"]["dtype"] == "float32"  # --dtype auto on a machine without CUDA


def test_generation_runs_in_bf16_on_a_gpu_by_default():
    """--dtype defaults to auto: bfloat16 on CUDA (half the memory of an 8B model, bf16 tensor cores), float32 on
    CPU; an explicit dtype stays as given."""
    from eval.common import resolve_dtype

    args = geneval_generate.build_parser().parse_args(["--metadata", "m", "--outdir", "o"])
    assert args.dtype == "auto"
    assert resolve_dtype("auto", "cuda:3") == "bfloat16" and resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("float32", "cuda:0") == "float32" and resolve_dtype("float16", "cpu") == "float16"


@needs_data
def test_resume_generates_nothing_new(full_run, tmp_path, capsys):
    src, files = full_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert generate(out) == 0
    assert "3 already complete, 0 to generate" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    assert snapshot(out) == files


@needs_data
def test_resume_completes_a_partial_folder_and_accepts_5_digit_samples(full_run, tmp_path, capsys):
    src, files = full_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    samples = out / "00001" / "samples"
    (samples / "0002.png").unlink()  # lost sample
    (samples / "0001.png").rename(samples / "00001.png")  # the reference generator's 5-digit name
    shutil.rmtree(out / "00002")  # a prompt never started
    assert geneval_generate.main(["--metadata", str(GENEVAL_METADATA), "--outdir", str(out), "--limit", "3",
                                  "--check"]) == 1  # fmt: skip
    capsys.readouterr()
    assert generate(out) == 0
    assert "1 already complete, 2 to generate" in capsys.readouterr().out
    # The missing sample is regenerated bit-identically (per-prompt seed), 00001.png counts as sample 1.
    assert (samples / "0002.png").read_bytes() == files["00001/samples/0002.png"]
    assert not (samples / "0001.png").exists()
    assert (samples / "00001.png").read_bytes() == files["00001/samples/0001.png"]
    assert snapshot(out)["00002/samples/0003.png"] == files["00002/samples/0003.png"]
    assert geneval_generate.main(["--metadata", str(GENEVAL_METADATA), "--outdir", str(out), "--limit", "3",
                                  "--check"]) == 0  # fmt: skip


@needs_data
def test_two_ranks_cover_every_prompt_once_with_the_unsharded_images(full_run, tmp_path, monkeypatch):
    _, files = full_run
    outs = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        outs.append(tmp_path / f"rank{rank}")
        assert generate(outs[-1]) == 0
    f0, f1 = snapshot(outs[0]), snapshot(outs[1])
    folders0 = {k.split("/")[0] for k in f0}
    folders1 = {k.split("/")[0] for k in f1}
    assert folders0 == {"00000", "00002"} and folders1 == {"00001"}  # i % 2 == rank: disjoint, complete
    assert {**f0, **f1} == files  # same bytes as one process: images do not depend on the shard


@needs_data
def test_metadata_of_another_prompt_set_is_refused(full_run, tmp_path):
    src, _ = full_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    (out / "00000" / "metadata.jsonl").write_text(official_lines(5)[4] + "\n")
    with pytest.raises(ValueError, match="does not match line 0"):
        generate(out)


@needs_data
def test_several_prompts_per_sampler_call(tmp_path):
    out = tmp_path / "out"
    assert generate(out, "--batch-size", "8") == 0  # 2 prompts per call
    assert len(list(out.glob("*/samples/*.png"))) == 4 * LIMIT


def test_shard_env_and_shard():
    assert shard_env({}) == (0, 1)
    assert shard_env({"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3)
    with pytest.raises(ValueError, match="RANK"):
        shard_env({"RANK": "3", "WORLD_SIZE": "3"})
    parts = [shard(range(10), r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert item_seed(0, 1) != item_seed(1, 0) and item_seed(5, 7) == item_seed(5, 7)


# ----------------------------------------------------------------------------------------------------------------
# results.jsonl summary
# ----------------------------------------------------------------------------------------------------------------

# Hand-made results: (tag, prompt id, [correct per image]).
#   single_object P1 [T,T,F,F]            -> 2/4  = 0.5
#   two_object    P2 [T,F,F,F] P3 [F]*4   -> 1/8  = 0.125
#   counting      P4 [T,T] (2 images)     -> 2/2  = 1.0
#   colors        P5 [T,T,T,F]            -> 3/4  = 0.75
#   position      P6 [F]*4                -> 0/4  = 0.0
#   color_attr    P7 [T,F,F,F] P8 [F]*4 P9 [T]*4 -> 5/12
# images 34, correct 13 -> 13/34; prompts 9, any-correct P1 P2 P4 P5 P7 P9 -> 6/9
# overall = (0.5 + 0.125 + 1 + 0.75 + 0 + 5/12) / 6 = 0.465277...; the image-weighted 13/34 = 0.382 differs.
HAND = [
    ("single_object", "P1", [1, 1, 0, 0]),
    ("two_object", "P2", [1, 0, 0, 0]),
    ("two_object", "P3", [0, 0, 0, 0]),
    ("counting", "P4", [1, 1]),
    ("colors", "P5", [1, 1, 1, 0]),
    ("position", "P6", [0, 0, 0, 0]),
    ("color_attr", "P7", [1, 0, 0, 0]),
    ("color_attr", "P8", [0, 0, 0, 0]),
    ("color_attr", "P9", [1, 1, 1, 1]),
]


def write_results(path: Path, rows=HAND) -> Path:
    with open(path, "w") as f:
        for n, (tag, pid, hits) in enumerate(rows):
            meta = json.dumps({"tag": tag, "include": [], "prompt": f"prompt {pid}"})
            for j, c in enumerate(hits):
                rec = {"filename": f"OUT/{n:05d}/samples/{j:04d}.png", "tag": tag, "prompt": f"prompt {pid}",
                       "correct": bool(c), "reason": "", "metadata": meta, "details": "{}"}  # fmt: skip
                f.write(json.dumps(rec) + "\n")
    return path


def test_summary_matches_hand_computed_numbers(tmp_path):
    s = geneval_summary.summarize_results(geneval_summary.read_results(write_results(tmp_path / "r.jsonl")))
    assert s["images"] == 34 and s["prompts"] == 9
    assert s["correct_images"] == pytest.approx(13 / 34)
    assert s["correct_prompts"] == pytest.approx(6 / 9)
    acc = {t: v["accuracy"] for t, v in s["tags"].items()}
    assert list(acc) == list(GENEVAL_TAGS)  # canonical order
    assert acc == pytest.approx({"single_object": 0.5, "two_object": 0.125, "counting": 1.0, "colors": 0.75,
                                 "position": 0.0, "color_attr": 5 / 12})  # fmt: skip
    assert s["overall"] == pytest.approx((0.5 + 0.125 + 1 + 0.75 + 0 + 5 / 12) / 6)
    assert not math.isclose(s["overall"], 13 / 34)  # unweighted over tags, not over images
    assert s["tags"]["color_attr"] == {"accuracy": pytest.approx(5 / 12), "correct": 5, "images": 12, "prompts": 3}
    warns = " | ".join(s["warnings"])
    assert "9 prompts, the official set has 553" in warns
    assert "1 prompts do not have 4 images" in warns and "{2: 1}" in warns
    assert "missing tags" not in warns


def test_summary_warns_on_a_missing_tag_and_averages_the_rest(tmp_path):
    rows = [r for r in HAND if r[0] != "position"]
    s = geneval_summary.summarize_results(geneval_summary.read_results(write_results(tmp_path / "r.jsonl", rows)))
    assert "position" not in s["tags"]
    assert s["overall"] == pytest.approx((0.5 + 0.125 + 1 + 0.75 + 5 / 12) / 5)
    assert any("missing tags ['position']" in w for w in s["warnings"])


def test_summary_cli_json_and_table(tmp_path, capsys):
    path = write_results(tmp_path / "r.jsonl")
    assert geneval_summary.main([str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overall"] == pytest.approx(0.46527777777)
    assert geneval_summary.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "% correct images: 38.24%" in text and "% correct prompts: 66.67%" in text
    assert text.index("single_object") < text.index("two_object") < text.index("color_attr") < text.index("overall")


# ----------------------------------------------------------------------------------------------------------------
# Training prompts
# ----------------------------------------------------------------------------------------------------------------

COLORS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def meaning(meta: dict) -> tuple:
    """Order-free content of a prompt, written independently of the module: equal for equivalent prompts."""
    tag, inc = meta["tag"], meta["include"]
    if tag == "position":
        a, b, rel = inc[1]["class"], inc[0]["class"], inc[1]["position"][0]
        return tag, frozenset({(a, rel, b), (b, INVERSE[rel], a)})
    return tag, frozenset((c["class"], c["count"], c.get("color")) for c in inc)


@needs_data
def test_templates_reproduce_every_official_prompt():
    for line in official_lines():
        meta = json.loads(line)
        assert geneval_train_prompts.prompt_text(meta) == meta["prompt"]


@needs_data
def test_training_prompts_never_repeat_evaluation_prompts_and_are_valid(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    files = ["--metadata", str(GENEVAL_METADATA), "--object-names", str(GENEVAL_OBJECTS)]
    assert geneval_train_prompts.main(["--out", str(out), "--n", "3000", "--seed", "7", *files]) == 0
    lines = out.read_text().splitlines()
    metas = [json.loads(x) for x in lines]
    evals = [json.loads(x) for x in official_lines()]
    classes = set(GENEVAL_OBJECTS.read_text().split("\n")) - {""}
    assert len(metas) == 3000 and len({m["prompt"] for m in metas}) == 3000
    assert not {m["prompt"] for m in metas} & {m["prompt"] for m in evals}
    assert not {meaning(m) for m in metas} & {meaning(m) for m in evals}  # nor a reordering of one
    for m in metas:
        assert list(m) == (["tag", "include", "exclude", "prompt"] if m["tag"] == "counting" else
                           ["tag", "include", "prompt"])  # fmt: skip
        assert m["tag"] in GENEVAL_TAGS
        assert all(c["class"] in classes for c in m["include"])
        assert geneval_train_prompts.prompt_text(m) == m["prompt"]
        colours = [c["color"] for c in m["include"] if "color" in c]
        assert set(colours) <= COLORS
        assert not any(c["class"] == "person" and "color" in c for c in m["include"])
        if m["tag"] == "counting":
            n = m["include"][0]["count"]
            assert n in (2, 3, 4) and m["exclude"] == [{"class": m["include"][0]["class"], "count": n + 1}]
        elif m["tag"] == "position":
            assert m["include"][1]["position"][0] in RELATIONS and m["include"][1]["position"][1] == 0
            assert m["include"][0]["class"] != m["include"][1]["class"]
        elif m["tag"] in ("two_object", "color_attr"):
            assert m["include"][0]["class"] != m["include"][1]["class"]
            if m["tag"] == "color_attr":
                assert colours[0] != colours[1]
    per_tag = {t: sum(m["tag"] == t for m in metas) for t in GENEVAL_TAGS}
    assert per_tag["single_object"] == 0  # all 80 template prompts are evaluation prompts
    assert per_tag["counting"] == 160  # 80 classes x 3 counts - the 80 evaluation ones: capacity reached
    assert "single_object" in capsys.readouterr().out


@needs_data
def test_training_prompts_are_deterministic_and_capacity_is_enforced():
    evals = [json.loads(x) for x in official_lines()]
    classes = [x for x in GENEVAL_OBJECTS.read_text().splitlines() if x.strip()]
    a, _ = geneval_train_prompts.generate_train_prompts(200, 1, evals, classes)
    b, _ = geneval_train_prompts.generate_train_prompts(200, 1, evals, classes)
    c, _ = geneval_train_prompts.generate_train_prompts(200, 2, evals, classes)
    assert a == b and a != c
    # counting alone holds 240 - 80 = 160 candidates
    with pytest.raises(ValueError, match="only 160"):
        geneval_train_prompts.generate_train_prompts(161, 0, evals, classes, tags=("counting",))
    # the default mix follows the evaluation file's proportions (80:99:80:94:100:100, single_object's share moved)
    _, report = geneval_train_prompts.generate_train_prompts(473, 0, evals, classes)
    assert report["per_tag"] == {"single_object": 0, "two_object": 99, "counting": 80, "colors": 94,
                                 "position": 100, "color_attr": 100}  # fmt: skip
    assert all(re.fullmatch(r"a photo of .+", m["prompt"]) for m in a)
