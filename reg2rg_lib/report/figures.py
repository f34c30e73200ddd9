"""The paper's figures, each one function of the data it shows (drawn in `reg2rg_lib.plotting`'s style).

| figure | function | paper |
|---|---|---|
| `fig2_report_length` | `fig2_report_length` | Fig. 2: report-length distributions, ground truth vs models |
| `fig3_case_study` | `fig3_case_study` | Fig. 3: a case study, findings highlighted (the labeler's findings) |
| `fig4_region_report` | `fig4_region_report` | Fig. 4: a region-aligned report on CT slices |
| `fig5_training_curves` | `fig5_training_curves` | (kit) training loss of each run, from its `train_log.csv` |
| `fig6_ablation_bars` | `fig6_ablation_bars` | (kit) Tables 4-7 as bars with bootstrap 95% CIs and the baselines |
| `fig10_region_accuracy_by_step` | `fig10_region_accuracy_by_step` | (kit) region accuracy of each checkpoint (notebook 03) |
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
from reg2rg_lib.experiments.summary import SUMMARY_METRICS
from reg2rg_lib.metrics.io import read_report_pairs
from reg2rg_lib.metrics.labeler import RuleLabeler
from reg2rg_lib.plotting import new_figure, savefig, style
from reg2rg_lib.regions import LABELS, REGION_COLORS, split_regions, strip_region_prefix
from reg2rg_lib.train.loop import read_train_log

#: Colours for the case study: findings in both reports, missed by the prediction, only in the prediction.
FINDING_COLORS = {"matched": "#b8e6b8", "missed": "#ffd59e", "extra": "#f5b7b1"}
SOURCE_PALETTE = ("#444444", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Fig. 2: report lengths


def ecdf(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the empirical CDF: the sorted values and the share of values <= each."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    return x, np.arange(1, len(x) + 1) / max(len(x), 1)


#: Line styles cycled on top of the colours, so that more sources than colours stay apart.
LINESTYLES = ("-", "--", "-.", ":")


def source_style(i: int) -> dict[str, Any]:
    """Colour and line style of the i-th source of a plot (ground truth first, in dark grey)."""
    return {"color": SOURCE_PALETTE[i % len(SOURCE_PALETTE)],
            "linestyle": LINESTYLES[(i // len(SOURCE_PALETTE) + i) % len(LINESTYLES)] if i else "-"}


def fig2_report_length(
    panels: Mapping[str, Mapping[str, Any]],
    figures_dir: str | os.PathLike[str],
    bins: int = 30,
) -> tuple[pd.DataFrame, list[Path]]:
    """Fig. 2: report length in words, ground truth vs models, as empirical CDFs (one step curve per source, its
    median in the legend): readable with many runs, where overlaid histograms are not.

    `panels` maps a panel title (one per dataset, so that datasets are never mixed in one plot) to
    {model name: predictions CSV or `ReportPairs`}; each panel's ground truth comes from its first file.
    Returns the per-panel, per-source summary (n, mean, median, std of words) and the written files. `bins` is
    kept for callers of the histogram version and unused.
    """
    panels = {title: models for title, models in panels.items() if models}
    if not panels:
        raise ValueError("fig2_report_length needs at least one predictions file")
    summaries = []
    with style():
        fig = new_figure(5.2 * len(panels), 3.6)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, models) in zip(axes, panels.items()):
            lengths = report_lengths(models)
            for i, source in enumerate(dict.fromkeys(lengths["source"])):
                words = lengths.loc[lengths["source"] == source, "words"].to_numpy()
                x, y = ecdf(words)
                ax.step(np.r_[0, x], np.r_[0, y], where="post", linewidth=2.2 if i == 0 else 1.3,
                        label=f"{source} (median {np.median(words):.0f})", **source_style(i))
            ax.set_xlabel("words per report (region prefixes removed)")
            ax.set_ylabel("share of reports with at most x words")
            ax.set_ylim(0, 1.02)
            ax.set_title(title)
            ax.legend(frameon=False, fontsize=7, loc="lower right")
            summary = lengths.groupby("source", sort=False)["words"].agg(["count", "mean", "median", "std"])
            summaries.append(summary.rename(columns={"count": "n"}).reset_index().assign(panel=title))
        files = savefig(fig, figures_dir, "fig2_report_length")
    table = pd.concat(summaries, ignore_index=True)
    return table[["panel", "source", "n", "mean", "median", "std"]], files


# ----------------------------------------------------------------------------------------------------------------
# Fig. 3: case study


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (a plain rule: a full stop followed by a capital); empty pieces dropped."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _sentence_findings(sentences: Sequence[str], labeler: Any) -> list[set[str]]:
    """The set of positive labels per sentence, according to `labeler.label(texts)` (a DataFrame over LABELS)."""
    if not sentences:
        return []
    table = labeler.label(list(sentences))
    cols = [c for c in LABELS if c in table.columns]
    return [{c for c in cols if int(row[c]) == 1} for _, row in table.iterrows()]


def _default_labeler() -> Any:
    return RuleLabeler()


def case_findings(gt: str, pred: str, labeler: Any | None = None) -> dict[str, Any]:
    """Labels found in each report and per-sentence highlights: 'matched', 'missed' (GT only), 'extra' (pred only).

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


