"""The paper's figures as the kit redraws them (Figs. 2-4), each one function of the data it shows (in
`reg2rg_lib.plotting`'s style); the run colours every figure shares.

File names follow one rule (`figures/README.md`): `paper_fig<N>_...` redraws the paper's Fig. N,
`kit_fig<N>_...` is a figure the paper does not have (Kit Figs. 1-3 are notebook 01's data figures,
`data.views`; Kit Figs. 4-6, about the runs, are `report.kit_figures`').

Each figure is drawn by the function of the same name:

- `paper_fig2_report_length`: paper Fig. 2, report-length distributions, ground truth vs models
- `paper_fig3_case_study`: paper Fig. 3, a case study, findings highlighted (the labeler's findings)
- `paper_fig4_region_report`: paper Fig. 4, a region-aligned report on CT slices
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from reg2rg_lib.data.slices import ViewState, render_slice
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.metrics.csv_inputs import read_report_pairs
from reg2rg_lib.metrics.labeler import RuleLabeler
from reg2rg_lib.plotting import new_figure, savefig, style
from reg2rg_lib.regions import LABELS, REGION_COLORS, split_regions, strip_region_prefix

#: Colours for the case study: findings in both reports, missed by the prediction, only in the prediction.
FINDING_COLORS = {"matched": "#b8e6b8", "missed": "#ffd59e", "extra": "#f5b7b1"}
#: The ground truth's colour in every figure (a thick dark line, never a run's colour).
GT_COLOR = "#444444"
#: One colour per run, in the order the runs are listed (`full` first), the same in Paper Fig. 2 and Kit Figs.
#: 4 and 6; twelve qualitative colours with no two alike, none of them the ground truth's grey.
RUN_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#393b79",
    "#7b4173",
    "#637939",
)


# ------------------------------------------------------------------------------------------------------------
# Predictions CSVs


def load_pairs(src: Any) -> Any:
    """A predictions CSV path as the Evaluation stage's `ReportPairs` (ids, references, predictions); a
    `ReportPairs` passes through. The released `*_whole_report` spelling is accepted too."""
    return src if hasattr(src, "references") else read_report_pairs(src)


def word_count(text: str) -> int:
    """Words in a report after removing 'The region i is <organ>:' prefixes (what a reader sees)."""
    return len(strip_region_prefix(text).split())


def report_lengths(predictions: Mapping[str, Any]) -> pd.DataFrame:
    """Long table (source, AccNum, words): ground truth once (from the first file), then each model's reports.

    `predictions` maps a model name to a predictions CSV (or `ReportPairs`).
    """
    rows: list[tuple[str, str, int]] = []
    for i, (model, src) in enumerate(predictions.items()):
        pairs = load_pairs(src)
        if i == 0:
            rows += [("ground truth", a, word_count(t)) for a, t in zip(pairs.ids, pairs.references)]
        rows += [(model, a, word_count(t)) for a, t in zip(pairs.ids, pairs.predictions)]
    return pd.DataFrame(rows, columns=["source", "AccNum", "words"])


# ------------------------------------------------------------------------------------------------------------
# Paper Fig. 2: report lengths


def ecdf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the empirical CDF: the sorted values and the share of values <= each."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    return x, np.arange(1, len(x) + 1) / max(len(x), 1)


#: Line styles cycled on top of the colours (a second cue where colours are hard to tell apart).
LINESTYLES = ("-", "--", "-.", ":")


def run_colors(n: int) -> list[str]:
    """`n` distinct colours: `RUN_PALETTE`, then evenly spaced hues for runs beyond it (never a repeat)."""
    from matplotlib.colors import hsv_to_rgb, to_hex

    extra = [to_hex(hsv_to_rgb((h, 0.75, 0.6))) for h in np.linspace(0, 1, max(n - len(RUN_PALETTE), 0),
                                                                      endpoint=False)]
    return (list(RUN_PALETTE) + extra)[:n]


def source_style(i: int, n: int | None = None) -> dict[str, Any]:
    """Colour and line style of the i-th source of a plot of `n` sources: the ground truth (i = 0) in thick
    dark grey, run i in `run_colors`' i-th colour, so that no two sources share a colour."""
    if i == 0:
        return {"color": GT_COLOR, "linestyle": "-"}
    return {"color": run_colors(max(n or 0, i))[i - 1], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def paper_fig2_report_length(
    panels: Mapping[str, Mapping[str, Any]],
    figures_dir: str | os.PathLike[str],
    bins: int = 30,
) -> tuple[pd.DataFrame, list[Path]]:
    """Paper Fig. 2: report length in words, ground truth vs models, as empirical CDFs (one step curve per
    source, its median in the legend): readable with many runs, where overlaid histograms are not. Each
    panel's legend sits to the right of its curves, never on them.

    `panels` maps a panel title (one per dataset, so that datasets are never mixed in one plot) to
    {model name: predictions CSV or `ReportPairs`}; each panel's ground truth comes from its first file.
    Returns the per-panel, per-source summary (n, mean, median, std of words) and the written files. `bins` is
    kept for callers of the histogram version and unused.
    """
    panels = {title: models for title, models in panels.items() if models}
    if not panels:
        raise ValueError("paper_fig2_report_length needs at least one predictions file")
    summaries = []
    with style():
        fig = new_figure(7.4 * len(panels), 3.6)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, models) in zip(axes, panels.items()):
            lengths = report_lengths(models)
            sources = list(dict.fromkeys(lengths["source"]))
            for i, source in enumerate(sources):
                words = lengths.loc[lengths["source"] == source, "words"].to_numpy()
                x, y = ecdf(words)
                ax.step(np.r_[0, x], np.r_[0, y], where="post", linewidth=2.2 if i == 0 else 1.3,
                        label=f"{source} (median {np.median(words):.0f})", **source_style(i, len(sources)))
            ax.set_xlabel("words per report (region prefixes removed)")
            ax.set_ylabel("share of reports with at most x words")
            ax.set_ylim(0, 1.02)
            ax.set_title(title)
            # outside the axes, right of the curves: with ten sources an inside legend covers them
            ax.legend(
                frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0
            )
            summary = lengths.groupby("source", sort=False)["words"].agg(["count", "mean", "median", "std"])
            summaries.append(summary.rename(columns={"count": "n"}).reset_index().assign(panel=title))
        files = savefig(fig, figures_dir, "paper_fig2_report_length")
    table = pd.concat(summaries, ignore_index=True)
    return table[["panel", "source", "n", "mean", "median", "std"]], files


