"""One figure style for every figure of the kit, and one `savefig` (the base: data, report and explore use
it).

Figures are bare `matplotlib.figure.Figure`s (no pyplot state, so a notebook's inline backend is untouched)
drawn under `style()` (`STYLE`: Agg rendering, DejaVu Sans, fixed DPI) and saved by `savefig` as
`figures_dir/<name>.png` and `.pdf` without dates or software versions in the metadata, so a rerun on the same
inputs writes identical bytes. Names follow one rule (`figures/README.md`): `paper_fig<N>_<topic>` where the
kit redraws the paper's Fig. N (the paper's number), `kit_fig<N>_<topic>` for the kit's own figures (numbered
from 1 in the order the notebooks draw them), so that no kit figure can be taken for a paper figure.
Used by: data/views.py (Kit Figs. 1-3), report/figures.py (paper Figs. 2-4), report/kit_figures.py (Kit Figs.
4-6), explore/snapshot.py.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from reg2rg_lib.io import atomic_path

#: Rendering settings shared by every figure. Fonts ship with matplotlib, so every machine draws the same
#: glyphs.
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # embed TrueType (editable text in the PDF)
    "svg.hashsalt": "reg2rg-kit",  # fixed ids should anyone save SVG
    "path.simplify": False,
    "image.interpolation": "nearest",  # the benchmark's volumes are small: show voxels, not blur
}
DPI = 150
#: Metadata keys matplotlib would otherwise fill with the date and its version.
_PNG_METADATA = {"Software": None}
_PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}
_FIG_NAME = re.compile(r"^(paper|kit)_fig\d+_[a-z0-9_]+$")


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply `STYLE` for the duration of the block (figure building and saving both read rcParams)."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure of `width` x `height` inches (call inside `style()`)."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def savefig(fig: Figure, figures_dir: str | os.PathLike[str], name: str) -> list[Path]:
    """Write `fig` as `figures_dir/<name>.png` and `.pdf`, atomically and byte-reproducibly; return both
    paths.

    `name` must look like `paper_fig<N>_<topic>` (the paper's Fig. N) or `kit_fig<N>_<topic>` (the kit's own),
    lower case: the rule `figures/README.md` states.
    """
    if not _FIG_NAME.match(name):
        raise ValueError(
            f"figure name {name!r} must look like 'paper_fig<N>_<topic>' or 'kit_fig<N>_<topic>' "
            "(lower case, digits, underscores)"
        )
    out = Path(figures_dir)
    written = []
    with style():
        for fmt, metadata in (("png", _PNG_METADATA), ("pdf", _PDF_METADATA)):
            target = out / f"{name}.{fmt}"
            with atomic_path(target, suffix=f".{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
            written.append(target)
    return written