#: how Fig. 3's case is chosen; printed on the figure. It looks at the ground truth only, never at how well the
#: prediction did, so the figure shows a typical case rather than the model's best.
PICK_RULE = "the first case with the median number of ground-truth findings"


def pick_case(predictions: Any, labeler: Any | None = None) -> int:
    """Index of Fig. 3's case in a predictions CSV (or `ReportPairs`) by `PICK_RULE`: the labeler's ground-truth
    findings are counted per case, and the first case whose count equals the median (rounded down to a count that
    occurs) is taken. The prediction plays no part, so the pick cannot flatter the model."""
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


def _draw_text_column(ax: Any, title: str, sentences: Sequence[tuple[str, str | None, list[str]]], width: int) -> None:
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


def fig3_case_study(
    gt: str,
    pred: str,
    figures_dir: str | os.PathLike[str],
    case_id: str = "",
    model: str = "prediction",
    labeler: Any | None = None,
    width_chars: int = 62,
    picked_by: str = "",
) -> tuple[dict[str, Any], list[Path]]:
    """Fig. 3: ground truth beside the prediction, sentences with findings highlighted by the labeler.
    `picked_by` (e.g. `PICK_RULE` with its numbers) is printed under the title: how the case was chosen.

    Green: a finding in both reports; orange: a ground-truth finding the prediction missed; red: a finding only in
    the prediction. Returns the findings (see `case_findings`) and the written files.
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
        files = savefig(fig, figures_dir, "fig3_case_study")
    return found, files


# ----------------------------------------------------------------------------------------------------------------
# Fig. 4: a region-aligned report


def representative_slices(masks: Mapping[str, np.ndarray], n: int = 3, axis: int = 2) -> list[int]:
    """`n` slice indices along `axis` spread over the extent of all masks (their 20..80% quantiles)."""
    union = np.any(np.stack([np.asarray(m, dtype=bool) for m in masks.values()]), axis=0)  # (X, Y, Z)
    other = tuple(a for a in range(union.ndim) if a != axis)
    occupied = np.flatnonzero(union.any(axis=other))  # slices holding any region
    if occupied.size == 0:
        occupied = np.arange(union.shape[axis])
    picks = np.quantile(occupied, np.linspace(0.2, 0.8, n)) if n > 1 else [np.median(occupied)]
    return sorted({int(round(p)) for p in picks})


def fig4_region_report(
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
    """Fig. 4: axial CT slices with each region's mask coloured, and each region's paragraph beside it.

    `volume_hu` is the CT in Hounsfield units and `masks` maps region -> binary mask, all (X, Y, Z) in RAS+ voxel
    order (as `reg2rg_lib.explore.sources` loads a case from the benchmark's NIfTI files); slices are drawn by the
    explorer's `render_slice`, so the figure and the explorer show the same picture. `report` is a region-structured
    report ("The region i is X: ..."), the ground truth or a prediction; each paragraph is shown in its region's
    colour; a named organ without a mask in this case (a wrongly named region) gets a white box with a dashed red
    edge and "(no mask)", so that no region colour (bone's is a light grey) can be mistaken for it.
    """
    volume = np.asarray(volume_hu, dtype=np.float32)
    bad = [r for r, m in masks.items() if np.shape(m) != volume.shape]
    if volume.ndim != 3 or bad:
        raise ValueError(f"volume {volume.shape} must be (X, Y, Z) and every mask the same shape (bad: {bad})")
    slices = representative_slices(masks, n_slices)
    text = []
    for index, region, paragraph in split_regions(report):
        head = f"The region {index} is {region}:" if index is not None else (f"{region}:" if region else "")
        color = REGION_COLORS.get(region, "#bbbbbb") if region in masks else None  # None: no mask, wrongly named
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
            ax.imshow(render_slice(volume, masks, state, spacing=spacing, longest=256), interpolation="nearest")
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
        fig.suptitle(f"Region-aligned report ({source})" + (f", case {case_id}" if case_id else ""), fontsize=10)
        return savefig(fig, figures_dir, "fig4_region_report")


# ----------------------------------------------------------------------------------------------------------------
# Training curves and ablation bars


def read_log(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A run's `train_log.csv` as a DataFrame sorted by step (the Training stage's reader; needs `step`, `loss`)."""
    log = pd.DataFrame(read_train_log(run_dir))
    missing = {"step", "loss"} - set(log.columns)
    if missing:
        raise BadInputError(Path(run_dir) / "train_log.csv", f"missing columns {sorted(missing)}")
    return log.sort_values("step", kind="stable").reset_index(drop=True)


def smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * float(v)
        out[i] = avg / (1 - weight ** (i + 1))
    return out


def fig5_training_curves(
    runs: Mapping[str, str | os.PathLike[str]],
    figures_dir: str | os.PathLike[str],
    smoothing: float = 0.9,
    log_loss: bool = True,
) -> list[Path]:
    """Training loss per step of each run {name: run folder} (smoothed; the raw loss faint) and the lr schedule.

    Every run gets its own colour and line style and the loss axis is logarithmic (`log_loss`), so runs whose
    curves lie close together stay visible; the legend sits below the plots, one entry per run.
    """
    if not runs:
        raise ValueError("fig5_training_curves needs at least one run folder with a train_log.csv")
    with style():
        fig = new_figure(7.4, 3.6 + 0.12 * len(runs))
        ax, ax_lr = fig.subplots(1, 2, width_ratios=[2.2, 1])
        for i, (name, run_dir) in enumerate(runs.items()):
            log = read_log(run_dir)
            look = source_style(i + 1)
            ax.plot(log["step"], log["loss"], color=look["color"], alpha=0.12, linewidth=0.6)
            ax.plot(log["step"], smooth(log["loss"].to_numpy(), smoothing), linewidth=1.5, label=name, **look)
            if "lr" in log.columns:
                ax_lr.plot(log["step"], log["lr"], linewidth=1.2, **look)
        if log_loss:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss" + (" (log scale)" if log_loss else ""))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax_lr.set_xlabel("step")
        ax_lr.set_ylabel("learning rate")
        ax_lr.xaxis.get_major_locator().set_params(integer=True)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=min(len(runs), 4),
                   frameon=False)
        return savefig(fig, figures_dir, "fig5_training_curves")


def fig6_ablation_bars(
    stats: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    metrics: Sequence[str] = SUMMARY_METRICS,
    title: str = "Ablations on the embedded benchmark (bootstrap 95% CI)",
) -> list[Path]:
    """Grouped bars: one group per metric, one bar per run, error bars from the bootstrap 95% CI.

    A metric that does not apply to a run (NaN, e.g. region accuracy without RRA) is written "n/a" where its bar
    would stand; a true zero gets a "0" above an empty bar, so the two never look alike. Baseline rows (`kind`
    "baseline", `experiments.baselines`) are drawn as dashed horizontal lines across each metric's group.
    `stats` is long: columns run, metric, value, ci_low, ci_high (as `experiments.stats.ablation_stats` writes).
    """
    need = {"run", "metric", "value", "ci_low", "ci_high"}
    if not need <= set(stats.columns):
        raise ValueError(f"ablation stats need columns {sorted(need)}, have {list(stats.columns)}")
    kind = stats["kind"] if "kind" in stats.columns else pd.Series("run", index=stats.index)
    runs = list(dict.fromkeys(stats.loc[kind != "baseline", "run"]))
    baselines = list(dict.fromkeys(stats.loc[kind == "baseline", "run"]))
    metrics = [m for m in metrics if m in set(stats["metric"])]
    width = 0.8 / max(len(runs), 1)
    with style():
        fig = new_figure(max(6.0, 1.2 * len(metrics) + 0.35 * len(runs)), 3.8)
        ax = fig.add_subplot()
        for i, run in enumerate(runs):
            sub = stats[stats["run"] == run].set_index("metric").reindex(metrics)
            x = np.arange(len(metrics)) + (i - (len(runs) - 1) / 2) * width
            val = sub["value"].to_numpy(float)
            err = np.vstack([val - sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float) - val])
            ax.bar(x, np.nan_to_num(val), width * 0.92, yerr=np.nan_to_num(np.clip(err, 0, None)), capsize=2,
                   color=SOURCE_PALETTE[i % len(SOURCE_PALETTE)], label=run, error_kw={"linewidth": 0.8},
                   hatch="//" if i >= len(SOURCE_PALETTE) else None)
            for xi, v in zip(x, val):
                if np.isnan(v):
                    ax.text(xi, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="#555555")
                elif v == 0:
                    ax.text(xi, 0.025, "0", ha="center", va="bottom", fontsize=6)  # above the cap
        _baseline_lines(ax, stats, baselines, metrics)
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.set_title(title)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", frameon=False, fontsize=7,
                   ncol=min(len(runs) + len(baselines), 4))
        return savefig(fig, figures_dir, "fig6_ablation_bars")


