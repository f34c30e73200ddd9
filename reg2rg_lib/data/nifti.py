"""NIfTI I/O: read a NIfTI-1/2 volume or mask with nibabel, checked, and write one byte-reproducibly.

`read_nifti` decodes a `.nii.gz` / `.nii` file into a `Nifti` (voxels in stored order, affine, spacing),
float32 HU for a volume and bool for a mask; `check_aligned` tells whether a mask lies on its volume's voxel
grid; `write_nifti` writes a gzipped NIfTI-1 whose bytes depend only on the array and the affine. Every
problem with a file is a `BadInputError(path, problem)`: one line naming the file and what is wrong with it.
Where the RadGenome-ChestCT layout keeps these files is `data.layout`'s job.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.io import atomic_path

#: header fields whose disagreement makes a mask unusable with its volume (mm; voxel-aligned means same grid)
AFFINE_ATOL_MM = 1e-2


@dataclass
class Nifti:
    """A decoded NIfTI image: data in stored voxel order (float32 for volumes, bool for masks) and its
    affine."""

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]


def _load(path: Path, kind: str) -> nib.Nifti1Image | nib.Nifti2Image:
    """The NIfTI-1/2 image at `path` (`nib.load`; its voxels are read later, from `dataobj`)."""
    if not path.is_file():
        raise BadInputError(path, f"{kind} file missing")
    if path.stat().st_size == 0:
        raise BadInputError(path, f"{kind} file is empty (0 bytes)")
    try:
        img = nib.load(path, mmap=False)
    except nib.filebasedimages.ImageFileError:
        raise BadInputError(path, _unreadable(path)) from None
    except (OSError, EOFError, zlib.error) as err:
        raise BadInputError(path, f"corrupt or truncated NIfTI ({_first_line(err)})") from None
    except Exception:  # nibabel raises several types for a header it cannot parse
        raise BadInputError(path, "not a NIfTI file (no valid NIfTI-1/2 header)") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise BadInputError(path, f"not a NIfTI file (read as {type(img).__name__})")
    return img


def _unreadable(path: Path) -> str:
    """Why nibabel could not tell what `path` is (it does not say): a compression its name does not announce,
    a file cut or corrupt within its header, or no NIfTI header at all."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if gzipped != path.name.endswith(".gz"):
        return "gzip-compressed but not named .gz" if gzipped else "named .gz but not gzip-compressed"
    try:
        with gzip.open(path) if gzipped else open(path, "rb") as f:
            head = f.read(348)  # the size of a NIfTI-1 header
    except (OSError, EOFError, zlib.error) as err:
        return f"corrupt or truncated NIfTI (gzip: {_first_line(err)})"
    if len(head) < 348:
        return "corrupt or truncated NIfTI (shorter than a NIfTI header)"
    return "not a NIfTI file (no valid NIfTI-1/2 header)"


def _first_line(err: BaseException) -> str:
    """`err`'s first line, up to the file name nibabel appends (the kit's message starts with the file)."""
    return (str(err).splitlines() or [type(err).__name__])[0].split(" from ")[0]


def read_nifti(path: str | os.PathLike[str], kind: str = "volume") -> Nifti:
    """Decode a NIfTI-1/2 file (`.nii.gz` or `.nii`) with nibabel; `kind` "volume" gives float32 HU, "mask" a
    bool array.

    The same arrays, bit for bit, as the hand-written decoder this replaced (one-shot zlib, zero-copy views),
    on every NIfTI of the demo outputs and the full-size CT; 1.26x its decoding time and 1.14x its
    `prepare_case` time per full-size volume (benchmarks/nifti_nibabel.py, 2-core machine, 2026-12-06): kept
    for the simpler code.

    Raises `BadInputError` for a missing, empty, truncated or corrupt file, a file that is not NIfTI, an image
    that is not 3-D, or NaN voxels.
    """
    path = Path(path)
    img = _load(path, kind)
    try:
        raw = np.asarray(img.dataobj.get_unscaled())
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise BadInputError(path, f"corrupt or truncated NIfTI ({_first_line(err)})") from None
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if raw.ndim > 3:
        raw = raw.reshape(raw.shape[:3], order="F") if all(n == 1 for n in raw.shape[3:]) else raw
    if raw.ndim != 3:
        raise BadInputError(path, f"expected a 3-D image, got shape {raw.shape}")
    if raw.dtype.kind == "f" and np.isnan(raw).any():
        raise BadInputError(path, f"{int(np.isnan(raw).sum())} NaN voxel(s)")
    if kind == "mask":
        binary = raw.dtype.itemsize == 1 and raw.dtype.kind in "uib" and raw.min() >= 0 and raw.max() <= 1
        data = raw.view(bool) if binary else raw > 0  # a 0/1 byte mask is viewed, not copied
    else:
        # the scaling in float32, as HU have always been computed here (nibabel's own scaling may promote)
        data = raw.astype(np.float32)
        if (slope is not None and slope != 1) or (inter is not None and inter != 0):
            data *= np.float32(1.0 if slope is None else slope)
            data += np.float32(0.0 if inter is None else inter)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return Nifti(data, np.asarray(img.affine, dtype=np.float64), zooms)


def check_aligned(mask: Nifti, volume: Nifti, path: str | os.PathLike[str]) -> None:
    """Raise `BadInputError` unless `mask` lies on the voxel grid of `volume` (same shape and affine)."""
    if mask.data.shape != volume.data.shape:
        raise BadInputError(
            path, f"mask grid {mask.data.shape} does not match the volume's {volume.data.shape}"
        )
    if not np.allclose(mask.affine, volume.affine, atol=AFFINE_ATOL_MM):
        raise BadInputError(path, "mask affine does not match the volume's (not voxel-aligned)")


def write_nifti(
    path: str | os.PathLike[str], data: np.ndarray, affine: np.ndarray, compresslevel: int = 1
) -> Path:
    """Write `data` as a gzipped NIfTI-1 with a fixed gzip header (mtime 0, no file name), atomically.

    The same array and affine always give the same bytes, which is what makes `reg2rg synth` reproducible.
    """
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = bytearray(img.to_bytes())
    if struct.unpack_from("<i", raw, 0)[0] == 348 and struct.unpack_from("<f", raw, 108)[0] == 0:
        struct.pack_into("<f", raw, 108, 352.0)  # vox_offset: nibabel leaves 0; the standard wants >= 352
    payload = gzip.compress(bytes(raw), compresslevel=compresslevel, mtime=0)
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(payload) and path.read_bytes() == payload:
        return path  # unchanged: keep the file (and its mtime, so prep caches stay valid)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)
