"""NIfTI through nibabel (`data.nifti`): `read_nifti` against the file's own bytes (the label resampling's
tests, against sampling each voxel centre by hand, are in test_data_segmentation.py)."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest

from reg2rg_lib.data.nifti import read_nifti
from reg2rg_lib.errors import BadInputError

DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64}


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
def test_read_nifti_gives_the_voxels_affine_and_spacing_the_file_holds(tmp_path, suffix, case,
                                                                        rotated_affine):
    rng = np.random.default_rng(1)
    affine = rotated_affine()
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


def test_a_nifti2_file_is_read_too(tmp_path, rotated_affine):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti2Image(data, rotated_affine(3)), tmp_path / "v2.nii.gz")
    got = read_nifti(tmp_path / "v2.nii.gz")
    assert np.array_equal(got.data, data) and np.allclose(got.affine, rotated_affine(3), atol=1e-6)


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
