"""The MONAI transforms: bit for bit the kernels and the kit's cache, in any memory order, inside MONAI
pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import Dataset, MetaTensor, PersistentDataset
from monai.transforms import Compose, Lambdad, LoadImaged, ScaleIntensityRanged

from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.prep import PrepParams, prepare
from reg2rg_lib.data.resize import area_resize, bounding_box, normalise_hu
from reg2rg_lib.data.synth.build import synthesize
from reg2rg_lib.data.transforms import (
    GlobalImaged,
    LabelToRegionMasksd,
    LoadRegionCased,
    RegionGeometryd,
    RegionTexturesd,
    prep_transforms,
    transform_error,
)
from reg2rg_lib.regions import REGIONS

SIZE = (16, 12, 8)
KEYS = ("image", "full", "texture", "geometry")


def _case(order: str = "F") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A float32 CT with air around a body and three masks (the last one empty), in `order` memory order."""
    rng = np.random.default_rng(3)
    ct = np.full((37, 30, 13), -1024.0, np.float32)
    ct[4:33, 3:27, 1:12] = rng.normal(-300, 400, (29, 24, 11)).astype(np.float32)
    masks = {r: np.zeros(ct.shape, bool) for r in ("heart", "lung", "thyroid")}
    masks["heart"][10:20, 8:17, 3:9] = True
    masks["lung"][5:30, 4:25, 2:11] = rng.random((25, 21, 9)) > 0.3
    return np.asarray(ct, order=order), {r: np.asarray(m, order=order) for r, m in masks.items()}


def _by_kernels(ct: np.ndarray, masks: dict[str, np.ndarray], p: PrepParams) -> dict[str, torch.Tensor]:
    """The tensors computed with resize.py's kernels directly, on the reversed-axes view (as the cache is)."""
    size = p.image_size[::-1]
    vol = ct.T
    fg = bounding_box(vol > p.foreground_hu)
    normed = normalise_hu(torch.from_numpy(np.ascontiguousarray(vol)))
    floor = float(normalise_hu(torch.tensor(p.background_hu)))
    back = (0, 3, 2, 1)
    tex, geo = [], []
    for m in masks.values():
        box = bounding_box(m.T)
        if box is None:
            continue
        crop = torch.where(torch.from_numpy(np.ascontiguousarray(m.T[box])), normed[box], floor)
        tex.append(area_resize(crop[None], size).permute(*back)[0])
        geo.append(
            area_resize(torch.from_numpy(np.ascontiguousarray(m.T)).float()[None], size).permute(*back)[0]
        )
    return {
        "image": area_resize(normed[fg][None], size).permute(*back),
        "full": area_resize(normed[None], size).permute(*back),
        "texture": torch.stack(tex),
        "geometry": torch.stack(geo),
    }


def _assert_same(got: dict, ref: dict) -> None:
    for k in KEYS:
        assert got[k].dtype == torch.float32 and got[k].shape == ref[k].shape, k
        assert torch.equal(got[k], ref[k]), f"{k}: max diff {float((got[k] - ref[k]).abs().max())}"


@pytest.mark.parametrize("threads", [1, 3])
def test_transforms_equal_the_kernels_bit_for_bit_in_any_memory_order(threads):
    p = PrepParams(image_size=SIZE)
    ct, masks = _case("F")
    ref = _by_kernels(ct, masks, p)
    out = prep_transforms(p, threads=threads)({"ct": ct, "masks": masks})
    _assert_same(out, ref)
    assert out["regions"] == ["heart", "lung"], "the empty thyroid mask is left out"
    assert set(out) == {"ct", "masks", "regions", *KEYS}, "the intermediate keys are dropped"
    assert np.array_equal(out["ct"], ct), "not in place: the input CT is untouched"
    # C order, channel-first MetaTensors (what MONAI's LoadImaged gives): the same bits
    c_ct, c_masks = _case("C")
    mt = {"ct": MetaTensor(torch.from_numpy(c_ct)[None]),
          "masks": {r: MetaTensor(torch.from_numpy(m.astype(np.float32))[None]) for r, m in c_masks.items()}}
    _assert_same(prep_transforms(p, threads=threads)(mt), ref)
    # each transform on its own (the region ones normalise the CT themselves)
    alone = Compose([GlobalImaged(p), RegionTexturesd(p), RegionGeometryd(p)])({"ct": ct, "masks": masks})
    _assert_same(alone, ref)
    # in place: the CT's memory now holds normalised values, so `ct` is gone from the output
    own = ct.copy(order="F")
    inplace = prep_transforms(p, in_place=True)({"ct": own, "masks": masks})
    _assert_same(inplace, ref)
    assert "ct" not in inplace and float(own.max()) <= 1.0


