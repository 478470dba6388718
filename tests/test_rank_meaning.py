"""eval.rank_meaning: rank / sampled log-prob statistics (README, "Ranks and the rollout sampler")."""

import pytest
import torch

from eval.rank_meaning import main, rank_logp_stats


def test_rank_logp_stats_hand_computed():
    rank = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])
    logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-1.0, -2.0, -3.0, -4.0]])
    # row 0: earlier = surer -> corr -1; row 1: earlier = less sure -> +1; mean 0
    s = rank_logp_stats(rank, logp, 0.5)  # K = 2
    assert s["corr"] == pytest.approx(0.0)
    # structural (rank <= 2): row 0 positions 0, 1 (-1, -2), row 1 positions 2, 3 (-3, -4) -> mean -2.5; rest -2.5
    assert s["logp_structural"] == pytest.approx(-2.5) and s["logp_refine"] == pytest.approx(-2.5)
    assert rank_logp_stats(rank[:1], logp[:1], 0.5)["corr"] == pytest.approx(-1.0)


def test_cli_prints_one_row_per_sampler(toy_base_dir, capsys):
    assert main(["--model-path", toy_base_dir, "--prompts", "2", "--group", "2", "--steps", "3"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| emerge") or
            line.startswith("| maskgit")]  # fmt: skip
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("emerge", "x_M"), ("emerge", "at commit"),
                                                          ("maskgit", "x_M"), ("maskgit", "at commit")]  # fmt: skip
    # the maskgit "at commit" row, recomputed on an independent path: the same seeded ranked rollouts, then numpy's
    # Pearson correlation per rollout, averaged (the CLI prints it rounded to 3 decimals)
    import numpy as np

    import htgrpo_patch  # noqa: F401
    from htgrpo_patch.ranked_sampler import RankedSampler
    from maskgrpo.catalog import BACKBONES
    from maskgrpo.sampling import build_sampler

    backbone = BACKBONES.get("shapes")(toy_base_dir, dtype=torch.float32, device="cpu")
    batch = backbone.prompt_batch([m["prompt"] for m in backbone.train_prompts[:2]]).repeat_interleave(2)
    with torch.no_grad():
        out = RankedSampler(build_sampler("maskgit", num_steps=3, cfg_scale=3.5), "random").sample(
            backbone.model, batch, torch.Generator().manual_seed(0))  # fmt: skip
    rank, logp = out.extras["rank"].numpy(), out.logp_at_commit.double().numpy()
    corr = np.mean([np.corrcoef(rank[i], logp[i])[0, 1] for i in range(len(rank))])
    assert float(rows[3][3]) == pytest.approx(corr, abs=5e-4)
