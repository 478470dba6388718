"""The training prompt orders (maskgrpo/prompts.py): deterministic by position, balanced where asked."""

from collections import Counter

import pytest

from maskgrpo.prompts import PROMPT_ORDERS, PromptStream, TagBalancedStream

# 9 prompts of tag "a", 2 of "b", 1 of "c": a uniform order reads "a" 75% of the time.
PROMPTS = [{"prompt": f"a{i}", "tag": "a"} for i in range(9)] + [{"prompt": "b0", "tag": "b"},
                                                                  {"prompt": "b1", "tag": "b"},
                                                                  {"prompt": "c0", "tag": "c"}]  # fmt: skip


def names(metas: list[dict]) -> list[str]:
    return [m["prompt"] for m in metas]


def test_uniform_reads_every_prompt_once_per_epoch():
    s = PromptStream(PROMPTS, seed=3)
    first, second = names(s.take(0, 12)), names(s.take(12, 12))
    assert sorted(first) == sorted(second) == sorted(names(PROMPTS))
    assert first != second  # a new permutation per epoch


def test_tag_order_gives_every_tag_once_per_cycle():
    s = TagBalancedStream(PROMPTS, seed=0)
    assert s.tags == ["a", "b", "c"]
    read = s.take(0, 30)  # 10 cycles of 3 tags
    for c in range(10):
        assert sorted(m["tag"] for m in read[3 * c : 3 * c + 3]) == ["a", "b", "c"]
    counts = Counter(names(read))
    assert counts["c0"] == 10 and counts["b0"] == counts["b1"] == 5  # "b" alternates its two prompts per epoch
    assert sorted(n for n in counts if n.startswith("a")) == [f"a{i}" for i in range(9)]  # 9 of 10 "a" reads: all


def test_tag_order_is_a_function_of_position():
    """A resumed run (position 7) reads what the uninterrupted run read from position 7."""
    s, again = TagBalancedStream(PROMPTS, seed=5), TagBalancedStream(PROMPTS, seed=5)
    assert names(s.take(0, 20))[7:] == names(again.take(7, 13))
    assert names(TagBalancedStream(PROMPTS, seed=6).take(0, 20)) != names(s.take(0, 20))


def test_orders_are_registered_and_untagged_prompts_form_one_tag():
    assert PROMPT_ORDERS.get("uniform") is PromptStream and PROMPT_ORDERS.get("tag") is TagBalancedStream
    s = TagBalancedStream([{"prompt": "x"}, {"prompt": "y"}], seed=0)
    assert s.tags == [""] and sorted(names(s.take(0, 2))) == ["x", "y"]
    with pytest.raises(ValueError, match="empty"):
        TagBalancedStream([], seed=0)


def test_train_prompt_pick_takes_per_tag_captions_seeded():
    from maskgrpo.toy.evaluate import train_prompt_pick

    picked = train_prompt_pick(PROMPTS, per_tag=2, seed=1)
    assert [m["tag"] for m in picked] == ["a", "a", "b", "b", "c"]  # a tag with fewer gives all it has
    assert names(picked) == names(train_prompt_pick(PROMPTS, per_tag=2, seed=1))
    assert {tuple(names(train_prompt_pick(PROMPTS, 2, s))[:2]) for s in range(6)} != {tuple(names(picked)[:2])}


def test_eval_prompt_sets_held_out_train_pick_and_validation():
    from types import SimpleNamespace

    from maskgrpo.config.schema import ShapesEvalConfig, TrainEvalConfig
    from maskgrpo.toy.evaluate import eval_prompt_sets

    held, val = [{"prompt": "h", "tag": "a"}], [{"prompt": "v", "tag": "b"}]
    backbone = SimpleNamespace(eval_prompts=held, train_prompts=PROMPTS, val_prompts=val)
    assert eval_prompt_sets(backbone, ShapesEvalConfig()) == {"": held}  # pretraining's config: held-out only
    sets = eval_prompt_sets(backbone, TrainEvalConfig(train_prompts_per_tag=1, val=True))
    assert list(sets) == ["", "_train", "_val"] and sets["_val"] == val and len(sets["_train"]) == 3
    # heldout: false (eval/select_on_val.py) never samples a held-out caption
    assert list(eval_prompt_sets(backbone, TrainEvalConfig(heldout=False, val=True))) == ["_val"]
    assert eval_prompt_sets(SimpleNamespace(**{**vars(backbone), "val_prompts": []}),
                            TrainEvalConfig(heldout=False, val=True)) == {}  # fmt: skip
