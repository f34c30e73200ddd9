"""Fixtures for the model tests: a small report corpus, a locally trained tokenizer, tiny configs
(32x32x8)."""

from __future__ import annotations

import random

import pytest
import torch

from reg2rg_lib.regions import REGIONS

IMAGE_SIZE = (32, 32, 8)


def corpus() -> list[str]:
    rng = random.Random(0)
    findings = [
        "is normal",
        "shows a 4 mm nodule",
        "has mild effusion",
        "is unremarkable",
        "shows calcification",
    ]
    return [
        f"The {r} {rng.choice(findings)}. No mass is seen in the {r}." for _ in range(40) for r in REGIONS
    ]


@pytest.fixture(scope="session")
def tokenizer_factory():
    from reg2rg_lib.model import train_tokenizer

    texts = corpus()
    return lambda: train_tokenizer(texts, None, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_cfg():
    from reg2rg_lib.model import Reg2RGConfig

    return Reg2RGConfig.preset("cpu-tiny", image_size=IMAGE_SIZE)


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg, tokenizer_factory):
    from reg2rg_lib.model import Reg2RG

    with one_thread():
        return Reg2RG(tiny_cfg, tokenizer_factory()).eval()


def _visual_batch(cfg, n_samples: int, n_regions: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images for `n_samples` global CTs and `n_regions` regions (all samples together)."""
    g = torch.Generator().manual_seed(seed)
    H, W, D = cfg.image_size
    return {
        "global_images": torch.randn(n_samples, 1, H, W, D, generator=g),
        "region_images": torch.randn(n_regions, 1, H, W, D, generator=g),
        "region_masks": (torch.rand(n_regions, 1, H, W, D, generator=g) > 0.5).float(),
    }


@pytest.fixture(scope="session")
def visual_batch():
    """`visual_batch(cfg, n_samples, n_regions, seed=0)` -> random visual inputs for the model."""
    return _visual_batch


from threads import one_thread  # noqa: E402  (tests/threads.py)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield
