"""Pictures and tables of the data for notebook 01: region overlays, the model's inputs, dataset statistics.

Figures are bare matplotlib `Figure`s (no pyplot state) drawn under `reg2rg_lib.plotting.style()`; save them
with `reg2rg_lib.plotting.savefig`. Arrays are (X, Y, Z) in stored voxel order; for the benchmark (and
CT-RATE) that is
LAS: x runs from the patient's right to left, y from back to front, z from feet to head. Axial slices are
drawn with the patient's right on the left of the image and anterior up (radiological convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from reg2rg_lib.data.layout import SPLITS
from reg2rg_lib.plotting import new_figure
from reg2rg_lib.regions import LABELS, REGION_COLORS, REGIONS

WINDOW_HU = (-1000.0, 400.0)  # one window that shows lung and soft tissue together


def overlay_rgb(ct_slice: np.ndarray, masks: Mapping[str, np.ndarray], alpha: float = 0.45,
                window: tuple[float, float] = WINDOW_HU) -> np.ndarray:
    """An RGB image (rows, cols, 3) of a CT slice in grey with each region's mask tinted in its colour."""
    lo, hi = window
    grey = np.clip((ct_slice - lo) / (hi - lo), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for region, m in masks.items():
        colour = np.asarray(to_rgb(REGION_COLORS[region]))
        rgb[m] = (1 - alpha) * rgb[m] + alpha * colour
    return rgb


def _axial(a: np.ndarray, z: int) -> np.ndarray:
    return a[:, :, z].T  # (Y, X): rows anterior-up once drawn with origin="lower"


def _coronal(a: np.ndarray, y: int) -> np.ndarray:
    return a[:, y, :].T  # (Z, X): rows head-up once drawn with origin="lower"


def case_overlay_figure(volume: np.ndarray, masks: Mapping[str, np.ndarray], spacing: Sequence[float],
                        title: str = "", n_axial: int = 3) -> Figure:
    """Axial slices (spread over the regions' z extent) and one coronal slice, regions coloured."""
    union = np.any(np.stack(list(masks.values())), axis=0)
    zs = np.flatnonzero(union.any((0, 1)))
    picks = sorted({int(round(q)) for q in np.quantile(zs, np.linspace(0.25, 0.8, n_axial))})
    y_mid = (
        int(np.flatnonzero(masks["heart"].any((0, 2))).mean()) if "heart" in masks else volume.shape[1] // 2
    )
    sx, sy, sz = (float(s) for s in spacing[:3])
    fig = new_figure(3.0 * (len(picks) + 1), 3.4)
    axes = fig.subplots(1, len(picks) + 1)
    for ax, z in zip(axes, picks):
        ax.imshow(overlay_rgb(_axial(volume, z), {r: _axial(m, z) for r, m in masks.items()}), origin="lower",
                  aspect=sy / sx)
        ax.set_title(f"axial z={z}")
    axes[-1].imshow(overlay_rgb(_coronal(volume, y_mid), {r: _coronal(m, y_mid) for r, m in masks.items()}),
                    origin="lower", aspect=sz / sx)
    axes[-1].set_title(f"coronal y={y_mid}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(handles=[Patch(color=REGION_COLORS[r], label=r) for r in REGIONS if r in masks],
               loc="outside lower center", ncol=5, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def inputs_figure(tensors: Mapping[str, Any], regions: Sequence[str], title: str = "") -> Figure:
    """What the model sees for one case: global image and whole CT, then per region the texture crop (top) and
    the geometry mask (bottom), each at the slice where the region is largest. Each panel's title carries its
    axial slice `z=<index>/<depth>`; colour bars give the intensity scale of each row."""
    tex = np.asarray(tensors["texture"])  # (R, H, W, D)
    geo = np.asarray(tensors["geometry"])  # (R, H, W, D)
    n = len(regions) + 1
    fig = new_figure(1.5 * n + 1.0, 3.8)
    axes = fig.subplots(2, n, squeeze=False)
    image, full = np.asarray(tensors["image"])[0], np.asarray(tensors["full"])[0]  # (H, W, D) each
    grey = None
    for ax, vol, name in ((axes[0, 0], image, "global (cropped)"), (axes[1, 0], full, "whole CT")):
        z = vol.shape[2] // 2
        grey = ax.imshow(vol[:, :, z].T, cmap="gray", origin="lower", vmin=-1, vmax=1)
        ax.set_title(f"{name}\nz={z}/{vol.shape[2]}", fontsize=7)
    occupancy = None
    for i, region in enumerate(regions):
        z_tex = int(np.argmax((tex[i] > -1).sum((0, 1))))
        z_geo = int(np.argmax(geo[i].sum((0, 1))))
        grey = axes[0, i + 1].imshow(tex[i][:, :, z_tex].T, cmap="gray", origin="lower", vmin=-1, vmax=1)
        occupancy = axes[1, i + 1].imshow(geo[i][:, :, z_geo].T, cmap="magma", origin="lower", vmin=0, vmax=1)
        label = region.replace("trachea and bronchie", "trachea/bronchie")
        axes[0, i + 1].set_title(f"{label}\nz={z_tex}/{tex.shape[3]}", fontsize=7,
                                 color=REGION_COLORS[region] if region != "bone" else "#555555")
        axes[1, i + 1].set_title(f"z={z_geo}/{geo.shape[3]}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("texture", fontsize=7)
    axes[1, 0].set_ylabel("geometry", fontsize=7)
    fig.colorbar(grey, ax=axes[0, :], shrink=0.6, label="normalised HU")
    if occupancy is not None:
        fig.colorbar(occupancy, ax=axes[1, :], shrink=0.6, label="occupancy")
    if title:
        fig.suptitle(title)
    return fig


def dataset_tables(cache) -> dict[str, pd.DataFrame]:
    """Per-case region occupancy (% of the scan volume), label prevalence per split, report lengths in words.

    `cache` is a `PrepCache`; occupancy is the mean of each region's geometry mask (its share of the grid).
    """
    rows, lengths = [], []
    for rec in cache.cases():
        geo = cache.load(rec.name)["geometry"]  # (R, H, W, D)
        for region, share in zip(rec.regions, geo.flatten(1).mean(1).tolist()):
            rows.append({"case": rec.name, "split": rec.split, "region": region, "percent": 100 * share})
        lengths.append({"case": rec.name, "split": rec.split, "report_words": len(rec.report.split()),
                        "regions": len(rec.regions),
                        **{f"words:{r}": len(t.split()) for r, t in rec.reports.items()}})
    sizes = pd.DataFrame(rows)
    labels = pd.DataFrame([{"split": r.split, **r.labels} for r in cache.cases() if r.labels])
    prevalence = (labels.groupby("split")[list(LABELS)].sum().T if len(labels)
                  else pd.DataFrame(index=list(LABELS)))
    prevalence = prevalence[[s for s in SPLITS if s in prevalence.columns]]
    return {"region_sizes": sizes, "label_counts": prevalence, "report_lengths": pd.DataFrame(lengths)}


#: One colour per split in notebook 01's statistics figure (bars and histogram alike); others fall back to
#: grey.
SPLIT_COLORS: dict[str, str] = {"train": "#1f77b4", "validation": "#ff7f0e", "test": "#2ca02c"}


def statistics_figure(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Region sizes (box plots), label counts per split (stacked bars) and report lengths per split (stacked
    histogram); one legend under the panels names every split with its number of cases."""
    fig = new_figure(13, 3.9)
    ax1, ax2, ax3 = fig.subplots(1, 3, width_ratios=[1.1, 1.3, 0.8])
    sizes = tables["region_sizes"]
    present = [r for r in REGIONS if r in set(sizes["region"])]
    box = ax1.boxplot([sizes.loc[sizes.region == r, "percent"] for r in present], orientation="horizontal",
                      patch_artist=True, showfliers=False)
    for patch, r in zip(box["boxes"], present):
        patch.set_facecolor(REGION_COLORS[r])
    ax1.set_yticks(range(1, len(present) + 1), [r.replace("trachea and bronchie", "trachea/bronchie")
                                                for r in present])
    ax1.set_xscale("log")
    ax1.set_xlabel("share of the scan volume (%)")
    ax1.set_title("region sizes (all splits)")
    lengths = tables["report_lengths"]
    counts = tables["label_counts"]
    # every split that has cases or labels, in SPLITS order (a split the zip of two colours once dropped:
    # test)
    found = set(lengths["split"]) | set(counts.columns) if "split" in lengths.columns else set(counts.columns)
    splits = [s for s in SPLITS if s in found] + sorted(found - set(SPLITS))
    color = {s: SPLIT_COLORS.get(s, "#888888") for s in splits}
    if len(counts.columns):
        y = np.arange(len(counts))
        left = np.zeros(len(counts))
        for split in [s for s in splits if s in counts.columns]:
            ax2.barh(y, counts[split], left=left, color=color[split])
            left += counts[split].to_numpy()
        ax2.set_yticks(y, counts.index, fontsize=7)
        ax2.invert_yaxis()
    ax2.set_xlabel("cases with the finding")
    ax2.set_title("labels (18 CT-RATE abnormalities)")
    by_split = [s for s in splits if "split" in lengths.columns and (lengths["split"] == s).any()]
    if by_split:
        ax3.hist(
            [lengths.loc[lengths["split"] == s, "report_words"] for s in by_split],
            bins=20,
            stacked=True,
            color=[color[s] for s in by_split],
        )
    ax3.set_xlabel("words per report")
    ax3.set_ylabel("cases")
    ax3.set_title("report length")
    n_cases = lengths["split"].value_counts() if "split" in lengths.columns else pd.Series(dtype=int)
    handles = [Patch(color=color[s], label=f"{s} ({int(n_cases.get(s, 0))} cases)") for s in splits]
    fig.legend(handles=handles, loc="outside lower center", ncol=max(len(handles), 1), frameon=False)
    return fig
