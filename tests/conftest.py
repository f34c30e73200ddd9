"""Shared fixtures. Tests never write into the repository: everything goes to pytest's tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
RELEASE_DIR = SHARED / "reference" / "reg2rg_release_ctrg"
SHARED_NLTK = SHARED / "nltk_data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def release_dir() -> Path:
    """The authors' released CTRG outputs in ../shared; tests that need them skip cleanly when absent."""
    if not RELEASE_DIR.is_dir():
        pytest.skip(f"released reference outputs not found at {RELEASE_DIR}")
    return RELEASE_DIR


@pytest.fixture(scope="session")
def nltk_ready() -> None:
    """WordNet (required for METEOR) and Punkt; skips cleanly off CI when WordNet was never fetched."""
    import nltk

    from reg2rg_lib.env import nltk as na

    if na.punkt_source().kind == "missing" and SHARED_NLTK.is_dir():
        nltk.data.path.append(str(SHARED_NLTK))
        na._clear_caches()
    if na.wordnet_source().kind == "missing":
        msg = "NLTK WordNet not available: run `reg2rg assets fetch` (make setup does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