# ------------------------------------------------------------------------------------------------------------
# Paper Fig. 3: case study


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (a plain rule: a full stop followed by a capital); empty pieces dropped."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _sentence_findings(sentences: Sequence[str], labeler: Any) -> list[set[str]]:
    """The set of positive labels per sentence, according to `labeler.label(texts)` (a DataFrame over
    LABELS)."""
    if not sentences:
        return []
    table = labeler.label(list(sentences))
    cols = [c for c in LABELS if c in table.columns]
    return [{c for c in cols if int(row[c]) == 1} for _, row in table.iterrows()]


def _default_labeler() -> Any:
    return RuleLabeler()


def case_findings(gt: str, pred: str, labeler: Any | None = None) -> dict[str, Any]:
    """Labels found in each report and per-sentence highlights: 'matched', 'missed' (GT only), 'extra' (pred
    only).

    A sentence is highlighted by its labels: matched when every label it mentions is in both reports.
    """
    labeler = labeler or _default_labeler()
    gt_s, pred_s = split_sentences(strip_region_prefix(gt)), split_sentences(strip_region_prefix(pred))
    gt_f, pred_f = _sentence_findings(gt_s, labeler), _sentence_findings(pred_s, labeler)
    gt_all = set().union(*gt_f) if gt_f else set()
    pred_all = set().union(*pred_f) if pred_f else set()

    def tag(found: set[str], other: set[str], unmatched: str) -> str | None:
        if not found:
            return None
        return "matched" if found <= other else unmatched

    return {
        "gt_labels": sorted(gt_all, key=LABELS.index),
        "pred_labels": sorted(pred_all, key=LABELS.index),
        "gt": [(s, tag(f, pred_all, "missed"), sorted(f, key=LABELS.index)) for s, f in zip(gt_s, gt_f)],
        "pred": [(s, tag(f, gt_all, "extra"), sorted(f, key=LABELS.index)) for s, f in zip(pred_s, pred_f)],
    }


