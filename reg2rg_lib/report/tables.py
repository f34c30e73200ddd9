"""The paper's Tables 1-7 and the kit's Tables 8-9 as data frames, each row naming its source.

Two kinds of numbers appear and are never mixed silently: numbers from the **authors' released files** for
CTRG-Chest-548K (either as released, or recomputed by the kit's metrics from the released predictions), and
numbers from the **kit's own runs** on the embedded benchmark. The `dataset` and `source` columns say which is
which.

Each file (in `figures_dir/tables/`), the function that builds it, and what it holds:

- `table1_nlg.*`, `table1_nlg`: NLG metrics: released CTRG numbers, their recomputation, the kit's full run
- `table2_ce.*`, `table2_ce`: clinical efficacy (18 CT-RATE labels): the same three sources
- `table3_region_recognition.*`, `table3_region_recognition`: region recognition accuracy and per-region F1
- `table4_lfd.*`, `ablation_table`: local feature decoupling (LFD) on/off
- `table5_region_features.*`, `ablation_table`: texture / + geometry / + global features
- `table6_rra.*`, `ablation_table`: region-report alignment (RRA) on/off
- `table7_llm_size.*`, `ablation_table`: LLM size
- `table8_grounded_findings.*`, `table8_grounded`: grounded finding accuracy per finding kind (kit only)
- `table9_ce_per_label.*`, `table9_ce_per_label`: per-label clinical efficacy of one run, with the probes
  (kit only)

No number "as printed in the paper" is typed in here: the released files are the authors' own outputs
(`report.release_readers` reads and recomputes them), and the kit's numbers are computed. Every table is
written by `report.table_writer.save_table` (CSV + Markdown + LaTeX); a rerun on the same inputs writes
identical bytes. `grounded_view` is notebook 04's view of the grounded findings.

One file over 400 lines: one builder per table, and Tables 1-8 name each row's source by one rule
(`_kit_source`, `CTRG`, `BENCHMARK`, `RELEASED_BY`), so that the two kinds of numbers are kept apart in one
place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.experiments.baselines import is_near_constant
from reg2rg_lib.experiments.grid import imported_folder
from reg2rg_lib.experiments.summary import SHOWN_METRICS
from reg2rg_lib.metrics.stats import format_p
from reg2rg_lib.paths import MetricsFolder, ReleaseFolder
from reg2rg_lib.regions import LABELS, REGIONS
from reg2rg_lib.report.release_readers import (
    read_ce_manual,
    read_classification_report,
    read_nlg_results,
    read_region_report,
)
from reg2rg_lib.report.table_writer import DIGITS, save_table, with_integer_counts

#: NLG metric columns in the order of the released `nlg_evaluation_results.csv`.
NLG_METRICS: tuple[str, ...] = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-1", "ROUGE-2", "ROUGE-L", "CIDEr",
)
CTRG = "CTRG-Chest-548K test"
BENCHMARK = "embedded benchmark test"
RELEASED_BY = "authors' release (zhi-xuan-chen/Reg2RG results/Reg2RG_ctrg)"


# ------------------------------------------------------------------------------------------------------------
# Tables 1-3: the released CTRG numbers next to the kit's own runs


def _kit_source(run: str, profile: str) -> str:
    """The source column of a kit run's row (relative, so tables do not depend on the machine)."""
    if run.startswith("baseline_"):  # experiments.baselines: a constant report, scored like a run
        return f"kit baseline, profile {profile or '?'}: baselines/{run}/metrics"
    imported = imported_folder(profile, run)
    if imported:  # trained outside the grid (too long for its budget); its committed predictions scored here
        return f"kit run imported from {imported} (see its PROVENANCE.md), scored in profile {profile or '?'}"
    return f"kit run, profile {profile or '?'}: runs/{run}/metrics"


