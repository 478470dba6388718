"""Stage selection, per-stage subset rates and per-stage metrics through ``StagedCreditLoss`` itself: its plan
for a round, then its loss on each update of that plan, with the paper's budgets 2:4:2 (docs/method.md 3.2-3.4).

The support set an update really trains on is read from the gradient: with ratio 1, A = 1 and beta = 0 every token
in S gets d loss / d logp = -w / |S| != 0 and every other token 0.
"""

import pytest
import torch
from conftest import REPO

from htgrpo_patch.config import HTGRPOOptions
from htgrpo_patch.loss import StagedCreditLoss
from maskgrpo.algo.types import ContextUpdate, LossInputs, Rollouts, RoundContexts
from maskgrpo.config import ConfigError, load_config
from maskgrpo.config.schema import TrainRun

B, L = 4, 20  # rho = 0.3 -> K = 6 structural tokens per rollout, 14 refinement tokens
STAGE_OF_M = ["global"] * 2 + ["structure"] * 4 + ["refine"] * 2  # budgets 2:4:2, m = 1..8


def ranks(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, L, generator=g).argsort(1).argsort(1) + 1  # (B, L) a permutation of 1..L per row


def run_update(loss: StagedCreditLoss, m: int, rank: torch.Tensor, seed: int = 0,
               logp_shift: torch.Tensor | None = None) -> tuple[LossInputs, torch.Tensor, dict]:  # fmt: skip
    """Update m of the loss's plan for one round (fully masked context: every token scorable in all 8 updates), and
    its loss on log-probs around a fixed pi_old: (inputs, loss, metrics)."""
    rollouts = Rollouts(None, 2, torch.zeros(B, L, dtype=torch.long), torch.zeros(B, L, dtype=torch.long),
                        torch.zeros(B, L), {"rank": rank})  # fmt: skip
    contexts = RoundContexts([], [ContextUpdate(0, torch.ones(B, L)) for _ in range(8)])
    u = loss.plan(rollouts, contexts, torch.Generator().manual_seed(100)).updates[m - 1]
    old = -torch.rand(B, L, generator=torch.Generator().manual_seed(seed)) - 0.5
    logp = (old if logp_shift is None else old + logp_shift).clone().requires_grad_(True)
    x = LossInputs(logp, old, old - 0.1, torch.ones(B), u.support, u.weight, u.stage, u.rate)
    return x, *loss(x)


