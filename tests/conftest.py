"""Shared fixtures: the real data folder (skip when absent) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("APPO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set APPO_SHARED_DATA to its location)")
    return path


@pytest.fixture(scope="session")
def tiny():
    """A tiny random Llama model (2 layers, hidden 64) with the real SmolLM2 tokenizer."""
    from appo.models import tiny_model

    return tiny_model(seed=0)
