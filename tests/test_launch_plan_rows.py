"""The memory plan counts the rows the run's context builder really forwards: MaskGRPO's
re-masked contexts one row per rollout, HT-GRPO's shared fully masked canvas one row per prompt, with whole
micro-batches merged into one forward as the trainer does (maskgrpo.forward_plan: <= micro_batch_prompts * G rows)."""

import pytest
from conftest import REPO

from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.launch_plan import GB, ModelSize, batch_plan, context_rows, main, memory_estimate

HT, MG = REPO / "configs/mmada_htgrpo.yaml", REPO / "configs/mmada_maskgrpo.yaml"


@pytest.mark.parametrize("config, overrides, prompts_per_gpu, update, old_ref", [
    (MG, [], 3, 9, 9),  # micro-batch = 1 prompt x G = 9 rollouts, one re-masked row each: 9 rows, one per forward
    (HT, [], 3, 3, 3),  # 9 rollouts share their prompt's x_M row; the 3 micro-batches of a rank in one forward
    (HT, [], 12, 9, 9),  # micro-batches merged while <= 9 rows: 9 prompts, then 3
    (HT, ["rl.context=revealed_structure"], 3, 10, 10),  # A5: x_M row + one revealed row per rollout, alone
    (MG, ["rl.context=trace", "trace.shrink=4"], 3, 27, 27),  # 9 rollouts x ceil(12 / 4) step groups
])  # fmt: skip
def test_rows_come_from_the_context_builder(config, overrides, prompts_per_gpu, update, old_ref):
    r = context_rows(load_config(TrainRun, config, overrides), 1024, prompts_per_gpu)
    assert (r.update, r.old_ref) == (update, old_ref)


def test_activation_memory_uses_the_real_rows():
    ht, mg = load_config(TrainRun, HT), load_config(TrainRun, MG)

    def update_gb(cfg) -> float:
        return memory_estimate(cfg, batch_plan(cfg, 8), ModelSize(), 513, 32, 8192, checkpointing=True).phases[0][1]

    # one row: 32 x 1539 x 4096 x 2 B + 240 MB + 2 x 1024 x 8192 x 4 B = 0.7105 GB; P / GPU = 24 / 8 = 3
    assert update_gb(mg) / GB == pytest.approx(9 * 0.7105, abs=0.01)  # 6.39 GB
    assert update_gb(ht) / GB == pytest.approx(3 * 0.7105, abs=0.01)  # 2.13 GB


def test_mmada_dry_run_prints_both_methods(capsys):
    assert main(["--config", str(HT), "prompts.source=backbone"]) == 0
    out = capsys.readouterr().out
    assert "3 rows (fully_masked)" in out  # this run's update phase
    lines = {line.split()[0]: line.split() for line in out.splitlines() if "update" in line and "old/ref" in line}
    assert lines["htgrpo"][2:7] == ["update", "3", "rows", "2.13", "GB"]
    assert lines["maskgrpo"][2:7] == ["update", "9", "rows", "6.39", "GB"]
