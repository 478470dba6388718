"""The trainer's round (old / reference log-probs + inner updates) against a straightforward reference loop.

The trainer batches rows, forwards a context row shared by several rollouts once, and groups micro-batches into one
backward. None of that may change what a round computes: on the same seeded rollouts, contexts and advantages, the
reference below (plain torch model, no DeepSpeed, one forward per rollout, one backward per micro-batch, torch AdamW
+ global-norm clipping) must give the same old / reference log-probs and the same per-round metrics to 1e-6, and the
same weights (to 1e-5, see the test). Metrics reduce as the loss declares (``reductions``; mean over the
micro-batches that reported the key unless the loss names another reduction).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, UNSET, tiny_run

from maskgrpo.algo.equations import code_logprobs
from maskgrpo.algo.metric_reduce import RoundMetrics
from maskgrpo.algo.types import LossInputs, ModelInput
from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.forward_plan import forward_groups
from maskgrpo.models import LLaDAModelLM

P, G, MU = 4, 3, 4


def make_trainer(config: str, base: str, out: Path, *extra: str):
    from maskgrpo.train import Trainer

    sizes = {"prompts.per_round": P, "rl.group_size": G, "rl.num_inner_updates": MU, "checkpoint.every": 0,
             "log.image_every": 0}  # fmt: skip
    keep = dict.fromkeys(("rl.micro_batch_prompts", "log.images_in_grid", "log.rollout_table"), UNSET)  # the YAML's
    args = tiny_run(base, out, rounds=UNSET, **sizes, **keep)
    return Trainer(load_config(TrainRun, REPO / "configs" / config, [*args, *extra]), resume=False)


def plain_copy(trainer) -> LLaDAModelLM:
    """A plain torch copy of the policy's current weights (no DeepSpeed, no hooks)."""
    src = trainer.backbone.model
    model = LLaDAModelLM(src.config)
    model.load_state_dict({k: v.detach().clone() for k, v in src.state_dict().items()})
    return model


def rowwise_logp(model: torch.nn.Module, rollouts, inp: ModelInput, idx: list[int]) -> torch.Tensor:
    """log-probs (b, N) of rollouts ``idx``: every input row a rollout reads is forwarded alone (no sharing)."""
    p = rollouts.prompts
    out = []
    for i in idx:
        rows = inp.rows[i] if inp.rows.dim() == 2 else inp.rows[i].expand(rollouts.codes.shape[1])  # (N,)
        uniq, local = torch.unique(rows, return_inverse=True)
        logits = torch.cat([
            model(input_ids=inp.input_ids[u : u + 1], attention_mask=inp.attention_mask[u : u + 1],
                  logits_at=p.image_positions, vocab_slice=(p.code_offset, p.code_offset + p.codebook_size)).logits
            for u in uniq.tolist()
        ])  # fmt: skip  # (u, N, K)
        out.append(code_logprobs(logits, rollouts.codes[i : i + 1], local[None, :]))  # (1, N)
    return torch.cat(out)  # (b, N)


def reference_round(trainer, model: LLaDAModelLM, rollouts, plan, adv: torch.Tensor):
    """Old / ref log-probs and the plan's mu inner updates the obvious way; returns (old, ref, metrics, model)."""
    cfg = trainer.cfg
    b = rollouts.num_rollouts
    everyone = list(range(b))
    with torch.no_grad():
        model.eval()
        old = [rowwise_logp(model, rollouts, inp, everyone) for inp in plan.inputs]
        ref = [o.clone() for o in old]  # full fine-tuning: the reference is the base = the policy before any step
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay)  # fmt: skip
    mb = cfg.rl.micro_batch_prompts * cfg.rl.group_size
    batches = [list(range(s, min(s + mb, b))) for s in range(0, b, mb)]
    seen: dict[str, list[float]] = {}
    model.train()
    grad_norm = None
    for u in plan.updates:
        i = u.input_index
        for sel in batches:
            t = torch.tensor(sel)
            x = LossInputs(
                logp=rowwise_logp(model, rollouts, plan.inputs[i], sel), old_logp=old[i][t], ref_logp=ref[i][t],
                advantages=adv[t], support=u.support[t], weight=u.weight[t], stage=u.stage, rate=u.rate,
            )  # fmt: skip
            loss, metrics = trainer.parts.loss(x)
            (loss / len(batches)).backward()
            metrics["loss/policy"] = loss.detach()
            for k, v in metrics.items():
                seen.setdefault(k, []).append(float(v))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
        opt.step()
        opt.zero_grad()
    reduce = {"mean": lambda v: sum(v) / len(v), "max": max}
    out = {k: reduce[trainer.parts.loss.reductions.get(k, "mean")](v) for k, v in seen.items()}
    out["loss/grad_norm"] = grad_norm
    return old, ref, out, model


