"""Test-wide environment: no hub access, CPU DeepSpeed, quiet progress bars."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from fixtures_toy import toy_base_dir as _build_toy_base  # noqa: E402


@pytest.fixture(scope="session")
def toy_base_dir() -> str:
    """A tiny pretrained ShapesWorld base (built once per test process through the real pretraining CLI)."""
    return str(_build_toy_base())
