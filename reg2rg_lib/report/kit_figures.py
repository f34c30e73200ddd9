"""The kit's own figures about its runs: training curves (Kit Fig. 4), region accuracy by checkpoint (Kit
Fig. 5) and the ablation tables as bars (Kit Fig. 6), each one function of the data it shows
(`reg2rg_lib.plotting`'s style).

Each figure is drawn by the function of the same name:

- `kit_fig4_training_curves`: Kit Fig. 4, training loss of each run, one panel per run
- `kit_fig5_region_accuracy_by_step`: Kit Fig. 5, region accuracy of each checkpoint (notebook 03)
- `kit_fig6_ablation_bars`: Kit Fig. 6, Tables 4-7 as bars with bootstrap 95% CIs and the baselines

Runs keep the colours they have in paper Fig. 2 (`report.figures.run_colors`).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.experiments.summary import SUMMARY_METRICS
from reg2rg_lib.paths import RunFolder
from reg2rg_lib.plotting import new_figure, savefig, style
from reg2rg_lib.report.figures import LINESTYLES, RUN_PALETTE, run_colors
from reg2rg_lib.train.loop import read_train_log


def read_log(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A run's `train_log.csv` as a DataFrame sorted by step (the Training stage's reader; needs `step`,
    `loss`)."""
    log = pd.DataFrame(read_train_log(run_dir))
    missing = {"step", "loss"} - set(log.columns)
    if missing:
        raise BadInputError(RunFolder(run_dir).train_log, f"missing columns {sorted(missing)}")
    return log.sort_values("step", kind="stable").reset_index(drop=True)


def smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * float(v)
        out[i] = avg / (1 - weight ** (i + 1))
    return out


#: What a run's loss measures, from its `run_config.json` ((section, key) -> how a difference reads): two
#: runs' losses are comparable only when all of these agree.
LOSS_DEFINITION: dict[tuple[str, str], str] = {
    ("model", "rra"): "RRA {a}: {why}",
    ("settings", "region_name_weight"): "organ-name tokens weighted {a}x, not {b}x",
    ("model", "llm_vocab"): "another tokenizer ({a} tokens, not {b})",
}


def loss_definition(run_dir: str | os.PathLike[str]) -> dict[tuple[str, str], Any] | None:
    """The settings that define what a run's training loss measures (`LOSS_DEFINITION`), from its
    `run_config.json`; None when the run folder has none (its loss cannot be matched with another's)."""
    path = RunFolder(run_dir).run_config
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"not a readable run config ({exc})") from None
    return {(section, key): (config.get(section) or {}).get(key) for section, key in LOSS_DEFINITION}


def loss_difference(
    run: Mapping[tuple[str, str], Any] | None, reference: Mapping[tuple[str, str], Any] | None
) -> str:
    """Why a run's loss does not compare with the reference run's ("" when it does): the settings that
    differ."""
    if run is None or reference is None:
        return "no run_config.json to tell what its loss measures"
    reasons = []
    for field, template in LOSS_DEFINITION.items():
        a, b = run.get(field), reference.get(field)
        if a == b:
            continue
        if field == ("model", "rra"):
            weight = reference.get(("settings", "region_name_weight"))
            why = (
                'no "The region i is <organ>:" prefixes in its targets, so none of the organ-name tokens '
                "the "
                f"others weight {weight:g}x"
                if not a and weight is not None
                else "its targets differ"
            )
            reasons.append(template.format(a="off" if not a else "on", why=why))
        else:
            reasons.append(template.format(a=a, b=b))
    return "; ".join(reasons)


def training_curves_caption(runs: Mapping[str, str | os.PathLike[str]]) -> str:
    """Kit Fig. 4's caption: which runs' losses compare with the first run's, and why the others do not."""
    names = list(runs)
    reference = loss_definition(runs[names[0]])
    apart = {n: loss_difference(loss_definition(runs[n]), reference) for n in names[1:]}
    apart = {n: why for n, why in apart.items() if why}
    same = [n for n in names[1:] if n not in apart]
    text = (f"Grey line: {names[0]}'s smoothed loss, drawn in the panels whose loss measures the same thing "
            f"({', '.join(same) or 'none'}); those panels share one y range.")
    if apart:
        text += (
            " Not comparable with "
            + names[0]
            + ": "
            + "; ".join(f"{n} ({why})" for n, why in apart.items())
            + "."
        )
    return text


