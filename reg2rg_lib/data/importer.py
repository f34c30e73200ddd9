"""`reg2rg import-ct`: a user's CT (a DICOM series, or a NIfTI, NRRD or MHA file) -> one volume of the layout.

The volume is written where the RadGenome-ChestCT layout keeps volume NAME (`data.layout.volume_relpath`), in
HU (RescaleSlope/Intercept applied), slices ordered by their position along the slice normal, with the affine
its region masks will share: voxel (i, j, k) -> world millimetres in RAS+, so DICOM's LPS patient coordinates
are kept (x and y change sign, nothing moves). Voxel axes are flipped or permuted (never resampled) to LAS,
the order the embedded benchmark's volumes have, so the model sees the CT the way up it was trained on. A JSON
record of what was read (`<out>/imports/<NAME>.json`) sits beside it.

Readers, and why:
- DICOM: pydicom. A pure-Python wheel (no compiled code, no network at run time) that reads every tag this
  module has to check (Modality, SeriesInstanceUID, ImagePositionPatient, ImageOrientationPatient,
  PixelSpacing, RescaleSlope/Intercept, GantryDetectorTilt, TransferSyntaxUID) and says, per transfer syntax,
  whether a pixel decoder is installed, so a compressed series without one fails with a clear message instead
  of a traceback.
- NIfTI: nibabel, through the kit's own checked reader (`data.nifti.read_nifti`).
- NRRD / MHA / MHD: SimpleITK (the `io` extra: `pip install "reg2rg-kit[io]"`), imported only when such a file
  comes.

Refused, with one line naming the file: an empty folder, no DICOM file, not a CT (Modality), several CT series
and no `--series` (the UIDs are listed), a slice without ImagePositionPatient, duplicate slice positions,
missing slices (a gap of a whole number of slice spacings), uneven slice spacing (refused, not resampled:
resample it yourself and import the result as NIfTI), gantry tilt, slices of different size or orientation, a
compressed transfer syntax without a decoder. Other objects in the folder (RTSTRUCT, SEG, SR, files that are
not DICOM, other series) are skipped and listed in the record. Files are written under a temporary name and
renamed at the end.

One file over 400 lines: every reader ends in the same checked `CTVolume` and the refusals above, and
`write_dicom_series` (notebook 08's DICOM export) must write exactly what `read_dicom_series` accepts, so the
DICOM writer stays beside the reader it is checked against.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from reg2rg_lib.data.layout import NIFTI_SUFFIX, SPLIT_PREFIXES, volume_relpath
from reg2rg_lib.data.nifti import read_nifti, write_nifti
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)

#: file suffixes read as one image file (anything else must be a DICOM folder)
IMAGE_SUFFIXES: tuple[str, ...] = (NIFTI_SUFFIX, ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: volume names the layout understands: <split>_<patient>_<scan>_<reconstruction>, e.g. valid_9001_a_1
NAME_RE = re.compile(r"^(?:" + "|".join(SPLIT_PREFIXES) + r")_[A-Za-z0-9]+_[A-Za-z0-9]+_[A-Za-z0-9]+$")
#: modalities of objects that carry no CT image: skipped and listed
NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "SEG", "SR", "PR", "KO", "REG", "RTPLAN", "RTDOSE", "RTRECORD", "DOC"}
)
#: slice positions closer than this (mm) are duplicates
DUPLICATE_MM = 0.01
#: spacing deviation allowed between neighbouring slices: max(SPACING_ATOL_MM, SPACING_RTOL * median spacing)
SPACING_ATOL_MM, SPACING_RTOL = 0.01, 0.01
#: steepest angle (degrees) between the slice stack and the slice normal that is not called gantry tilt
TILT_MAX_DEG = 0.1
#: patient LPS <-> RAS: x and y change sign
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: voxel axes of written volumes: x to the patient's left, y to anterior, z to superior, as the embedded
#: benchmark (the kit's training data) stores them, so the model sees an imported CT the way up it was trained
#: on
ORIENTATION: tuple[str, str, str] = ("L", "A", "S")


@dataclass
class CTVolume:
    """A CT read from disk: HU in (X, Y, Z) voxel order, its voxel -> RAS+ mm affine, and how it was read."""

    data: np.ndarray  # (X, Y, Z) float32 HU
    affine: np.ndarray  # (4, 4) voxel -> RAS+ world mm
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportResult:
    name: str
    volume: Path  # the written NIfTI
    record_path: Path  # <out>/imports/<name>.json
    record: dict[str, Any]


def check_name(name: str) -> str:
    """NAME as the layout needs it (`valid_9001_a_1`); a KitError says what is wrong otherwise."""
    if not NAME_RE.match(name):
        raise KitError(
            f"volume name {name!r} does not fit the layout: use <split>_<patient>_<scan>_<recon> with "
            f"split one of {', '.join(SPLIT_PREFIXES)} (e.g. valid_9001_a_1)"
        )
    return name


def import_ct(src: str | os.PathLike[str], out_dir: str | os.PathLike[str], name: str,
              series: str | None = None) -> ImportResult:
    """Read `src` (a DICOM folder or an image file), check it, and write it as volume `name` under
    `out_dir`."""
    check_name(name)
    vol = read_ct(src, series)
    out_dir = Path(out_dir).expanduser().resolve()
    target = out_dir / volume_relpath(name)
    vol = to_orientation(vol, ORIENTATION)
    data = vol.data
    if (
        np.all(np.isfinite(data))
        and data.min() >= -32768
        and data.max() <= 32767
        and np.all(data == np.round(data))
    ):
        data = data.astype(np.int16)  # whole HU values: stored as int16 like RadGenome's volumes
    write_nifti(target, data, vol.affine)
    spacing = np.linalg.norm(vol.affine[:3, :3], axis=0)
    record = {
        "name": name,
        "volume": target.relative_to(out_dir).as_posix(),
        "shape": list(vol.data.shape),
        "spacing_mm": [round(float(s), 5) for s in spacing],
        "affine_ras": np.round(vol.affine, 6).tolist(),
        "dtype": str(data.dtype),
        "hu_range": [float(vol.data.min()), float(vol.data.max())],
        "orientation": "".join(ORIENTATION),
        "resampled": False,
        **vol.record,
    }
    if vol.data.min() > -500:
        record["warning"] = f"lowest value {vol.data.min():g} > -500: no air in the volume; is it in HU?"
        logger.warning(f"[import-ct] {src}: {record['warning']}")
    record_path = write_json_atomic(out_dir / "imports" / f"{name}.json", record)
    logger.info(f"[import-ct] {src} -> {target} ({'x'.join(map(str, vol.data.shape))} voxels)")
    return ImportResult(name, target, record_path, record)


def to_orientation(vol: CTVolume, axcodes: tuple[str, str, str]) -> CTVolume:
    """The same volume with its voxel axes flipped / permuted to `axcodes` (world positions unchanged)."""
    current = io_orientation(vol.affine)
    change = ornt_transform(current, axcodes2ornt(axcodes))
    if np.array_equal(change, [[0, 1], [1, 1], [2, 1]]):
        return vol
    # NIfTI's voxel order: written without a transpose
    data = np.asfortranarray(apply_orientation(vol.data, change))
    affine = vol.affine @ inv_ornt_aff(change, vol.data.shape)
    return CTVolume(data, affine, vol.record)


def read_ct(src: str | os.PathLike[str], series: str | None = None) -> CTVolume:
    """A DICOM folder (or one DICOM file's folder) or a NIfTI / NRRD / MHA file, as a checked `CTVolume`."""
    path = Path(src).expanduser()
    if not path.exists():
        raise BadInputError(path, "not found")
    if path.is_dir():
        return read_dicom_series(path, series)
    if path.name.lower().endswith(IMAGE_SUFFIXES):
        if series:
            raise BadInputError(path, "--series only applies to a DICOM folder")
        return read_image_file(path)
    return read_dicom_series(path.parent, series)  # a single .dcm file: its folder is the series


# ------------------------------------------------------------------------------------------------ image files


def read_image_file(path: Path) -> CTVolume:
    """NIfTI through nibabel; NRRD / MHA / MHD through SimpleITK (LPS world coordinates turned into RAS)."""
    name = path.name.lower()
    if name.endswith((NIFTI_SUFFIX, ".nii")):
        img = read_nifti(path)
        return CTVolume(img.data, img.affine, {"source": str(path), "reader": "nibabel"})
    try:
        import SimpleITK as sitk  # optional (the `io` extra): only NRRD / MHA need it
    except ImportError:
        raise BadInputError(path, "reading NRRD / MHA needs SimpleITK: pip install 'reg2rg-kit[io]' "
                                  "(or convert it to NIfTI)") from None
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise BadInputError(
            path, f"not a readable image ({str(err).strip().splitlines()[-1][:120]})"
        ) from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise BadInputError(path, f"expected a 3-D single-channel image, got {img.GetDimension()}-D with "
                                  f"{img.GetNumberOfComponentsPerPixel()} component(s)")
    # (z,y,x)->(x,y,z)
    data = np.asfortranarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0), dtype=np.float32)
    if not np.isfinite(data).all():
        raise BadInputError(path, f"{int((~np.isfinite(data)).sum())} non-finite voxel(s)")
    direction = np.array(img.GetDirection(), float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(img.GetSpacing(), float)[None, :]
    lps[:3, 3] = img.GetOrigin()
    return CTVolume(
        data, LPS_TO_RAS @ lps, {"source": str(path), "reader": f"SimpleITK {sitk.Version.VersionString()}"}
    )


# ---------------------------------------------------------------------------------------------------- DICOM


def _pydicom():
    try:
        import pydicom  # lazy: only DICOM input needs it
    except ImportError:
        raise KitError("reading DICOM needs pydicom: pip install pydicom") from None
    return pydicom


def scan_dicom(folder: Path) -> tuple[list[tuple[Path, Any]], list[dict[str, str]]]:
    """(path, header) of every DICOM file under `folder` (pixels not read), and the files that are not
    DICOM."""
    pydicom = _pydicom()
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts[-1:])
    )
    if not files:
        raise BadInputError(folder, "empty folder (no files)")
    headers, skipped = [], []
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as err:
            skipped.append(
                {"file": str(p.relative_to(folder)), "reason": f"not DICOM ({type(err).__name__})"}
            )
            continue
        headers.append((p, ds))
    if not headers:
        raise BadInputError(folder, f"no DICOM file among its {len(files)} file(s)")
    return headers, skipped


