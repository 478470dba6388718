"""The caption split options of ShapesWorld (maskgrpo.toy.world): per-tag minimum, covered held-out captions, the
validation pick, and the world's classes from its config; the defaults keep the split of the shipped base."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import REPO

from maskgrpo.config.schema import ShapesWorldConfig
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS
from maskgrpo.toy.world import (
    WorldSpec,
    caption_factors,
    enumerate_prompts,
    spec_for,
    split_prompts,
    validation_pick,
)

FOUR = WorldSpec.scaled(40, shapes=("circle", "square", "triangle", "diamond"))


def test_defaults_give_the_shipped_split():
    world = json.loads((REPO / "assets/toy_base/world.json").read_text())
    train, evals = split_prompts(WorldSpec(), seed=0, num_eval=36)
    assert train == world["train_prompts"] and evals == world["eval_prompts"]
    assert spec_for(ShapesWorldConfig()) == WorldSpec.scaled(32, 4)


def test_caption_factors_name_what_the_caption_asks_for():
    meta = {"tag": "position", "include": [{"class": "circle", "count": 1},
            {"class": "square", "count": 1, "position": ["left of", 0]}]}  # fmt: skip
    assert caption_factors(meta) == {(0, "class", "circle"), (1, "class", "square"), (1, "relation", "left of")}
    meta = {"tag": "counting", "include": [{"class": "diamond", "count": 3}]}
    assert caption_factors(meta) == {(0, "class", "diamond"), (0, "count", 3)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_covered_split_holds_out_new_combinations_of_trained_parts(seed):
    train, evals = split_prompts(FOUR, seed=seed, num_eval=33, min_per_tag=6, covered=True)
    assert Counter(m["tag"] for m in evals) == {"single_object": 3, **{t: 6 for t in GENEVAL_TAGS[1:]}}
    assert len(train) + len(evals) == len(enumerate_prompts(FOUR)) and not [m for m in evals if m in train]
    everything = frozenset().union(*(caption_factors(m) for m in train))
    for m in evals:
        same_tag = frozenset().union(*(caption_factors(t) for t in train if t["tag"] == m["tag"]))
        pool = same_tag if len(caption_factors(m)) > 1 else everything  # single_object: its class in any tag
        assert caption_factors(m) <= pool, m["prompt"]
    assert split_prompts(FOUR, seed=seed, num_eval=33, min_per_tag=6, covered=True) == (train, evals)


def test_a_random_split_can_hold_out_an_untrained_part_and_the_covered_one_refuses_what_it_cannot_do():
    train, evals = split_prompts(FOUR, seed=0, num_eval=33, min_per_tag=6)  # not covered
    counted = frozenset().union(*(caption_factors(m) for m in train if m["tag"] == "counting"))
    assert (0, "count", 4) not in counted  # every "four <shapes>" caption held out: "four" never trained
    train, _ = split_prompts(FOUR, seed=0, num_eval=33, min_per_tag=6, covered=True)
    assert (0, "count", 4) in frozenset().union(*(caption_factors(m) for m in train if m["tag"] == "counting"))
    with pytest.raises(ValueError, match="no 5 two_object captions can be held out"):
        split_prompts(WorldSpec(), seed=0, num_eval=30, min_per_tag=5, covered=True)  # 5 of 6 ordered pairs
    with pytest.raises(ValueError, match=r"num_eval must be in \[33, "):
        split_prompts(FOUR, seed=0, num_eval=20, min_per_tag=6)


def test_min_per_tag_takes_a_small_tag_past_half_but_keeps_one_trained():
    _, evals = split_prompts(FOUR, seed=0, num_eval=33, min_per_tag=6)
    assert Counter(m["tag"] for m in evals)["single_object"] == 3  # of 4
    _, evals = split_prompts(FOUR, seed=0, num_eval=33, min_per_tag=0)
    assert Counter(m["tag"] for m in evals)["single_object"] == 2  # half, the old cap


def test_validation_pick_is_a_seeded_subset_of_training_captions():
    train, evals = split_prompts(FOUR, seed=0, num_eval=33, min_per_tag=6, covered=True)
    val = validation_pick(train, per_tag=4, seed=1)
    assert all(m in train for m in val) and not [m for m in val if m in evals]
    counts = Counter(m["tag"] for m in val)
    # at most half of a tag's training captions: two_object and counting keep 6 each, single_object 1 (it stays)
    assert counts == {"two_object": 3, "counting": 3, "colors": 4, "position": 4, "color_attr": 4}
    assert validation_pick(train, per_tag=4, seed=1) == val and validation_pick(train, 4, seed=2) != val


def test_tag_balanced_pretraining_draws_every_tag_alike():
    import numpy as np

    from maskgrpo.toy.pretrain import caption_sampler

    train, _ = split_prompts(FOUR, seed=0, num_eval=33, min_per_tag=6, covered=True)
    plain = Counter(m["tag"] for m in caption_sampler(train, False)(6000, np.random.default_rng(0)))
    balanced = Counter(m["tag"] for m in caption_sampler(train, True)(6000, np.random.default_rng(0)))
    assert plain["color_attr"] > 4500 and plain["counting"] < 200  # 354 and 6 of the 427 training captions
    assert all(900 < balanced[t] < 1100 for t in GENEVAL_TAGS), balanced
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert caption_sampler(train, False)(64, rng_a) == [train[i] for i in rng_b.integers(0, len(train), 64)]


def test_pretrain_heldout_adds_the_held_out_captions_to_pretraining_only():
    from maskgrpo.config import load_config
    from maskgrpo.config.schema import ToyPretrainRun
    from maskgrpo.toy.pretrain import build_base, pretraining_pool, split_captions

    over = ["world.canvas=40", "world.shapes=[circle,square,triangle,diamond]", "world.num_eval_prompts=33",
            "split.min_eval_per_tag=6", "split.covered=true", "split.val_per_tag=4", "model.n_layers=1",
            "model.d_model=32", "model.n_heads=2", "model.mlp_hidden_size=64",
            "world.codebook_fit_images=32"]  # fmt: skip
    cfg = load_config(ToyPretrainRun, str(REPO / "configs/toy_pretrain.yaml"), over)
    both = load_config(ToyPretrainRun, str(REPO / "configs/toy_pretrain.yaml"), [*over, "split.pretrain_heldout=true"])
    spec = spec_for(cfg.world)
    train, held, val = split_captions(cfg, spec)
    assert pretraining_pool(cfg, train, held) == train  # the default: held-out captions are never drawn
    pool = pretraining_pool(both, train, held)
    assert pool == train + held and len(held) == 33 and all(m in train for m in val)
    # RL prompts and the validation split do not change: held out from RL, not from pretraining
    a, b = build_base(cfg), build_base(both)
    assert (a.train_prompts, a.eval_prompts, a.val_prompts) == (b.train_prompts, b.eval_prompts, b.val_prompts)
    assert not [m for m in b.train_prompts if m in held or m in val]


def test_a_state_saved_before_pretrain_heldout_existed_still_resumes():
    from maskgrpo.config import load_config
    from maskgrpo.config.loader import to_dict
    from maskgrpo.config.schema import ToyPretrainRun
    from maskgrpo.toy.pretrain import _resume_view

    now = to_dict(load_config(ToyPretrainRun, str(REPO / "configs/toy_pretrain.yaml"), []))
    old = json.loads(json.dumps(now))
    del old["split"]["pretrain_heldout"]  # the config of a state saved before the key existed
    assert _resume_view(old) == _resume_view(now)
    now["split"]["pretrain_heldout"] = True  # asking for it is another recipe
    assert _resume_view(old) != _resume_view(now)


def test_the_compose_recipe_seed_is_the_first_that_balances_counts_and_does_not_overload_the_square():
    """configs/toy_pretrain_compose.yaml's world.seed, chosen from the split alone: the smallest seed whose held-out
    counting captions ask for 2, 3 and 4 objects twice each and whose held-out position captions name the square
    in at most half of them (the share a uniform pick of two of four classes gives)."""
    from maskgrpo.config import load_config
    from maskgrpo.config.schema import ToyPretrainRun

    cfg = load_config(ToyPretrainRun, str(REPO / "configs/toy_pretrain_compose.yaml"), [])
    s = cfg.split

    def held(seed: int) -> list[dict]:
        return split_prompts(spec_for(cfg.world), seed, cfg.world.num_eval_prompts, s.min_eval_per_tag, s.covered)[1]

    def counts(seed: int) -> Counter:
        return Counter(m["include"][0]["count"] for m in held(seed) if m["tag"] == "counting")

    def squares(seed: int) -> tuple[int, int]:
        pos = [m for m in held(seed) if m["tag"] == "position"]
        return sum(any(c["class"] == "square" for c in m["include"]) for m in pos), len(pos)

    assert cfg.world.seed == 4 and counts(4) == {2: 2, 3: 2, 4: 2} and squares(4) == (3, 6)
    assert counts(0) == {3: 3, 4: 3} and counts(1) != {2: 2, 3: 2, 4: 2} and counts(3) != {2: 2, 3: 2, 4: 2}
    assert counts(2) == {2: 2, 3: 2, 4: 2} and squares(2) == (6, 6)  # attempts 2 and 3: every position caption
