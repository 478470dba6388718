"""The RL loop learns: on an easy reward the mean reward of the last rounds beats the first rounds (slow-ish test).

The reward is the fraction of red pixels, something the tiny base can learn to raise in a few rounds. Both the
MaskGRPO baseline and the HT-GRPO patch must raise it. Rewards are registered in-process, so the run is in-process.
"""

from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO, UNSET, tiny_run

from maskgrpo.config import load_config
from maskgrpo.config.schema import RewardEntry, TrainRun
from maskgrpo.rewards.base import REWARDS

MARGIN = 0.3
"""Required rise of the red fraction (mean of the last 4 rounds minus mean of the first 4). Measured (seed 0, the
red fraction as the only reward): MaskGRPO 0.134 -> 0.822, HT-GRPO 0.125 -> 0.758."""


class RedFraction:
    name = "red_fraction"

    def __call__(self, images: np.ndarray, prompts: list[str], metadata: list[dict]) -> np.ndarray:
        r, g, b = (images[..., i].astype(np.int32) for i in range(3))
        return ((r > 180) & (g < 100) & (b < 100)).mean(axis=(1, 2)).astype(np.float64)  # (B,)


def _register_red_fraction() -> None:
    """Registered at run time, not import time, so the reward-contract tests (parametrized over the registry at
    collection) only see the package's own rewards."""
    if "red_fraction" not in REWARDS:
        REWARDS.register("red_fraction")(lambda device=None, context=None: RedFraction())


@pytest.mark.parametrize("config", ["toy_maskgrpo", "toy_htgrpo"])
def test_reward_rises_on_an_easy_reward(config, toy_base_dir, tmp_path):
    from maskgrpo.train import Trainer

    _register_red_fraction()
    sizes = {"rl.num_inner_updates": 4, "rl.micro_batch_prompts": 2, "optim.lr": 3e-3, "rl.kl_beta": 0.0,
             "log.image_every": 0, "checkpoint.every": 0, "log.images_in_grid": UNSET, "log.rollout_table": UNSET,
             "patch_options.budgets": [1, 2, 1] if config == "toy_htgrpo" else UNSET}  # fmt: skip
    overrides = tiny_run(toy_base_dir, tmp_path, rounds=16, **sizes)
    cfg = load_config(TrainRun, REPO / "configs" / f"{config}.yaml", overrides)
    cfg = replace(cfg, rewards={"red_fraction": RewardEntry()})  # the only reward (a YAML override would add it)
    trainer = Trainer(cfg, resume=False)
    assert trainer.parts.names["rewards"] == "red_fraction"
    rewards = []
    for _ in range(16):
        rewards.append(trainer.run_round()["reward/mean"])
    first, last = np.mean(rewards[:4]), np.mean(rewards[-4:])
    print(f"{config}: red fraction first 4 rounds {first:.3f}, last 4 rounds {last:.3f}")
    assert last - first > MARGIN, rewards
