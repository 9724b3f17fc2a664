"""Reward functions: ``deep_research`` (reference training reward), ``qa``, ``math``, ``combined`` and
``judge``; each ``(response_text, ground_truth, **info) -> RewardResult``. See docs/data-and-rewards.md."""

from appo.rewards.base import GroundTruth, RewardFn, RewardResult, as_aliases
from appo.rewards.llm_judge import JudgeConfig, JudgeNotConfiguredError, JudgeRequestError, LLMJudge, judge
from appo.rewards.registry import (
    available_rewards,
    get_reward,
    register_reward,
    reward_for_source,
    reward_name_for_source,
    verl_compute_score,
)
from appo.rewards.rule_based import combined, deep_research, math, qa, task_for

__all__ = [
    "GroundTruth",
    "JudgeConfig",
    "JudgeNotConfiguredError",
    "JudgeRequestError",
    "LLMJudge",
    "RewardFn",
    "RewardResult",
    "as_aliases",
    "available_rewards",
    "combined",
    "deep_research",
    "get_reward",
    "judge",
    "math",
    "qa",
    "register_reward",
    "reward_for_source",
    "reward_name_for_source",
    "task_for",
    "verl_compute_score",
]
