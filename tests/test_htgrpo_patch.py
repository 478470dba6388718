"""The HT-GRPO patch: YAML toggle, the cost it promises (forward counts), reduction tests (docs/method.md 3.7)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, UNSET, tiny_run
from forward_counts import max_rollout_forwards, rollout_forwards
from safetensors.torch import load_file

from maskgrpo.algo.losses import GRPOLoss
from maskgrpo.algo.types import ContextUpdate, LossInputs, Rollouts, RoundContexts
from maskgrpo.config import ConfigError, load_config
from maskgrpo.config.schema import TrainRun

TOY_HT, TOY_MG = REPO / "configs/toy_htgrpo.yaml", REPO / "configs/toy_maskgrpo.yaml"


def tiny(base: str, out: Path, **extra: object) -> list[str]:
    """One round of 2 prompts x G=3, mu=3 (budgets 1:1:1), 3 sampler steps: the tiny run with these sizes."""
    sizes = {"prompts.per_round": 2, "rollout.num_steps": 3, "rl.group_size": 3, "rl.num_inner_updates": 3,
             "log.image_every": 0, "patch_options.budgets": [1, 1, 1]}  # fmt: skip
    keep = dict.fromkeys(("checkpoint.every", "log.images_in_grid", "log.rollout_table"), UNSET)  # the YAML's values
    return tiny_run(base, out, rounds=1, **{**sizes, **keep, **extra})


def run_inprocess(config: Path, overrides: list[str]):
    """(trainer, metrics, rollouts) of one round; the rollouts are observed on their way out of ``rollout``."""
    from maskgrpo.train import Trainer

    trainer = Trainer(load_config(TrainRun, config, overrides), resume=False)
    seen, sample = [], trainer.rollout
    trainer.rollout = lambda metas: seen.append(sample(metas)) or seen[-1]
    metrics = trainer.run_round()
    return trainer, metrics, seen[0]


def test_configs_differ_only_in_the_patch_section():
    ht, mg = yaml.safe_load(TOY_HT.read_text()), yaml.safe_load(TOY_MG.read_text())
    assert set(ht) - set(mg) == {"patch", "patch_options"}
    assert {k: v for k, v in ht.items() if k not in ("patch", "patch_options")} == mg


def test_baseline_never_imports_the_patch(toy_base_dir):
    code = (
        "import sys, torch\n"
        "from maskgrpo.config import load_config\nfrom maskgrpo.config.schema import TrainRun\n"
        "import maskgrpo.train\nfrom maskgrpo.components import resolve_components\n"
        f"cfg = load_config(TrainRun, {str(TOY_MG)!r}, ['backbone.path={toy_base_dir}'])\n"
        "parts = resolve_components(cfg, torch.device('cpu'))\n"
        "assert parts.names['context'] == 'random_remask', parts.names\n"
        "assert not [m for m in sys.modules if m.startswith('htgrpo_patch')], 'patch imported'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    offenders = [p for p in (REPO / "maskgrpo").rglob("*.py") if "import htgrpo_patch" in p.read_text()
                 or "from htgrpo_patch" in p.read_text()]  # fmt: skip
    assert not offenders


def test_toggle_and_single_part_overrides_resolve_names(toy_base_dir):
    from maskgrpo.components import resolve_components

    def names(config, *o):
        return resolve_components(load_config(TrainRun, config, [f"backbone.path={toy_base_dir}", *o]), "cpu").names

    ht = names(TOY_HT)
    assert (ht["preset"], ht["sampler_wrapper"], ht["context"], ht["loss"]) == (
        "htgrpo", "ranked", "fully_masked", "ht_staged")  # fmt: skip
    alone = names(TOY_HT, "rl.context=revealed_structure")
    assert (alone["context"], alone["loss"], alone["sampler_wrapper"]) == ("revealed_structure", "ht_staged", "ranked")
    assert names(TOY_MG, "rl.sampler_wrapper=none")["context"] == "random_remask"


def test_patch_options_are_checked_with_file_and_key(toy_base_dir, tmp_path):
    from maskgrpo.components import resolve_components

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {TOY_HT}\npatch_options:\n  struture_ratio: 0.2\n")
    with pytest.raises(ConfigError, match=rf"{bad}:3: unknown key 'patch_options.struture_ratio'.*structure_ratio"):
        resolve_components(load_config(TrainRun, bad, [f"backbone.path={toy_base_dir}"]), "cpu")
    with pytest.raises(
        ConfigError, match=r"patch_options.budgets \[2, 4, 2\] sum to 8, but rl.num_inner_updates is 6"
    ):
        resolve_components(load_config(TrainRun, TOY_HT, [f"backbone.path={toy_base_dir}", "rl.num_inner_updates=6"]),
                           "cpu")  # fmt: skip


def test_forward_counts_match_the_formula(toy_base_dir, tmp_path):
    P, G, mu = 2, 3, 3
    trainer, ht, rollouts = run_inprocess(TOY_HT, tiny(toy_base_dir, tmp_path / "ht"))
    _, mg, _ = run_inprocess(TOY_MG, tiny(toy_base_dir, tmp_path / "mg"))
    assert ht["perf/forwards_update"] == mu * P  # one forward per unique prompt per update
    assert mg["perf/forwards_update"] == mu * P * G
    assert ht["perf/forwards_old_ref"] == 2 * P  # old + ref: one no-grad forward per prompt per round
    assert mg["perf/forwards_old_ref"] == 2 * mu * P * G
    # the same rollouts: T steps x the distinct (cond + uncond) rows, P + 1 at the first step instead of 2 P G
    n = rollout_forwards(rollouts, steps=3, chunk=trainer.cfg.rl.rollout_batch_size)
    assert ht["perf/forwards_rollout"] == mg["perf/forwards_rollout"] == n <= max_rollout_forwards(3, P, P * G)
    assert ht["stage/structure/support_frac"] > 0 and "stage/refine/mean_weight" in ht


def test_revealed_structure_forwards_the_shared_row_plus_one_per_rollout(toy_base_dir, tmp_path):
    """A5 (method.md 3.5): structural tokens read the prompt's x_M row, the rest their rollout's revealed row, so a
    micro-batch forwards 1 + G rows per prompt; the round still trains both stages."""
    P, G, mu = 2, 3, 3
    _, m, _ = run_inprocess(TOY_HT, tiny(toy_base_dir, tmp_path / "a5", **{"rl.context": "revealed_structure"}))
    assert m["perf/forwards_update"] == mu * P * (1 + G)
    assert m["perf/forwards_old_ref"] == 2 * P * (1 + G)
    assert m["stage/structure/support_frac"] > 0 and m["stage/refine/support_frac"] > 0


def test_reduction_unit_weights_plan_and_loss_equal_the_baseline_bitwise():
    """method.md 3.7: with one Global update, p = 1 and w_s = w_r = 1, HT-GRPO's plan trains exactly the tokens the
    baseline's plan trains, with weight 1, so the loss is the baseline's to the last bit; credit weights change it."""
    from htgrpo_patch.config import HTGRPOOptions
    from htgrpo_patch.loss import StagedCreditLoss

    g = torch.Generator().manual_seed(0)
    b, n = 6, 16
    scorable = (torch.rand(b, n, generator=g) < 0.7).float()  # (B, N) what the context lets the update score
    rank = torch.rand(b, n, generator=g).argsort(1).argsort(1) + 1
    rollouts = Rollouts(None, 3, torch.zeros(b, n, dtype=torch.long), torch.zeros(b, n, dtype=torch.long),
                        torch.zeros(b, n), {"rank": rank})  # fmt: skip
    contexts = RoundContexts([], [ContextUpdate(0, scorable)])
    logp, old, ref = (-torch.rand(b, n, generator=g) * 3 for _ in range(3))
    adv = torch.randn(b, generator=g)
    for agg in ("token_mean", "seq_mean"):
        losses = {}
        unit = HTGRPOOptions(budgets=(1, 0, 0), p_max=1.0, p_min=1.0, weight_structure=1.0, weight_refine=1.0)
        credit = HTGRPOOptions(budgets=(1, 0, 0), p_max=1.0, p_min=1.0)
        for name, loss in (("base", GRPOLoss(0.2, 0.01, agg)), ("unit", StagedCreditLoss(0.2, 0.01, agg, unit)),
                           ("credit", StagedCreditLoss(0.2, 0.01, agg, credit))):  # fmt: skip
            u = loss.plan(rollouts, contexts, torch.Generator().manual_seed(1)).updates[0]
            assert torch.equal(u.support, scorable), name  # p = 1 over the Global set: every scorable token
            losses[name] = loss(LossInputs(logp, old, ref, adv, u.support, u.weight, u.stage, u.rate))[0]
        assert torch.equal(losses["unit"], losses["base"]), agg
        assert not torch.equal(losses["credit"], losses["base"])  # the credit weights do change the loss


def test_reduction_full_round_equals_fully_masked_baseline(toy_base_dir, tmp_path):
    unit = {"patch_options.budgets": [3, 0, 0], "patch_options.p_max": 1.0, "patch_options.p_min": 1.0,
            "patch_options.weight_structure": 1.0, "patch_options.weight_refine": 1.0}  # fmt: skip
    a, _, _ = run_inprocess(TOY_HT, tiny(toy_base_dir, tmp_path / "a", **unit))
    b, _, _ = run_inprocess(TOY_HT, tiny(toy_base_dir, tmp_path / "b", **unit, **{"rl.loss": "grpo"}))
    assert a.parts.names["loss"] == "ht_staged" and b.parts.names["loss"] == "grpo"
    pa, pb = dict(a.policy.named_parameters()), dict(b.policy.named_parameters())
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    before = load_file(Path(toy_base_dir) / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], pa[k].detach()) for k in before)  # the round did train


@pytest.mark.parametrize("path", sorted((REPO / "configs/ablations").glob("*.yaml")), ids=lambda p: p.stem)
def test_ablation_configs_change_one_thing(path, toy_base_dir):
    """Each ablation loads, resolves, and differs from toy_htgrpo.yaml in exactly one option or component."""
    from maskgrpo.components import load_preset, resolve_components
    from maskgrpo.config import to_dict

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    cfg = load_config(TrainRun, path, [f"backbone.path={toy_base_dir}"])
    ref = load_config(TrainRun, TOY_HT, [f"backbone.path={toy_base_dir}"])
    resolve_components(cfg, "cpu")
    a, b = to_dict(load_preset("htgrpo").options(cfg)), to_dict(load_preset("htgrpo").options(ref))
    changed = {f"patch_options.{k}" for k in a if a[k] != b[k]}
    x, y = flat(to_dict(cfg)), flat(to_dict(ref))
    changed |= {k for k in x.keys() | y.keys() if not k.startswith("patch_options.") and x.get(k) != y.get(k)}
    assert 1 <= len(changed) <= 2, changed  # one idea each (p_max + schedule count as one "constant p" change)


class _FakeBase:
    """A 'sampler' returning fixed commit steps and log-probs, to test the rank wrapper alone."""

    num_steps, cfg_scale = 3, 0.0

    def __init__(self, steps: torch.Tensor, logp: torch.Tensor) -> None:
        self.steps, self.logp = steps, logp

    def sample(self, model, batch, generator, step_hook=None):
        from maskgrpo.sampling.base import SamplerOutput

        return SamplerOutput(codes=torch.zeros_like(self.steps), commit_step=self.steps, logp_at_commit=self.logp,
                             n_commit=torch.zeros(1, 3, dtype=torch.long), score_at_commit=None)  # fmt: skip


def test_ranked_sampler_tie_breaks():
    from htgrpo_patch.ranked_sampler import RankedSampler

    steps = torch.tensor([[1, 0, 1, 0, 2]])
    logp = torch.tensor([[-0.1, -2.0, -3.0, -0.5, -1.0]])
    base = _FakeBase(steps, logp)
    rank = lambda tb, seed=0: (
        RankedSampler(base, tb).sample(None, None, torch.Generator().manual_seed(seed)).extras["rank"]
    )  # noqa: E731
    # raster: step 0 = positions 1, 3 -> ranks 1, 2; step 1 = 0, 2 -> 3, 4; step 2 = 4 -> 5
    assert rank("raster").tolist() == [[3, 1, 4, 2, 5]]
    # confidence: within step 0, position 3 (logp -0.5) before 1 (-2.0); within step 1, 0 (-0.1) before 2 (-3.0)
    assert rank("confidence").tolist() == [[3, 2, 4, 1, 5]]
    seen = {tuple(rank("random", seed).tolist()[0]) for seed in range(20)}
    assert seen <= {(3, 1, 4, 2, 5), (4, 1, 3, 2, 5), (3, 2, 4, 1, 5), (4, 2, 3, 1, 5)} and len(seen) == 4
    assert torch.equal(rank("random", 7), rank("random", 7))  # seeded


def test_components_without_options_take_the_defaults_of_the_options_type(monkeypatch):
    """A component built without the preset's options (options None) reads HTGRPOOptions' defaults
    (one place), not literals of its own: change the type's defaults and the components follow."""
    import dataclasses

    import htgrpo_patch.config as config
    from maskgrpo.catalog import CONTEXTS, SAMPLER_WRAPPERS

    @dataclasses.dataclass(frozen=True)
    class Changed(config.HTGRPOOptions):
        structure_ratio: float = 0.25
        tie_break: str = "raster"

    monkeypatch.setattr(config, "HTGRPOOptions", Changed)
    assert CONTEXTS.get("revealed_structure")(None, None).structure_ratio == 0.25
    assert SAMPLER_WRAPPERS.get("ranked")(_FakeBase(torch.zeros(1, 2), torch.zeros(1, 2)), None, None).tie_break == (
        "raster"
    )  # fmt: skip
