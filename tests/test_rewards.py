"""Reward interface: YAML specs, registry, scaling and weighted combination, the CLIP reward on a tiny local
CLIPModel, the ShapesWorld rewards, and a contract test over every registered reward.

Server/client behaviour over HTTP lives in ``test_reward_server.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from maskgrpo.rewards import (
    REWARDS,
    RewardError,
    RewardFn,
    RewardSpec,
    build_rewards,
    combine_rewards,
    parse_reward_specs,
    score_all,
)
from maskgrpo.rewards.clip import ClipReward, _embedding, clip_preprocess, resize_shortest_edge
from maskgrpo.rewards.serve import serve_in_thread
from maskgrpo.toy.world import WorldSpec, enumerate_prompts, render_batch

# ------------------------------------------------------------------------------------------------ fixtures


class Fixed:
    """A stand-in reward returning fixed raw scores."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name = name
        self.values = np.asarray(values, dtype=np.float64)

    def __call__(self, images, prompts, metadata):
        return self.values.copy()


def blank(batch: int, size: int = 4) -> np.ndarray:
    return np.zeros((batch, size, size, 3), dtype=np.uint8)


def _byte_level_chars() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (the GPT-2 / CLIP byte-to-unicode table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random 2-layer CLIPModel (vision 32 px, patch 8; projection 16) + a character-level CLIP tokenizer, saved
    with save_pretrained to a local directory: the real loading path, no hub."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = _byte_level_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokens),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **layers,
        ),
        vision_config=dict(image_size=32, patch_size=8, **layers),
        projection_dim=16,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir):
    return build_rewards([RewardSpec("clip", kwargs={"model_path": tiny_clip_dir, "batch_size": 3})])[0]


@pytest.fixture(scope="module")
def world():
    """The default ShapesWorld and one ground-truth image per tag."""
    spec = WorldSpec()
    per_tag: dict[str, dict] = {}
    for meta in enumerate_prompts(spec):
        per_tag.setdefault(meta["tag"], meta)
    metas = list(per_tag.values())
    images = render_batch(metas, spec, np.random.default_rng(0))  # (6, 32, 32, 3)
    return spec, images, [m["prompt"] for m in metas], metas


# ------------------------------------------------------------------------------------------------ specs, registry


def test_parse_reward_specs_flat_nested_and_list_forms():
    specs = parse_reward_specs(
        {
            "hpsv3": {"weight": 1.0, "scale": 0.2},
            "clip": None,
            "aesthetic": {"entry": "http", "url": "http://127.0.0.1:1/score", "kwargs": {"timeout": 3}},
            "unifiedreward": {"scale": 0.2, "allow_nan": True, "url": "http://127.0.0.1:2/score"},
        }
    )
    assert [s.name for s in specs] == ["hpsv3", "clip", "aesthetic", "unifiedreward"]
    assert specs[0] == RewardSpec("hpsv3", weight=1.0, scale=0.2)
    assert specs[1] == RewardSpec("clip")
    assert specs[2].registry_name == "http" and specs[2].kwargs == {"url": "http://127.0.0.1:1/score", "timeout": 3}
    assert specs[3].allow_nan and specs[3].kwargs == {"url": "http://127.0.0.1:2/score"}
    as_list = parse_reward_specs([{"name": "hpsv3", "weight": 1.0, "scale": 0.2}, {"name": "clip"}])
    assert as_list == specs[:2]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"clip": {"weight": float("nan")}}, "weight must be a finite number"),
        ({"clip": {"scale": "0.2"}}, "scale must be a finite number"),
        ({"clip": {"device": "cuda"}}, "set by the trainer"),
        ({"clip": {"batch_size": 2, "kwargs": {"batch_size": 3}}}, "both flat and under"),
        ([{"name": "clip"}, {"name": "clip"}], "unique"),
        ([{"weight": 1.0}], "'name'"),
    ],
)
def test_bad_specs_are_rejected_with_what_to_change(config, message):
    with pytest.raises(ValueError, match=message):
        parse_reward_specs(config)


def test_unknown_reward_lists_the_valid_names():
    with pytest.raises(KeyError) as err:
        build_rewards([RewardSpec("hpsv4")])
    assert "valid names" in str(err.value) and "'hpsv3'" in str(err.value) and "Did you mean 'hpsv3'" in str(err.value)


