"""Notebook 01's figures: Kit Fig. 2 (`inputs_figure`: colour bars, slice index in every panel title) and Kit
Fig. 3 (`statistics_figure`: every split in the legend and the bars)."""

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


def test_statistics_figure_shows_every_split_in_its_legend_and_bars():
    import pandas as pd
    from matplotlib.colors import to_rgb

    from reg2rg_lib.data.views import SPLIT_COLORS, statistics_figure
    from reg2rg_lib.regions import LABELS

    splits = {"train": 4, "validation": 2, "test": 3}
    lengths = pd.DataFrame(
        [
            {"case": f"{s}_{i}", "split": s, "report_words": 60 + i}
            for s, n in splits.items()
            for i in range(n)
        ]
    )
    sizes = pd.DataFrame([{"case": c, "split": s, "region": "lung", "percent": 8.0}
                          for c, s in zip(lengths["case"], lengths["split"])])
    counts = pd.DataFrame({s: [1] * len(LABELS) for s in splits}, index=list(LABELS))
    with style():
        fig = statistics_figure({"region_sizes": sizes, "label_counts": counts, "report_lengths": lengths})
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "train (4 cases)",
        "validation (2 cases)",
        "test (3 cases)",
    ]
    bars = {p.get_facecolor()[:3] for p in fig.axes[1].patches}
    assert {to_rgb(c) for c in SPLIT_COLORS.values()} <= bars  # test's labels are drawn, not only listed
