"""Volume sources: a case's CT in HU, its region masks, voxel spacing and reference report, from disk.

- `LayoutSource`: a dataset in the RadGenome-ChestCT layout (`data.layout`), full resolution, RAS+ voxel
  order;
- `CacheSource`: a prepared cache (`reg2rg prepare`), the model's own input at `image_size`;
- `ArraySource`: arrays in memory (tests, a user's own volumes).
The explorer and Fig. 4 read cases through these.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from reg2rg_lib.data.layout import load_case, scan_layout
from reg2rg_lib.data.prep import load_cache
from reg2rg_lib.errors import KitError
from reg2rg_lib.regions import REGIONS


class VolumeSource(Protocol):
    """A dataset the explorer can page through: case names, and one case's image, masks and reference
    report."""

    def names(self) -> list[str]: ...

    def load(self, name: str) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[float, float, float], str]:
        """(volume HU (X, Y, Z), masks region -> bool (X, Y, Z), spacing mm, ground-truth report or "")."""
        ...


class ArraySource:
    """An in-memory dataset: {name: (volume, masks, spacing, gt_report)}. For tests and for arrays at hand."""

    def __init__(
        self, cases: Mapping[str, tuple[np.ndarray, dict[str, np.ndarray], Sequence[float], str]]
    ) -> None:
        self.cases = dict(cases)

    def names(self) -> list[str]:
        return list(self.cases)

    def load(self, name: str) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[float, float, float], str]:
        if name not in self.cases:
            raise KitError(f"no case {name!r}; have {', '.join(self.cases)}")
        volume, masks, spacing, gt = self.cases[name]
        return np.asarray(volume, np.float32), dict(masks), tuple(float(s) for s in spacing), gt  # type: ignore[return-value]


def to_ras(
    data: np.ndarray, affine: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Reorder (flip / transpose) a stored (i, j, k) array into RAS+ voxel order, with its spacing to
    match."""
    ornt = io_orientation(affine)  # row i: (output axis of stored axis i, flip)
    out_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _flip) in enumerate(ornt):
        out_spacing[int(target)] = float(spacing[axis])
    return np.ascontiguousarray(apply_orientation(data, ornt)), tuple(out_spacing)


def region_report_text(reports: Mapping[str, str]) -> str:
    """Region paragraphs -> "The region i is X: ..." text, numbered in canonical region order (as at test
    time)."""
    present = [r for r in REGIONS if reports.get(r, "").strip()]
    return " ".join(f"The region {i} is {r}: {reports[r].strip()}" for i, r in enumerate(present))


class LayoutSource:
    """A dataset in the RadGenome-ChestCT layout (`reg2rg_lib.data.layout`): test cases first, then train.

    Volumes and masks are reoriented to RAS+ from their affine, so every dataset is shown the same way up.
    The ground truth is the dataset's region paragraphs (used when no predictions file supplies one).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.layout = scan_layout(root)
        self.root = self.layout.root

    def names(self) -> list[str]:
        return self.layout.names("test") + self.layout.names("validation") + self.layout.names("train")

    def load(self, name: str) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[float, float, float], str]:
        case = load_case(self.layout.root, name, layout=self.layout)
        volume, spacing = to_ras(case.volume, case.affine, case.spacing)
        masks = {r: to_ras(m, case.affine, case.spacing)[0] for r, m in case.masks.items()}
        gt = region_report_text(case.reports) or case.report
        return volume, masks, spacing, gt  # type: ignore[return-value]


class CacheSource:
    """A prepared cache (`reg2rg prepare`): the whole CT ("full") and the region masks ("geometry") at the
    model's `image_size`, i.e. what the model saw. Intensities are mapped back from the cache's normalisation
    to HU (so the window presets apply; HU outside the clip range stays clipped). Test cases first, then
    validation, then train.

    Cached tensors keep the stored voxel order; when the dataset the cache was made from is still there, each
    volume's header gives the orientation and spacing (rescaled to `image_size`), so slices show the right way
    up.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache = load_cache(cache_dir)
        self.root = self.cache.root
        self.records = {
            r.name: r for split in ("test", "validation", "train") for r in self.cache.cases(split)
        }
        self.volumes: dict[str, Path] = {}
        data_dir = self.cache.manifest.get("data_dir")
        if data_dir and Path(data_dir).is_dir():
            with contextlib.suppress(KitError):
                self.volumes = scan_layout(data_dir).volumes

    def names(self) -> list[str]:
        return list(self.records)

    def grid(self, name: str, size: Sequence[int]) -> tuple[np.ndarray, tuple[float, float, float]]:
        """(affine, spacing) of case `name` resized to `size` voxels; identity and 1 mm when the source is
        gone."""
        path = self.volumes.get(name)
        if path is None:
            return np.eye(4), (1.0, 1.0, 1.0)

        header = nib.load(path)  # the header only: no voxel data is read
        # (3,) source voxels per cached voxel
        factor = np.array(header.shape[:3], float) / np.array(size, float)
        affine = np.array(header.affine, float)
        affine[:3, :3] = affine[:3, :3] * factor[None, :]
        spacing = tuple(float(z) * f for z, f in zip(header.header.get_zooms()[:3], factor))
        return affine, spacing  # type: ignore[return-value]

    def load(self, name: str) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[float, float, float], str]:
        if name not in self.records:
            raise KitError(f"{self.root}: no case {name!r} in the cache")
        record, tensors, params = self.records[name], self.cache.load(name), self.cache.params
        volume = tensors["full"][0].numpy() * params["scale"] + params["centre"]  # (H, W, D) back to HU
        # (R, H, W, D) occupancy -> mask, R in record.regions order
        geometry = tensors["geometry"].numpy() >= 0.5
        affine, spacing = self.grid(name, volume.shape)
        volume, ras_spacing = to_ras(volume.astype(np.float32), affine, spacing)
        masks = {region: to_ras(geometry[i], affine, spacing)[0] for i, region in enumerate(record.regions)}
        gt = region_report_text(record.reports) or record.report
        return volume, masks, ras_spacing, gt  # type: ignore[return-value]
