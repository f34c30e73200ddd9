"""The paper's preprocessing (data.case_tensors) equal to the MONAI recipe, and its cache (data.prep): the
load_cache contract, reuse and invalidation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reg2rg_lib.bench.recipe import recipe_case
from reg2rg_lib.data.case_tensors import prepare_case
from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.prep import PrepParams, load_cache, prepare
from reg2rg_lib.data.resize import area_resize, bounding_box, mask_resize_block, normalise_hu
from reg2rg_lib.data.synth.build import synthesize
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.regions import LABELS, REGIONS

SIZE = (32, 32, 8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "benchmark"
    synthesize(out, 3, 2, seed=5, shape=(64, 64, 16), progress=False)
    return out


@pytest.fixture(scope="module")
def cache_dir(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "cache"
    prepare(bench, out, PrepParams(image_size=SIZE), progress=False)
    return out


@pytest.mark.parametrize("shape,size", [((37, 50, 13), (16, 16, 8)), ((20, 30, 10), (32, 24, 16)),
                                        ((64, 64, 16), (32, 32, 8))])
def test_area_resizing_equals_torch_and_mask_block_shortcut_is_exact(shape, size):
    g = torch.Generator().manual_seed(0)
    x = torch.rand((2, *shape), generator=g) * 2 - 1
    ref = F.interpolate(x[None], size, mode="area")[0]
    assert float((area_resize(x, size) - ref).abs().max()) < 1e-6
    mask = np.zeros(shape, bool)
    mask[3:11, 5:19, 2:7] = True
    mask[4, 6, 3] = False
    box = bounding_box(mask)
    assert box == (slice(3, 11), slice(5, 19), slice(2, 7))
    block, out = mask_resize_block(mask, box, size)
    got = torch.zeros(size)
    got[out] = block
    ref = F.interpolate(torch.from_numpy(mask).float()[None, None], size, mode="area")[0, 0]
    assert float((got - ref).abs().max()) == 0.0


def test_bounding_box_matches_monai_in_both_memory_orders():
    from monai.transforms.utils import generate_spatial_bounding_box

    rng = np.random.default_rng(0)
    mask = np.zeros((30, 20, 10), bool)
    mask[rng.integers(4, 25, 5), rng.integers(2, 18, 5), rng.integers(1, 9, 5)] = True
    start, end = generate_spatial_bounding_box(mask[None])
    expected = tuple(slice(int(a), int(b)) for a, b in zip(start, end))
    assert bounding_box(mask) == expected
    assert bounding_box(np.asfortranarray(mask)) == expected
    assert bounding_box(np.zeros((4, 4, 4), bool)) is None
    assert (
        float(normalise_hu(torch.tensor(-1024.0))) == -1.0 and float(normalise_hu(torch.tensor(500.0))) == 1.0
    )


def test_cached_tensors_equal_the_straightforward_recipe(bench):
    entry = index_dataset(bench).cases[0]
    for size in (SIZE, (40, 24, 12)):
        kit = prepare_case(entry, PrepParams(image_size=size), threads=2).tensors
        ref = recipe_case(entry.volume, entry.masks, size)
        for key in ("image", "full", "texture", "geometry"):
            assert kit[key].shape == ref[key].shape, key
            assert float((kit[key] - ref[key]).abs().max()) <= 1e-3, key


def test_load_cache_contract(cache_dir, bench):
    cache = load_cache(cache_dir)
    assert len(cache.cases("train")) == 3 and len(cache.cases("test")) == 2 and len(cache) == 5
    assert cache.params["image_size"] == list(SIZE)
    rec = cache.cases("test")[0]
    assert rec.name == "valid_1_a_1" and rec.split == "test"
    assert rec.regions == [r for r in REGIONS if r in rec.regions], "canonical order"
    assert set(rec.reports) == set(rec.regions) and set(rec.labels) == set(LABELS)
    assert rec.report.startswith(rec.reports.get("trachea and bronchie", "")[:10])
    t = cache.load(rec.name)
    r = len(rec.regions)
    assert {k: tuple(v.shape) for k, v in t.items()} == {
        "image": (1, *SIZE), "full": (1, *SIZE), "texture": (r, *SIZE), "geometry": (r, *SIZE)}
    assert all(v.dtype == torch.float32 for v in t.values())
    assert float(t["image"].min()) >= -1 and float(t["image"].max()) <= 1
    assert float(t["geometry"].min()) >= 0 and float(t["geometry"].max()) <= 1
    assert (t["geometry"].flatten(1).amax(1) > 0).all(), "every present region has a non-empty mask"
    # what generation reads when the ViT features are cached
    masks_only = cache.load(rec.name, keys=["geometry"])
    assert list(masks_only) == ["geometry"] and torch.equal(masks_only["geometry"], t["geometry"])
    with pytest.raises(BadInputError, match="unreadable cache entry"):
        cache.load(rec.name, keys=["geometry", "nope"])
    with pytest.raises(KeyError, match="nope"):
        cache.load("nope")
    with pytest.raises(ValueError, match="split"):
        cache.cases("valid")
    with pytest.raises(KitError, match="no prepared cache"):
        load_cache(bench)


def test_cache_is_reused_and_invalidated_when_a_parameter_changes(bench, tmp_path):
    out = tmp_path / "cache"
    first = prepare(bench, out, PrepParams(image_size=SIZE), progress=False)
    assert first.manifest["counts"]["computed"] == 5
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}
    again = prepare(bench, out, PrepParams(image_size=SIZE), progress=False)
    assert again.manifest["counts"] == {**first.manifest["counts"], "reused": 5, "computed": 0}
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}
    other = prepare(bench, out, PrepParams(image_size=(16, 16, 8)), progress=False)
    assert other.manifest["counts"]["computed"] == 5
    assert other.load("train_1_a_1")["image"].shape == (1, 16, 16, 8)
    assert json.loads((out / "manifest.json").read_text())["params"]["image_size"] == [16, 16, 8]
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(stamp), "no stale or temporary files"


def test_changed_input_file_is_recomputed(bench, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(bench, data)
    out = tmp_path / "cache"
    prepare(data, out, PrepParams(image_size=SIZE), progress=False)
    vol = next((data / "train_preprocessed").rglob("train_2_a_1.nii.gz"))
    vol.write_bytes(vol.read_bytes())  # same bytes, new mtime: treated as changed
    again = prepare(data, out, PrepParams(image_size=SIZE), progress=False)
    assert again.manifest["counts"]["computed"] == 1 and again.manifest["counts"]["reused"] == 4


def test_ctrg_format_keeps_unmasked_text_as_other_report(bench, tmp_path):
    import shutil

    from reg2rg_lib.data.ctrg import PROMPT_SUFFIX, other_report

    data = tmp_path / "ctrg"
    shutil.copytree(bench, data)
    # the segmentation missed the pleura
    next(data.rglob("seg_train_1_a_1")).joinpath("pleura.nii.gz").unlink()
    with open(data / "train_region_report.csv", "a") as f:
        f.write('train_1_a_1.nii.gz,other,"The brain parenchyma is normal."\n')
    plain = prepare(data, tmp_path / "plain", PrepParams(image_size=SIZE), progress=False)
    assert any(s["item"] == "train_1_a_1/pleura" for s in plain.skipped)
    cache = prepare(data, tmp_path / "c", PrepParams(image_size=SIZE), progress=False, dataset="ctrg")
    rec = next(r for r in cache.cases() if r.name == "train_1_a_1")
    assert "pleura" not in rec.regions and set(rec.other) == {"pleura", "other"}
    assert rec.other["other"] == "The brain parenchyma is normal."
    text = other_report(rec.other)
    assert text.startswith("The other report is: {pleura: ") and text.endswith(
        "{other: The brain parenchyma is normal.}"
    )
    assert next(r for r in cache.cases() if r.name == "train_2_a_1").other == {"other": ""}
    assert PROMPT_SUFFIX.endswith("generate an 'other report' at the end.")
    assert all(r.other == {} for r in plain.cases())
