"""Rank diagnostics (eval/rank_diagnostics.py): the pure functions by hand, and a real run on the tiny toy base."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fixtures_toy import model_args, toy_final_dir
from PIL import Image

from eval.rank_diagnostics import (
    bucket_means,
    code_entropy,
    future_fraction,
    grid_neighbours,
    main,
    object_slots,
    plot,
    plot_title,
    rank_buckets,
    summarize,
    table,
)
from maskgrpo.errors import RunError


def test_future_fraction_hand_computed_prop_c2():
    # 2 x 2 grid, slot k committed at step k; slots 0 and 2 visible, 1 and 3 re-masked (scored).
    commit = torch.tensor([[0, 1, 2, 3]])
    visible = torch.tensor([[True, False, True, False]])
    frac = future_fraction(commit, visible, ~visible, grid_neighbours(4, "all"))
    # slot 1 (step 1) sees slots 0 (step 0) and 2 (step 2): one of two is later -> 0.5
    # slot 3 (step 3) sees slots 0 and 2, both earlier -> 0.0; visible slots are not scored -> NaN
    assert torch.isnan(frac[0, 0]) and torch.isnan(frac[0, 2])
    assert frac[0, 1].item() == 0.5 and frac[0, 3].item() == 0.0
    # 3 x 3 grid, 8-neighbourhood: centre slot 4 (step 1) sees the 8 others; steps 0 0 0 / 0 . 2 / 2 2 2
    commit = torch.tensor([[0, 0, 0, 0, 1, 2, 2, 2, 2]])
    visible = torch.ones(1, 9, dtype=torch.bool)
    visible[0, 4] = False
    frac = future_fraction(commit, visible, ~visible, grid_neighbours(9, "adjacent"))
    assert frac[0, 4].item() == pytest.approx(4 / 8)  # slots 5, 6, 7, 8 were committed after it
    # no visible neighbour at all (the fully masked context): NaN, never 0/0
    assert torch.isnan(future_fraction(commit, torch.zeros(1, 9, dtype=torch.bool), torch.ones(1, 9, dtype=torch.bool),
                                       grid_neighbours(9, "all"))).all()  # fmt: skip


def test_grid_neighbours_buckets_entropy_and_object_slots():
    adj = grid_neighbours(9, "adjacent")
    assert adj.sum(1).tolist() == [3, 5, 3, 5, 8, 5, 3, 5, 3] and not adj.diagonal().any()
    with pytest.raises(ValueError, match="square grid"):
        grid_neighbours(6, "adjacent")
    rank = torch.arange(1, 11)[None]  # N = 10, 5 buckets -> two ranks per bucket, bucket 0 = ranks 1, 2
    assert rank_buckets(rank, 5).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]]
    vals, buckets = torch.arange(10.0)[None], rank_buckets(rank, 5)
    assert bucket_means(vals, torch.ones(1, 10, dtype=torch.bool), buckets, 5) == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert math.isnan(bucket_means(vals, torch.zeros(1, 10, dtype=torch.bool), buckets, 5)[0])
    # uniform over 4 codes: ln 4; a one-hot-like distribution: ~0
    assert code_entropy(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert code_entropy(torch.tensor([50.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-12)
    labels = np.zeros((1, 4, 4), dtype=int)  # 2 x 2 patches of 2 x 2 px; one coloured pixel in the last patch
    labels[0, 3, 3] = 2
    labels[0, 0, 1] = -1  # an unassigned (blended) pixel is not an object
    assert object_slots(labels, 2).tolist() == [[False, False, False, True]]


def test_summarize_hand_computed_fractions_gaps_and_object_shares(monkeypatch):
    """summarize() on two hand-made rollouts of a 2 x 2 grid (N = 4, 2 rank buckets, rho = 0.5 -> k = 2)."""
    # rollout 0 commits slot s at step s; rollout 1 commits slots 0 and 1 together (step 1; slot 0 ranked first)
    commit = torch.tensor([[0, 1, 2, 3], [1, 1, 2, 3]])
    scored = torch.tensor([[False, True, False, True], [True, False, False, True]])  # one re-masking update
    logp = torch.tensor([[0.0, -2.0, 0.0, -6.0], [-4.0, 0.0, 0.0, -6.0]])  # its log pi(x | context)
    chunk = {"codes": torch.zeros(2, 4, dtype=torch.long), "commit": commit, "rank": torch.tensor([[1, 2, 3, 4]] * 2),
             "entropy": torch.tensor([[4.0, 3.0, 2.0, 1.0]] * 2), "true": torch.zeros(2, 4),
             "full": torch.tensor([[-1.0, -1.0, -3.0, -5.0]] * 2), "replay_diff": 1e-6,
             "remask": [(scored, logp)]}  # fmt: skip
    # 1-pixel patches; rollout 0 shows an object on slot 0 only (-1 = unassigned pixel, not an object), rollout 1 none
    labels = np.array([[[3, 0], [0, -1]], [[0, 0], [-1, 0]]])

    class Detector:
        def __init__(self, spec) -> None:
            pass

        def segment(self, image: np.ndarray) -> np.ndarray:
            return image

    class Backbone:
        spec = type("Spec", (), {"patch": 1})()

        def decode(self, codes: torch.Tensor) -> np.ndarray:
            return labels

    monkeypatch.setattr("maskgrpo.toy.shapes_eval.ShapesDetector", Detector)
    res = summarize([chunk], Backbone(), num_buckets=2, structure_ratio=0.5)
    # buckets: ranks 1-2 -> 0, ranks 3-4 -> 1
    assert res["entropy"] == [3.5, 1.5]  # (4 + 3) / 2, (2 + 1) / 2
    assert res["gap_fully_masked"] == [1.0, 4.0] and res["signed_gap_fully_masked"] == [-1.0, -4.0]
    # scored tokens: rollout 0 slots 1 (bucket 0, |-2|) and 3 (bucket 1, |-6|); rollout 1 slots 0 (bucket 0, |-4|), 3
    assert res["gap_random_remask"] == [3.0, 6.0] and res["signed_gap_random_remask"] == [-3.0, -6.0]
    # visible neighbours committed at a later step: rollout 0 slot 1 sees slots 0, 2 -> 1/2, slot 3 sees 0, 2 -> 0;
    # rollout 1 slot 0 sees 1 (same step: not later), 2 -> 1/2, slot 3 sees 1, 2 -> 0. On 2 x 2 every slot is adjacent.
    c = res["contamination"]
    for kind in ("all", "adjacent"):
        assert c[kind] == [0.5, 0.0]  # (1/2 + 1/2) / 2, (0 + 0) / 2
        assert c[f"{kind}_overall"] == 0.25 and c[f"{kind}_per_update"] == [0.25]  # (1/2 + 0 + 1/2 + 0) / 4
    s = res["structure"]
    assert s["num_structural"] == 2 and s["mean_rank_grid"] == [[1.0, 2.0], [3.0, 4.0]]
    # 1 object slot of 8; structural slots 0, 1 of both rollouts: 1 of 4 on an object; refinement slots: 0 of 4
    assert s["object_slot_frac"] == 1 / 8 and s["structural_on_object_frac"] == 1 / 4
    assert s["refinement_on_object_frac"] == 0.0
    assert s["mean_rank_object"] == 1.0 and s["mean_rank_background"] == pytest.approx(19 / 7)  # (2+3+4+1+2+3+4) / 7
    assert res["replay_max_abs_logp_diff"] == 1e-6 and res["num_rollouts"] == 2 and res["num_tokens"] == 4


@pytest.mark.parametrize("sampler", ["emerge", "maskgit"])
def test_rank_diagnostics_on_the_tiny_base(tmp_path, capsys, sampler):
    out = tmp_path / sampler
    args = [*model_args(), "--sampler", sampler, "--steps", "3", "--prompts-per-tag", "1", "--samples", "2",
            "--updates", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    res = json.loads((out / "rank_diagnostics.json").read_text())
    assert (out / "rank_diagnostics.png").stat().st_size > 0
    n_b = res["num_buckets"]
    assert res["num_rollouts"] == 6 * 2 and n_b == 10
    # the replayed trajectory reproduces the sampler's own log p_s(x) at every commit
    assert res["replay_max_abs_logp_diff"] < 1e-4
    curves = [res["entropy"], res["gap_fully_masked"], res["gap_random_remask"], res["contamination"]["all"],
              res["contamination"]["adjacent"], res["signed_gap_fully_masked"]]  # fmt: skip
    assert all(len(c) == n_b and all(math.isfinite(v) for v in c) for c in curves)
    # bucket 0 = tokens of the first step: most visible tokens come later; the last bucket's come earlier or with it
    assert res["contamination"]["all"][0] > 0.5 > res["contamination"]["all"][-1]
    s = res["structure"]
    assert s["num_structural"] == math.floor(0.3 * res["num_tokens"]) and len(s["mean_rank_grid"]) == 8
    # every rollout ranks its N tokens 1..N, so exactly k of them are structural: the object share of all slots is
    # the k-weighted mix of the structural and refinement shares (fails if "structural" is not the k first ranks)
    n, k = res["num_tokens"], s["num_structural"]
    mix = (k * s["structural_on_object_frac"] + (n - k) * s["refinement_on_object_frac"]) / n
    assert s["object_slot_frac"] == pytest.approx(mix, abs=1e-12)
    assert sorted(res["settings"]) == sorted(["model", "sampler", "seed", "prompts_per_tag", "captions", "samples",
                                              "updates", "min_mask_rate", "seconds"])  # fmt: skip
    printed = capsys.readouterr().out
    assert f"/ {sampler} | 12 |" in printed
    assert table({"x": res}).splitlines()[2].startswith("| x | 12 | ")


def test_heat_map_has_a_labelled_colour_bar_and_the_title_names_the_model_as_given(tmp_path):
    out = tmp_path / "diag"
    assert main([*model_args(), "--steps", "2", "--prompts-per-tag", "1", "--samples", "1", "--updates", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    res = json.loads((out / "rank_diagnostics.json").read_text())
    fig = plot(res, tmp_path / "again.png", plot_title(res))
    heat, bar = fig.axes[3], fig.axes[4]  # four panels + the colour bar of the heat map
    assert len(fig.axes) == 5 and heat.images and bar.get_ylabel().startswith("mean generation rank (1 = first")
    assert f"{res['num_tokens']} = last" in bar.get_ylabel()
    assert heat.get_xlabel().startswith("slot column") and heat.get_ylabel().startswith("slot row")
    base = model_args()[model_args().index("--model-path") + 1]
    assert fig._suptitle.get_text().startswith(f"Rank diagnostics, base {base}, sampler emerge")
    # a checkpoint is named as given, with the base its run was trained from (final/backbone.json)
    final = toy_final_dir()
    rec = {**res, "settings": {**res["settings"], "model": {"checkpoint": "runs/x", "base": "assets/toy_base"}}}
    assert plot_title(rec).startswith("Rank diagnostics, checkpoint runs/x (base assets/toy_base)")
    assert main(["--checkpoint", str(final), "--steps", "2", "--prompts-per-tag", "1", "--samples", "1",
                 "--updates", "1", "--device", "cpu", "--out", str(tmp_path / "ck")]) == 0  # fmt: skip
    model = json.loads((tmp_path / "ck" / "rank_diagnostics.json").read_text())["settings"]["model"]
    assert model["checkpoint"] == str(final)
    assert model["base"] == json.loads((final / "backbone.json").read_text())["path"]


def test_replot_redraws_from_the_json_and_names_a_bad_file(tmp_path):
    out = tmp_path / "diag"
    assert main([*model_args(), "--steps", "2", "--prompts-per-tag", "1", "--samples", "1", "--updates", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    record = tmp_path / "copy.json"
    record.write_text((out / "rank_diagnostics.json").read_text())
    assert main(["--replot", str(record)]) == 0
    with Image.open(tmp_path / "copy.png") as im, Image.open(out / "rank_diagnostics.png") as ref:
        assert im.size == ref.size
    bad = tmp_path / "bad.json"
    bad.write_text('{"entropy": [1.0]}')
    with pytest.raises(RunError, match=r"bad.json: not a rank_diagnostics.json record \(KeyError"):
        main(["--replot", str(bad)])
    assert not (tmp_path / "bad.png").exists()