def _describe(uid: str, items: list[tuple[Path, Any]]) -> str:
    ds = items[0][1]
    desc = str(getattr(ds, "SeriesDescription", "") or "").strip()
    return f"{uid} ({len(items)} file(s){', ' + desc if desc else ''})"


def pick_series(folder: Path, headers: list[tuple[Path, Any]], series: str | None
                ) -> tuple[str, list[tuple[Path, Any]], list[dict[str, str]]]:
    """The CT series to import (the only one, or `series`), and the other objects skipped with reasons."""
    by_uid: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    pre_skipped = []
    for p, ds in headers:
        if "Rows" not in ds:  # no image (DICOMDIR, RTSTRUCT, SR, ...): nothing to import
            pre_skipped.append(
                {
                    "file": str(p.relative_to(folder)),
                    "reason": f"{getattr(ds, 'Modality', '') or 'non-image'} object without pixel data",
                }
            )
        elif "LOCALIZER" in [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]:
            pre_skipped.append({"file": str(p.relative_to(folder)), "reason": "localizer (scout) image"})
        else:
            by_uid[str(getattr(ds, "SeriesInstanceUID", "") or "<no SeriesInstanceUID>")].append((p, ds))
    if not by_uid:
        raise BadInputError(
            folder, "no image series: " + "; ".join(sorted({s["reason"] for s in pre_skipped}))
        )
    modality = {
        uid: str(getattr(items[0][1], "Modality", "") or "?").upper() for uid, items in by_uid.items()
    }
    ct = [uid for uid in by_uid if modality[uid] == "CT"]
    if series is not None:
        if series not in by_uid:
            raise BadInputError(folder, f"no series {series}; found " + "; ".join(
                f"{modality[u]} {_describe(u, by_uid[u])}" for u in by_uid))
        if modality[series] != "CT":
            raise BadInputError(
                by_uid[series][0][0], f"not a CT: Modality {modality[series]} (series {series})"
            )
        chosen = series
    elif len(ct) > 1:
        raise BadInputError(folder, f"{len(ct)} CT series; choose one with --series UID: "
                            + "; ".join(_describe(u, by_uid[u]) for u in ct))
    elif not ct:
        images = [u for u in by_uid if modality[u] not in NON_IMAGE_MODALITIES]
        if images:
            u = images[0]
            raise BadInputError(by_uid[u][0][0], f"not a CT: Modality {modality[u]} (series {u})")
        raise BadInputError(folder, "no CT image series, only " + ", ".join(sorted(set(modality.values()))))
    else:
        chosen = ct[0]
    skipped = pre_skipped + [
        {"file": str(p.relative_to(folder)), "reason": f"{modality[uid]} series {uid} (not imported)"}
        for uid, items in by_uid.items()
        if uid != chosen
        for p, _ in items
    ]
    return chosen, by_uid[chosen], skipped


