"""Inserted findings: each paints plausible HU into the CT, may claim voxels for a region, and records what it
did.

Every function takes the case's CT (float32 HU, modified in place), its fine label map (modified in place),
the voxel-centre coordinates in mm and a numpy Generator, and returns a `Finding` (or None if the anatomy had
no room for it). The report writer and the label CSV are derived from these records only: exact ground truth.

Sizes are in mm on the physical grid, so a texture crop (which is resized to a fixed shape) loses them:
absolute size, side, and "enlarged" findings (cardiomegaly, effusions, hernia) need the geometry mask or the
global image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from reg2rg_lib.data.synth.anatomy import FINE, LOBE_TEXT, LOBES


@dataclass
class Finding:
    """One inserted abnormality (or a non-label finding such as a liver cyst)."""

    kind: str  # key into reports.ABNORMAL
    region: str  # the region whose paragraph reports it
    label: str | None  # the CT-RATE label it makes positive, None for findings outside the 18 labels
    params: dict[str, Any] = field(default_factory=dict)  # size_mm, lobe, side, ... (what the sentence says)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Canvas:
    """The case being drawn: CT in HU, fine labels, voxel coordinates (mm) and spacing."""

    def __init__(self, ct: np.ndarray, fine: np.ndarray, spacing: tuple[float, float, float]) -> None:
        self.ct, self.fine, self.spacing = ct, fine, np.asarray(spacing, np.float64)
        self.shape = ct.shape

    def mask(self, *classes: str) -> np.ndarray:
        return np.isin(self.fine, [FINE[c] for c in classes])

    def edt(self, mask: np.ndarray) -> np.ndarray:
        """Distance (mm) from each voxel inside `mask` to the nearest voxel outside it (computed in its
        box)."""
        out = np.zeros(self.shape, np.float64)
        idx = np.argwhere(mask)
        if idx.size:
            box = tuple(slice(max(0, lo - 1), hi + 2) for lo, hi in zip(idx.min(0), idx.max(0)))
            out[box] = ndimage.distance_transform_edt(mask[box], sampling=self.spacing)
        return out

    def pick(self, rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray | None:
        """A random voxel index (3,) among the True voxels of `candidates`."""
        idx = np.flatnonzero(candidates)
        return None if idx.size == 0 else np.array(np.unravel_index(rng.choice(idx), self.shape))

    def blob(self, centre: np.ndarray, radii_mm: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
        """Soft ellipsoid weight (1 inside, ramping to 0 over about one voxel) in a box around `centre`."""
        half = np.ceil(np.asarray(radii_mm) / self.spacing).astype(int) + 2
        box = tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(centre, half, self.shape))
        grids = np.meshgrid(
            *[(np.arange(s.start, s.stop) - c) * sp for s, c, sp in zip(box, centre, self.spacing)],
            indexing="ij",
        )
        rn = np.sqrt(sum((g / r) ** 2 for g, r in zip(grids, radii_mm)))
        soft = float(np.min(radii_mm)) / float(self.spacing[:2].max())  # edge width ~ one in-plane voxel
        return box, np.clip(0.5 + (1.0 - rn) * soft, 0.0, 1.0).astype(np.float32)

    def paint(self, box, weight: np.ndarray, hu: float | np.ndarray, claim: str | None = None,
              over: np.ndarray | None = None) -> None:
        """Blend `hu` into the CT with `weight`; voxels with weight > 0.5 (and allowed by `over`) become
        `claim`."""
        if over is not None:
            weight = weight * over[box]
        self.ct[box] = self.ct[box] * (1 - weight) + np.asarray(hu, np.float32) * weight
        if claim is not None:
            self.fine[box][weight > 0.5] = FINE[claim]


def _lobe_choice(rng: np.random.Generator, canvas: Canvas, weights: dict[str, float] | None = None) -> str:
    sizes = np.array([canvas.mask(lobe).sum() * (weights or {}).get(lobe, 1.0) for lobe in LOBES], float)
    return str(rng.choice(LOBES, p=sizes / sizes.sum()))


def lung_nodule(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    lobe = _lobe_choice(rng, canvas)
    size = int(rng.integers(6, 21))  # diameter, mm
    inside = canvas.mask(lobe)
    depth = canvas.edt(inside)
    centre = canvas.pick(rng, depth >= max(size / 2, depth.max() * 0.5))
    if centre is None:
        return None
    box, w = canvas.blob(centre, np.full(3, size / 2))
    canvas.paint(box, w, rng.uniform(20, 60) + rng.normal(0, 8, w.shape), over=inside)
    return Finding("lung_nodule", "lung", "Lung nodule", {"size_mm": size, "lobe": LOBE_TEXT[lobe][0]})


def _patch(canvas: Canvas, rng: np.random.Generator, lobe: str, size_mm: float, hu, alpha: float) -> bool:
    """A lobulated patch (three overlapping ellipsoids) confined to `lobe`."""
    inside = canvas.mask(lobe)
    depth = canvas.edt(inside)
    centre = canvas.pick(rng, depth >= depth.max() * 0.4)
    if centre is None:
        return False
    for _ in range(3):
        offset = np.round(rng.normal(0, size_mm / 4, 3) / canvas.spacing).astype(int)
        c = np.clip(centre + offset, 0, np.array(canvas.shape) - 1)
        box, w = canvas.blob(c, rng.uniform(0.35, 0.55, 3) * size_mm)
        canvas.paint(box, w * alpha, hu, over=inside)
    return True


def consolidation(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    lobe = _lobe_choice(rng, canvas, {"lung_lower_left": 2.0, "lung_lower_right": 2.0})
    if not _patch(canvas, rng, lobe, rng.uniform(30, 55), 30.0, 1.0):
        return None
    return Finding("consolidation", "lung", "Consolidation", {"lobe": LOBE_TEXT[lobe][0]})


def lung_opacity(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    lobe = _lobe_choice(rng, canvas)
    if not _patch(canvas, rng, lobe, rng.uniform(25, 45), -480.0, 0.85):
        return None
    return Finding("lung_opacity", "lung", "Lung opacity", {"lobe": LOBE_TEXT[lobe][0]})


def emphysema(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    upper = canvas.mask("lung_upper_left", "lung_upper_right")
    if not upper.any():
        return None
    field_ = ndimage.gaussian_filter(rng.normal(size=canvas.shape).astype(np.float32), 0.8)
    holes = upper & (field_ > np.quantile(field_[upper], 1 - rng.uniform(0.12, 0.25)))
    canvas.ct[holes] = np.minimum(canvas.ct[holes], -985.0 + rng.normal(0, 5, int(holes.sum())))
    return Finding("emphysema", "lung", "Emphysema", {})


def _posterior_band(canvas: Canvas, lung: np.ndarray, thickness_mm: float, taper: bool) -> np.ndarray:
    """Voxels of `lung` within `thickness_mm` of its most posterior (lowest y) voxel in each (x, z) column,
    thickest at the lung base and thinning to zero at mid-height when `taper`."""
    ny = canvas.shape[1]
    has = lung.any(1)  # (X, Z)
    y_post = np.where(has, np.argmax(lung, axis=1), ny)  # (X, Z) first lung voxel from the back
    ys = np.arange(ny)[None, :, None]
    depth_mm = (ys - y_post[:, None, :]) * canvas.spacing[1]  # (X, Y, Z)
    limit = np.full(canvas.shape[2], thickness_mm)
    if taper:
        zs = np.flatnonzero(lung.any((0, 1)))
        if zs.size:
            z0, z1 = zs[0], zs[0] + 0.6 * (zs[-1] - zs[0]) + 1
            limit = thickness_mm * np.clip((z1 - np.arange(canvas.shape[2])) / (z1 - z0), 0, 1)
    return lung & (depth_mm >= 0) & (depth_mm < limit[None, None, :])


def atelectasis(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    lobe = str(rng.choice(["lung_lower_left", "lung_lower_right"]))
    band = _posterior_band(canvas, canvas.mask(lobe), rng.uniform(8, 16), taper=True)
    if not band.any():
        return None
    canvas.ct[band] = rng.uniform(0, 40) + rng.normal(0, 8, int(band.sum()))
    return Finding("atelectasis", "lung", "Atelectasis", {"lobe": LOBE_TEXT[lobe][0]})


def pleural_effusion(canvas: Canvas, rng: np.random.Generator) -> list[Finding]:
    side = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.3, 0.3]))
    size = int(rng.integers(12, 36))  # maximal thickness, mm
    sides = ["right", "left"] if side == "bilateral" else [side]
    out = [Finding("pleural_effusion", "pleura", "Pleural effusion", {"side": side, "size_mm": size})]
    for s in sides:
        lung = canvas.mask(*[lobe for lobe in LOBES if LOBE_TEXT[lobe][1] == s])
        band = _posterior_band(canvas, lung, size, taper=True)
        canvas.ct[band] = rng.uniform(5, 20) + rng.normal(0, 6, int(band.sum()))
        canvas.fine[band] = FINE["pleural_fluid"]
    if rng.random() < 0.5:  # compressive atelectasis of the adjacent lower lobe
        s = sides[int(rng.integers(len(sides)))]
        lobe = f"lung_lower_{s}"
        band = _posterior_band(canvas, canvas.mask(lobe), 8.0, taper=True)
        if band.any():
            canvas.ct[band] = rng.uniform(10, 40) + rng.normal(0, 8, int(band.sum()))
            out.append(Finding("passive_atelectasis", "lung", "Atelectasis", {"lobe": LOBE_TEXT[lobe][0]}))
    return out


def pericardial_effusion(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    heart = canvas.mask("heart")
    if not heart.any():
        return None
    size = int(rng.integers(6, 16))
    dist = ndimage.distance_transform_edt(~heart, sampling=canvas.spacing)
    soft = canvas.mask("background", "mediastinum_fill", "pleura", "breast", *LOBES)
    rim = (dist > 0) & (dist <= size) & soft
    canvas.ct[rim] = rng.uniform(8, 25) + rng.normal(0, 6, int(rim.sum()))
    canvas.fine[rim] = FINE["pericardial_fluid"]
    return Finding("pericardial_effusion", "heart", "Pericardial effusion", {"size_mm": size})


def _surface_spots(canvas: Canvas, rng: np.random.Generator, organ: np.ndarray, n: int, hu: float,
                   radius_mm: float, where: np.ndarray | None = None) -> int:
    surface = organ & ~ndimage.binary_erosion(organ)
    if where is not None:
        surface &= where
    painted = 0
    for _ in range(n):
        c = canvas.pick(rng, surface)
        if c is None:
            break
        box, w = canvas.blob(c, np.full(3, radius_mm))
        canvas.paint(box, w, hu)
        painted += 1
    return painted


def arterial_calcification(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    n = _surface_spots(canvas, rng, canvas.mask("aorta"), int(rng.integers(4, 11)), 900.0, 2.5)
    return (
        Finding("arterial_calcification", "mediastinum", "Arterial wall calcification", {"spots": n})
        if n
        else None
    )


def coronary_calcification(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    heart = canvas.mask("heart")
    zs = np.flatnonzero(heart.any((0, 1)))
    if zs.size == 0:
        return None
    upper = np.zeros(canvas.shape, bool)
    upper[:, :, zs[0] + int(0.45 * (zs[-1] - zs[0])):] = True  # the AV groove and proximal vessels
    n = _surface_spots(canvas, rng, heart, int(rng.integers(2, 7)), 850.0, 2.5, where=upper)
    return (
        Finding("coronary_calcification", "heart", "Coronary artery wall calcification", {"spots": n})
        if n
        else None
    )


def hiatal_hernia(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    eso = canvas.mask("esophagus")
    zs = np.flatnonzero(eso.any((0, 1)))
    if zs.size == 0:
        return None
    xy = np.argwhere(eso[:, :, zs[0]]).mean(0)
    radii = np.array([rng.uniform(18, 28), rng.uniform(16, 24), rng.uniform(18, 26)])
    centre = np.round([xy[0], xy[1], zs[0] + 0.6 * radii[2] / canvas.spacing[2]]).astype(int)
    centre = np.clip(centre, 0, np.array(canvas.shape) - 1)
    box, w = canvas.blob(centre, radii)
    allowed = canvas.mask(
        "background", "mediastinum_fill", "esophagus", "pleura", "stomach", "abdomen_other", *LOBES
    )
    # fluid below, a gas cap above (an air-fluid level in the herniated stomach)
    zz = np.arange(box[2].start, box[2].stop)[None, None, :]
    hu = np.where(zz > centre[2] + 0.3 * radii[2] / canvas.spacing[2], -850.0, 25.0).astype(np.float32)
    canvas.paint(box, w, np.broadcast_to(hu, w.shape), claim="hernia", over=allowed)
    return Finding("hiatal_hernia", "esophagus", "Hiatal hernia", {"size_mm": int(round(2 * radii.max()))})


def lymphadenopathy(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    fill = canvas.mask("mediastinum_fill")
    depth = canvas.edt(fill)
    allowed = canvas.mask("mediastinum_fill", "background", "vessels", "pleura")
    sizes = []
    for _ in range(int(rng.integers(1, 4))):
        short = float(rng.uniform(12, 24))
        c = canvas.pick(rng, depth >= min(4.0, depth.max()))
        if c is None:
            break
        box, w = canvas.blob(c, np.array([short / 2, short / 2, 0.65 * short]))
        canvas.paint(
            box, w, rng.uniform(35, 50) + rng.normal(0, 6, w.shape), claim="lymph_node", over=allowed
        )
        sizes.append(int(round(short)))
    if not sizes:
        return None
    return Finding(
        "lymphadenopathy", "mediastinum", "Lymphadenopathy", {"size_mm": max(sizes), "count": len(sizes)}
    )


def sternotomy_wires(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    bone = canvas.mask("bone")
    heart_z = np.flatnonzero(canvas.mask("heart").any((0, 1)))
    xs = np.flatnonzero(bone.any((1, 2)))
    if heart_z.size == 0 or xs.size == 0:
        return None
    mid = int(round(np.argwhere(canvas.mask(*LOBES, "heart")).mean(0)[0]))
    painted = 0
    for z in np.linspace(
        heart_z[0], min(canvas.shape[2] - 1, heart_z[-1] + 3), int(rng.integers(4, 7))
    ).astype(int):
        col = bone[max(0, mid - 3): mid + 4, :, z]
        if not col.any():
            continue
        y = int(np.flatnonzero(col.any(0)).max())
        box, w = canvas.blob(np.array([mid, y, z]), np.array([4.0, 2.0, 2.0]))
        canvas.paint(box, w, 2500.0)
        painted += 1
    return Finding("sternotomy_wires", "bone", "Medical material", {"wires": painted}) if painted else None


def thyroid_nodule(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    thyroid = canvas.mask("thyroid")
    if thyroid.sum() < 3:
        return None
    c = canvas.pick(rng, thyroid)
    centre_x = np.argwhere(thyroid).mean(0)[0]
    side = "left" if c[0] > centre_x else "right"  # x grows towards the patient's left (LAS)
    size = int(rng.integers(7, 15))
    box, w = canvas.blob(c, np.full(3, size / 2))
    canvas.paint(box, w, rng.uniform(0, 20), over=thyroid)
    return Finding("thyroid_nodule", "thyroid", None, {"size_mm": size, "side": side})


def liver_cyst(canvas: Canvas, rng: np.random.Generator) -> Finding | None:
    liver = canvas.mask("liver")
    size = int(rng.integers(10, 31))
    depth = canvas.edt(liver)
    c = canvas.pick(rng, depth >= min(size / 2, depth.max() * 0.6))
    if c is None:
        return None
    box, w = canvas.blob(c, np.full(3, size / 2))
    canvas.paint(box, w, rng.uniform(0, 12), over=liver)
    return Finding("liver_cyst", "abdomen", None, {"size_mm": size})


#: finding generator -> probability per case. Cardiomegaly is drawn separately (it changes the deformation).
FINDING_RATES: dict[str, float] = {
    "lung_nodule": 0.25, "consolidation": 0.15, "lung_opacity": 0.2, "emphysema": 0.15, "atelectasis": 0.12,
    "pleural_effusion": 0.18, "pericardial_effusion": 0.12, "arterial_calcification": 0.3,
    "coronary_calcification": 0.25, "hiatal_hernia": 0.12, "lymphadenopathy": 0.18, "sternotomy_wires": 0.08,
    "thyroid_nodule": 0.12, "liver_cyst": 0.12,
}
CARDIOMEGALY_RATE = 0.2
GENERATORS = {
    "lung_nodule": lung_nodule,
    "consolidation": consolidation,
    "lung_opacity": lung_opacity,
    "emphysema": emphysema,
    "atelectasis": atelectasis,
    "pleural_effusion": pleural_effusion,
    "pericardial_effusion": pericardial_effusion,
    "arterial_calcification": arterial_calcification,
    "coronary_calcification": coronary_calcification,
    "hiatal_hernia": hiatal_hernia,
    "lymphadenopathy": lymphadenopathy,
    "sternotomy_wires": sternotomy_wires,
    "thyroid_nodule": thyroid_nodule,
    "liver_cyst": liver_cyst,
}
