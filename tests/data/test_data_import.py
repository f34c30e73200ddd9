"""`reg2rg import-ct`: DICOM / NIfTI / MHA -> a layout volume in HU, world coordinates kept; bad input
refused."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from reg2rg_lib.data.importer import ORIENTATION, import_ct, read_ct, write_dicom_series
from reg2rg_lib.data.layout import volume_relpath
from reg2rg_lib.data.nifti import read_nifti
from reg2rg_lib.env.assets import find_ct_source
from reg2rg_lib.errors import BadInputError, KitError

NAME = "valid_9001_a_1"


@pytest.fixture(scope="module")
def source():
    """The benchmark's real source CT, every 4th voxel in-plane and every 3rd slice (nibabel fixes the
    affine)."""
    img = nib.load(find_ct_source().volume).slicer[::4, ::4, ::3]
    return np.asarray(img.get_fdata(), np.float32), img.affine


def small_series(folder, n=6, shape=(12, 10)):
    """A tiny CT series: (X, Y, Z) = (12, 10, n), 0.8 x 0.7 x 2 mm, HU = a ramp; returns the files."""
    hu = np.arange(np.prod((*shape, n)), dtype=np.float32).reshape(*shape, n) % 900 - 1000
    affine = np.diag([-0.8, 0.7, 2.0, 1.0])
    affine[:3, 3] = [10.0, -20.0, -30.0]
    return write_dicom_series(hu, affine, folder)


def edit(path, **tags):
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(path)


def hu_at_source_voxels(imported, src_affine, src_shape, n=4000, seed=0):
    """(imported HU, source voxel index) at `n` random imported voxels, matched through world coordinates."""
    rng = np.random.default_rng(seed)
    ijk = np.stack([rng.integers(0, s, n) for s in imported.data.shape])  # (3, n)
    world = imported.affine @ np.vstack([ijk, np.ones(n)])
    src = np.rint(np.linalg.inv(src_affine) @ world)[:3].astype(int)
    assert np.all((src >= 0) & (src < np.array(src_shape)[:, None]))
    return imported.data[tuple(ijk)], tuple(src)


def test_dicom_round_trip_gives_the_same_hu_at_the_same_world_positions(source, tmp_path):
    hu, affine = source
    files = write_dicom_series(hu, affine, tmp_path / "dicom")
    # an independent reader's view of the first written slice: nibabel's DICOM wrapper (rows, columns, slice)
    # in LPS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

        wrapped = dicomwrappers.wrapper_from_data(pydicom.dcmread(files[0]))
    res = import_ct(tmp_path / "dicom", tmp_path / "data", NAME)
    assert res.volume == tmp_path / "data" / volume_relpath(NAME)
    out = read_nifti(res.volume)
    assert out.data.shape == hu.shape
    got, src = hu_at_source_voxels(out, affine, hu.shape)
    np.testing.assert_array_equal(got, hu[src])  # same HU at the same world positions
    assert "".join(nib.aff2axcodes(out.affine)) == "".join(ORIENTATION)
    lps_first_slice = np.diag([-1, -1, 1, 1]) @ affine  # the source's slice 0, row j, column i in LPS
    for row, col in ((0, 0), (5, 17), (31, 2)):
        np.testing.assert_allclose(
            wrapped.affine @ [row, col, 0, 1], lps_first_slice @ [col, row, 0, 1], atol=1e-3
        )
    assert res.record["slices"] == hu.shape[2] and res.record["dtype"] == "int16"
    assert res.record_path.is_file()


def test_other_objects_are_skipped_and_listed(tmp_path):
    small_series(tmp_path / "d")
    rt = pydicom.dcmread(tmp_path / "d" / "IM0001.dcm", stop_before_pixels=True)
    for tag in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(rt, tag)
    rt.Modality, rt.SeriesInstanceUID = "RTSTRUCT", "1.2.3.4.5"
    rt.save_as(tmp_path / "d" / "rtstruct.dcm")
    scout = pydicom.dcmread(tmp_path / "d" / "IM0001.dcm")
    scout.ImageType, scout.ImageOrientationPatient = ["ORIGINAL", "PRIMARY", "LOCALIZER"], [1, 0, 0, 0, 0, -1]
    scout.save_as(tmp_path / "d" / "scout.dcm")
    write_dicom_series(np.zeros((4, 4, 3)), np.eye(4), tmp_path / "d" / "mr", series_uid="1.2.3.9")
    for p in (tmp_path / "d" / "mr").iterdir():
        edit(p, Modality="MR")
    (tmp_path / "d" / "notes.txt").write_text("not dicom")
    vol = read_ct(tmp_path / "d")
    reasons = {s["file"]: s["reason"] for s in vol.record["skipped"]}
    assert reasons["rtstruct.dcm"] == "RTSTRUCT object without pixel data"
    assert reasons["scout.dcm"] == "localizer (scout) image" and "not DICOM" in reasons["notes.txt"]
    assert reasons["mr/IM0001.dcm"] == "MR series 1.2.3.9 (not imported)"
    assert vol.data.shape == (12, 10, 6) and vol.record["slices"] == 6


def test_series_option_picks_one_of_several_ct_series(tmp_path):
    small_series(tmp_path / "d" / "a")
    write_dicom_series(np.full((12, 10, 4), 40.0), np.diag([-1.0, 1.0, 3.0, 1.0]), tmp_path / "d" / "b",
                       series_uid="1.2.826.0.1.3680043.8.498.1")
    with pytest.raises(BadInputError, match=r"2 CT series; choose one with --series") as err:
        read_ct(tmp_path / "d")
    assert "1.2.826.0.1.3680043.8.498.1" in str(err.value)
    with pytest.raises(BadInputError, match=r"no series 9\.9; found CT 1\.2\.826"):
        read_ct(tmp_path / "d", series="9.9")
    vol = read_ct(tmp_path / "d", series="1.2.826.0.1.3680043.8.498.1")
    assert vol.data.shape == (12, 10, 4) and np.all(vol.data == 40)


def _empty(d):
    d.mkdir()


def _not_dicom(d):
    d.mkdir()
    (d / "a.txt").write_text("hello")


def _mr(d):
    for p in small_series(d):
        edit(p, Modality="MR")


def _no_position(d):
    edit(small_series(d)[2], ImagePositionPatient=None)


def _duplicate(d):
    files = small_series(d)
    edit(files[3], ImagePositionPatient=pydicom.dcmread(files[2]).ImagePositionPatient)


def _missing_slice(d):
    small_series(d)[3].unlink()


def _uneven(d):
    p = small_series(d)[3]
    ipp = [float(v) for v in pydicom.dcmread(p).ImagePositionPatient]
    edit(p, ImagePositionPatient=[ipp[0], ipp[1], ipp[2] + 0.6])


def _tilt(d):
    for k, p in enumerate(small_series(d)):
        ipp = [float(v) for v in pydicom.dcmread(p).ImagePositionPatient]
        edit(p, ImagePositionPatient=[ipp[0], ipp[1] + 0.35 * k, ipp[2]])  # ~10 degrees


def _tilt_tag(d):
    edit(small_series(d)[0], GantryDetectorTilt=12.0)


def _compressed(d):
    for p in small_series(d):
        ds = pydicom.dcmread(p)
        ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])  # what a JPEG-LS file holds
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.save_as(p, enforce_file_format=True)


BAD = {
    "empty folder": (_empty, r"empty folder"),
    "no dicom": (_not_dicom, r"no DICOM file"),
    "not a ct": (_mr, r"not a CT: Modality MR"),
    "no position": (_no_position, r"IM0003\.dcm: missing ImagePositionPatient"),
    "duplicate position": (_duplicate, r"duplicate slice position .* IM0003\.dcm and IM0004\.dcm"),
    "missing slice": (
        _missing_slice,
        r"missing slice\(s\): a gap of 4\.00 mm .*1 slice position\(s\) missing",
    ),
    "uneven spacing": (_uneven, r"uneven slice spacing .* refused, not resampled"),
    "gantry tilt": (_tilt, r"gantry tilt: slices are stacked 9\.\d+ degrees off"),
    "gantry tilt tag": (_tilt_tag, r"IM0001\.dcm: gantry tilt of 12 degrees"),
    "compressed": (_compressed, r"compressed transfer syntax JPEG-LS Lossless .* no decoder installed"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_dicom_input_gives_one_line_naming_the_file_and_writes_nothing(case, tmp_path):
    make, pattern = BAD[case]
    folder = tmp_path / "in"
    make(folder)
    with pytest.raises(BadInputError, match=pattern) as err:
        import_ct(folder, tmp_path / "out", NAME)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(folder))  # the folder, or a file inside it
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.nii.gz"))


def test_nifti_input_is_reoriented_to_las_with_world_positions_kept(source, tmp_path):
    hu, affine = source
    flipped = nib.Nifti1Image(hu[::-1, :, ::-1].copy(), affine @ _flip(hu.shape, (0, 2)))  # RAI storage order
    nib.save(flipped, tmp_path / "ct.nii.gz")
    out = read_nifti(import_ct(tmp_path / "ct.nii.gz", tmp_path / "data", NAME).volume)
    assert "".join(nib.aff2axcodes(out.affine)) == "LAS"
    np.testing.assert_array_equal(out.data, hu)  # the same voxels, in the benchmark's order again
    np.testing.assert_allclose(out.affine, affine, atol=1e-4)


def _flip(shape, axes):
    """The voxel -> voxel map of flipping `axes` (so that `affine @ _flip` describes the flipped array)."""
    m = np.eye(4)
    for a in axes:
        m[a, a], m[a, 3] = -1, shape[a] - 1
    return m


def test_mha_and_nrrd_go_through_simpleitk_in_world_coordinates(source, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    hu, affine = source
    img = sitk.GetImageFromArray(hu.transpose(2, 1, 0).astype(np.int16))  # (z, y, x)
    lps = np.diag([-1, -1, 1, 1]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    for suffix in (".mha", ".nrrd"):
        sitk.WriteImage(img, str(tmp_path / f"ct{suffix}"))
        out = read_nifti(import_ct(tmp_path / f"ct{suffix}", tmp_path / suffix[1:], NAME).volume)
        got, src = hu_at_source_voxels(out, affine, hu.shape, seed=1)
        np.testing.assert_array_equal(got, hu[src])


def test_volume_names_must_fit_the_layout(tmp_path):
    with pytest.raises(KitError, match="does not fit the layout"):
        import_ct(tmp_path, tmp_path / "out", "my scan")