def check_transfer_syntax(items: list[tuple[Path, Any]]) -> str:
    """The series' transfer syntax; a compressed one without an installed pixel decoder is refused."""
    from pydicom.pixels import get_decoder  # lazy: pydicom is only needed for DICOM input

    seen = {}
    for p, ds in items:
        uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        seen.setdefault(str(uid), (p, uid))
    for p, uid in seen.values():
        if uid is None:
            continue  # no file meta: pydicom reads it as implicit little endian
        try:
            available = get_decoder(uid).is_available
        except (NotImplementedError, ValueError):
            available = False
        if not available:
            raise BadInputError(p, f"compressed transfer syntax {getattr(uid, 'name', uid)} ({uid}) and no "
                                   "decoder installed; decompress it (e.g. `gdcmconv --raw`) or install one "
                                   "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)")
    return ", ".join(sorted(seen))


def _float_list(ds: Any, tag: str, n: int, path: Path) -> np.ndarray | None:
    value = getattr(ds, tag, None)
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value], float)
    except (TypeError, ValueError):
        raise BadInputError(path, f"unreadable {tag} {value!r}") from None
    if arr.shape != (n,):
        raise BadInputError(path, f"{tag} must have {n} values, has {arr.size}")
    return arr


def slice_geometry(folder: Path, items: list[tuple[Path, Any]]) -> tuple[list[tuple[Path, Any]], np.ndarray]:
    """The slices sorted along their normal and the voxel -> LPS affine; refuses what cannot be one volume."""
    first_path, first = items[0]
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise BadInputError(
            first_path, "multi-frame (enhanced) CT is not supported; convert it to NIfTI first"
        )
    iop = _float_list(first, "ImageOrientationPatient", 6, first_path)
    spacing = _float_list(first, "PixelSpacing", 2, first_path)
    if iop is None or spacing is None:
        raise BadInputError(first_path, "missing ImageOrientationPatient or PixelSpacing")
    rows, cols = int(first.Rows), int(first.Columns)
    positions = []
    for p, ds in items:
        ipp = _float_list(ds, "ImagePositionPatient", 3, p)
        if ipp is None:
            raise BadInputError(p, "missing ImagePositionPatient: the slice position is unknown")
        tilt = float(getattr(ds, "GantryDetectorTilt", 0) or 0)
        if abs(tilt) > TILT_MAX_DEG:
            raise BadInputError(
                p, f"gantry tilt of {tilt:g} degrees (GantryDetectorTilt); correct the tilt first"
            )
        other = _float_list(ds, "ImageOrientationPatient", 6, p)
        if other is None or not np.allclose(other, iop, atol=1e-4):
            raise BadInputError(p, "ImageOrientationPatient differs from the other slices' (not one volume)")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols) or not np.allclose(
                _float_list(ds, "PixelSpacing", 2, p), spacing, atol=1e-4):
            raise BadInputError(
                p, "slice size or PixelSpacing differs from the other slices' (not one volume)"
            )
        positions.append(ipp)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    pos = np.array(positions)  # (K, 3) LPS mm
    order = np.argsort(pos @ normal, kind="stable")
    pos, items = pos[order], [items[i] for i in order]
    step = _check_spacing(folder, items, pos, normal)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # i runs along a row (columns), PixelSpacing[1] apart
    lps[:3, 1] = col_dir * spacing[0]  # j runs down a column (rows), PixelSpacing[0] apart
    lps[:3, 2] = step
    lps[:3, 3] = pos[0]
    return items, lps


