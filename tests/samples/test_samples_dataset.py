"""ReportDataset's region dropout (`kept_regions`): how many regions a training sample keeps."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.model import Reg2RGConfig, add_reg2rg_tokens, load_tokenizer
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.dataset import ReportDataset


def _dataset(smoke, **kwargs) -> ReportDataset:
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    return ReportDataset(
        load_cache(smoke.cache), "train", load_tokenizer(smoke.tokenizer), cfg, load_tensors=False, **kwargs
    )


def _kept_counts(ds: ReportDataset, n: int = 10, draws: int = 3000) -> Counter:
    rng = random.Random(0)
    return Counter(len(ds.kept_regions(n, rng)) for _ in range(draws))


def test_region_dropout_loses_one_to_three_regions_by_default(smoke):
    counts = _kept_counts(_dataset(smoke, region_dropout=0.5))
    assert set(counts) == {7, 8, 9, 10}
    assert 0.45 < counts[10] / 3000 < 0.55


def test_region_dropout_max_reaches_few_region_prompts(smoke):
    counts = _kept_counts(_dataset(smoke, region_dropout=0.5, region_dropout_max=9))
    assert set(counts) == set(range(1, 11))  # down to a single region, as a user's CT with few masks
    few = sum(counts[k] for k in range(1, 6)) / 3000
    assert 0.2 < few < 0.35  # half the samples dropped, 5 of the 9 drop counts leave 1-5 regions


def test_region_dropout_keeps_order_and_validates(smoke):
    ds = _dataset(smoke, region_dropout=0.9, region_dropout_max=9)
    rng = random.Random(1)
    for _ in range(50):
        kept = ds.kept_regions(10, rng)
        assert kept == sorted(kept) and 1 <= len(kept) <= 10
    assert _dataset(smoke, region_dropout=0.0, region_dropout_max=9).kept_regions(10, random.Random(0)) == \
        list(range(10))
    with pytest.raises(KitError, match="region_dropout_max"):
        _dataset(smoke, region_dropout=0.2, region_dropout_max=0)


def test_masks_binarised_or_as_coverage(smoke):
    """`mask_coverage`: the geometry encoder gets the prep cache's area-resized coverage (fractions at the
    region's boundary), else binarised masks (any coverage -> True)."""
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    add_reg2rg_tokens(tok, cfg)
    name = cache.cases("train")[0].name
    stored = cache.load(name, keys=["geometry"])["geometry"]  # (R, H, W, D)
    binary = ReportDataset(cache, "train", tok, cfg, shuffle_regions=False, names=[name])[0]["region_masks"]
    cover = ReportDataset(cache, "train", tok, cfg.replace(mask_coverage=True), shuffle_regions=False,
                          names=[name])[0]["region_masks"]
    assert binary.dtype == torch.bool and torch.equal(binary[:, 0], stored > 0)
    assert cover.dtype == torch.float16 and torch.allclose(cover[:, 0].float(), stored, atol=1e-3)
    assert bool(((stored > 0) & (stored < 1)).any())  # the smoke masks have fractional boundaries to keep
