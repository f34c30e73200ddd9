"""ReportDataset's region dropout and few-region samples (`kept_regions`): the regions a sample keeps."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.model import Reg2RGConfig, add_reg2rg_tokens, load_tokenizer
from reg2rg_lib.model.reg2rg import BRANCH_GEOMETRY, BRANCH_TEXTURE
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.dataset import ReportDataset
from reg2rg_lib.train.loop import TrainSettings


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


def test_region_few_keeps_one_to_three_regions(smoke):
    counts = _kept_counts(_dataset(smoke, region_few=0.3))
    assert set(counts) == {1, 2, 3, 10}  # without region dropout the rest keep all ten
    few = sum(counts[k] for k in (1, 2, 3)) / 3000
    assert 0.25 < few < 0.35 and min(counts[k] for k in (1, 2, 3)) > 200  # each of 1, 2, 3 about equally
    both = _kept_counts(_dataset(smoke, region_few=0.3, region_dropout=0.5, region_dropout_max=9))
    assert set(both) == set(range(1, 11))
    assert 0.3 < both[10] / 3000 < 0.4  # 0.7 x 0.5 of the samples keep all ten


def test_region_few_zero_draws_as_before(smoke):
    """With `region_few` 0 the random draws are those of region dropout alone (runs trained before the
    option are unchanged), and a two-region CT keeps at most one region when few-region samples are drawn."""
    a = _dataset(smoke, region_dropout=0.5, region_dropout_max=9)
    b = _dataset(smoke, region_dropout=0.5, region_dropout_max=9, region_few=0.0)
    ra, rb = random.Random(3), random.Random(3)
    assert [a.kept_regions(10, ra) for _ in range(200)] == [b.kept_regions(10, rb) for _ in range(200)]
    rng = random.Random(0)
    assert all(len(_dataset(smoke, region_few=0.99).kept_regions(2, rng)) == 1 for _ in range(20))
    with pytest.raises(KitError, match="region_few"):
        _dataset(smoke, region_few=1.0)


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


def test_branch_dropout_codes_rates_and_stream(smoke):
    """`branch_dropout` p: each region's texture is zeroed with probability p, else its geometry with p (never
    both), from a stream of its own: the regions kept, their order and the tokens are those without it."""
    ds = _dataset(smoke, branch_dropout=0.2)
    codes = torch.cat([ds.branch_drop(f"case_{k}", 10) for k in range(300)])
    share = torch.bincount(codes, minlength=3).float() / len(codes)
    assert 0.15 < share[BRANCH_TEXTURE] < 0.25 and 0.15 < share[BRANCH_GEOMETRY] < 0.25
    assert torch.equal(ds.branch_drop("case_1", 10), ds.branch_drop("case_1", 10))  # deterministic
    ds.set_epoch(1)
    assert not torch.equal(ds.branch_drop("case_1", 10), (ds.set_epoch(0), ds.branch_drop("case_1", 10))[1])
    assert _dataset(smoke).branch_drop("case_1", 10) is None  # off: no codes, items as before
    assert _dataset(smoke, branch_dropout=0.2, shuffle_regions=False).branch_drop("case_1", 10) is None
    with pytest.raises(KitError, match="branch_dropout"):
        _dataset(smoke, branch_dropout=0.5)
    # geometry dropout: the geometry token alone, with its own probability, from the same one draw per region
    geo = _dataset(smoke, geometry_dropout=0.3)
    codes = torch.cat([geo.branch_drop(f"case_{k}", 10) for k in range(300)])
    share = torch.bincount(codes, minlength=3).float() / len(codes)
    assert share[BRANCH_TEXTURE] == 0 and 0.25 < share[BRANCH_GEOMETRY] < 0.35
    both = _dataset(smoke, branch_dropout=0.1, geometry_dropout=0.2)
    codes = torch.cat([both.branch_drop(f"case_{k}", 10) for k in range(300)])
    share = torch.bincount(codes, minlength=3).float() / len(codes)
    assert 0.07 < share[BRANCH_TEXTURE] < 0.13 and 0.25 < share[BRANCH_GEOMETRY] < 0.35
    same_texture = ds.branch_drop("case_2", 10) == BRANCH_TEXTURE  # branch_dropout 0.2 alone
    more = _dataset(smoke, branch_dropout=0.2, geometry_dropout=0.1).branch_drop("case_2", 10)
    assert torch.equal(more == BRANCH_TEXTURE, same_texture)  # adding it moves only keep -> geometry
    assert _dataset(smoke, geometry_dropout=0.3, shuffle_regions=False).branch_drop("case_1", 10) is None
    geo_profile = load_profile("smoke", overrides={"train.geometry_dropout": 0.3})
    settings = TrainSettings.from_profile(geo_profile.train)
    assert settings.geometry_dropout == 0.3 and settings.order_key(1)["geometry_dropout"] == 0.3  # resume key
    no_geo = load_profile("smoke", overrides={"train.geometry_dropout": 0.0})  # smoke's own 0.3: as demo
    assert "geometry_dropout" not in TrainSettings.from_profile(no_geo.train).order_key(1)
    with pytest.raises(KitError, match="geometry_dropout"):
        _dataset(smoke, branch_dropout=0.3, geometry_dropout=0.4)
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    cache, tok = load_cache(smoke.cache), load_tokenizer(smoke.tokenizer)
    add_reg2rg_tokens(tok, cfg)
    plain = ReportDataset(cache, "train", tok, cfg, region_dropout=0.5, seed=3)
    dropped = ReportDataset(cache, "train", tok, cfg, region_dropout=0.5, seed=3, branch_dropout=0.3)
    for i in range(len(plain)):
        a, b = plain[i], dropped[i]
        assert a["sample"].input_ids == b["sample"].input_ids and "region_drop" not in a
        assert b["region_drop"].shape == (len(b["sample"].regions),)
        assert torch.equal(a["region_feats" if "region_feats" in a else "region_masks"],
                           b["region_feats" if "region_feats" in b else "region_masks"])
