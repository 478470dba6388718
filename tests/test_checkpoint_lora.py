"""LoRA checkpoints hold the trained adapter only (issue 26 item 6, checkpoint cost): DeepSpeed 0.19 would store the
frozen base model in every checkpoint, and on GPUs twice (module state and ``frozen_param_fragments``), 33.5 GB of
rank 0's writes per MMaDA-8B save. The base comes from ``backbone.path`` at every start. A killed LoRA run resumes
from such checkpoints bit-exactly, and on another rank count with every trained value in place."""

import pytest
import torch
from conftest import tiny_run
from safetensors.torch import load_file
from test_faults_run import KEEP3, as_killed_after_round, copy_run, ok, select_checkpoint, train
from test_world_size import reshard_check

pytestmark = pytest.mark.slow  # trainer runs killed and resumed, a 2-rank reshard

LORA = {"lora.enabled": True, "lora.r": 4, "lora.alpha": 8}


@pytest.fixture(scope="module")
def lora_run(toy_base_dir, tmp_path_factory):
    """The uninterrupted reference: LoRA, 1 rank, 3 rounds, a checkpoint every round."""
    out = tmp_path_factory.mktemp("lora") / "run"
    ok(train(tiny_run(toy_base_dir, out, rounds=3, **KEEP3, **LORA)))
    return out


def adapter(run) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "adapter" / "adapter_model.safetensors")


def test_lora_checkpoint_holds_the_adapter_only_and_resumes_bit_exact(toy_base_dir, lora_run, tmp_path):
    saved = torch.load(lora_run / "checkpoints/round-000002/state/mp_rank_00_model_states.pt", weights_only=False)
    assert saved["module"] and all(".lora_" in k for k in saved["module"]), sorted(saved["module"])[:5]
    assert saved["frozen_param_fragments"] is None
    run = copy_run(lora_run, tmp_path / "run")
    as_killed_after_round(run, 2)
    out = ok(train([*tiny_run(toy_base_dir, run, rounds=3, **KEEP3, **LORA), "--resume"]))
    assert "resumed from" in out
    a, b = adapter(run), adapter(lora_run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed adapter differs"
    assert select_checkpoint(run / "checkpoints", 0, 1).name == "round-000003"
    # on 2 ranks (load_resharded): the adapters' fp32 master weights, moments and module weights are the checkpoint's
    rows = reshard_check(lora_run / "checkpoints/round-000002", 2, tiny_run(toy_base_dir, tmp_path / "x",
                                                                                  rounds=3, **LORA))  # fmt: skip
    assert all(x["mismatch"] == [] and x["compared"] == x["params"] and x["params"] for x in rows), rows
    assert all(".lora_" in n for n in rows[0]["params"])
