"""`benchmarks/probe_region_alone.py`: the one-region prep cache it trains from, and its spread measure."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.model import Reg2RGConfig, add_reg2rg_tokens, load_tokenizer
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.samples.dataset import ReportDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from probe_region_alone import _spread, region_cache  # noqa: E402


def test_the_region_cache_keeps_one_region_of_every_case_that_has_it(smoke, tmp_path):
    src = load_cache(smoke.cache)
    one = load_cache(region_cache(Path(smoke.cache), tmp_path / "lung", "lung"))
    having = [r for r in src.cases() if "lung" in r.regions]
    assert [r.name for r in one.cases()] == [r.name for r in having] and having
    for before, after in zip(having, one.cases()):
        assert after.regions == ["lung"] and list(after.reports) == ["lung"]
        assert after.reports["lung"] == before.reports["lung"] and after.labels == before.labels
        full, kept = src.load(before.name), one.load(after.name)
        row = before.regions.index("lung")
        for key, value in kept.items():
            want = full[key] if key in ("image", "full") else full[key][row:row + 1]
            assert torch.equal(value, want), key
    # the kit reads it as any prep cache: prompts and targets with the one region
    cfg = Reg2RGConfig.from_profile(load_profile("smoke"))
    tok = load_tokenizer(smoke.tokenizer)
    add_reg2rg_tokens(tok, cfg)
    ds = ReportDataset(one, "train", tok, cfg, seed=0)
    item = ds[0]
    assert item["sample"].regions == ["lung"] and item["region_masks"].shape[0] == 1
    assert region_cache(Path(smoke.cache), tmp_path / "lung", "lung") == tmp_path / "lung"  # built once
    two = load_cache(region_cache(Path(smoke.cache), tmp_path / "lung+heart", "lung", ("heart",)))
    for before, after in zip(having, two.cases()):
        assert after.regions == [r for r in before.regions if r in ("lung", "heart")]  # the cache's order
        rows = [before.regions.index(r) for r in after.regions]
        assert torch.equal(two.load(after.name)["geometry"], src.load(before.name)["geometry"][rows])


def test_spread_is_small_for_a_constant_vector_with_a_ripple():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    ripple = rng.normal(size=(100, 8)) + 2.0 * y[:, None]  # separable, d' well above 1
    ratio_const, d_const = _spread(100.0 + 0.01 * ripple, y)
    ratio_free, d_free = _spread(ripple, y)
    assert ratio_const < 1e-3 < 0.5 < ratio_free  # the same ripple on a large common vector: ~nothing varies
    assert abs(d_const - d_free) < 1e-6  # the separation itself is unchanged