def _check_spacing(
    folder: Path, items: list[tuple[Path, Any]], pos: np.ndarray, normal: np.ndarray
) -> np.ndarray:
    """The slice-to-slice step vector (mm), after refusing duplicates, missing slices, uneven spacing and
    tilt."""
    if len(items) < 2:
        raise BadInputError(items[0][0], "only one slice: not a volume")
    along = pos @ normal  # (K,) mm along the normal
    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < DUPLICATE_MM)
    if dup.size:
        a, b = items[dup[0]][0], items[dup[0] + 1][0]
        raise BadInputError(
            folder,
            f"duplicate slice position {along[dup[0]]:.2f} mm in {a.name} and {b.name} "
            f"({dup.size} duplicate(s)); remove the repeated acquisition",
        )
    typical = float(np.median(gaps))
    tol = max(SPACING_ATOL_MM, SPACING_RTOL * typical)
    bad = np.flatnonzero(np.abs(gaps - typical) > tol)
    if bad.size:
        k = int(bad[0])
        ratio = gaps[k] / typical
        if ratio > 1.5 and abs(ratio - round(ratio)) * typical <= tol:
            raise BadInputError(
                folder,
                f"missing slice(s): a gap of {gaps[k]:.2f} mm between {items[k][0].name} "
                f"and {items[k + 1][0].name} where slices are {typical:.2f} mm apart "
                f"({int(round(ratio)) - 1} slice position(s) missing)",
            )
        raise BadInputError(
            folder,
            f"uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm, typically "
            f"{typical:.3f}); refused, not resampled: resample it to even slices and "
            "import that as NIfTI",
        )
    step = (pos[-1] - pos[0]) / (len(pos) - 1)
    off_axis = np.linalg.norm(step - (step @ normal) * normal)
    angle = float(np.degrees(np.arctan2(off_axis, abs(step @ normal))))
    if angle > TILT_MAX_DEG:
        raise BadInputError(folder, f"gantry tilt: slices are stacked {angle:.2f} degrees off their normal; "
                                    "correct the tilt first (e.g. dcm2niix does)")
    return step


