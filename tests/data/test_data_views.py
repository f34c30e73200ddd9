"""Notebook 01's Fig. 8 (`inputs_figure`): colour bars for both rows and the slice index in every panel title."""

from __future__ import annotations

import numpy as np

from reg2rg_lib.data.views import inputs_figure
from reg2rg_lib.plotting import style


def _tensors(depth: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tex = -np.ones((2, 8, 8, depth), np.float32)  # (R, H, W, D): background -1
    geo = np.zeros((2, 8, 8, depth), np.float32)
    tex[0, 2:6, 2:6, 4] = 0.3  # region 0 largest at z=4
    tex[1, 1:7, 1:7, 1] = 0.5  # region 1 largest at z=1
    geo[0, 2:4, 2:4, 3] = 1.0  # geometry of region 0 largest at z=3
    geo[1, :, :, 5] = 1.0
    return {"texture": tex, "geometry": geo, "image": rng.uniform(-1, 1, (1, 8, 8, depth)),
            "full": rng.uniform(-1, 1, (1, 8, 8, 2 * depth))}


def test_inputs_figure_has_colour_bars_and_slice_numbers():
    regions = ["lung", "heart"]
    with style():
        fig = inputs_figure(_tensors(), regions)
    panels = 2 * (len(regions) + 1)
    assert len(fig.axes) == panels + 2  # one colour bar per row
    bars = fig.axes[panels:]
    assert [b.get_ylabel() or b.get_xlabel() for b in bars] == ["normalised HU", "occupancy"]
    titles = [ax.get_title() for ax in fig.axes[:panels]]
    assert all("z=" in t for t in titles), titles
    # the slice where each region is largest, out of the volume's depth
    assert "lung\nz=4/6" in titles and "heart\nz=1/6" in titles
    assert "z=3/6" in titles and "z=5/6" in titles
    assert "global (cropped)\nz=3/6" in titles and "whole CT\nz=6/12" in titles
