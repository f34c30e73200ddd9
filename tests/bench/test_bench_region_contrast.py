"""`benchmarks/probe_region_contrast.py`: the token-contrast variants it measures and its errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reg2rg_lib.errors import KitError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from probe_region_contrast import feature_cache, separation, variant  # noqa: E402


def test_variants_keep_or_amplify_or_remove_the_regions_own_contrast():
    torch.manual_seed(0)
    mean = torch.randn(1, 16) * 5
    x = mean + 0.1 * torch.randn(8, 16)  # one region: a common token plus a small ripple
    assert torch.allclose(variant(x, 0.0), F.layer_norm(x, (16,)))  # c = 0: as shipped
    ripple = (x - x.mean(0)).norm()
    amplified = variant(x, 3.0)
    assert (amplified - amplified.mean(0)).norm() > 2 * (variant(x, 0.0) - variant(x, 0.0).mean(0)).norm()
    centred = variant(x, None)
    assert torch.allclose(centred, F.layer_norm(x - x.mean(0), (16,)), atol=1e-6) and ripple > 0


def test_separation_reads_a_shifted_class_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    flat = torch.as_tensor(rng.normal(size=(200, 4)), dtype=torch.float32)
    assert separation(flat + torch.as_tensor(3.0 * y[:, None], dtype=torch.float32), y) > 3
    assert abs(separation(flat, rng.permutation(y))) < 1.0  # in-sample: small for labels unrelated to x


def test_the_feature_cache_must_be_named_when_it_is_not_the_only_one(tmp_path):
    with pytest.raises(KitError, match="train a model on this cache first"):
        feature_cache(tmp_path, None)
    for key in ("aaa", "bbb"):
        (tmp_path / "cache" / "vit_features" / key).mkdir(parents=True)
    with pytest.raises(KitError, match="pass --key, one of .*aaa, bbb"):
        feature_cache(tmp_path, None)
    with pytest.raises(KitError, match="pass --key"):
        feature_cache(tmp_path, "ccc")