def table1_nlg(
    release_dir: str | os.PathLike[str] | None = None,
    recomputed: Mapping[str, float] | None = None,
    kit_runs: Mapping[str, str | os.PathLike[str]] | None = None,
    profile: str = "",
) -> pd.DataFrame:
    """Table 1, NLG metrics (per-sample means): one row per source.

    - `release_dir`: the authors' released `nlg_evaluation_results.csv`, as released;
    - `recomputed`: the kit's metrics on the released predictions (see `recompute_release_nlg`);
    - `kit_runs`: {run name: metrics folder} of the kit's runs (their `nlg_evaluation_results.csv`).
    """
    rows = []
    if release_dir is not None:
        path = ReleaseFolder(release_dir).nlg_results
        rows.append(
            {
                "dataset": CTRG,
                "model": "Reg2RG (authors)",
                "source": f"{RELEASED_BY}: {path.name}, as released",
                **read_nlg_results(path),
            }
        )
    if recomputed is not None:
        rows.append(
            {
                "dataset": CTRG,
                "model": "Reg2RG (authors)",
                "source": "kit metrics recomputed from the released ctrg_combined_reports_rm_region_text.csv",
                **recomputed,
            }
        )
    for run, folder in (kit_runs or {}).items():
        path = MetricsFolder(folder).nlg_results
        rows.append({"dataset": BENCHMARK, "model": f"kit: {run}", "source": _kit_source(run, profile),
                     **read_nlg_results(path)})
    cols = ["dataset", "model", "source", *NLG_METRICS]
    return pd.DataFrame(rows).reindex(columns=cols)


def region_rows(metrics: Mapping[str, Any]) -> tuple[float, pd.DataFrame]:
    """(mean accuracy, per-region precision/recall/F1) of a run's `metrics/region_metrics.json`; the table's
    `attrs["topic_consistency"]` holds the run's topic consistency (None when the file predates it or the
    reports name no region)."""
    per = [{"region": r, "precision": m["precision"], "recall": m["recall"], "F1": m["f1"]}
           for r, m in metrics["per_region"].items() if r in REGIONS]
    table = pd.DataFrame(per, columns=["region", "precision", "recall", "F1"])
    table.attrs["topic_consistency"] = metrics.get("topic_consistency")
    return float(metrics["accuracy"]), table


def table2_ce(
    release_dir: str | os.PathLike[str] | None = None,
    recomputed: pd.DataFrame | None = None,
    kit_runs: Mapping[str, pd.DataFrame] | None = None,
    profile: str = "",
    crg: Mapping[str, float | None] | None = None,
) -> pd.DataFrame:
    """Table 2, clinical efficacy over the 18 CT-RATE labels: precision/recall/F1 per averaging, one row per
    source.

    - `release_dir`: the released `metrics_manual.csv` (weighted average, full precision) and
      `test_classification_report.txt` (every average, 2 decimals as printed);
    - `recomputed`: averages computed by the kit from the released `label_inferred.csv` (columns average,
      precision, recall, F1, support);
    - `kit_runs`: {run: the same kind of averages table} for the kit's runs (labels from the kit's labeler);
    - `crg`: the VLM3D challenge's CRG of a source's whole label table (`metrics.crg`), {"recomputed": value,
      run: value}, repeated on each of that source's rows (one number per source, not per average).
    """
    rows = []
    crg = crg or {}
    if release_dir is not None:
        rel = ReleaseFolder(release_dir)
        manual = read_ce_manual(rel.ce_manual)
        w = manual[manual["Label"] == "Weighted Average"].iloc[0]
        rows.append(
            {
                "dataset": CTRG,
                "model": "Reg2RG (authors)",
                "labeler": "RadBERT (authors)",
                "source": f"{RELEASED_BY}: {rel.ce_manual.name}",
                "average": "weighted",
                "precision": float(w["Precision"]),
                "recall": float(w["Recall"]),
                "F1": float(w["F1 Score"]),
                "support": int(w["Support"]),
            }
        )
        printed = read_classification_report(rel.ce_report)
        # weighted: full precision above
        for r in printed[printed["average"] != "weighted"].itertuples(index=False):
            rows.append({"dataset": CTRG, "model": "Reg2RG (authors)", "labeler": "RadBERT (authors)",
                         "source": f"{RELEASED_BY}: {rel.ce_report.name}", "average": r.average,
                         "precision": r.precision, "recall": r.recall, "F1": r.F1, "support": r.support,
                         "decimals": 2})
    if recomputed is not None:
        for r in recomputed.itertuples(index=False):
            rows.append({"dataset": CTRG, "model": "Reg2RG (authors)", "labeler": "RadBERT (authors)",
                         "source": "kit CE metrics recomputed from the released label_inferred.csv",
                         "average": r.average, "precision": r.precision, "recall": r.recall, "F1": r.F1,
                         "support": r.support, "CRG": crg.get("recomputed")})
    for run, table in (kit_runs or {}).items():
        for r in table.itertuples(index=False):
            rows.append({"dataset": BENCHMARK, "model": f"kit: {run}", "labeler": "kit RuleLabeler",
                         "source": _kit_source(run, profile),
                         "average": r.average, "precision": r.precision, "recall": r.recall, "F1": r.F1,
                         "support": r.support, "CRG": crg.get(run)})
    cols = ["dataset", "model", "labeler", "source", "average", "precision", "recall", "F1", "support", "CRG",
            "decimals"]
    return pd.DataFrame(rows).reindex(columns=cols)


