"""NIfTI through nibabel: `read_nifti` against the file's own bytes, and nearest-neighbour label resampling
against sampling each destination voxel centre by hand."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest

from reg2rg_lib.data.nifti import read_nifti
from reg2rg_lib.data.segmentation import nearest_labels
from reg2rg_lib.errors import BadInputError

DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64}


def _rotated_affine(seed: int = 0) -> np.ndarray:
    """A non-trivial affine: rotated about all three axes, anisotropic, sheared a little, translated."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag([0.7, 0.9, 2.5]) @ np.array([[1, 0.05, 0], [0, 1, 0], [0, 0, 1]])
    affine[:3, 3] = [-120.5, 33.25, 410.0]
    return affine


def _from_bytes(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    """(stored voxels, float32 scaled voxels, sform affine, spacing) of a NIfTI-1 file read with struct alone,
    independently of nibabel."""
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    assert struct.unpack_from("<i", raw, 0)[0] == 348
    dim = struct.unpack_from("<8h", raw, 40)
    shape = tuple(dim[1:1 + dim[0]])
    dtype = np.dtype(DTYPES[struct.unpack_from("<h", raw, 70)[0]]).newbyteorder("<")
    offset, slope, inter = struct.unpack_from("<3f", raw, 108)
    voxels = np.frombuffer(raw, dtype, int(np.prod(shape)), int(offset)).reshape(shape[:3], order="F")
    hu = voxels.astype(np.float32)
    if np.isfinite(slope) and slope != 0 and (slope, inter) != (1, 0):  # NaN or 0: no scaling
        hu = hu * np.float32(slope) + np.float32(inter)
    affine = np.eye(4)
    affine[:3] = np.array(struct.unpack_from("<12f", raw, 280)).reshape(3, 4)
    return voxels, hu, affine, tuple(float(z) for z in struct.unpack_from("<3f", raw, 80))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("case", ["int16 scaled", "float32", "uint8 mask", "4-D of one frame"])
def test_read_nifti_gives_the_voxels_affine_and_spacing_the_file_holds(tmp_path, suffix, case):
    rng = np.random.default_rng(1)
    affine = _rotated_affine()
    if case == "int16 scaled":
        data = rng.integers(-1024, 3000, (23, 17, 9)).astype(np.int16)
    elif case == "float32":
        data = rng.normal(0, 300, (23, 17, 9)).astype(np.float32)
    elif case == "uint8 mask":
        data = (rng.random((23, 17, 9)) > 0.6).astype(np.uint8)
    else:
        data = rng.integers(-1000, 1000, (23, 17, 9, 1)).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    if "int16" in case:
        img.header.set_slope_inter(0.37, -1024.3)  # a slope that float32 cannot hold exactly
    path = tmp_path / f"vol{suffix}"
    nib.save(img, path)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == suffix.endswith(".gz")
    stored, expected, sform, spacing = _from_bytes(path)
    got = read_nifti(path)
    assert got.data.dtype == np.float32 and got.data.shape == expected.shape
    assert got.data.tobytes() == expected.tobytes(), "bit for bit, scaling in float32"
    np.testing.assert_allclose(got.affine, sform, atol=1e-5)
    assert got.spacing == pytest.approx(spacing)
    mask = read_nifti(path, kind="mask")
    assert mask.data.dtype == bool and np.array_equal(mask.data, stored > 0), (
        "a mask is the stored voxels > 0"
    )


def test_a_nifti2_file_is_read_too(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti2Image(data, _rotated_affine(3)), tmp_path / "v2.nii.gz")
    got = read_nifti(tmp_path / "v2.nii.gz")
    assert np.array_equal(got.data, data) and np.allclose(got.affine, _rotated_affine(3), atol=1e-6)


@pytest.mark.parametrize("make,expected", [
    (lambda raw: gzip.decompress(raw), "named .gz but not gzip-compressed"),
    (lambda raw: raw[:40], "corrupt or truncated NIfTI (gzip:"),
    (lambda raw: gzip.compress(gzip.decompress(raw)[:200]), "shorter than a NIfTI header"),
    (lambda raw: gzip.compress(gzip.decompress(raw)[:1000]), "corrupt or truncated NIfTI (Expected"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, make, expected):
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), good)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(make(good.read_bytes()))
    with pytest.raises(BadInputError) as err:
        read_nifti(bad)
    message = str(err.value)
    assert message.startswith(f"{bad}: ") and expected in message and "\n" not in message


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
def test_nearest_labels_samples_each_voxel_centre_in_world_coordinates(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, (21, 18, 11)).astype(np.uint8)
    src = np.diag([*rng.uniform(0.6, 2.0, 3), 1.0])
    src[:3, 3] = rng.uniform(-4, 4, 3)
    dst = _rotated_affine(seed)  # centred on the source, give or take a few mm: the grids overlap in part
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