def trained_tokens(opts: HTGRPOOptions, m: int, rank: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(B, L) bool: the tokens update m puts loss on (nonzero gradient), and the update's metrics."""
    x, loss, metrics = run_update(StagedCreditLoss(0.2, 0.0, "token_mean", opts), m, rank)
    loss.backward()
    return x.logp.grad != 0, metrics


def test_stage_sets_and_order_through_the_loss_2_4_2():
    """p = 1 everywhere: update m trains on exactly its stage's set, Global -> Structure -> Refinement."""
    rank = ranks()
    structure = rank <= 6
    expected = {"global": torch.ones(B, L, dtype=torch.bool), "structure": structure, "refine": ~structure}
    opts = HTGRPOOptions(budgets=(2, 4, 2), p_max=1.0, p_min=1.0)
    for m, stage in enumerate(STAGE_OF_M, start=1):
        got, _ = trained_tokens(opts, m, rank)
        assert torch.equal(got, expected[stage]), f"update {m} should train the {stage} set"


@pytest.mark.parametrize("p_max, p_min, sizes", [
    # fixed_size: |S| = ceil(p * |T_stage|) per rollout, p = p_min + (p_max - p_min) (1 - (j - 1) / (mu_stage - 1))
    # global (20 tokens) j = 1, 2: p = 1, .5 -> 20, 10; structure (6) j = 1..4: p = 1, 5/6, 2/3, 1/2 -> 6, 5, 4, 3;
    # refine (14) j = 1, 2: p = 1, .5 -> 14, 7
    (1.0, 0.5, [20, 10, 6, 5, 4, 3, 14, 7]),
    # per stage (appendix F.1 form): global .72 -> .33: ceil(14.4) = 15, ceil(6.6) = 7; structure 1 -> .3:
    # p = 1, .7667, .5333, .3 -> 6, ceil(4.6) = 5, ceil(3.2) = 4, ceil(1.8) = 2; refine .8 -> .4: ceil(11.2) = 12,
    # ceil(5.6) = 6
    ({"global": 0.72, "structure": 1.0, "refine": 0.8}, {"global": 0.33, "structure": 0.3, "refine": 0.4},
     [15, 7, 6, 5, 4, 2, 12, 6]),
])  # fmt: skip
def test_j_within_stage_and_per_stage_rates_through_the_loss(p_max, p_min, sizes):
    rank = ranks(1)
    structure = rank <= 6
    sets = {"global": torch.ones(B, L, dtype=torch.bool), "structure": structure, "refine": ~structure}
    opts = HTGRPOOptions(budgets=(2, 4, 2), p_max=p_max, p_min=p_min, subset="fixed_size")
    for m, (stage, size) in enumerate(zip(STAGE_OF_M, sizes), start=1):
        got, metrics = trained_tokens(opts, m, rank)
        assert got.sum(1).tolist() == [size] * B, f"update {m} ({stage})"
        assert not bool((got & ~sets[stage]).any())
        assert metrics[f"stage/{stage}/support_frac"].item() == pytest.approx(size / L)


def test_per_stage_metrics_are_reported_by_their_stage_only():
    """Each update reports stage/<its stage>/* and no other stage's keys; the values are its own micro-batch's."""
    rank = ranks(2)
    opts = HTGRPOOptions(budgets=(2, 4, 2), p_max=1.0, p_min=0.5)
    # structural tokens moved a lot (ratio e^0.5, clipped at 1.2 for A > 0), refinement tokens a little (e^0.05)
    shift = torch.where(rank <= 6, 0.5, 0.05)
    for m, stage in enumerate(STAGE_OF_M, start=1):
        _, loss, metrics = run_update(StagedCreditLoss(0.2, 0.01, "token_mean", opts), m, rank, logp_shift=shift)
        keys = {k for k in metrics if k.startswith("stage/")}
        assert keys == {f"stage/{stage}/{k}" for k in ("loss", "clip_frac", "ratio_mean", "ratio_max", "kl_k3",
                                                       "support_frac", "mean_weight", "p")}, m  # fmt: skip
        assert metrics[f"stage/{stage}/loss"].item() == loss.item()
        for k in ("clip_frac", "ratio_mean", "ratio_max", "kl_k3", "support_frac"):
            assert metrics[f"stage/{stage}/{k}"].item() == metrics[f"policy/{k}"].item()
        if stage == "structure":  # every trained token is structural: ratio e^0.5 = 1.6487 > 1.2, all clipped
            assert metrics["stage/structure/clip_frac"].item() == 1.0
            assert metrics["stage/structure/ratio_mean"].item() == pytest.approx(1.6487, abs=1e-4)
            assert metrics["stage/structure/mean_weight"].item() == pytest.approx(1.2)
        if stage == "refine":  # ratio e^0.05 = 1.0513 < 1.2: nothing clipped
            assert metrics["stage/refine/clip_frac"].item() == 0.0
            assert metrics["stage/refine/ratio_max"].item() == pytest.approx(1.0513, abs=1e-4)
            assert metrics["stage/refine/mean_weight"].item() == pytest.approx(0.8)
    # p reported per stage: j = 1 of every stage starts at p_max = 1
    assert run_update(StagedCreditLoss(0.2, 0.0, "token_mean", opts), 7, rank)[2]["stage/refine/p"].item() == 1.0
    assert run_update(StagedCreditLoss(0.2, 0.0, "token_mean", opts), 6, rank)[2]["stage/structure/p"].item() == 0.5


def test_per_stage_rates_from_yaml_are_validated(tmp_path):
    def opts(text: str):
        path = tmp_path / "c.yaml"
        path.write_text(f"base: {REPO / 'configs/toy_htgrpo.yaml'}\npatch_options:\n{text}")
        cfg = load_config(TrainRun, path)
        return cfg.patch_options.build(HTGRPOOptions, "patch_options."), path

    o, _ = opts("  p_max: {global: 1.0, structure: 1.0, refine: 0.8}\n  p_min: 0.4\n")
    assert o.rates("refine") == (0.8, 0.4) and o.rates("global") == (1.0, 0.4)
    assert opts("  p_max: 0.9\n")[0].rates("structure") == (0.9, 0.5)  # one pair for every stage (the default form)
    with pytest.raises(ConfigError, match=r"c.yaml:5: unknown key 'patch_options.p_max.refin'.*p_max.refine"):
        opts("  p_max:\n    global: 1.0\n    refin: 0.8\n")
    with pytest.raises(ConfigError, match=r"c.yaml:6: patch_options.p_min.refine=1.5 is out of range"):
        opts("  p_min:\n    global: 0.5\n    structure: 0.5\n    refine: 1.5\n")
    with pytest.raises(ConfigError, match=r"p_max per stage must give every stage.*missing \['refine'\]"):
        opts("  p_max: {global: 1.0, structure: 1.0}\n")
    with pytest.raises(ConfigError, match=r"p_min \(0.9\) must be <= p_max \(0.8\) for stage 'refine'"):
        opts("  p_max: {global: 1.0, structure: 1.0, refine: 0.8}\n  p_min: 0.9\n")


def test_one_round_logs_each_stage_over_its_own_updates(toy_base_dir, tmp_path):
    """End to end (trainer + loss): budgets 1:1:1 and p = 1, so each stage's update trains its whole set and the
    round's stage/<stage>/* values are that stage's own (the trainer averages a key over the micro-batches that
    reported it). 64 image tokens, K = floor(0.3 * 64) = 19."""
    from test_htgrpo_patch import TOY_HT, run_inprocess, tiny

    unit = {"patch_options.budgets": [1, 1, 1], "patch_options.p_max": 1.0, "patch_options.p_min": 1.0}
    _, m, _ = run_inprocess(TOY_HT, tiny(toy_base_dir, tmp_path / "run", **unit))
    assert m["stage/global/support_frac"] == pytest.approx(1.0)
    assert m["stage/structure/support_frac"] == pytest.approx(19 / 64)
    assert m["stage/refine/support_frac"] == pytest.approx(45 / 64)
    assert m["stage/global/mean_weight"] == pytest.approx((19 * 1.2 + 45 * 0.8) / 64)
    assert m["stage/structure/mean_weight"] == pytest.approx(1.2)
    assert m["stage/refine/mean_weight"] == pytest.approx(0.8)
    assert m["stage/structure/p"] == m["stage/refine/p"] == pytest.approx(1.0)
