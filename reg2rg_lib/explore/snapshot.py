"""A static PNG of the explorer's current view, for places without a live kernel (papermill runs, GitHub).

The picture holds what the widgets show at that moment: the CT slice with its overlays (drawn by the same
`render_slice`), and the report columns (ground truth and each prediction) with one block per region; the
selected region's blocks are tinted in its colour, and a prediction's block says when it is missing or names
the wrong organ. Word-level differences stay in the live/HTML view, where they can be marked inline.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from reg2rg_lib.data.slices import render_slice
from reg2rg_lib.explore import paragraphs as rep
from reg2rg_lib.io import atomic_path
from reg2rg_lib.plotting import DPI, new_figure, style
from reg2rg_lib.regions import REGION_COLORS

#: Characters per line of a paragraph and lines shown per paragraph (longer paragraphs end in "...").
WRAP, MAX_LINES = 46, 7


def _block(row: rep.Row | None, column: str, gt: rep.Paragraph | None) -> tuple[list[str], str | None]:
    """The wrapped lines of one report cell and an optional warning for the cell's header."""
    if column == "gt":
        text, warning = (gt.text if gt else ""), (None if gt else "not in the ground truth")
    elif row is None or row.pred is None:
        text, warning = "", "missing from the prediction"
    else:
        text = row.pred.text
        warning = (
            f"named as region {row.pred.index}; ground truth: {row.expected_region}"
            if row.expected_region
            else ("not in the ground truth" if row.gt is None else None)
        )
    lines = textwrap.wrap(text, WRAP)
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 1] + [lines[MAX_LINES - 1][: WRAP - 3] + "..."]
    return lines, warning


def snapshot_png(explorer: object, path: str | os.PathLike[str]) -> Path:
    """Write the current view of `explorer` (an `explore.widgets.Explorer`) to `path` as a PNG; return the
    path.

    Same state, same bytes: the figure style is fixed and the PNG carries no date or software version.
    """
    ex = explorer
    case, state = ex.case, ex.state  # type: ignore[attr-defined]
    columns = ex.columns  # type: ignore[attr-defined]
    titles = {"gt": "ground truth", **{s: f"prediction: {s}" for s in case.predictions}}
    blocks = {
        col: [
            (
                region,
                *_block(
                    ex.rows[col].get(region) if col != "gt" else None,
                    col,  # type: ignore[attr-defined]
                    next((p for p in ex.gt_paragraphs if p.region == region), None),
                ),
            )  # type: ignore[attr-defined]
            for region in ex.regions
        ]  # type: ignore[attr-defined]
        for col in columns
    }
    # in text lines
    heights = [sum(max(len(lines), 1) + 1.5 for _, lines, _ in col) for col in blocks.values()]
    n_lines = max(heights) if heights else 1
    rgb = render_slice(case.volume, case.masks, state, case.spacing, longest=384)
    with style():
        fig = new_figure(4.2 + 3.4 * len(columns), max(4.6, 0.135 * n_lines + 1.2))
        grid = fig.add_gridspec(1, 1 + len(columns), width_ratios=[1.25] + [1.0] * len(columns))
        ax = fig.add_subplot(grid[0, 0])
        ax.imshow(rgb, interpolation="nearest")
        index = state.slice_index(case.volume.shape)
        focus = f", focus: {state.selected}" if state.selected else ""
        ax.set_title(f"{state.plane} slice {index}, window {state.window}{focus}", fontsize=8)
        fig.suptitle(f"Explorer view of case {case.name}", fontsize=10, fontweight="bold")
        ax.axis("off")
        for j, col in enumerate(columns):
            ax = fig.add_subplot(grid[0, 1 + j])
            ax.axis("off")
            ax.set_xlim(0, 1)
            ax.set_ylim(n_lines + 0.5, -1.2)
            ax.text(0, -0.8, titles[col], fontweight="bold", fontsize=9, va="center")
            y = 0.5
            for region, lines, warning in blocks[col]:
                color = REGION_COLORS.get(region, "#888888")
                selected = region == state.selected
                if selected:
                    ax.axhspan(y - 0.7, y + len(lines) + 0.5, color=rep.tint(color, 0.75), zorder=0)
                head = region + (f"  [! {warning}]" if warning else "")
                ax.text(
                    0,
                    y,
                    head,
                    fontsize=7.5,
                    fontweight="bold",
                    va="center",
                    color="#a3262b" if warning else "black",
                    bbox={
                        "facecolor": color,
                        "edgecolor": "none",
                        "pad": 1.0,
                        "alpha": 0.9 if selected else 0.45,
                    },
                )
                for line in lines:
                    y += 1
                    ax.text(0.01, y, line, fontsize=7, va="center")
                y += 1.5 + (0 if lines else 1)
        target = Path(path)
        with atomic_path(target, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return target