def test_label_map_gives_the_same_tensors_as_region_masks():
    p = PrepParams(image_size=SIZE)
    ct, masks = _case("F")
    label = np.zeros(ct.shape, np.int16)
    label[masks["lung"]] = 3
    label[masks["heart"]] = 7  # drawn last: the heart's voxels are heart in both inputs
    masks["lung"] &= ~masks["heart"]
    pipeline = Compose([LabelToRegionMasksd({"lung": [3], "heart": 7, "thyroid": [9]}), prep_transforms(p)])
    out = pipeline({"ct": ct, "label": label})
    assert out["regions"] == ["heart", "lung"], "the paper's region order, the absent thyroid left out"
    _assert_same(out, _by_kernels(ct, {r: masks[r] for r in ("heart", "lung")}, p))
    with pytest.raises(ValueError, match="unknown region"):
        LabelToRegionMasksd({"liver": [1]})


def test_an_empty_foreground_raises_through_compose():
    ct, masks = _case("F")
    with pytest.raises(RuntimeError) as info:
        prep_transforms(PrepParams(image_size=SIZE))({"ct": np.full_like(ct, -1024.0), "masks": masks})
    err = transform_error(info.value)
    assert isinstance(err, ValueError) and "empty foreground" in str(err)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tf") / "benchmark"
    synthesize(out, 2, 1, seed=11, shape=(64, 64, 16), progress=False)
    return out


def test_monai_datasets_over_two_cases_equal_the_kit_cache(bench, tmp_path):
    params = PrepParams(image_size=SIZE)
    cache = prepare(bench, tmp_path / "cache", params, progress=False)
    entries = index_dataset(bench).cases[:2]
    items = [{"ct": str(e.volume), "masks": {r: str(p) for r, p in e.masks.items()}} for e in entries]
    kit_loader = Compose([LoadRegionCased(threads=2), prep_transforms(params)])
    persistent = PersistentDataset(items, kit_loader, cache_dir=tmp_path / "persistent")
    # MONAI's own reader (nibabel, C-ordered channel-first MetaTensors) and a user's step gathering the masks
    flat = [{"ct": it["ct"], **it["masks"]} for it in items]
    monai_loader = Compose([LoadImaged(["ct", *REGIONS], ensure_channel_first=True, image_only=True,
                                       allow_missing_keys=True),
                            lambda d: {"ct": d["ct"], "masks": {r: d[r] for r in REGIONS if r in d}},
                            prep_transforms(params, threads=2)])
    for ds in (Dataset(items, kit_loader), persistent, persistent, Dataset(flat, monai_loader)):
        for i, e in enumerate(entries):
            got = ds[i]
            rec = next(r for r in cache.cases() if r.name == e.name)
            assert got["regions"] == rec.regions, (type(ds).__name__, i)
            _assert_same(got, cache.load(e.name))
    assert len(list((tmp_path / "persistent").glob("*.pt"))) == 2, "PersistentDataset cached both cases"


def test_user_transforms_before_and_after(bench):
    params = PrepParams(image_size=SIZE)
    e = index_dataset(bench).cases[0]
    item = {"ct": str(e.volume), "masks": {r: str(p) for r, p in e.masks.items()}}
    plain = Compose([LoadRegionCased(), prep_transforms(params)])(item)
    # a user's step before: mirror the CT and its masks along x
    flip = Lambdad(["ct"], lambda x: x[::-1].copy())

    def flip_masks(d):
        return {**d, "masks": {r: m[::-1] for r, m in d["masks"].items()}}

    # ... and after
    rescale = ScaleIntensityRanged(["image", "full"], a_min=-1.0, a_max=1.0, b_min=0.0, b_max=1.0)
    ds = Dataset([item], Compose([LoadRegionCased(), flip, flip_masks, prep_transforms(params), rescale]))
    got = ds[0]
    assert got["regions"] == plain["regions"]
    for k in ("texture", "geometry"):  # mirroring commutes with the resize up to the order of float sums
        assert torch.allclose(got[k], plain[k].flip(1), atol=1e-6), k
    for k in ("image", "full"):
        assert float(got[k].min()) >= 0.0 and float(got[k].max()) <= 1.0
        assert torch.allclose(torch.as_tensor(got[k]), (plain[k].flip(1) + 1) / 2, atol=1e-6), k
