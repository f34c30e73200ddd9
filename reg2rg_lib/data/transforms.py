"""The paper's preprocessing as MONAI dictionary transforms, with the kit's fast kernels inside.

`reg2rg prepare` builds its cache through `prep_transforms(params)`, so these give the cached tensors bit for
bit; they compose with any MONAI transform (`Compose`, `Dataset`, `PersistentDataset`, a user's `Lambdad`
before or after). The kernels are `resize.py`'s (torch's area kernel, the mask-block shortcut, bounding boxes
from projections); nothing is recomputed with slower MONAI ops.

Keys (each transform takes its own names; these are the defaults):

* ``ct`` in: the CT in HU, (X, Y, Z) or channel-first (1, X, Y, Z); numpy array or torch tensor (MetaTensor)
* ``masks`` in: {region: mask}, each on the CT's grid, (X, Y, Z) or (1, X, Y, Z), voxels > 0 inside; from a
                     label map with `LabelToRegionMasksd`, from NIfTI paths with `LoadRegionCased`
* ``image``     out: (1, H, W, D) the CT cropped to its foreground (HU > -1000), normalised, area-resized
* ``full``      out: (1, H, W, D) the whole CT, normalised and area-resized (the no-LFD ablation's input)
* ``texture``   out: (R, H, W, D) per region: CT x mask (background -1024 HU), cropped to the region's box,
                     normalised, area-resized
* ``geometry``  out: (R, H, W, D) per region: the uncropped mask, area-resized (voxel occupancy in [0, 1])
* ``regions`` out: the R region names in channel order (masks in input order; a mask with no voxel is left
  out)

(H, W, D) is `PrepParams.image_size`; outputs are float32 torch tensors. Normalisation: clip HU to [-1000,
200], then (x + 400) / 600.

The kernels always work on the reversed-axes view (Z, Y, X), which is C-ordered for NIfTI's Fortran-ordered
arrays (no full-size copy); a C-ordered input is transposed once. So the tensors do not depend on the input's
memory
order: float sums in another axis order would differ in the last bit.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, DeleteItemsd, MapTransform

from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.nifti import check_aligned, read_nifti
from reg2rg_lib.data.params import PrepParams
from reg2rg_lib.data.resize import Box, area_resize, bounding_box, mask_resize_block, normalise_hu
from reg2rg_lib.regions import REGIONS

#: intermediate keys of `prep_transforms`: the normalised CT and the regions' boxes, shared between its steps
NORMALISED_KEY, BOXES_KEY = "ct_normalised", "region_boxes"


def _grid(x: Any, key: Hashable) -> np.ndarray:
    """A (X, Y, Z) numpy view of an array or tensor, a leading channel of 1 dropped (MONAI's
    channel-first)."""
    if isinstance(x, torch.Tensor):
        x = np.asarray(x.detach().cpu())  # a MetaTensor too: shares memory, no copy on CPU
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"{key}: expected a 3-D array (X, Y, Z) or (1, X, Y, Z), got shape {tuple(x.shape)}")
    return x


def _mask(x: Any, key: Hashable) -> np.ndarray:
    m = _grid(x, key)
    return m if m.dtype == bool else m > 0  # the kit's reader reads a mask as voxels > 0


def _normalise(vol: np.ndarray, p: PrepParams) -> torch.Tensor:
    """The working (Z, Y, X) view `vol`, normalised into a new C-ordered float32 tensor."""
    x = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))
    return normalise_hu(x, p.hu_min, p.hu_max, p.centre, p.scale)


def _back(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 2, 1).contiguous()  # (C, D, W, H) -> (C, H, W, D)


def _region_items(value: Any) -> tuple[Iterable[tuple[str, Any]], int]:
    """(region, mask) pairs of a mapping, or of an iterable of pairs (consumed once), and how many to
    expect."""
    if isinstance(value, Mapping):
        return value.items(), len(value)
    n = operator.length_hint(value, 0)
    if n == 0:  # nothing says how many: take them all first (the outputs are allocated once)
        value = list(value)
        n = len(value)
    return value, n


class _RegionTransform(MapTransform):
    """Shared by the per-region transforms: one slot of the (R, H, W, D) output per non-empty mask."""

    def __init__(self, params: PrepParams, masks_key: str, out_key: str, regions_key: str,
                 boxes_key: str | None, threads: int) -> None:
        super().__init__([masks_key])
        self.params, self.masks_key, self.out_key = params, masks_key, out_key
        self.regions_key, self.boxes_key, self.threads = regions_key, boxes_key, int(threads)
        self.size = tuple(int(s) for s in params.image_size)[::-1]  # (D, W, H): the working orientation

    def fill(self, shared: Any, out: torch.Tensor, i: int, mask: np.ndarray, box: Box) -> None:
        """Compute output slot `i` from one non-empty mask and its box (distinct slots may run
        concurrently)."""
        raise NotImplementedError

    def shared(self, d: dict) -> Any:
        """What every region's `fill` reads (computed before the first mask is read)."""
        return None

    def allocate(self, n: int) -> torch.Tensor:
        return torch.empty((n, *self.params.image_size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shared = self.shared(d)
        items, n = _region_items(d[self.masks_key])
        out = self.allocate(n)
        boxes = d.setdefault(self.boxes_key, {}) if self.boxes_key else {}
        seen, regions, jobs = {}, [], []
        pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        try:
            # masks may still be arriving (an iterable that decodes them): each region starts as soon as its
            # mask is in
            for region, value in items:
                mask = seen[region] = _mask(value, f"{self.masks_key}[{region}]")
                box = boxes[region] if region in boxes else bounding_box(mask)
                boxes[region] = box
                if box is None:
                    continue  # an empty mask: no texture, no geometry
                i = len(regions)
                if i == len(out):
                    raise ValueError(f"{self.masks_key}: more masks than the {n} its length hint announced")
                regions.append(region)
                if pool is not None:  # distinct slots from concurrent threads (torch's kernels free the GIL)
                    jobs.append(pool.submit(self.fill, shared, out, i, mask, box))
                else:
                    self.fill(shared, out, i, mask, box)
            for job in jobs:
                job.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        d[self.masks_key] = seen  # consumed: the next transform reads the masks again from here
        d[self.regions_key] = regions
        d[self.out_key] = out[: len(regions)]
        return d


class GlobalImaged(MapTransform):
    """``ct`` (HU) -> ``image`` (cropped to the foreground) and ``full`` (uncropped), each (1, H, W, D).

    `normalised_key`: also keep the normalised CT there, for `RegionTexturesd` (`prep_transforms` drops it
    after).
    `in_place`: normalise a writable float32 Fortran-ordered CT in its own memory (no full-size copy); its HU
    are then gone, so ``ct`` is removed from the output (`normalised_key` must be set). For a decoded volume
    nobody else holds. A CT with no voxel above `params.foreground_hu` raises ValueError.
    """

    def __init__(self, params: PrepParams = PrepParams(), ct_key: str = "ct", image_key: str = "image",
                 full_key: str = "full", normalised_key: str | None = None, in_place: bool = False) -> None:
        super().__init__([ct_key])
        if in_place and not normalised_key:
            raise ValueError(
                "in_place=True overwrites the CT: set normalised_key so the next steps can read it"
            )
        self.params, self.ct_key, self.image_key, self.full_key = params, ct_key, image_key, full_key
        self.normalised_key, self.in_place = normalised_key, in_place

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d, p = dict(data), self.params
        vol = _grid(d[self.ct_key], self.ct_key).T  # (Z, Y, X)
        size = tuple(int(s) for s in p.image_size)[::-1]
        fg = bounding_box(vol > p.foreground_hu)  # before normalising (in place, it overwrites the HU)
        if fg is None:
            raise ValueError(f"no voxel above {p.foreground_hu} HU (empty foreground)")
        own = self.in_place and vol.dtype == np.float32 and vol.flags.writeable and vol.flags.c_contiguous
        if own:  # no new full-size array
            normed = torch.from_numpy(vol).clamp_(p.hu_min, p.hu_max).sub_(p.centre).div_(p.scale)
            del d[self.ct_key]
        else:
            normed = _normalise(vol, p)  # background -> -1
        d[self.image_key] = _back(area_resize(normed[fg][None], size))
        d[self.full_key] = _back(area_resize(normed[None], size))
        if self.normalised_key:
            # (X, Y, Z), a view of the C-ordered (Z, Y, X) tensor
            d[self.normalised_key] = normed.permute(2, 1, 0)
        return d


class RegionTexturesd(_RegionTransform):
    """``ct`` + ``masks`` -> ``texture`` (R, H, W, D) and ``regions``: per non-empty mask, CT x mask with
    background `params.background_hu`, cropped to the mask's box, normalised, area-resized.

    Reads the normalised CT from `normalised_key` when an earlier `GlobalImaged` left it there (else
    normalises ``ct`` itself); `boxes_key`: reuse and share the masks' bounding boxes; `threads` > 1: regions
    in parallel.
    """

    def __init__(
        self,
        params: PrepParams = PrepParams(),
        ct_key: str = "ct",
        masks_key: str = "masks",
        texture_key: str = "texture",
        regions_key: str = "regions",
        normalised_key: str | None = None,
        boxes_key: str | None = None,
        threads: int = 1,
    ) -> None:
        super().__init__(params, masks_key, texture_key, regions_key, boxes_key, threads)
        self.ct_key, self.normalised_key = ct_key, normalised_key
        self.keys = (ct_key, masks_key)
        self.floor = float(normalise_hu(torch.tensor(params.background_hu), params.hu_min, params.hu_max,
                                        params.centre, params.scale))

    def shared(self, d: dict) -> torch.Tensor:
        """The normalised CT in the working (Z, Y, X) orientation."""
        if self.normalised_key and self.normalised_key in d:
            return d[self.normalised_key].permute(2, 1, 0)
        return _normalise(_grid(d[self.ct_key], self.ct_key).T, self.params)

    def fill(self, normed: torch.Tensor, out: torch.Tensor, i: int, mask: np.ndarray, box: Box) -> None:
        mask, box = mask.T, box[::-1]  # the working (Z, Y, X) orientation
        m = torch.from_numpy(np.array(mask[box], order="C"))  # a copy: decoded masks are read-only views
        crop = torch.where(m, normed[box], self.floor)  # CT x mask, background -1024 HU (normalised)
        out[i].copy_(area_resize(crop[None], self.size)[0].permute(2, 1, 0))  # (D, W, H) -> (H, W, D)


class RegionGeometryd(_RegionTransform):
    """``masks`` -> ``geometry`` (R, H, W, D) and ``regions``: each non-empty mask area-resized uncropped
    (voxel occupancy in [0, 1]). Only the block of the output a mask's box touches is computed; the rest is
    zero.

    `boxes_key`: reuse and share the masks' bounding boxes; `threads` > 1: regions in parallel.
    """

    def __init__(
        self,
        params: PrepParams = PrepParams(),
        masks_key: str = "masks",
        geometry_key: str = "geometry",
        regions_key: str = "regions",
        boxes_key: str | None = None,
        threads: int = 1,
    ) -> None:
        super().__init__(params, masks_key, geometry_key, regions_key, boxes_key, threads)

    def allocate(self, n: int) -> torch.Tensor:
        return torch.zeros((n, *self.params.image_size))  # zero outside each mask's block

    def fill(self, shared: None, out: torch.Tensor, i: int, mask: np.ndarray, box: Box) -> None:
        # zero outside its box: resize that block
        block, where = mask_resize_block(mask.T, box[::-1], self.size)
        out[i][where[::-1]].copy_(block.permute(2, 1, 0))


class LabelToRegionMasksd(MapTransform):
    """``label`` (a label map on the CT's grid) -> ``masks``: {region: label in its values}, regions in the
    paper's order; `mapping` is {region: [label values]} (as `reg2rg regions --source labelmap` reads it)."""

    def __init__(self, mapping: Mapping[str, int | Sequence[int]], label_key: str = "label",
                 masks_key: str = "masks") -> None:
        super().__init__([label_key])
        unknown = sorted(set(mapping) - set(REGIONS))
        if unknown:
            raise ValueError(
                f"unknown region(s) {', '.join(map(repr, unknown))}; regions are {', '.join(REGIONS)}"
            )
        self.mapping = {r: [int(v) for v in np.atleast_1d(mapping[r])] for r in REGIONS if r in mapping}
        self.label_key, self.masks_key = label_key, masks_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        labels = _grid(d[self.label_key], self.label_key)
        if labels.dtype.kind == "f":
            labels = np.rint(labels).astype(np.int64)
        d[self.masks_key] = {r: np.isin(labels, values) for r, values in self.mapping.items()}
        return d


class LoadRegionCased(MapTransform):
    """``ct`` (a NIfTI path) and ``masks`` ({region: NIfTI path}) -> the kit's decoded arrays: float32 HU and
    bool masks, in stored (Fortran) order, each mask checked to lie on the CT's grid (`BadInputError`
    otherwise). The paths are plain strings, so a `PersistentDataset` can hash the items; `threads` decode
    files in parallel.
    """

    def __init__(self, ct_key: str = "ct", masks_key: str = "masks", threads: int = 1) -> None:
        super().__init__([ct_key, masks_key])
        self.ct_key, self.masks_key, self.threads = ct_key, masks_key, int(threads)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        paths = {r: os.fspath(p) for r, p in d[self.masks_key].items()}
        with ThreadPoolExecutor(max(1, self.threads)) as pool:
            vol = pool.submit(read_nifti, d[self.ct_key])
            masks = {r: pool.submit(read_nifti, p, "mask") for r, p in paths.items()}
            ct = vol.result()
            d[self.masks_key] = {}
            for region, future in masks.items():
                m = future.result()
                check_aligned(m, ct, paths[region])
                d[self.masks_key][region] = m.data
        d[self.ct_key] = ct.data
        return d


def prep_transforms(params: PrepParams = PrepParams(), threads: int = 1, in_place: bool = False) -> Compose:
    """The kit's preprocessing of one case as a MONAI `Compose`: {ct, masks} -> {image, full, texture,
    geometry, regions, masks} (the keys above); what `reg2rg prepare` runs for each case. `threads` > 1:
    regions in parallel; `in_place`: normalise the CT in its own memory (``ct`` is then dropped from the
    output)."""
    shared = {"normalised_key": NORMALISED_KEY, "boxes_key": BOXES_KEY}
    return Compose([
        GlobalImaged(params, normalised_key=NORMALISED_KEY, in_place=in_place),
        RegionTexturesd(params, threads=threads, **shared),
        RegionGeometryd(params, boxes_key=BOXES_KEY, threads=threads),
        DeleteItemsd([NORMALISED_KEY, BOXES_KEY]),
    ])


def case_items(data_dir: str | os.PathLike[str], mask_root: str | os.PathLike[str] | None = None,
               dataset: str = "radgenome") -> list[dict[str, Any]]:
    """A dataset's usable cases as MONAI data items for `LoadRegionCased`: {name, split, ct: volume path,
    masks: {region: mask path}} (plain strings, so `PersistentDataset` can hash them); the cases
    `index_dataset` finds."""
    return [
        {
            "name": e.name,
            "split": e.split,
            "ct": str(e.volume),
            "masks": {r: str(p) for r, p in e.masks.items()},
        }
        for e in index_dataset(data_dir, mask_root, dataset).cases
    ]


def transform_error(err: BaseException) -> BaseException:
    """The error a transform raised, from MONAI's `RuntimeError("applying transform ...")` wrapping(s) of
    it."""
    while (
        isinstance(err, RuntimeError)
        and str(err).startswith("applying transform")
        and err.__cause__ is not None
    ):
        err = err.__cause__
    return err


__all__ = ["GlobalImaged", "RegionTexturesd", "RegionGeometryd", "LabelToRegionMasksd", "LoadRegionCased",
           "case_items", "prep_transforms", "transform_error", "NORMALISED_KEY", "BOXES_KEY"]
