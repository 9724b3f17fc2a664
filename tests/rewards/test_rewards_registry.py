"""Reward registry: names, VERL custom_reward_function spellings, data-source routing."""

from __future__ import annotations

import pytest

from appo.rewards import (
    available_rewards,
    combined,
    deep_research,
    get_reward,
    judge,
    math,
    qa,
    register_reward,
    reward_for_source,
    reward_name_for_source,
)
from appo.rewards.base import RewardResult


def test_names_resolve() -> None:
    assert {"deep_research", "qa", "math", "combined", "judge"} <= set(available_rewards())
    assert get_reward("deep_research") is deep_research
    assert get_reward("qa") is qa
    assert get_reward("math") is math
    assert get_reward("combined") is combined
    assert get_reward("judge") is judge
    assert get_reward("deep_research.compute_score") is deep_research
    # VERL style: custom_reward_function.path + .name
    assert get_reward("verl/utils/reward_score/deep_research.py", "compute_score") is deep_research
    assert get_reward("appo.rewards.rule_based:qa") is qa


def test_unknown_names_fail_clearly() -> None:
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        get_reward("nope")
    with pytest.raises(KeyError, match="cannot import reward"):
        get_reward("appo.rewards:does_not_exist")


def test_register_custom_reward() -> None:
    def always_one(response_text: str, ground_truth: object, **info: object) -> RewardResult:
        return RewardResult(1.0)

    register_reward("test_always_one", always_one)
    assert get_reward("test_always_one") is always_one
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_always_one", always_one)


@pytest.mark.parametrize(
    ("source", "name", "parity_name"),
    [
        ("DR_grpo_mix", "combined", "deep_research"),
        ("DR_simpledeepsearch0.8k", "combined", "deep_research"),
        ("DR_nan", "combined", "deep_research"),
        ("DR_gaia", "combined", "deep_research"),
        ("DR_hle_100", "combined", "deep_research"),
        ("aime24", "math", "math"),
        ("aime25", "math", "math"),
        ("math500", "math", "math"),
        ("gsm8k", "math", "math"),
        ("hotpotqa", "qa", "qa"),
        ("2wiki", "qa", "qa"),
        ("musique", "qa", "qa"),
        ("bamboogle", "qa", "qa"),
        ("SimpleQA", "qa", "qa"),
        ("webwalker", "qa", "qa"),
        ("xbench", "qa", "qa"),
        ("gaia", "combined", "combined"),
        ("synthetic_python", "combined", "combined"),
        ("something_else", "combined", "combined"),
        (None, "combined", "combined"),
    ],
)
def test_reward_for_source(source: str | None, name: str, parity_name: str) -> None:
    assert reward_name_for_source(source) == name
    assert reward_name_for_source(source, parity=True) == parity_name
    assert reward_for_source(source) is get_reward(name)


def test_verl_adapter_uses_row_context() -> None:
    from appo.rewards import verl_compute_score

    text = "<think> t </think> <answer> \\boxed{0.5} </answer>"
    out = verl_compute_score("combined")("DR_grpo_mix", text, "\\frac{1}{2}", {"ability": "math"})
    assert out["score"] == 1.0 and out["answer"] == "0.5" and "reason" in out
    assert (
        verl_compute_score("combined")("DR_grpo_mix", text, "\\frac{1}{2}", {"ability": "qa"})["score"] == 0.0
    )
    parity = verl_compute_score("deep_research.compute_score")("DR_grpo_mix", text, "\\frac{1}{2}", None)
    assert parity["score"] == 0.0 and parity["f1"] == 0.0
