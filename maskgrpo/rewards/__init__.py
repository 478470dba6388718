"""Rewards: the interface, the registry of named rewards, the weighted combination, and reward-server clients.

Registered names (``REWARDS.names()``): ``clip`` (local CLIPModel), ``hpsv3``, ``unifiedreward``, ``geneval``,
``deqa`` and ``http`` (HTTP clients of reward servers, one table: ``client.REMOTE_REWARDS``), ``shapes_geneval``,
``shapes_geneval_strict`` and ``shapes_geneval_graded`` (ShapesWorld). Importing this package registers all of them;
heavy dependencies (transformers, the ShapesWorld evaluator) are imported only when a reward is built.
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
from maskgrpo.rewards.client import RemoteReward, RewardOutageError, RewardServerError

__all__ = [
    "REWARDS",
    "RemoteReward",
    "RewardError",
    "RewardFn",
    "RewardOutageError",
    "RewardServerError",
    "RewardSpec",
    "build_rewards",
    "combine_rewards",
    "parse_reward_specs",
    "score_all",
]
