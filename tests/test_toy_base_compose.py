"""The second shipped ShapesWorld base (assets/toy_base_compose, docs/toy_base.md): small, every file matching its
manifest, made by configs/toy_pretrain_compose.yaml, its world the one that config describes (four classes, at
least 3 held-out captions per tag, each a new combination of trained parts, a validation split)."""

from __future__ import annotations

import json
from collections import Counter

from conftest import REPO

from maskgrpo.config import config_from_dict, load_config, to_dict
from maskgrpo.config.schema import ShapesWorldConfig, ToyPretrainRun
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS
from maskgrpo.toy import base_manifest as bm
from maskgrpo.toy.pretrain import split_captions
from maskgrpo.toy.world import spec_for

BASE = REPO / "assets" / "toy_base_compose"
CONFIG = REPO / "configs" / "toy_pretrain_compose.yaml"


def test_compose_base_is_small_verified_and_made_by_its_config():
    size = sum(p.stat().st_size for p in BASE.rglob("*") if p.is_file())
    assert size < 20 * 2**20, size
    m = bm.verify_base(BASE)
    assert m is not None and set(m["files"]) >= set(bm.WEIGHT_FILES)
    recipe, cfg = m["recipe"]["config"], to_dict(load_config(ToyPretrainRun, str(CONFIG), []))
    for section in ("world", "model", "pretrain", "split"):
        assert recipe[section] == cfg[section], section
    ev = m["shapes_eval"]
    assert ev["num_images"] == 33 * 24 and ev["sampler"]["name"] == "emerge" and ev["sampler"]["num_steps"] == 12
    assert json.loads((BASE / "base_eval.json").read_text())["overall"] == ev["overall"]


def test_compose_world_is_the_configured_one():
    world = json.loads((BASE / "world.json").read_text())
    wcfg = config_from_dict(ShapesWorldConfig, world["world"], where="world.json")
    spec = spec_for(wcfg)
    assert spec.shapes == ("circle", "square", "triangle", "diamond") and spec.grid == 10
    held = Counter(m["tag"] for m in world["eval_prompts"])
    assert min(held[t] for t in GENEVAL_TAGS) >= 3, held
    cfg = load_config(ToyPretrainRun, str(CONFIG), [])
    train, held_out, val = split_captions(cfg, spec)  # the split is a function of the config: recomputed here
    assert world["eval_prompts"] == held_out and world["val_prompts"] == val
    assert world["train_prompts"] == [m for m in train if m not in val]
    assert not [m for m in val if m in held_out]