def kit_fig4_training_curves(
    runs: Mapping[str, str | os.PathLike[str]],
    figures_dir: str | os.PathLike[str],
    smoothing: float = 0.9,
    log_loss: bool = True,
) -> list[Path]:
    """Kit Fig. 4: training loss of each run {name: run folder} in small multiples, one panel per run
    (smoothed; the raw loss faint), and a last panel with every run's learning rate.

    Losses are only comparable between runs whose loss measures the same thing (`loss_definition`: RRA
    prefixes, the organ-name weight, the tokenizer): the first run's smoothed curve is drawn in grey in the
    panels of the runs that match it, and those panels share one y range; every other panel keeps its own y
    range and says in its title that its loss is not comparable. The caption under the panels names the
    reasons (`training_curves_caption`).
    """
    if not runs:
        raise ValueError("kit_fig4_training_curves needs at least one run folder with a train_log.csv")
    names = list(runs)
    logs = {n: read_log(runs[n]) for n in names}
    smoothed = {n: smooth(logs[n]["loss"].to_numpy(), smoothing) for n in names}
    reference = loss_definition(runs[names[0]])
    comparable = {n: n == names[0] or not loss_difference(loss_definition(runs[n]), reference) for n in names}
    colors = dict(zip(names, run_colors(len(names))))
    n_panels = len(names) + 1
    ncols = min(n_panels, 3)
    nrows = -(-n_panels // ncols)
    with style():
        fig = new_figure(3.1 * ncols, 2.3 * nrows + 0.7)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
        shared = [ax for n, ax in zip(names, axes) if comparable[n]]
        for ax, name in zip(axes, names):
            log = logs[name]
            if comparable[name] and name != names[0]:
                ax.plot(logs[names[0]]["step"], smoothed[names[0]], color="#aaaaaa", linewidth=1.2,
                        label=f"{names[0]} (reference)")
            ax.plot(log["step"], log["loss"], color=colors[name], alpha=0.15, linewidth=0.5)
            ax.plot(log["step"], smoothed[name], color=colors[name], linewidth=1.4, label=name)
            ax.set_title(name if comparable[name] else f"{name}\n(loss not comparable with {names[0]})",
                         fontsize=8, color="black" if comparable[name] else "#a3262b")
            if log_loss:
                ax.set_yscale("log")
        if len(shared) > 1:  # one y range for the comparable runs, so their levels can be read across panels
            lo = min(ax.get_ylim()[0] for ax in shared)
            hi = max(ax.get_ylim()[1] for ax in shared)
            for ax in shared:
                ax.set_ylim(lo, hi)
        ax_lr = axes[len(names)]
        for name in names:
            if "lr" in logs[name].columns:
                ax_lr.plot(
                    logs[name]["step"],
                    logs[name]["lr"],
                    color=colors[name],
                    linewidth=1.1,
                    label=name,
                    linestyle=LINESTYLES[names.index(name) % len(LINESTYLES)],
                )
        ax_lr.set_title("learning rate (all runs)", fontsize=8)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        for ax in axes[n_panels:]:
            ax.set_visible(False)
        for k, ax in enumerate(axes[:n_panels]):
            ax.xaxis.get_major_locator().set_params(integer=True)
            if k % ncols == 0:
                ax.set_ylabel("training loss" + (" (log)" if log_loss else "") if k < len(names) else "lr")
            if k + ncols >= n_panels:
                ax.set_xlabel("step")
                ax.tick_params(labelbottom=True)
        fig.suptitle("Training loss per run (smoothed; raw loss faint)", fontsize=10)
        fig.supxlabel("\n".join(textwrap.wrap(training_curves_caption(runs), 40 * ncols)), fontsize=7,
                      ha="left", x=0.01)
        return savefig(fig, figures_dir, "kit_fig4_training_curves")


def merge_same_runs(stats: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Ablation stats without the rows of runs that are another run's model (`same_as`, e.g.
    `llm_scratch-2x64` is `full`), and {kept run: its label naming the runs it stands for}, so that each model
    gets one bar."""
    same = (
        stats["same_as"].fillna("").astype(str)
        if "same_as" in stats.columns
        else pd.Series("", index=stats.index)
    )
    present = set(stats["run"])
    duplicate = same.ne("") & same.isin(present)
    labels = {run: run for run in dict.fromkeys(stats["run"])}
    for run, target in dict.fromkeys(zip(stats.loc[duplicate, "run"], same[duplicate])):
        labels[target] = f"{labels[target]} (= {run})"
        labels.pop(run, None)
    return stats.loc[~duplicate], labels


def kit_fig6_ablation_bars(
    stats: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    metrics: Sequence[str] = SUMMARY_METRICS,
    title: str = "Ablations on the embedded benchmark (bootstrap 95% CI)",
) -> list[Path]:
    """Kit Fig. 6: grouped bars, one group per metric, one bar per run, error bars from the bootstrap 95% CI.

    Every run has its own colour (`run_colors`: no two alike), and a run that is another's model (`same_as`,
    e.g. `llm_scratch-2x64` is `full`) is drawn once, labelled with both names (`merge_same_runs`).
    A metric that does not apply to a run (NaN, e.g. region accuracy without RRA) is written "n/a" where its
    bar would stand; a true zero gets a "0" above an empty bar, so the two never look alike. Baseline rows
    (`kind` "baseline", `experiments.baselines`) are drawn as dashed horizontal lines across each metric's
    group. `stats` is long: columns run, metric, value, ci_low, ci_high (as
    `experiments.ablation_stats.ablation_stats` writes).
    """
    need = {"run", "metric", "value", "ci_low", "ci_high"}
    if not need <= set(stats.columns):
        raise ValueError(f"ablation stats need columns {sorted(need)}, have {list(stats.columns)}")
    stats, labels = merge_same_runs(stats)
    kind = stats["kind"] if "kind" in stats.columns else pd.Series("run", index=stats.index)
    runs = list(dict.fromkeys(stats.loc[kind != "baseline", "run"]))
    baselines = list(dict.fromkeys(stats.loc[kind == "baseline", "run"]))
    metrics = [m for m in metrics if m in set(stats["metric"])]
    width = 0.8 / max(len(runs), 1)
    colors = run_colors(len(runs))
    with style():
        fig = new_figure(max(6.0, 1.2 * len(metrics) + 0.35 * len(runs)), 3.8)
        ax = fig.add_subplot()
        for i, run in enumerate(runs):
            sub = stats[stats["run"] == run].set_index("metric").reindex(metrics)
            x = np.arange(len(metrics)) + (i - (len(runs) - 1) / 2) * width
            val = sub["value"].to_numpy(float)
            err = np.vstack([val - sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float) - val])
            ax.bar(x, np.nan_to_num(val), width * 0.92, yerr=np.nan_to_num(np.clip(err, 0, None)), capsize=2,
                   color=colors[i], label=labels.get(run, run), error_kw={"linewidth": 0.8})
            for xi, v in zip(x, val):
                if np.isnan(v):
                    ax.text(
                        xi, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="#555555"
                    )
                elif v == 0:
                    ax.text(xi, 0.025, "0", ha="center", va="bottom", fontsize=6)  # above the cap
        _baseline_lines(ax, stats, baselines, metrics)
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.set_title(title)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", frameon=False, fontsize=7,
                   ncol=min(len(runs) + len(baselines), 4))
        return savefig(fig, figures_dir, "kit_fig6_ablation_bars")


def _baseline_lines(ax: Any, stats: pd.DataFrame, baselines: Sequence[str], metrics: Sequence[str]) -> None:
    """A dashed line per baseline across each metric's group of bars (labelled once, for the legend)."""
    for j, name in enumerate(baselines):
        sub = stats[stats["run"] == name].set_index("metric").reindex(metrics)
        for k, v in enumerate(sub["value"].to_numpy(float)):
            if not np.isnan(v):
                ax.hlines(
                    v,
                    k - 0.45,
                    k + 0.45,
                    colors="black",
                    linestyles=LINESTYLES[(j + 1) % len(LINESTYLES)],
                    linewidth=1.0,
                    label=name if k == 0 or np.isnan(sub["value"].iloc[:k]).all() else None,
                )


