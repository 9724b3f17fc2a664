"""Fixtures for the SFT tests: a tiny model directory and small SFT configs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from appo.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tokenizer():
    from appo.models import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def synthetic_traces():
    from appo.sft import build_synthetic_traces

    return build_synthetic_traces(6, 10, seed=11)


@pytest.fixture(scope="session")
def traces_file(tmp_path_factory: pytest.TempPathFactory, synthetic_traces) -> Path:
    """The session's synthetic traces as an ARPO-SFT jsonl file (fast to load; no tools to run)."""
    from appo.sft import write_conversations

    return write_conversations(synthetic_traces, tmp_path_factory.mktemp("data") / "traces.jsonl")


@pytest.fixture(scope="session")
def overrides(tiny_dir: Path, traces_file: Path):
    """``overrides(**sft_values)`` → dotted overrides of a tiny, fast SFT run on the tiny model
    (training data: the session's synthetic traces file)."""

    def make(**sft: object) -> list[str]:
        values: dict[str, object] = {"train_files": f"[{traces_file}]"}
        values.update(sft)
        return _tiny_overrides(tiny_dir, **values)

    return make


def _tiny_overrides(model_dir: Path, **sft: object) -> list[str]:
    values: dict[str, object] = {
        "synthetic.n_python": 4,
        "synthetic.n_search": 4,
        "max_steps": 2,
        "micro_batch_size": 2,
        "save_every": 2,
        "eval_every": 2,
        "val_fraction": 0.25,
        "lr": 1e-3,
        "warmup_ratio": 0.25,
        "max_length": 768,
    }
    values.update(sft)
    return [
        f"actor_rollout_ref.model.path={model_dir}",
        "trainer.device=cpu",
        # a short system prompt keeps the tiny runs fast (the RL prompt is ~260 tokens)
        "data.system_prompt=You are a tool user.",
        *(f"sft.{k}={v}" for k, v in values.items()),
    ]
