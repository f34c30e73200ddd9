"""The paper's preprocessing of one case: decode its CT and masks, run the MONAI transforms, say what was
dropped.

Per case, from the CT (HU) and its region masks (paper, Sec. III; `bench/recipe.py` is the plain MONAI
reference this must equal), computed by the MONAI dictionary transforms of `transforms.py` (`prep_transforms`,
one `Compose` call per case):

* image    (1, H, W, D)  global input: crop to the foreground (HU > -1000), normalise, resize;
* full     (1, H, W, D)  the whole CT, normalised and resized without cropping (for the LFD-off ablation);
* texture  (R, H, W, D)  per region: CT x mask with background -1024, cropped to the region's box, normalised,
                         resized (so absolute size and position are gone: that is what geometry is for);
* geometry (R, H, W, D)  per region: the uncropped mask, area-resized (voxel occupancy in [0, 1]).

Normalisation: clip HU to [-1000, 200], then (x + 400) / 600. Resizing is area averaging (MONAI's default,
torch's kernel); each geometry mask is resized only over the block its bounding box touches (`resize.py`);
boxes come from projections; the 1 + R files are decoded in threads while regions already decoded are being
processed. The cache that holds the results is `data.prep`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reg2rg_lib.data.manifest import CaseEntry
from reg2rg_lib.data.nifti import Nifti, check_aligned, read_nifti
from reg2rg_lib.data.params import PrepParams
from reg2rg_lib.errors import BadInputError


@dataclass
class PreparedCase:
    """One case's tensors (None when the case was skipped), its usable regions and the items dropped, with
    reasons."""

    name: str
    tensors: dict[str, torch.Tensor] | None
    regions: list[str]
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _read_mask(path: Path) -> Nifti | BadInputError:
    try:
        return read_nifti(path, kind="mask")
    except BadInputError as err:  # a bad mask drops its region, not the case
        return err


class _Arriving:
    """A case's usable (region, mask) pairs as their files finish decoding, in the case's region order; the
    masks that cannot be used go to `skipped` with their reason. Its length hint lets the transforms allocate
    once."""

    def __init__(self, entry: CaseEntry, vol: Nifti, get: dict[str, Any], skipped: dict[str, str]) -> None:
        self.entry, self.vol, self.get, self.skipped = entry, vol, get, skipped

    def __length_hint__(self) -> int:
        return len(self.get)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for region, fetch in self.get.items():
            m = fetch()
            if isinstance(m, BadInputError):
                self.skipped[region] = str(m)
                continue
            try:
                check_aligned(m, self.vol, self.entry.masks[region])
            except BadInputError as err:
                self.skipped[region] = str(err)
                continue
            yield region, m.data


def prepare_case(entry: CaseEntry, params: PrepParams, threads: int = 1) -> PreparedCase:
    """Decode, check and preprocess one case; bad regions are dropped and bad cases skipped, with reasons.

    The tensors come from the MONAI transforms of `transforms.prep_transforms`. With `threads` > 1 the files
    are decoded in a thread pool while the transforms already work on what has arrived (the global image as
    soon as the volume is in, then each region as its mask is in), and regions are computed in parallel.
    """
    from reg2rg_lib.data.transforms import prep_transforms, transform_error  # monai's import takes ~10 s

    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        if pool is not None:
            vol_future = pool.submit(read_nifti, entry.volume)
            pending = {r: pool.submit(_read_mask, p) for r, p in entry.masks.items()}
            get = {r: f.result for r, f in pending.items()}
        else:
            vol_future = None
            get = {r: (lambda p=p: _read_mask(p)) for r, p in entry.masks.items()}
        try:
            vol = vol_future.result() if vol_future is not None else read_nifti(entry.volume)
        except BadInputError as err:
            return PreparedCase(entry.name, None, [], [{"item": entry.name, "reason": str(err)}])
        bad: dict[str, str] = {}
        try:  # the decoded volume is ours: normalised in place
            out = prep_transforms(params, threads=threads, in_place=True)(
                {"ct": vol.data, "masks": _Arriving(entry, vol, get, bad)}
            )
        except RuntimeError as err:
            cause = transform_error(err)
            if isinstance(cause, ValueError):
                return PreparedCase(
                    entry.name, None, [], [{"item": entry.name, "reason": f"{entry.volume}: {cause}"}]
                )
            raise cause from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    regions = out["regions"]
    for region in set(out["masks"]) - set(regions):
        bad[region] = f"{entry.masks[region]}: mask is empty (no voxel set)"
    # region order
    skipped = [{"item": f"{entry.name}/{r}", "reason": bad[r]} for r in entry.masks if r in bad]
    if not regions:
        skipped.append({"item": entry.name, "reason": "no usable region mask left"})
        return PreparedCase(entry.name, None, [], skipped)
    return PreparedCase(
        entry.name, {k: out[k] for k in ("image", "full", "texture", "geometry")}, regions, skipped
    )