def test_unknown_option_lists_the_valid_options():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['timeuot'\].*'timeout'"):
        build_rewards([RewardSpec("hpsv3", kwargs={"timeuot": 3})])


def test_entry_lets_one_registered_reward_serve_under_another_name():
    (fn,) = build_rewards(parse_reward_specs({"aesthetic": {"entry": "http", "url": "http://127.0.0.1:9/score"}}))
    assert fn.name == "aesthetic" and fn.url == "http://127.0.0.1:9/score"


# ------------------------------------------------------------------------------------------------ scale, weight, sum


def test_rewards_are_built_scored_and_combined_in_the_configs_order():
    """Issue 24: the order of ``rewards:`` is kept wherever a config is read, also through ``config_from_dict``
    (a checkpoint's config, eval/gpu_check), whose YAML round trip sorted the keys alphabetically."""
    from maskgrpo.config import config_from_dict, load_config, to_dict
    from maskgrpo.config.schema import TrainRun

    order = ["unifiedreward", "clip", "hpsv3"]  # not alphabetical
    data = {"rewards": {name: {"weight": 1.0} for name in order}}
    for cfg in (config_from_dict(TrainRun, data), config_from_dict(TrainRun, to_dict(load_config(TrainRun)) | data)):
        specs = [
            RewardSpec(n, e.weight, e.scale, dict(e.kwargs), e.allow_nan, e.entry) for n, e in cfg.rewards.items()
        ]
        assert [s.name for s in specs] == order
        fns = [Fixed(name, [float(i)]) for i, name in enumerate(order)]
        scaled = score_all(fns, specs, blank(1), ["p"], [{}])
        assert scaled.tolist() == [[0.0, 1.0, 2.0]]  # column f is the f-th reward of the config
        _, metrics = combine_rewards(scaled, [s.weight for s in specs], [s.name for s in specs])
        assert [k.split("/")[1] for k in metrics if k.endswith("/mean") and k != "reward/mean"] == order


def test_score_all_scales_and_combine_weights_hand_computed():
    # raw a = [1, 2, 3] with scale 0.5 -> [0.5, 1, 1.5]; raw b = [10, 0, -10] with scale 0.2 -> [2, 0, -2]
    # weights (2, 1): R = [2*0.5 + 2, 2*1 + 0, 2*1.5 - 2] = [3, 2, 1]
    specs = [RewardSpec("a", weight=2.0, scale=0.5), RewardSpec("b", weight=1.0, scale=0.2)]
    fns = [Fixed("a", [1, 2, 3]), Fixed("b", [10, 0, -10])]
    scaled = score_all(fns, specs, blank(3), ["p"] * 3, [{}] * 3)
    np.testing.assert_allclose(scaled, [[0.5, 2.0], [1.0, 0.0], [1.5, -2.0]])
    total, metrics = combine_rewards(scaled, [s.weight for s in specs], [s.name for s in specs])
    np.testing.assert_allclose(total, [3.0, 2.0, 1.0])
    # a: mean(0.5, 1, 1.5) = 1, population std = sqrt(((-.5)^2 + 0 + .5^2) / 3) = sqrt(1/6)
    assert metrics["reward/a/mean"] == pytest.approx(1.0)
    assert metrics["reward/a/std"] == pytest.approx(math.sqrt(1 / 6))
    assert metrics["reward/b/mean"] == pytest.approx(0.0) and metrics["reward/nan_frac/b"] == 0.0
    assert metrics["reward/mean"] == pytest.approx(2.0) and metrics["reward/all_nan_frac"] == 0.0


