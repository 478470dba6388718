"""Rewards: the interface, the registry of named rewards, the weighted combination, and reward-server clients.

Registered names (``REWARDS.names()``): ``clip`` (local CLIPModel), ``hpsv3``, ``unifiedreward``, ``geneval``,
``deqa`` and ``http`` (HTTP clients of reward servers), ``shapes_geneval`` and ``shapes_geneval_strict``
(ShapesWorld). Importing this package registers all of them; heavy dependencies (transformers, the ShapesWorld
evaluator) are imported only when a reward is built.
"""

from maskgrpo.rewards import client, clip, shapes  # noqa: F401 - importing registers the rewards
from maskgrpo.rewards.base import (
    REWARDS,
    RewardError,
    RewardFn,
    RewardSpec,
    build_rewards,
    combine_rewards,
    parse_reward_specs,
    score_all,
)
from maskgrpo.rewards.client import RemoteReward, RewardServerError

__all__ = [
    "REWARDS",
    "RemoteReward",
    "RewardError",
    "RewardFn",
    "RewardServerError",
    "RewardSpec",
    "build_rewards",
    "combine_rewards",
    "parse_reward_specs",
    "score_all",
]
