from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    return Path(os.environ.get("APPO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def search_cache_file() -> Path:
    path = shared_data() / "search" / "search_cache.json"
    if not path.is_file():
        pytest.skip(f"shared search cache not found at {path} (set APPO_SHARED_DATA)")
    return path