def test_combine_drops_nan_terms_and_zeroes_all_nan_rows_with_a_warning():
    # rows: [0.5, 2] -> 1*0.5 + 2*2 = 4.5;  [1, NaN] -> 1;  [NaN, NaN] -> 0 (warned)
    scaled = np.array([[0.5, 2.0], [1.0, np.nan], [np.nan, np.nan]])
    with pytest.warns(RuntimeWarning, match="1 of 3 rollouts have no finite reward term"):
        total, metrics = combine_rewards(scaled, np.array([1.0, 2.0]), ["a", "b"])
    np.testing.assert_allclose(total, [4.5, 1.0, 0.0])
    assert metrics["reward/a/mean"] == pytest.approx(0.75) and metrics["reward/a/std"] == pytest.approx(0.25)
    assert metrics["reward/b/mean"] == 2.0 and metrics["reward/b/std"] == 0.0
    assert metrics["reward/nan_frac/a"] == pytest.approx(1 / 3) and metrics["reward/nan_frac/b"] == pytest.approx(
        2 / 3
    )
    assert metrics["reward/all_nan_frac"] == pytest.approx(1 / 3)


def test_combine_is_invariant_to_reward_order_and_has_no_warning_without_nan():
    rng = np.random.default_rng(0)
    scaled, weights = rng.normal(size=(8, 3)), rng.uniform(0.5, 2, size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total, _ = combine_rewards(scaled, weights)
        permuted, _ = combine_rewards(scaled[:, [2, 0, 1]], weights[[2, 0, 1]])
    np.testing.assert_allclose(total, permuted)
    np.testing.assert_allclose(total, (scaled * weights).sum(1))  # loop-free reference: no NaN -> a plain sum


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_score_all_rejects_non_finite_scores_unless_allow_nan(bad):
    fns = [Fixed("hpsv3", [1.0, bad])]
    with pytest.raises(RewardError, match=r"'hpsv3'.*non-finite.*images \[1\].*allow_nan"):
        score_all(fns, [RewardSpec("hpsv3")], blank(2), ["p", "q"], [{}, {}])
    with pytest.warns(RuntimeWarning, match="kept as NaN"):
        scaled = score_all(fns, [RewardSpec("hpsv3", scale=0.5, allow_nan=True)], blank(2), ["p", "q"], [{}, {}])
    assert scaled[0, 0] == 0.5 and math.isnan(scaled[1, 0])  # inf is a failure too: NaN, never a number


def test_score_all_rejects_wrong_shapes():
    with pytest.raises(RewardError, match=r"shape \(3,\), expected \(2,\)"):
        score_all([Fixed("a", [1, 2, 3])], [RewardSpec("a")], blank(2), ["p", "q"], [{}, {}])
    with pytest.raises(ValueError, match="uint8"):
        score_all([Fixed("a", [1])], [RewardSpec("a")], blank(1).astype(np.float32), ["p"], [{}])
    with pytest.raises(ValueError, match="1 prompts"):
        score_all([Fixed("a", [1, 2])], [RewardSpec("a")], blank(2), ["p"], [{}, {}])


# ------------------------------------------------------------------------------------------------ CLIP


def test_resize_shortest_edge_matches_transformers_rule():
    assert resize_shortest_edge(512, 512, 224) == (224, 224)
    assert resize_shortest_edge(48, 40, 32) == (38, 32)  # long edge int(32 * 48 / 40) = int(38.4)
    assert resize_shortest_edge(40, 100, 32) == (32, 80)


@pytest.mark.parametrize("shape", [(48, 48), (48, 40), (32, 32)])
def test_clip_preprocess_equals_the_pil_image_processor_without_centre_crop(shape):
    from transformers import CLIPImageProcessorPil

    images = np.random.default_rng(1).integers(0, 256, size=(2, *shape, 3), dtype=np.uint8)
    reference = CLIPImageProcessorPil(do_center_crop=False, size={"shortest_edge": 32})(
        images=list(images), return_tensors="pt"
    )["pixel_values"]
    ours = clip_preprocess(images, 32)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(48, 48), (48, 40)])
def test_clip_reward_is_the_cosine_of_projected_embeddings(tiny_clip, tiny_clip_dir, shape):
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(5, *shape, 3), dtype=np.uint8)
    prompts = ["a red circle", "two squares", "a red circle", "a blue triangle", "two squares"]  # repeats
    scores = tiny_clip(images, prompts, [{}] * 5)

    # By hand, through the model's submodules: u = W_v pool(vision(x)), v = W_t pool(text(p)), cos = u.v/|u||v|.
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    pixels = CLIPImageProcessorPil(do_center_crop=False, size={"shortest_edge": 32})(
        images=list(images), return_tensors="pt"
    )["pixel_values"]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        vision = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=shape[0] != shape[1])
        u = model.visual_projection(vision.pooler_output)  # (5, 16)
        text = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        v = model.text_projection(text.pooler_output)  # (5, 16)
    expected = ((u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))).double().numpy()
    assert scores.dtype == np.float64 and scores.shape == (5,)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert np.all(np.abs(scores) <= 1.0) and len(set(np.round(scores, 6))) > 1


