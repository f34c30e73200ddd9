"""Fixtures for the metrics tests: NLTK data (the user's, the kit's, or ../shared/nltk_data for Punkt)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_NLTK = Path(__file__).resolve().parents[2].parent / "shared" / "nltk_data"


@pytest.fixture(scope="session")
def nltk_ready() -> None:
    """WordNet (required for METEOR) and Punkt; skips cleanly off CI when WordNet was never fetched."""
    import nltk

    from reg2rg_lib.metrics import nltk_assets as na

    if na.punkt_source().kind == "missing" and SHARED_NLTK.is_dir():
        nltk.data.path.append(str(SHARED_NLTK))
        na._clear_caches()
    if na.wordnet_source().kind == "missing":
        msg = "NLTK WordNet not available: run `reg2rg assets fetch` (make setup does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