#: how Paper Fig. 3's case is chosen; printed on the figure. It looks at the ground truth only, never at how
#: well the prediction did, so the figure shows a typical case rather than the model's best.
PICK_RULE = "the first case with the median number of ground-truth findings"


def pick_case(predictions: Any, labeler: Any | None = None) -> int:
    """Index of Paper Fig. 3's case in a predictions CSV (or `ReportPairs`) by `PICK_RULE`: the labeler's
    ground-truth findings are counted per case, and the first case whose count equals the median (rounded down
    to a count that occurs) is taken. The prediction plays no part, so the pick cannot flatter the model."""
    pairs = load_pairs(predictions)
    if not pairs.ids:
        raise BadInputError(getattr(pairs, "path", "<predictions>"), "no predictions to pick a case from")
    labeler = labeler or _default_labeler()
    gt = labeler.label([strip_region_prefix(t) for t in pairs.references])
    cols = [c for c in LABELS if c in gt.columns]
    counts = gt[cols].to_numpy().astype(int).sum(axis=1)  # (N,) ground-truth findings per case
    target = np.median(counts)
    occurring = counts[counts <= target]
    return int(np.flatnonzero(counts == occurring.max())[0])


def _draw_text_column(
    ax: Any, title: str, sentences: Sequence[tuple[str, str | None, list[str]]], width: int
) -> None:
    """Sentences top to bottom in `ax` (axis units 0..1 are replaced by line units), highlighted by tag."""
    lines: list[tuple[str, str | None]] = []
    for sentence, tag, _ in sentences:
        lines += [(line, tag) for line in textwrap.wrap(sentence, width) or [""]]
        lines.append(("", None))  # a small gap between sentences
    total = max(len(lines), 1)
    ax.set_xlim(0, 1)
    ax.set_ylim(total + 1.5, 0)
    ax.axis("off")
    ax.text(0, 0.2, title, fontsize=10, fontweight="bold", va="top")
    for i, (line, tag) in enumerate(lines):
        if not line:
            continue
        box = {"facecolor": FINDING_COLORS[tag], "edgecolor": "none", "pad": 1.0} if tag else None
        ax.text(0, i + 1.5, line, fontsize=8, va="center", family="DejaVu Sans", bbox=box)


def paper_fig3_case_study(
    gt: str,
    pred: str,
    figures_dir: str | os.PathLike[str],
    case_id: str = "",
    model: str = "prediction",
    labeler: Any | None = None,
    width_chars: int = 62,
    picked_by: str = "",
) -> tuple[dict[str, Any], list[Path]]:
    """Paper Fig. 3: ground truth beside the prediction, sentences with findings highlighted by the labeler.
    `picked_by` (e.g. `PICK_RULE` with its numbers) is printed under the title: how the case was chosen.

    Green: a finding in both reports; orange: a ground-truth finding the prediction missed; red: a finding
    only in the prediction. Returns the findings (see `case_findings`) and the written files.
    """
    found = case_findings(gt, pred, labeler)
    n_lines = max(
        sum(len(textwrap.wrap(s, width_chars)) + 1 for s, _, _ in found[side]) for side in ("gt", "pred")
    )
    with style():
        fig = new_figure(9.0, max(2.5, 0.16 * n_lines + 1.2))
        ax_gt, ax_pred = fig.subplots(1, 2)
        _draw_text_column(ax_gt, "Ground truth", found["gt"], width_chars)
        _draw_text_column(ax_pred, f"Generated ({model})", found["pred"], width_chars)
        handles = [Patch(color=c, label=k) for k, c in FINDING_COLORS.items()]
        labels = ["finding in both", "missed finding (GT only)", "finding only in the prediction"]
        fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
        shown = f"case {case_id}: " if case_id else ""
        fig.suptitle(
            f"{shown}GT findings: {', '.join(found['gt_labels']) or 'none'} | "
            f"predicted: {', '.join(found['pred_labels']) or 'none'}"
            + (f"\ncase picked as {picked_by}" if picked_by else ""),
            fontsize=8,
        )
        files = savefig(fig, figures_dir, "paper_fig3_case_study")
    return found, files