def test_clip_truncates_prompts_to_77_tokens(tiny_clip):
    images = np.random.default_rng(3).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    head = "a red circle left of a blue square " * 4  # 144 characters: far over 77 character-level tokens
    long_a, long_b = head + "and a cat", head + "and a dog"
    same = tiny_clip(images[[0, 0]], [long_a, long_b], [{}, {}])
    assert same[0] == pytest.approx(same[1], abs=1e-6)  # the tails differ only past token 77
    different = tiny_clip(images[[0, 0]], ["a cat", "a dog"], [{}, {}])
    assert different[0] != pytest.approx(different[1], abs=1e-6)


def test_embedding_accepts_tensors_and_transformers5_output_objects():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    emb = torch.randn(2, 4)
    assert _embedding(emb) is emb
    assert _embedding(BaseModelOutputWithPooling(last_hidden_state=torch.zeros(2, 3, 4), pooler_output=emb)) is emb
    with pytest.raises(TypeError, match="pooler_output"):
        _embedding((emb,))


def test_clip_reward_class_runs_on_the_requested_device(tiny_clip):
    assert isinstance(tiny_clip, ClipReward) and tiny_clip.device == torch.device("cpu")
    assert tiny_clip.image_size == 32 and tiny_clip.max_tokens == 77
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())


def test_clip_scorer_behind_the_server_matches_the_local_reward(tiny_clip, tiny_clip_dir):
    from maskgrpo.rewards.scorers import make_clip

    images = np.random.default_rng(4).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    prompts = ["a cat", "a dog", "a bird"]
    server, url = serve_in_thread(make_clip(model_path=tiny_clip_dir, device="cpu"))
    try:
        remote = build_rewards([RewardSpec("clip_remote", entry="http", kwargs={"url": url + "/score"})])[0]
        np.testing.assert_allclose(remote(images, prompts, [{}] * 3), tiny_clip(images, prompts, [{}] * 3), atol=1e-6)
    finally:
        server.close()


# ------------------------------------------------------------------------------------------------ ShapesWorld


def test_shapes_rewards_give_one_to_ground_truth_and_zero_to_an_empty_canvas(world):
    spec, images, prompts, metas = world
    fns = build_rewards(
        [RewardSpec("shapes_geneval"), RewardSpec("shapes_geneval_strict")], context={"world_spec": spec}
    )
    for fn in fns:
        np.testing.assert_allclose(fn(images, prompts, metas), 1.0)
        empty = np.broadcast_to(np.array(spec.background, dtype=np.uint8), images.shape).copy()
        np.testing.assert_allclose(fn(empty, prompts, metas), 0.0)  # no object: every count term is 0


def test_shapes_partial_credit_is_between_strict_and_one_for_a_mirrored_position(world):
    spec, _, _, _ = world
    meta = next(
        m
        for m in enumerate_prompts(spec)
        if m["tag"] == "position" and m["include"][1]["position"][0] in ("left of", "right of")
    )
    image = render_batch([meta], spec, np.random.default_rng(5))[:, :, ::-1].copy()  # mirrored: relation flips
    partial, strict = build_rewards(
        [RewardSpec("shapes_geneval"), RewardSpec("shapes_geneval_strict")], context={"world_spec": spec}
    )
    assert strict(image, [meta["prompt"]], [meta])[0] == 0.0
    assert 0.0 < partial(image, [meta["prompt"]], [meta])[0] < 1.0  # counts are right, the position is not


def test_shapes_rewards_need_the_world_spec():
    with pytest.raises(ValueError, match=r"context\['world_spec'\]"):
        build_rewards([RewardSpec("shapes_geneval")])


# ------------------------------------------------------------------------------------------------ contract


