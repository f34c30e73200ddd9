"""Shared fixtures. Tests never write into the repository: everything goes to pytest's tmp folders."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
RELEASE_DIR = SHARED / "reference" / "reg2rg_release_ctrg"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def release_dir() -> Path:
    """The authors' released CTRG outputs in ../shared; tests that need them skip cleanly when absent."""
    if not RELEASE_DIR.is_dir():
        pytest.skip(f"released reference outputs not found at {RELEASE_DIR}")
    return RELEASE_DIR