@pytest.mark.parametrize(
    "config, micro_batch_prompts",
    [("toy_maskgrpo.yaml", 1), ("toy_htgrpo.yaml", 1), ("toy_htgrpo.yaml", 2), ("toy_tracegrpo.yaml", 2)],
)
def test_round_equals_the_reference_loop(toy_base_dir, tmp_path, config, micro_batch_prompts) -> None:
    extra = [f"rl.micro_batch_prompts={micro_batch_prompts}"]
    if config == "toy_htgrpo.yaml":
        extra.append("patch_options.budgets=[1,2,1]")
    tr = make_trainer(config, toy_base_dir, tmp_path / "run", *extra)
    rollouts = tr.rollout(tr.stream.take(0, P))
    plan = tr.plan(rollouts)
    adv = torch.randn(rollouts.num_rollouts, generator=torch.Generator().manual_seed(3))
    model = plain_copy(tr)

    forwards = tr.forwards(plan, rollouts.num_rollouts)
    old, ref = tr.old_and_ref_logp(rollouts, plan, forwards)
    tr.counter.reset()
    with tr.timer.phase("update"):
        metrics = tr.inner_updates(rollouts, plan, forwards, adv, old, ref)
    ref_old, ref_ref, ref_metrics, model = reference_round(tr, model, rollouts, plan, adv)

    # model calls per update: micro-batches merge while their distinct rows fit micro_batch_prompts x G.
    # HT-GRPO (one row per prompt, 4 prompts): mb 1 -> budget 3 rows -> 3 + 1 micro-batches = 2 calls;
    # mb 2 -> budget 6 rows, 2 micro-batches of 2 rows -> 1 call. MaskGRPO: 3 rows per micro-batch, budget 3 ->
    # 4 calls. TraceGRPO, mb 2: up to 6 rollouts x 4 steps rows per micro-batch > 6 -> one call per micro-batch, 2.
    calls = {("toy_maskgrpo.yaml", 1): 4, ("toy_htgrpo.yaml", 1): 2, ("toy_htgrpo.yaml", 2): 1,
             ("toy_tracegrpo.yaml", 2): 2}[(config, micro_batch_prompts)]  # fmt: skip
    assert tr.counter.calls["update"] == MU * calls

    for a, b in zip(old + ref, ref_old + ref_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert metrics.keys() == ref_metrics.keys()
    for k, v in ref_metrics.items():
        assert metrics[k] == pytest.approx(v, rel=1e-6, abs=1e-6), k
    # Weights after mu AdamW steps (lr 1e-3): Adam divides by sqrt(v), so a near-zero gradient that differs by float
    # rounding (rows batched vs alone) can move a weight by ~1e-6; a wrong accumulation boundary or a lost
    # micro-batch would move weights by ~lr.
    trained = tr.backbone.model.state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(trained[k], v, rtol=1e-5, atol=1e-5, msg=k)


def test_forward_groups_merge_shared_rows_only() -> None:
    mbs = [torch.arange(3 * k, 3 * k + 3) for k in range(4)]  # 4 micro-batches of one prompt x G = 3
    shared = torch.arange(12) // 3  # (B,): one row per prompt (fully masked context)
    groups = forward_groups(shared, mbs, max_rows=3)
    # rows 0, 1, 2 fit 3 -> micro-batches 1-3 together; row 3 alone
    assert [g.rows for g in groups] == [3, 1] and [g.parts for g in groups] == [((0, 3), (3, 6), (6, 9)), ((0, 3),)]
    assert torch.equal(torch.cat([g.rollouts for g in groups]), torch.arange(12))
    per_rollout = torch.arange(12)  # random re-masking: 3 rows per micro-batch -> never merged at max_rows 3
    assert [g.rows for g in forward_groups(per_rollout, mbs, max_rows=3)] == [3, 3, 3, 3]
    per_token = torch.arange(12)[:, None] * 2 + torch.tensor([0, 1, 0, 1])  # (B, N=4): rollout i reads 2i, 2i+1
    assert [g.rows for g in forward_groups(per_token, mbs, max_rows=3)] == [6, 6, 6, 6]  # a micro-batch never splits
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        forward_groups(shared, mbs, max_rows=0)


def test_round_metrics_reduce_over_reporters_by_the_declared_reduction() -> None:
    acc = RoundMetrics({"policy/ratio_max": "max", "stage/refine/ratio_max": "max"})
    acc.add({"policy/ratio_max": torch.tensor(1.5), "loss/policy": torch.tensor(1.0)})
    acc.add({"policy/ratio_max": torch.tensor(1.25), "loss/policy": torch.tensor(3.0),
             "stage/refine/ratio_max": torch.tensor(1.1), "stage/refine/loss": torch.tensor(4.0)})  # fmt: skip
    out = acc.result()
    # ratio_max: max(1.5, 1.25) = 1.5 (a mean would give 1.375); loss: (1 + 3) / 2 = 2;
    # stage keys reported once: their own value (a mean over both micro-batches would halve them)
    assert out == pytest.approx({"policy/ratio_max": 1.5, "loss/policy": 2.0, "stage/refine/ratio_max": 1.1,
                                 "stage/refine/loss": 4.0})  # fmt: skip
    with pytest.raises(ValueError, match=r"'policy/x' reduces by 'median'; valid reductions: \['max', 'mean'\]"):
        RoundMetrics({"policy/x": "median"})


def test_first_update_ratio_is_exactly_one_with_lora_dropout_configured(tmp_path, capsys) -> None:
    """With LoRA dropout configured, old log-probs (eval mode) and the first update's log-probs (train
    mode, before any step) must come from the same function: ratio == 1 exactly on every token."""
    from tiny_models import build_tiny_mmada, write_prompts

    from maskgrpo.config.loader import config_from_dict
    from maskgrpo.train import Trainer

    tiny = build_tiny_mmada(tmp_path / "tiny")
    cfg = config_from_dict(TrainRun, {
        "run": {"output_dir": str(tmp_path / "run"), "seed": 0},
        "backbone": {"name": "mmada", "path": str(tiny.model_dir), "dtype": "float32", "options": tiny.options},
        "prompts": {"source": str(write_prompts(tmp_path / "prompts.jsonl")), "per_round": 2},
        "rollout": {"name": "emerge", "num_steps": 4, "cfg_scale": 3.5},
        "rewards": {"hpsv3": {}},  # built, never called: the round below starts from given advantages
        "rl": {"rounds": 1, "group_size": 3, "num_inner_updates": 2, "micro_batch_prompts": 1},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.5},
        "deepspeed": {"config": str(REPO / "configs/deepspeed/zero2.json"), "precision": "fp32"},
        "log": {"image_every": 0}, "eval": None,
    })  # fmt: skip
    tr = Trainer(cfg, resume=False)
    assert "lora.dropout=0.5 is not applied" in capsys.readouterr().out
    gen = torch.Generator().manual_seed(0)
    for name, p in tr.policy.named_parameters():
        if "lora_B" in name:  # peft starts B at 0, where dropout on the adapter input would change nothing
            p.data.copy_(torch.randn(p.shape, generator=gen))
    ratios = []
    loss = tr.parts.loss

    def recording_loss(x: LossInputs):
        ratios.append(torch.exp(x.logp.detach() - x.old_logp))
        return loss(x)

    recording_loss.reductions, recording_loss.plan = loss.reductions, loss.plan
    tr.parts.loss = recording_loss
    rollouts = tr.rollout(tr.stream.take(0, 2))
    plan = tr.plan(rollouts)
    forwards = tr.forwards(plan, rollouts.num_rollouts)
    old, ref = tr.old_and_ref_logp(rollouts, plan, forwards)
    tr.inner_updates(rollouts, plan, forwards, torch.randn(rollouts.num_rollouts, generator=gen), old, ref)
    assert len(ratios) == 4  # 2 updates x 2 micro-batches (one prompt each); the first two are update 1
    for r in ratios[:2]:
        assert torch.equal(r, torch.ones_like(r)), float((r - 1).abs().max())