def read_pixels(items: list[tuple[Path, Any]]) -> np.ndarray:
    """(X, Y, Z) float32 HU of the sorted slices: stored values x RescaleSlope + RescaleIntercept, per
    slice."""
    pydicom = _pydicom()
    first = items[0][1]
    # slices contiguous
    vol = np.empty((int(first.Columns), int(first.Rows), len(items)), np.float32, order="F")
    for k, (p, _) in enumerate(items):
        ds = pydicom.dcmread(p)
        try:
            stored = ds.pixel_array  # (Rows, Columns)
        except Exception as err:  # pydicom raises several types for damaged or undecodable pixel data
            raise BadInputError(p, f"cannot decode pixel data ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
        if stored.shape != (vol.shape[1], vol.shape[0]):
            raise BadInputError(
                p, f"pixel data of shape {stored.shape}, expected {(vol.shape[1], vol.shape[0])}"
            )
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        inter = float(getattr(ds, "RescaleIntercept", 0) or 0)
        vol[:, :, k] = stored.T.astype(np.float32) * np.float32(slope) + np.float32(inter)  # (Columns, Rows)
    return vol


def read_dicom_series(folder: Path, series: str | None = None) -> CTVolume:
    """One CT series of a DICOM folder as a `CTVolume` (see the module docstring for what is refused)."""
    folder = Path(folder)
    headers, not_dicom = scan_dicom(folder)
    uid, items, others = pick_series(folder, headers, series)
    syntax = check_transfer_syntax(items)
    items, lps = slice_geometry(folder, items)
    data = read_pixels(items)
    skipped = not_dicom + others
    for s in skipped:
        logger.info(f"[import-ct] skipped {s['file']}: {s['reason']}")
    first = items[0][1]
    record = {"source": str(folder), "reader": f"pydicom {_pydicom().__version__}", "series": uid,
              "transfer_syntax": syntax, "slices": len(items), "modality": "CT",
              "slice_order": "by ImagePositionPatient along the slice normal",
              "first_file": str(items[0][0].relative_to(folder)),
              "description": str(getattr(first, "SeriesDescription", "") or ""), "skipped": skipped}
    return CTVolume(data, LPS_TO_RAS @ lps, record)


def write_dicom_series(
    hu: np.ndarray,
    affine: np.ndarray,
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    intercept: float = -1024.0,
    description: str = "reg2rg-kit export",
) -> list[Path]:
    """Write an (X, Y, Z) HU volume with a voxel -> RAS+ `affine` as a CT series of single-slice DICOM files.

    Stored values are HU - `intercept` (RescaleSlope 1), uncompressed (explicit VR little endian), one file
    per axial slice `IM0001.dcm` ...; UIDs are derived from the volume's bytes unless given, so a rerun writes
    the same files. Notebook 08 uses it to turn the benchmark's NIfTI source into the DICOM series a user
    would bring.
    """
    _pydicom()  # a clear message when it is missing
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    hu = np.asarray(hu)
    lps = LPS_TO_RAS @ np.asarray(affine, float)
    dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / dx, lps[:3, 1] / dy
    step = lps[:3, 2]
    normal = np.cross(row_dir, col_dir)
    if abs(row_dir @ col_dir) > 1e-6 or abs(abs(normal @ step) - np.linalg.norm(step)) > 1e-6:
        raise ValueError("affine is sheared: slices would not be stacked along their normal")
    stored = np.round(hu.astype(np.float64) - intercept)
    signed = stored.min() < 0
    if stored.min() < (-32768 if signed else 0) or stored.max() > (32767 if signed else 65535):
        raise ValueError("HU range does not fit 16-bit stored values with this intercept")
    stored = stored.astype(np.int16 if signed else np.uint16)
    seed = [str(hu.shape), np.asarray(affine).tobytes().hex()[:64], str(float(hu.mean()))]
    study_uid = study_uid or generate_uid(entropy_srcs=["study", *seed])
    series_uid = series_uid or generate_uid(entropy_srcs=["series", *seed])
    frame_uid = generate_uid(entropy_srcs=["frame", *seed])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesDescription, ds.PatientName, ds.PatientID = "CT", description, "Anonymous", "0"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + k * step]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]  # (between rows, between columns)
        ds.SliceThickness = f"{np.linalg.norm(step):.6f}"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{intercept:g}", "1", "HU"
        ds.set_pixel_data(np.ascontiguousarray(stored[:, :, k].T), "MONOCHROME2", 16)  # (Rows, Columns)
        target = folder / f"IM{k + 1:04d}.dcm"
        with atomic_path(target, suffix=".dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        written.append(target)
    return written
