"""Where a case's finding sits in its CT: the slice the explorer opens on (notebook 07).

A ground-truth report says *that* a region holds a finding ("A nodule measuring 15 mm is present in the upper
lobe of the right lung"), not at which voxel. `finding_regions` reads which regions' ground-truth paragraphs
state a finding (the rule labeler of the Evaluation stage); `finding_centre` looks for it in the image: inside
the region's mask, away from its edge, the voxels whose HU departs from the region's own median by more than
`threshold_hu`, and among them the point deepest inside a compact blob (a distance transform in mm). A nodule,
a patch of consolidation or a calcified plaque is such a blob; a thin vessel is not. It chooses a view, it is
not a detector: when no voxel departs it returns None and the explorer shows the slice where the region is
largest instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from reg2rg_lib.metrics.labeler import RuleLabeler
from reg2rg_lib.regions import split_regions

#: HU by which a voxel must depart from its region's median to count as part of a finding.
THRESHOLD_HU = 300.0
#: Voxels closer than this to the region's edge are left out (the edge is where other organs' HU begins).
MARGIN_MM = 3.0


def finding_regions(gt_report: str, labeler: object | None = None) -> list[str]:
    """The regions whose ground-truth paragraph states one of the 18 CT-RATE findings, in report order."""
    paragraphs = [(region, text) for _, region, text in split_regions(gt_report) if region]
    if not paragraphs:
        return []
    table = (labeler or RuleLabeler()).label([text for _, text in paragraphs])  # type: ignore[attr-defined]
    found = table.to_numpy().astype(int).sum(axis=1) > 0
    return list(dict.fromkeys(region for (region, _), hit in zip(paragraphs, found) if hit))


def finding_centre(
    volume: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    threshold_hu: float = THRESHOLD_HU,
    margin_mm: float = MARGIN_MM,
) -> tuple[int, int, int] | None:
    """The voxel (x, y, z) at the centre of the thickest blob of unusual HU inside `mask`, or None.

    `volume` (HU) and `mask` are (X, Y, Z) arrays on one grid with voxel size `spacing` in mm.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != np.shape(volume) or not mask.any():
        return None
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # work inside the mask's bounding box only
    inside, hu = mask[box], np.asarray(volume[box], dtype=np.float32)
    depth = ndimage.distance_transform_edt(inside, sampling=spacing)
    core = depth >= margin_mm
    if not core.any():
        core = inside
    unusual = core & (np.abs(hu - np.median(hu[inside])) > threshold_hu)
    # a blob that reaches the edge of the core runs on into what lies outside (vessels into the hilum, the
    # chest wall); an inserted finding sits inside the region: prefer blobs that do not touch the edge
    parts, n = ndimage.label(unusual)
    edge = ndimage.binary_dilation(~core) & core
    touching = set(np.unique(parts[edge & unusual]).tolist()) - {0}
    isolated = np.isin(parts, [k for k in range(1, n + 1) if k not in touching])
    if isolated.any():
        unusual = isolated
    if not unusual.any():
        return None
    thickness = ndimage.distance_transform_edt(unusual, sampling=spacing)
    centre = np.unravel_index(int(np.argmax(thickness)), thickness.shape)
    return tuple(int(c + o) for c, o in zip(centre, lo))  # type: ignore[return-value]