def table3_region_recognition(
    release_dir: str | os.PathLike[str] | None = None,
    kit_runs: Mapping[str, tuple[float, pd.DataFrame]] | None = None,
    profile: str = "",
) -> pd.DataFrame:
    """Table 3, region recognition: mean per-report accuracy, topic consistency (the kit's: the share of
    generated paragraphs whose sentences belong to the organ they name, `metrics.region.topic_consistency`;
    the per-region table's `attrs["topic_consistency"]`, as `region_rows` sets it; NaN for the release, which
    has no paragraphs to read) and per-region F1, one row per source.

    The released `region_classification_report.txt` was produced from a different prediction file than the one
    released (see ../shared/reference/README.md), so its source says so. `kit_runs` maps run -> (mean
    accuracy, per-region table with columns region, precision, recall, F1).
    """
    rows = []
    # (dataset, model, source, accuracy, per region)
    sources: list[tuple[str, str, str, float, pd.DataFrame]] = []
    if release_dir is not None:
        report = ReleaseFolder(release_dir).region_report
        acc, per = read_region_report(report)
        per = per.replace({"region": {"trachea": "trachea and bronchie"}})
        sources.append((CTRG, "Reg2RG (authors)", f"{RELEASED_BY}: {report.name} "
                        "(from an unreleased prediction file)", acc, per))
    for run, (acc, per) in (kit_runs or {}).items():
        sources.append((BENCHMARK, f"kit: {run}", _kit_source(run, profile), acc, per))
    for dataset, model, source, acc, per in sources:
        f1 = dict(zip(per["region"], per["F1"].astype(float)))
        topic = per.attrs.get("topic_consistency")
        rows.append({"dataset": dataset, "model": model, "source": source, "accuracy": acc,
                     "topic consistency": math.nan if topic is None else float(topic),
                     **{f"F1 {r}": f1.get(r, math.nan) for r in REGIONS}})
    cols = ["dataset", "model", "source", "accuracy", "topic consistency", *(f"F1 {r}" for r in REGIONS)]
    return pd.DataFrame(rows).reindex(columns=cols)


# ------------------------------------------------------------------------------------------------------------
# Tables 4-7: ablations from the kit's runs


#: (table name, caption, runs in row order). `full` appears in each as the reference row.
ABLATION_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("table4_lfd", "Table 4: local feature decoupling (LFD)", ("full", "no_lfd")),
    ("table5_region_features", "Table 5: region features (texture, + geometry, + global = full)",
     ("texture_only", "texture_geometry", "full")),
    ("table6_rra", "Table 6: region-report alignment (RRA) and the training settings that came with it",
     ("full", "no_rra", "no_region_dropout", "name_weight_1", "no_label_head")),
    ("table7_llm_size", "Table 7: LLM size", ("llm_*",)),
)


