from __future__ import annotations

from pathlib import Path

import pytest

REWARD_MODULE = '''
from appo.rewards.base import RewardResult


def varied(response_text, ground_truth, **info):
    """A reward that varies with the text, so random tiny models get non-zero advantages."""
    return RewardResult(score=len(set(response_text)) / 50.0, components={})
'''


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from appo.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def reward_module(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rewardmod")
    (folder / "appo_test_rewards.py").write_text(REWARD_MODULE)
    return folder


@pytest.fixture
def overrides(tiny_dir, tmp_path, reward_module, monkeypatch):
    monkeypatch.syspath_prepend(str(reward_module))

    def make(estimator: str = "appo", *extra: str) -> list[str]:
        values = [
            f"actor_rollout_ref.model.path={tiny_dir}",
            "actor_rollout_ref.model.sft_warm_start=false",
            f"trainer.default_local_dir={tmp_path / estimator}",
            f"algorithm.adv_estimator={estimator}",
            "data.max_response_length=24",
            "data.synthetic.n_python=4",
            "data.synthetic.n_search=4",
            "data.synthetic.val_size=1",
            "trainer.total_training_steps=2",
            "custom_reward_function.name=appo_test_rewards:varied",
            "actor_rollout_ref.actor.optim.lr=1e-3",
        ]
        if estimator == "grpo":
            values += ["actor_rollout_ref.rollout.initial_rollouts=null"]
        return values + list(extra)

    return make
