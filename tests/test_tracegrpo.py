"""TraceGRPO's trajectory context [Trace] (method.md 4) and the TraceGRPO / UniGRPO baseline configs (method.md 2)."""

import math
from pathlib import Path

import pytest
import torch
from conftest import REPO
from forward_counts import rollout_forwards
from safetensors.torch import load_file
from test_htgrpo_patch import run_inprocess, tiny

from maskgrpo.algo.trace import TraceContext, trajectory_rows
from maskgrpo.algo.types import Rollouts
from maskgrpo.catalog import CONTEXTS
from maskgrpo.config import ConfigError, load_config, to_dict
from maskgrpo.config.schema import TrainRun
from maskgrpo.layout import T2IBatch

TOY_TRACE, TOY_UNI = REPO / "configs/toy_tracegrpo.yaml", REPO / "configs/toy_unigrpo.yaml"
TOY_MG = REPO / "configs/toy_maskgrpo.yaml"
MASK, OFFSET, K = 99, 100, 32


def _rollouts(commit_step: torch.Tensor, group_size: int, seed: int = 0) -> Rollouts:
    """Synthetic rollouts around ``commit_step`` (B, N): random text rows, 5 text slots, N image slots, 1 closing."""
    g = torch.Generator().manual_seed(seed)
    b, n = commit_step.shape
    p = b // group_size
    ids = torch.randint(0, 50, (p, n + 6), generator=g)  # (P, T)
    pos = torch.arange(5, 5 + n)
    ids[:, pos] = MASK
    attn = torch.ones(p, n + 6, dtype=torch.bool)
    batch = T2IBatch(ids, attn, ids.clone(), attn.clone(), pos, OFFSET, K, MASK)
    codes = torch.randint(0, K, (b, n), generator=g)
    return Rollouts(batch, group_size, codes, commit_step, torch.zeros(b, n))


def _random_commit(b: int, n: int, steps: int, seed: int = 1) -> torch.Tensor:
    """(B, N) random commit steps in [0, steps), step 0 always used (some later steps may stay empty)."""
    c = torch.randint(0, steps, (b, n), generator=torch.Generator().manual_seed(seed))
    c[:, 0] = 0
    return c


def test_registered_and_factory_reads_trace_shrink():
    cfg = load_config(TrainRun, TOY_TRACE, ["trace.shrink=3"])
    ctx = CONTEXTS.get("trace")(cfg, None)
    assert isinstance(ctx, TraceContext) and ctx.shrink == 3
    with pytest.raises(ConfigError, match="trace.shrink"):
        load_config(TrainRun, TOY_TRACE, ["trace.shrink=0"])
    with pytest.raises(ValueError, match="shrink"):
        TraceContext(0)


def test_trajectory_rows_hand_computed():
    # one rollout, commit steps [2, 0, 1, 0], shrink 1 -> groups {0, 1, 2} -> rows [2, 0, 1, 0], starts [0, 1, 2];
    # row 0 = x_M, row 1 shows the step-0 tokens (k = 1, 3), row 2 also the step-1 token (k = 2); k = 0 never visible
    r = _rollouts(torch.tensor([[2, 0, 1, 0]]), group_size=1)
    rows, row_rollout, row_start = trajectory_rows(r.commit_step, 1)
    assert rows.tolist() == [[2, 0, 1, 0]] and row_rollout.tolist() == [0, 0, 0] and row_start.tolist() == [0, 1, 2]
    ctx = TraceContext(1).build(r, 2, torch.Generator())
    img = ctx.inputs[0].input_ids[:, r.prompts.image_positions]  # (3, 4)
    c = r.image_ids()[0].tolist()
    assert img.tolist() == [[MASK] * 4, [MASK, c[1], MASK, c[3]], [MASK, c[1], c[2], c[3]]]