def _select_runs(patterns: Sequence[str], available: Sequence[str]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        hits = [r for r in available if (r.startswith(p[:-1]) if p.endswith("*") else r == p)]
        out += [h for h in hits if h not in out]
    return out


def ablation_table(
    stats: pd.DataFrame,
    runs: Sequence[str],
    describe: Mapping[str, str] | None = None,
    profile: str = "",
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One ablation table from the long stats table (run, metric, value, ci_low, ci_high, p_vs_full, ...).

    Returns (numbers, display): the numbers table has `<metric>`, `<metric>_ci_low`, `<metric>_ci_high`,
    `<metric>_p_vs_full` and `<metric>_p_holm` columns, and `distinct_reports`; the display shows
    `value [low, high] p=...` (Holm-adjusted within the table where the stats have it, `< k/B` where no
    resample reached the observed difference), with `*` where that p < `alpha`. The baselines (stats rows of
    kind "baseline") follow the runs in every table, without tests: they are the floor a run has to clear.
    """
    metrics = [m for m in (metrics or SHOWN_METRICS) if m in set(stats["metric"])]  # topic: a CI, no test
    kinds = dict(zip(stats["run"], stats["kind"])) if "kind" in stats.columns else {}
    available = [r for r in dict.fromkeys(stats["run"]) if kinds.get(r, "run") != "baseline"]
    runs = _select_runs(runs, available)
    baselines = [r for r in dict.fromkeys(stats["run"]) if kinds.get(r) == "baseline"] if runs else []
    num_rows, show_rows = [], []
    for run in [*runs, *baselines]:
        num, show = _ablation_row(
            stats[stats["run"] == run].set_index("metric"),
            run,
            metrics,
            describe,
            profile,
            alpha,
            tested=run != "full" and run not in baselines,
        )
        num_rows.append(num)
        show_rows.append(show)
    return pd.DataFrame(num_rows), pd.DataFrame(show_rows)


def _ablation_row(sub: pd.DataFrame, run: str, metrics: Sequence[str], describe: Mapping[str, str] | None,
                  profile: str, alpha: float, tested: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(numbers, display) of one run's row in an ablation table."""
    first = sub.iloc[0] if len(sub) else pd.Series(dtype=object)
    distinct, n = first.get("distinct_reports", math.nan), first.get("n_test_cases", math.nan)
    base = {"run": run, "setting": (describe or {}).get(run, ""), "source": _kit_source(run, profile)}
    num = {**base, "distinct_reports": distinct}
    show = {**base, "distinct reports": "–" if pd.isna(distinct) else f"{int(distinct)} of {int(n)}"
            + (" (near-constant)" if is_near_constant(float(distinct), float(n)) else "")}
    resamples, tests = int(first.get("n_resamples", 0) or 0), int(first.get("tests_in_family", 1) or 1)
    for m in metrics:
        if m not in sub.index or math.isnan(float(sub.loc[m, "value"])):
            num[m] = math.nan
            show[m] = "n/a" if m in sub.index else "–"  # n/a: the run has the metric but it does not apply
            continue
        r = sub.loc[m]
        p = float(r.get("p_vs_full", math.nan))
        holm = float(r.get("p_holm", math.nan)) if "p_holm" in sub.columns else p
        holm = p if math.isnan(holm) else holm
        num.update(
            {
                m: float(r["value"]),
                f"{m}_ci_low": float(r["ci_low"]),
                f"{m}_ci_high": float(r["ci_high"]),
                f"{m}_p_vs_full": p,
                f"{m}_p_holm": holm,
            }
        )
        text = f"{r['value']:.{DIGITS}f} [{r['ci_low']:.{DIGITS}f}, {r['ci_high']:.{DIGITS}f}]"
        if tested and not math.isnan(holm):
            p_text = format_p(holm, resamples, tests) if resamples else f"{holm:.3f}"
            text += f" p{'=' if p_text[0].isdigit() else ' '}{p_text}" + ("*" if holm < alpha else "")
        show[m] = text
    return num, show


def _ablation_caption(caption: str, stats: pd.DataFrame, name: str) -> str:
    """The caption of an ablation table: what the numbers are, the test and its correction, seeds,
    baselines."""
    col = stats.get("family")
    fam = stats[col == name] if col is not None else stats.iloc[0:0]
    tests = int(fam["tests_in_family"].max()) if len(fam) and "tests_in_family" in fam else 0
    resamples = (
        int(stats["n_resamples"].max())
        if "n_resamples" in stats and stats["n_resamples"].notna().any()
        else None
    )
    seeds = int(stats["seeds"].max()) if "seeds" in stats and stats["seeds"].notna().any() else None
    parts = [f"{caption}. Kit runs on the {BENCHMARK}; value [bootstrap 95% CI]"]
    if resamples:
        parts.append(
            f"p: paired bootstrap against full ({resamples} resamples), Holm-adjusted over this table's "
            f"{tests} tests; * = adjusted p < 0.05; '< k/B': no resample reached the observed difference"
        )
    else:
        parts.append("* = paired bootstrap p < 0.05 against full")
    parts.append(f"{seeds} training seed(s) per run: seed-to-seed variation is not in the CIs" if seeds
                 else "training seeds per run: not recorded in these stats")
    if "kind" in stats and (stats["kind"] == "baseline").any():
        parts.append(
            "baseline rows: constant reports scored like the runs (region accuracy of baseline_normal = "
            "organ names in canonical order)"
        )
    else:
        parts.append("baselines: not computed for these stats (rerun the ablations)")
    return "; ".join(parts) + "."


def save_ablation_tables(
    stats: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    describe: Mapping[str, str] | None = None,
    profile: str = "",
) -> dict[str, dict[str, Path]]:
    """Tables 4-7 from the ablation stats; a table whose runs are all missing is skipped (not written
    empty)."""
    written = {}
    for name, caption, runs in ABLATION_TABLES:
        numbers, display = ablation_table(stats, runs, describe, profile)
        if numbers.empty or set(numbers["run"]) - set(_baseline_runs(stats)) <= {"full"}:
            continue
        written[name] = save_table(numbers, figures_dir, name, _ablation_caption(caption, stats, name),
                                   display=display)
    return written


def _baseline_runs(stats: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(stats.loc[stats["kind"] == "baseline", "run"])) if "kind" in stats else []


# ------------------------------------------------------------------------------------------------------------
# Beyond the paper: grounded finding accuracy (Table 8, kit only) and per-label CE (Table 9)


#: Table 8's columns from a run's `metrics/grounded_by_kind.csv` (`metrics.grounded`), in order.
TABLE8_COLUMNS: tuple[str, ...] = (
    "kind",
    "region",
    "inserted",
    "reported",
    "grounded_recall",
    "misplaced",
    "attributes_checked",
    "attribute_accuracy",
    "lobe_accuracy",
    "side_accuracy",
    "size_accuracy",
    "false_findings",
    "false_findings_per_case",
)


def table8_grounded(kit_runs: Mapping[str, str | os.PathLike[str]], profile: str = "") -> pd.DataFrame:
    """Table 8, grounded finding accuracy (the kit's own: only the embedded benchmark has exact ground truth):
    for each run {run: metrics folder} with a `grounded_by_kind.csv`, one row per finding kind and `all`."""
    frames = []
    for run, folder in kit_runs.items():
        path = MetricsFolder(folder).grounded_by_kind
        if not path.is_file():
            continue
        table = pd.read_csv(path).reindex(columns=list(TABLE8_COLUMNS))
        table.insert(0, "source", _kit_source(run, profile))
        table.insert(0, "model", f"kit: {run}")
        table.insert(0, "dataset", BENCHMARK)
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["dataset", "model", "source", *TABLE8_COLUMNS])


def table9_ce_per_label(labels_csv: str | os.PathLike[str], pretrain: Mapping[str, Any] | None = None,
                         labels: Sequence[str] = LABELS) -> pd.DataFrame:
    """Per-label clinical efficacy of one run (its `ce_labels.csv`): which findings it reports and which it
    misses.

    For each label that occurs in the references or the predictions: test cases with it (support), cases where
    the run reports it, precision, recall, F1. With `pretrain` (notebook 02's `pretrain.json`), the validation
    probe F1 of the frozen encoders for that label is added: how well a linear read-out of the ViT's pooled
    tokens finds it in a region crop. A label the probe cannot find is one the LLM has little chance to
    report.
    """
    table = pd.read_csv(labels_csv)
    probe = (pretrain or {}).get("probe_validation", {})
    rows = []
    for label in labels:
        gt, pred = table[f"GT_{label}"].astype(int), table[f"Pred_{label}"].astype(int)
        if not gt.any() and not pred.any():
            continue
        tp = int((gt & pred).sum())
        p = tp / int(pred.sum()) if pred.any() else 0.0
        r = tp / int(gt.sum()) if gt.any() else 0.0
        row = {
            "label": label,
            "support": int(gt.sum()),
            "reported": int(pred.sum()),
            "precision": p,
            "recall": r,
            "F1": 2 * p * r / (p + r) if p + r else 0.0,
            "source": f"{Path(labels_csv).name} (test split)"
            + ("; probes: pretrain.json (validation)" if probe else ""),
        }
        for arm, name in (
            ("random_init", "probe F1, random ViT"),
            ("pretrained", "probe F1, pretrained ViT"),
        ):
            if arm in probe:
                row[name] = probe[arm]["per_label_f1"].get(label)
        rows.append(row)
    return pd.DataFrame(rows)


def grounded_view(table: pd.DataFrame, digits: int = DIGITS) -> pd.DataFrame | str:
    """A run's grounded-findings table (`metrics/grounded_by_kind.csv`) as a notebook shows it: the kinds the
    run reported or invented something for (the `all` row kept), columns with any value, numbers at `digits`
    decimals, counts as integers; a sentence instead when the run reported and invented nothing (a table of
    zeros and NaN)."""
    counts = table[["reported", "false_findings"]].fillna(0)
    kinds = table[table["kind"] != "all"]
    if not counts.to_numpy().any():
        return (
            f"The run reported none of the {int(kinds['inserted'].sum())} inserted findings of "
            f"{len(kinds)} kinds in their own region's paragraph, and invented none: nothing to tabulate."
        )
    shown = table[(counts.sum(axis=1) > 0) | (table["kind"] == "all")].dropna(axis=1, how="all")
    missed = kinds.loc[counts.loc[kinds.index].sum(axis=1) == 0, "kind"]
    shown = with_integer_counts(shown).round(digits).set_index("kind")
    shown.attrs["never_reported"] = list(missed)  # kinds left out: neither reported nor invented
    return shown
