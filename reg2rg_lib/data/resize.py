"""Area resizing and foreground bounding boxes: the fast core of the paper's preprocessing.

MONAI's `Resize(mode="area")` is torch's `F.interpolate(mode="area")`, i.e. adaptive average pooling: output
voxel o along an axis averages input voxels [floor(o*n/m), ceil((o+1)*n/m)). `area_resize` calls exactly that;
on torch 2.x its 3-D kernel beats any separable rewrite we tried (0.22 s vs 0.42 s for 133x512x512 ->
64x256x256 on 2 cores).

The uncropped region masks are where the work hides: 10 full-size grids per case, each almost all zeros.
`mask_resize_block` resizes only the part of a mask that can be non-zero: along an axis whose size is an
integer multiple of the target (512 -> 256), bins are aligned tiles, so the tiles touching the mask's box can
be resized on their own and give exactly the global result; other axes are kept whole. For a thyroid mask that
is well under 1 % of the full grid. Inside the block the bins are counted in small integers instead of going
through the float kernel (a sum of 0/1 voxels is exact in any order), which gives torch's float32 result bit
for bit at about a quarter of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Box = tuple[slice, ...]


def area_resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize the spatial axes of `x` (C, *spatial) to `size` by area averaging; float in, float out.

    Exactly MONAI's `Resize(size, mode="area")` (torch's 3-D adaptive average pooling).
    """
    if len(size) != x.dim() - 1:
        raise ValueError(
            f"size {tuple(size)} does not match the {x.dim() - 1} spatial axes of {tuple(x.shape)}"
        )
    return F.interpolate(x[None], size=tuple(int(s) for s in size), mode="area")[0]


def aligned_block(box: Sequence[slice], grid: Sequence[int], size: Sequence[int]) -> tuple[Box, Box]:
    """(input block, output block) of a `grid` -> `size` area resize that covers `box` exactly.

    Integer-ratio axes: the whole tiles touching the box; other axes: the whole axis (their bins do not tile).
    """
    inp, out = [], []
    for s, n_in, n_out in zip(box, grid, size):
        if n_in % n_out == 0:
            k = n_in // n_out
            lo, hi = s.start // k, -(-s.stop // k)
            inp.append(slice(lo * k, hi * k))
            out.append(slice(lo, hi))
        else:
            inp.append(slice(0, n_in))
            out.append(slice(0, n_out))
    return tuple(inp), tuple(out)


def mask_resize_block(
    mask: np.ndarray, box: Sequence[slice], size: Sequence[int]
) -> tuple[torch.Tensor, Box]:
    """Area-resize a 3-D bool mask that is False outside `box`: returns the non-trivial output block and where
    it goes in the (size) output; everything else of the output is 0. Equal to resizing the whole mask.

    Bit-for-bit torch's kernel without its float passes over the block: a bin sum of 0/1 voxels is an exact
    integer whatever the order, so the bins are counted in small integers (shifted slices added, the middle
    axis first: whole contiguous rows while the block is largest), then divided as the kernel divides
    (float32 `sum / kd / kh / kw`).
    """
    inp, out = aligned_block(box, mask.shape, size)
    counts = mask[inp].view(np.uint8)  # (b0, b1, b2) 0/1, a view: nothing copied yet
    divisors: list[np.ndarray] = [np.ones(1, np.float32)] * 3
    top = 1  # the largest value a count can reach so far
    for axis in (1, 2, 0):
        n, m = counts.shape[axis], out[axis].stop - out[axis].start
        if n == m:
            continue
        o = np.arange(m)
        lo, hi = (o * n) // m, -((-(o + 1) * n) // m)  # torch's bins [floor(o n / m), ceil((o + 1) n / m))
        width = int((hi - lo).max())
        top *= width
        total = None
        for j in range(width):
            idx: list[Any] = [slice(None)] * 3
            if n % m == 0:  # aligned tiles of n // m voxels: a strided slice, no gather
                idx[axis] = slice(j, None, n // m)
                part = counts[tuple(idx)]
            else:
                part = np.take(counts, np.minimum(lo + j, n - 1), axis=axis)
                idx[axis] = np.flatnonzero(lo + j >= hi)  # bins shorter than `width` add nothing here
                part[tuple(idx)] = 0
            total = part.astype(_count_dtype(top)) if total is None else total + part
        counts = total
        divisors[axis] = (hi - lo).astype(np.float32)
    res = counts.astype(np.float32)  # exact: counts < 2**24
    res /= divisors[0][:, None, None]
    res /= divisors[1][None, :, None]
    res /= divisors[2]
    return torch.from_numpy(res), out


def _count_dtype(top: int) -> type:
    """Smallest integer type that holds counts up to `top`."""
    return np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32


def bounding_box(mask: np.ndarray) -> Box | None:
    """Tight box (slices, end exclusive) around the True voxels of a 3-D mask; None if it is empty.

    The same box as MONAI's `generate_spatial_bounding_box` with margin 0, from projections: the first axis
    pair on the whole mask, the last axis only inside the box the first two found.
    """
    c_order = mask.flags.c_contiguous or not mask.flags.f_contiguous
    # reduce over the contiguous (fastest) axis first
    lead = mask.any(axis=2) if c_order else mask.any(axis=0)
    if not lead.any():
        return None
    if c_order:
        xs, ys = np.flatnonzero(lead.any(axis=1)), np.flatnonzero(lead.any(axis=0))
        zs = np.flatnonzero(mask[xs[0]: xs[-1] + 1, ys[0]: ys[-1] + 1].any(axis=(0, 1)))
    else:
        ys, zs = np.flatnonzero(lead.any(axis=1)), np.flatnonzero(lead.any(axis=0))
        xs = np.flatnonzero(mask[:, ys[0]: ys[-1] + 1, zs[0]: zs[-1] + 1].any(axis=(1, 2)))
    return slice(xs[0], xs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(zs[0], zs[-1] + 1)


def normalise_hu(x: torch.Tensor | np.ndarray, lo: float = -1000.0, hi: float = 200.0,
                 centre: float = -400.0, scale: float = 600.0):
    """The paper's intensity normalisation: clip HU to [lo, hi], then (x - centre) / scale (to [-1, 1])."""
    if isinstance(x, torch.Tensor):
        return (x.clamp(lo, hi) - centre) / scale
    return (np.clip(x, lo, hi) - centre) / scale
