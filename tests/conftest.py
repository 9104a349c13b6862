"""Shared fixtures: paths to the research data in ../shared (tests using it skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from textitsr.config import SHARED_DATA_DIR


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is not there (fresh clone)."""
    path = SHARED_DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared research data not available: {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()