# ------------------------------------------------------------------------------------------------------------
# Paper Fig. 4: a region-aligned report


def representative_slices(masks: Mapping[str, np.ndarray], n: int = 3, axis: int = 2) -> list[int]:
    """`n` slice indices along `axis` spread over the extent of all masks (their 20..80% quantiles)."""
    union = np.any(np.stack([np.asarray(m, dtype=bool) for m in masks.values()]), axis=0)  # (X, Y, Z)
    other = tuple(a for a in range(union.ndim) if a != axis)
    occupied = np.flatnonzero(union.any(axis=other))  # slices holding any region
    if occupied.size == 0:
        occupied = np.arange(union.shape[axis])
    picks = np.quantile(occupied, np.linspace(0.2, 0.8, n)) if n > 1 else [np.median(occupied)]
    return sorted({int(round(p)) for p in picks})


def paper_fig4_region_report(
    volume_hu: np.ndarray,
    masks: Mapping[str, np.ndarray],
    report: str,
    figures_dir: str | os.PathLike[str],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    case_id: str = "",
    source: str = "ground truth",
    n_slices: int = 3,
    window: str = "mediastinum",
    width_chars: int = 72,
) -> list[Path]:
    """Paper Fig. 4: axial CT slices with each region's mask coloured, and each region's paragraph beside it.

    `volume_hu` is the CT in Hounsfield units and `masks` maps region -> binary mask, all (X, Y, Z) in RAS+
    voxel order (as `reg2rg_lib.explore.case_sources` loads a case from the benchmark's NIfTI files); slices
    are drawn by the explorer's `render_slice`, so the figure and the explorer show the same picture. `report`
    is a region-structured report ("The region i is X: ..."), the ground truth or a prediction; each paragraph
    is shown in its region's colour; a named organ without a mask in this case (a wrongly named region) gets a
    white box with a dashed red edge and "(no mask)", so that no region colour (bone's is a light grey) can be
    mistaken for it.
    """
    volume = np.asarray(volume_hu, dtype=np.float32)
    bad = [r for r, m in masks.items() if np.shape(m) != volume.shape]
    if volume.ndim != 3 or bad:
        raise ValueError(
            f"volume {volume.shape} must be (X, Y, Z) and every mask the same shape (bad: {bad})"
        )
    slices = representative_slices(masks, n_slices)
    text = []
    for index, region, paragraph in split_regions(report):
        head = f"The region {index} is {region}:" if index is not None else (f"{region}:" if region else "")
        # None: no mask, wrongly named
        color = REGION_COLORS.get(region, "#bbbbbb") if region in masks else None
        if color is None and head:
            head += " (no mask)"
        text.append((head, color, textwrap.wrap(paragraph, width_chars) or [""]))
    n_lines = sum(len(body) + 1.6 for _, _, body in text)
    with style():
        fig = new_figure(11.0, max(3.6, 0.15 * n_lines + 0.8))
        grid = fig.add_gridspec(len(slices), 2, width_ratios=[1, 2.6])
        for i, k in enumerate(slices):
            state = ViewState(plane="axial", index={"axial": k}, window=window, visible=frozenset(masks))
            ax = fig.add_subplot(grid[i, 0])
            ax.imshow(
                render_slice(volume, masks, state, spacing=spacing, longest=256), interpolation="nearest"
            )
            ax.set_title(f"axial slice {k} of {volume.shape[2]}", fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[:, 1])
        ax.axis("off")
        ax.set_xlim(0, 1)
        ax.set_ylim(n_lines + 0.5, 0)
        y = 0.5
        for head, color, body in text:
            if head:
                box = ({"facecolor": color, "edgecolor": "none", "alpha": 0.6} if color is not None else
                       {"facecolor": "white", "edgecolor": "#d62728", "linestyle": "--"})
                ax.text(0, y, head, fontweight="bold", fontsize=8, va="center", bbox={"pad": 1.2, **box})
            for line in body:
                y += 1
                ax.text(0.01, y, line, fontsize=8, va="center")
            y += 1.6
        fig.suptitle(
            f"Region-aligned report ({source})" + (f", case {case_id}" if case_id else ""), fontsize=10
        )
        return savefig(fig, figures_dir, "paper_fig4_region_report")
