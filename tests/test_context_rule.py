"""The rule every round plan keeps (docs/method.md 3.5): a token is never trained at a slot that is visible in its own
input row. Checked on the support that actually trains (the plan: context builder + loss, as the trainer builds it),
over every registered builder; the upstream mask-count quirk is the one explicit exemption."""

import pytest
import torch
from conftest import REPO

import htgrpo_patch  # noqa: F401  (registers fully_masked and revealed_structure)
from htgrpo_patch.config import HTGRPOOptions
from maskgrpo.algo.contexts import trained_at_visible_slot
from maskgrpo.algo.plan import plan_round
from maskgrpo.algo.types import Rollouts
from maskgrpo.catalog import CONTEXTS, LOSSES
from maskgrpo.components import load_preset
from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.layout import T2IBatch

MASK, OFFSET, K = 99, 100, 32

CASES = {  # case -> (config, overrides); every registered builder appears at least once
    "random_remask (MaskGRPO)": ("toy_maskgrpo.yaml", []),
    "random_remask uniform (UniGRPO)": ("toy_unigrpo.yaml", []),
    "trace (TraceGRPO)": ("toy_tracegrpo.yaml", []),
    "trace shrink 3": ("toy_tracegrpo.yaml", ["trace.shrink=3"]),
    "fully_masked (HT-GRPO)": ("toy_htgrpo.yaml", []),
    "revealed_structure (A5)": ("toy_htgrpo.yaml", ["rl.context=revealed_structure"]),
    "random_remask upstream_count": ("toy_maskgrpo.yaml", ["remask.loss_mask=upstream_count"]),
}
EXEMPT = {"random_remask upstream_count"}
"""Upstream MaskGRPO's quirk (docs/method.md 2): every token weighted by how many of the mu masks covered it."""


def rollouts(p: int = 2, g: int = 3, n: int = 20, steps: int = 6, seed: int = 0) -> Rollouts:
    """Random rollouts: 5 text slots, n image slots, 1 closing token; ranks follow the random commit steps."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (p, n + 6), generator=gen)  # (P, T)
    pos = torch.arange(5, 5 + n)
    ids[:, pos] = MASK
    attn = torch.ones(p, n + 6, dtype=torch.bool)
    batch = T2IBatch(ids, attn, ids.clone(), attn.clone(), pos, OFFSET, K, MASK)
    codes = torch.randint(0, K, (p * g, n), generator=gen)  # (B, N)
    step = torch.randint(0, steps, (p * g, n), generator=gen)
    rank = (step * n + torch.rand(p * g, n, generator=gen).argsort(1).argsort(1)).argsort(1).argsort(1) + 1
    return Rollouts(batch, g, codes, step, torch.zeros(p * g, n), {"rank": rank})


def build(case: str):
    """(context name, context builder, loss) of a case, resolved from its config as the trainer resolves them."""
    config, overrides = CASES[case]
    cfg = load_config(TrainRun, REPO / "configs" / config, overrides)
    preset = load_preset(cfg.patch)
    name = cfg.rl.context or preset.context
    options = preset.options(cfg)
    return name, CONTEXTS.get(name)(cfg, options), LOSSES.get(cfg.rl.loss or preset.loss)(cfg, options)


def test_cases_cover_every_registered_builder():
    assert {build(case)[0] for case in CASES} == set(CONTEXTS.names())


@pytest.mark.parametrize("case", list(CASES))
def test_no_token_is_trained_at_a_slot_visible_in_its_own_row(case):
    r = rollouts()
    mu = 8
    _, context, loss = build(case)
    gens = {"context": torch.Generator().manual_seed(1), "loss": torch.Generator().manual_seed(2)}
    plan = plan_round(context, loss, r, mu, gens)
    visible = trained_at_visible_slot(r, plan)  # (mu, B, N)
    assert visible.shape == (mu, *r.codes.shape)
    assert sum(bool((u.support > 0).any()) for u in plan.updates) == mu  # every update trains some tokens
    if case in EXEMPT:  # the quirk is live: visible tokens do get loss
        assert bool(visible.any())
    else:
        assert not bool(visible.any()), f"{case}: {int(visible.sum())} trained tokens visible in their own row"


def test_revealed_structure_rows_hand_checked():
    """A5: structural tokens read the prompt's x_M row, refinement tokens their rollout's revealed row."""
    r = rollouts(p=2, g=2, n=10)
    opts = HTGRPOOptions(structure_ratio=0.3)  # K = 3
    inp = CONTEXTS.get("revealed_structure")(None, opts).build(r, 1, torch.Generator()).inputs[0]
    structure = r.extras["rank"] <= 3  # (B, N)
    assert inp.input_ids.shape[0] == 2 + 4 and inp.rows.shape == r.codes.shape  # P x_M rows + B revealed rows
    prompt = r.prompt_of_rollout()
    for i in range(4):
        assert torch.equal(inp.rows[i][structure[i]], prompt[i].expand(3))  # the shared x_M row of its prompt
        assert bool((inp.rows[i][~structure[i]] == 2 + i).all())  # its own revealed row
        own = inp.input_ids[2 + i, r.prompts.image_positions]  # (N,)
        assert torch.equal(own, torch.where(structure[i], r.image_ids()[i], MASK))
        assert torch.equal(inp.input_ids[prompt[i]], r.prompts.input_ids[prompt[i]])  # x_M with the prompt
