"""Test-wide environment: no hub access, CPU DeepSpeed, quiet progress bars."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY_PRETRAIN = [
    "pretrain.steps=30",
    "pretrain.batch_size=16",
    "pretrain.warmup_steps=5",
    "model.n_layers=1",
    "model.d_model=32",
    "model.n_heads=2",
    "model.mlp_hidden_size=64",
    "world.codebook_fit_images=48",
    "world.codebook_size=32",
    "world.num_eval_prompts=12",
    "eval.samples_per_prompt=1",
    "eval.sampler.num_steps=4",
]
"""Overrides for a ShapesWorld base that pretrains in a few seconds (tests only check plumbing with it)."""


@pytest.fixture(scope="session")
def toy_base_dir(tmp_path_factory) -> str:
    """A tiny pretrained ShapesWorld base, built once per test session through the real pretraining CLI."""
    from maskgrpo.toy.pretrain import main

    out = tmp_path_factory.mktemp("toy_base")
    main([f"run.output_dir={out}", *TINY_PRETRAIN])
    return str(out)
