"""The integer-count geometry resize equals torch's float area resize bit for bit (odd shapes, both
layouts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reg2rg_lib.data.resize import aligned_block, area_resize, bounding_box, mask_resize_block


def _float_reference(mask: np.ndarray, box, size):
    inp, out = aligned_block(box, mask.shape, size)
    block = torch.from_numpy(np.array(mask[inp], order="C")).to(torch.float32)
    return area_resize(block[None], [o.stop - o.start for o in out])[0], out


@pytest.mark.parametrize(
    "shape,size",
    [((133, 96, 96), (64, 48, 48)), ((133, 96, 96), (8, 32, 32)), ((50, 40, 30), (50, 20, 7)),
     ((64, 64, 16), (64, 64, 16)), ((20, 120, 60), (7, 32, 60))],
)
def test_mask_resize_block_matches_float_area_resize(shape, size):
    rng = np.random.default_rng(1)
    mask = np.zeros(shape, bool)
    region = tuple(slice(n // 5, n // 5 + max(1, n // 3)) for n in shape)
    mask[region] = rng.random(mask[region].shape) > 0.3
    for m in (mask, np.asfortranarray(mask.T).T):
        box = bounding_box(m)
        expected, out_expected = _float_reference(m, box, size)
        got, out_got = mask_resize_block(m, box, size)
        assert out_got == out_expected
        assert got.dtype == expected.dtype
        assert torch.equal(got, expected)