def kit_fig5_region_accuracy_by_step(
    curve: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    baseline: float | None = None,
    run: str = "full",
) -> list[Path]:
    """Kit Fig. 5: region accuracy of each saved checkpoint against its step
    (`experiments.curves.region_accuracy_by_step`), with its topic consistency (paragraphs on the named
    organ's topic; where the curve has it) beside it and the canonical-order baseline (organ names by position
    alone, `experiments.baselines`) as a dashed line when given. A step whose reports name no region at all is
    marked "n/a" on the axis, not drawn as 0."""
    need = {"step", "region_accuracy"}
    if not need <= set(curve.columns) or curve.empty:
        raise ValueError(f"the curve needs rows with columns {sorted(need)}")
    acc = pd.to_numeric(curve["region_accuracy"], errors="coerce").to_numpy(float)
    steps = curve["step"].to_numpy(int)
    with style():
        fig = new_figure(5.0, 3.0)
        ax = fig.add_subplot()
        ok = ~np.isnan(acc)
        ax.plot(steps[ok], acc[ok], marker="o", color=RUN_PALETTE[0], label=f"{run}: region accuracy")
        topic = pd.to_numeric(curve.get("topic_consistency", pd.Series(np.nan, index=curve.index)),
                              errors="coerce").to_numpy(float)
        has = ~np.isnan(topic)
        if has.any():
            ax.plot(steps[has], topic[has], marker="s", markersize=4, linestyle=":", color=RUN_PALETTE[1],
                    label=f"{run}: topic consistency")
        for s in steps[~ok]:
            ax.text(s, 0.02, "n/a", ha="center", fontsize=7, color="#555555")
        if baseline is not None:
            ax.axhline(baseline, color="black", linestyle="--", linewidth=1.0,
                       label=f"organ names in canonical order ({baseline:.3f})")
        ax.set_xlabel("training step (saved checkpoints)")
        split = f" ({curve['split'].iloc[0]} split)" if "split" in curve.columns else ""
        ax.set_ylabel(f"share of regions{split}")
        ax.set_ylim(0, 1.05)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(frameon=False, loc="lower right")
        return savefig(fig, figures_dir, "kit_fig5_region_accuracy_by_step")