@pytest.mark.parametrize("shrink", [1, 2, 3, 5])
def test_no_future_token_in_any_context(shrink):
    """For every token k, its context is exactly the sampler state before its group's first step: a slot is visible
    (showing the rollout's code) iff it was committed strictly before that step, so nothing committed later or in
    the same step (group) leaks in; text slots are the prompt's."""
    steps, g = 6, 3
    r = _rollouts(_random_commit(2 * g, 16, steps), g)
    inp = TraceContext(shrink).build(r, 1, torch.Generator()).inputs[0]
    pos, prompt = r.prompts.image_positions, r.prompt_of_rollout()
    text = torch.ones(inp.input_ids.shape[1], dtype=torch.bool)
    text[pos] = False
    for b in range(r.num_rollouts):
        for k in range(r.codes.shape[1]):
            row = inp.input_ids[inp.rows[b, k]]  # (T,)
            start = (int(r.commit_step[b, k]) // shrink) * shrink
            for j in range(r.codes.shape[1]):
                visible = int(r.commit_step[b, j]) < start
                assert int(row[pos[j]]) == (int(r.image_ids()[b, j]) if visible else MASK), (b, k, j)
            assert int(row[pos[k]]) == MASK  # the token itself is never visible in its own context
            assert torch.equal(row[text], r.prompts.input_ids[prompt[b]][text])
            assert bool(inp.attention_mask[inp.rows[b, k]].equal(r.prompts.attention_mask[prompt[b]]))


@pytest.mark.parametrize("shrink", [1, 2, 4])
def test_every_token_in_exactly_one_loss_group(shrink):
    steps, g, mu = 8, 2, 3
    r = _rollouts(_random_commit(2 * g, 24, steps, seed=3), g)
    ctx = TraceContext(shrink).build(r, mu, torch.Generator())
    inp = ctx.inputs[0]
    rows, r_count = inp.rows, inp.input_ids.shape[0]
    assert rows.shape == r.codes.shape and rows.dtype == torch.long  # one row per token: exactly one group
    assert int(rows.min()) >= 0 and int(rows.max()) < r_count
    counts = torch.bincount(rows.flatten(), minlength=r_count)
    assert int(counts.sum()) == r.codes.numel() and bool((counts > 0).all())  # union = all tokens once, no empty row
    _, row_rollout, row_start = trajectory_rows(r.commit_step, shrink)
    for b in range(r.num_rollouts):  # a row serves one rollout and one step group
        assert bool((row_rollout[rows[b]] == b).all())
        assert torch.equal(row_start[rows[b]], (r.commit_step[b] // shrink) * shrink)
    expected = {(b, int(s) // shrink) for b in range(r.num_rollouts) for s in r.commit_step[b]}
    assert r_count == len(expected)  # empty groups get no row
    assert len(ctx.updates) == mu
    assert all(u.input_index == 0 and torch.equal(u.scorable, torch.ones_like(u.scorable)) for u in ctx.updates)


def test_first_group_context_is_the_fully_masked_canvas():
    g = 3
    r = _rollouts(_random_commit(2 * g, 16, 6), g)
    for shrink in (1, 2, 6, 100):
        inp = TraceContext(shrink).build(r, 1, torch.Generator()).inputs[0]
        first = inp.rows.gather(1, r.commit_step.argmin(1, keepdim=True)).squeeze(1)  # (B,) row of a step-0 token
        ids = inp.input_ids[first]  # (B, T)
        assert bool((ids[:, r.prompts.image_positions] == MASK).all())
        assert torch.equal(ids, r.prompts.input_ids[r.prompt_of_rollout()])  # x_M with the prompt, exactly
    one = TraceContext(100).build(r, 1, torch.Generator()).inputs[0]  # shrink >= T: one x_M context per rollout
    assert one.input_ids.shape[0] == r.num_rollouts and torch.equal(
        one.rows, torch.arange(2 * g)[:, None].expand(-1, 16)
    )


def test_shrink_groups_consecutive_steps():
    b, n, steps = 4, 12, 4
    commit = torch.arange(n).repeat(b, 1) % steps  # every step used by every rollout
    r = _rollouts(commit, 2)
    for shrink, starts in ((1, [0, 1, 2, 3]), (2, [0, 2]), (3, [0, 3]), (4, [0])):
        rows, row_rollout, row_start = trajectory_rows(commit, shrink)
        n_groups = math.ceil(steps / shrink)
        assert row_start.tolist() == starts * b and row_rollout.tolist() == [i for i in range(b) for _ in starts]
        assert TraceContext(shrink).build(r, 1, torch.Generator()).inputs[0].input_ids.shape[0] == b * n_groups


# ---- in-process trainer rounds on the tiny toy base ----------------------------------------------------------------


def _round(config: Path, overrides: list[str]):
    """One in-process round (the trainer's single-process rendezvous leaves os.environ untouched)."""
    return run_inprocess(config, overrides)


def _distinct_rows(commit_step: torch.Tensor, shrink: int) -> int:
    """Non-empty (rollout, step group) pairs, counted directly from the commit steps."""
    return len({(b, int(s) // shrink) for b in range(commit_step.shape[0]) for s in commit_step[b]})


@pytest.fixture(scope="module")
def trace_round(toy_base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trace")
    return _round(TOY_TRACE, tiny(toy_base_dir, out, **{"rollout.num_steps": 4, "trace.shrink": 2}))


def test_trace_round_forward_counts_and_finite_loss(trace_round, toy_base_dir):
    trainer, m, rollouts = trace_round
    P, G, mu, shrink, steps = 2, 3, 3, 2, 4
    assert trainer.parts.names["context"] == "trace" and trainer.parts.names["loss"] == "grpo"
    rows = _distinct_rows(rollouts.commit_step, shrink)
    assert rows == P * G * math.ceil(steps / shrink)  # this seeded round leaves no step group empty
    assert m["perf/forwards_update"] == mu * rows  # T / shrink forwards per rollout per update
    assert m["perf/forwards_old_ref"] == 2 * rows  # old + ref: every trajectory context once per round
    # T x (cond + uncond), each distinct row once
    assert m["perf/forwards_rollout"] == rollout_forwards(rollouts, steps, trainer.cfg.rl.rollout_batch_size)
    assert math.isfinite(m["loss/policy"]) and m["policy/support_frac"] == 1.0
    before = load_file(Path(toy_base_dir) / "model" / "model.safetensors")
    params = dict(trainer.policy.named_parameters())
    assert any(not torch.equal(before[k], params[k].detach()) for k in before)  # the round did train


@pytest.mark.parametrize("shrink", [1, 2, 3])
def test_trainer_logp_equals_per_token_loop(trace_round, shrink):
    """Vectorised: the trainer's ``_logp`` (one forward per distinct row of the micro-batch, per-token gather).
    Loop reference: for every token, rebuild its sampler state from the commit steps and run the model alone on it
    (full vocabulary head, sliced afterwards)."""
    trainer, _, r = trace_round
    model = trainer.policy
    model.eval()
    inp = TraceContext(shrink).build(r, 1, torch.Generator()).inputs[0]
    p, g = r.prompts, r.group_size
    with torch.no_grad():
        vec = torch.cat([trainer._logp(model, r, inp, torch.arange(s, s + g)) for s in range(0, r.num_rollouts, g)])
        ref = torch.empty_like(vec)
        for b in range(r.num_rollouts):
            prompt = int(r.prompt_of_rollout()[b])
            for k in range(r.codes.shape[1]):
                start = (int(r.commit_step[b, k]) // shrink) * shrink
                ids = p.input_ids[prompt].clone()
                ids[p.image_positions] = torch.where(r.commit_step[b] >= start, p.mask_id, r.image_ids()[b])
                logits = model(input_ids=ids[None], attention_mask=p.attention_mask[prompt][None]).logits
                z = logits[0, p.image_positions[k], p.code_offset : p.code_offset + p.codebook_size]  # (K,)
                ref[b, k] = torch.log_softmax(z.float(), -1)[r.codes[b, k]]
    torch.testing.assert_close(vec, ref, rtol=1e-5, atol=1e-5)


def test_unigrpo_round_runs(toy_base_dir, tmp_path):
    P, G, mu = 2, 3, 3
    trainer, m, _ = _round(TOY_UNI, tiny(toy_base_dir, tmp_path / "uni"))
    assert trainer.parts.names["context"] == "random_remask" and trainer.cfg.remask.schedule == "uniform"
    assert m["perf/forwards_update"] == mu * P * G and math.isfinite(m["loss/policy"])


# ---- configs ------------------------------------------------------------------------------------------------------


def test_baseline_configs_resolve_to_expected_components(toy_base_dir):
    from maskgrpo.components import resolve_components

    def names(config):
        return resolve_components(load_config(TrainRun, config, [f"backbone.path={toy_base_dir}"]), "cpu").names

    trace, uni = names(TOY_TRACE), names(TOY_UNI)
    assert (trace["preset"], trace["sampler_wrapper"], trace["context"], trace["loss"]) == (
        "maskgrpo", "none", "trace", "grpo")  # fmt: skip
    assert (uni["preset"], uni["sampler_wrapper"], uni["context"], uni["loss"]) == (
        "maskgrpo", "none", "random_remask", "grpo")  # fmt: skip


def test_baseline_configs_differ_from_maskgrpo_only_where_stated():
    mg = to_dict(load_config(TrainRun, TOY_MG, []))
    trace, uni = to_dict(load_config(TrainRun, TOY_TRACE, [])), to_dict(load_config(TrainRun, TOY_UNI, []))
    assert {k for k in mg if trace[k] != mg[k]} == {"rl"}  # trace.shrink = 1 is the default
    assert {k for k in mg["rl"] if trace["rl"][k] != mg["rl"][k]} == {"context", "loss"}
    assert (trace["rl"]["context"], trace["rl"]["loss"], trace["trace"]["shrink"]) == ("trace", "grpo", 1)
    assert {k for k in mg if uni[k] != mg[k]} == {"remask"}
    assert (uni["remask"]["schedule"], uni["remask"]["min_mask_rate"], uni["remask"]["loss_mask"]) == (
        "uniform", 0.0, "current")  # fmt: skip