def _baseline_lines(ax: Any, stats: pd.DataFrame, baselines: Sequence[str], metrics: Sequence[str]) -> None:
    """A dashed line per baseline across each metric's group of bars (labelled once, for the legend)."""
    for j, name in enumerate(baselines):
        sub = stats[stats["run"] == name].set_index("metric").reindex(metrics)
        for k, v in enumerate(sub["value"].to_numpy(float)):
            if not np.isnan(v):
                ax.hlines(v, k - 0.45, k + 0.45, colors="black", linestyles=LINESTYLES[(j + 1) % len(LINESTYLES)],
                          linewidth=1.0, label=name if k == 0 or np.isnan(sub["value"].iloc[:k]).all() else None)


def fig10_region_accuracy_by_step(
    curve: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    baseline: float | None = None,
    run: str = "full",
) -> list[Path]:
    """Region accuracy of each saved checkpoint against its step (`experiments.curves.region_accuracy_by_step`),
    with the canonical-order baseline (organ names by position alone, `experiments.baselines`) as a dashed line
    when given. A step whose reports name no region at all is marked "n/a" on the axis, not drawn as 0."""
    need = {"step", "region_accuracy"}
    if not need <= set(curve.columns) or curve.empty:
        raise ValueError(f"the curve needs rows with columns {sorted(need)}")
    acc = pd.to_numeric(curve["region_accuracy"], errors="coerce").to_numpy(float)
    steps = curve["step"].to_numpy(int)
    with style():
        fig = new_figure(5.0, 3.0)
        ax = fig.add_subplot()
        ok = ~np.isnan(acc)
        ax.plot(steps[ok], acc[ok], marker="o", color=SOURCE_PALETTE[1], label=f"{run}: generated reports")
        for s in steps[~ok]:
            ax.text(s, 0.02, "n/a", ha="center", fontsize=7, color="#555555")
        if baseline is not None:
            ax.axhline(baseline, color="black", linestyle="--", linewidth=1.0,
                       label=f"organ names in canonical order ({baseline:.3f})")
        ax.set_xlabel("training step (saved checkpoints)")
        ax.set_ylabel(f"region accuracy ({curve['split'].iloc[0]} split)" if "split" in curve.columns else "region accuracy")
        ax.set_ylim(0, 1.05)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(frameon=False, loc="lower right")
        return savefig(fig, figures_dir, "fig10_region_accuracy_by_step")