def _contract_scorer(images, prompts, metadata):
    """Deterministic server-side scorer for the contract test: mean pixel / 255 (+ a prompt-length term)."""
    return [
        float(np.asarray(im).mean() / 255.0) + (0.001 * len(p) if prompts else 0.0)
        for im, p in zip(images, prompts or [""] * len(images))
    ]


@pytest.fixture(scope="module")
def contract_server():
    server, url = serve_in_thread(_contract_scorer)
    yield url + "/score"
    server.close()


def _offline_setup(name: str, tiny_clip_dir: str, url: str, spec: WorldSpec) -> tuple[dict, dict]:
    """(kwargs, context) that let a registered reward run offline. A new entry must be added here."""
    remote = {"url": url, "protocol": "json", "timeout": 10.0, "max_retries": 0, "max_outage_s": 0.0}
    table = {
        "clip": ({"model_path": tiny_clip_dir}, {}),
        "hpsv3": (remote, {}),
        "unifiedreward": (remote, {}),
        "geneval": (remote, {}),
        "deqa": (remote, {}),
        "http": (remote, {}),
        "shapes_geneval": ({}, {"world_spec": spec}),
        "shapes_geneval_strict": ({}, {"world_spec": spec}),
        "shapes_geneval_graded": ({}, {"world_spec": spec}),
    }
    if name not in table:
        pytest.fail(f"registered reward {name!r} has no offline setup in the contract test: add one")
    return table[name]


@pytest.mark.parametrize("name", REWARDS.names())
def test_reward_contract(name, tiny_clip_dir, contract_server, world):
    spec, images, prompts, metas = world
    kwargs, context = _offline_setup(name, tiny_clip_dir, contract_server, spec)
    (fn,) = build_rewards([RewardSpec(f"my_{name}", entry=name, kwargs=kwargs)], device="cpu", context=context)
    assert isinstance(fn, RewardFn) and fn.name == f"my_{name}"  # logged under the spec's name
    out = fn(images, list(prompts), list(metas))
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (len(images),)
    assert np.all(np.isfinite(out))
    # Deterministic and equivariant: a permuted batch gives the permuted scores; one image alone, the same score.
    perm = np.random.default_rng(0).permutation(len(images))
    again = fn(images[perm], [prompts[i] for i in perm], [metas[i] for i in perm])
    np.testing.assert_allclose(again, out[perm], atol=1e-6, rtol=0)
    np.testing.assert_allclose(fn(images[2:3], prompts[2:3], metas[2:3]), out[2:3], atol=1e-6, rtol=0)
    # Through the trainer's path: score_all applies the scale and keeps the (B, F) layout.
    scaled = score_all([fn], [RewardSpec(name, scale=0.5)], images, prompts, metas)
    np.testing.assert_allclose(scaled[:, 0], 0.5 * out)


def test_reward_max_outage_s_is_range_checked_and_reaches_every_remote_client(tmp_path):
    """``reward.max_outage_s`` (> 0, default 600) is what every HTTP reward waits for a server, through
    build_rewards' context; an entry's own ``max_outage_s`` wins."""
    from maskgrpo.config import ConfigError, load_config
    from maskgrpo.config.schema import TrainRun
    from maskgrpo.rewards.client import REMOTE_REWARDS

    assert load_config(TrainRun).reward.max_outage_s == 600.0
    config = tmp_path / "run.yaml"
    config.write_text("reward:\n  max_outage_s: 0\n")
    with pytest.raises(ConfigError, match=r"run.yaml:2: reward.max_outage_s=0.0 is out of range \(must be > 0.0\)"):
        load_config(TrainRun, config)
    cfg = load_config(TrainRun, None, ["reward.max_outage_s=42"])
    specs = [RewardSpec(name, kwargs={"url": "http://127.0.0.1:1/"}) for name in REMOTE_REWARDS]
    specs.append(RewardSpec("own", entry="hpsv3", kwargs={"max_outage_s": 5}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the pickle opt-in warning of geneval and deqa
        fns = build_rewards(specs, context={"max_outage_s": cfg.reward.max_outage_s})
    assert [fn.max_outage_s for fn in fns] == [42.0] * len(REMOTE_REWARDS) + [5.0]
