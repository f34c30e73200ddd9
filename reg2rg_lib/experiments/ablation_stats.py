"""Uncertainty for Tables 4-7: bootstrap 95% CIs per run and paired bootstrap tests against `full`.

The same resample indices serve every run (`reg2rg_lib.metrics.stats`), so case-level difficulty cancels out
in the paired differences. Written to `ablation_stats.csv` (run, metric, value, ci_low, ci_high, delta,
p_value); `verdicts` turns it into better / worse / no evidence per run and metric.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.experiments.baselines import BASELINE_SETTINGS, diversity_note, run_extras
from reg2rg_lib.experiments.grid import ablation, family
from reg2rg_lib.experiments.summary import REFERENCE, SUMMARY_METRICS, read_summary
from reg2rg_lib.metrics.ce import ce_replicates, read_label_table
from reg2rg_lib.metrics.csv_inputs import read_csv_checked
from reg2rg_lib.metrics.stats import (
    bootstrap_indices,
    holm_adjust,
    nanmean_replicates,
    paired_test,
    percentile_ci,
)
from reg2rg_lib.paths import MetricsFolder, RunFolder, RunPaths

# ------------------------------------------------------------------------------------------------------------
# Bootstrap CIs and paired tests

#: The metrics with a row per run: the contract's, each with a CI and a paired test against `full`, and topic
#: consistency (shown beside region accuracy), with a CI only: it is no claim of the paper's, and testing it
#: would add tests to every table's Holm family and so change the verdicts on the paper's metrics.
STATS_METRICS: tuple[str, ...] = (*SUMMARY_METRICS, "topic_consistency")


@dataclass
class PerCase:
    """What one run's bootstrap needs, aligned on the test cases: per-case scores and CE label matrices."""

    ids: list[str]
    scores: dict[str, np.ndarray]  # metric -> (N,) per-case score (NaN: not scored)
    y_true: np.ndarray | None = None  # (N, L) ground-truth labels
    y_pred: np.ndarray | None = None  # (N, L) predicted labels
    topic: np.ndarray | None = None  # (N, 2) numbered paragraphs and on-topic ones of each case

    def take(self, ids: Sequence[str], where: Path) -> PerCase:
        """The same data in the order of `ids` (every id must be present)."""
        pos = {k: i for i, k in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise BadInputError(
                where, f"no per-case scores for {len(missing)} test case(s), e.g. {missing[0]}"
            )
        order = np.array([pos[i] for i in ids], dtype=np.int64)
        return PerCase(list(ids), {k: v[order] for k, v in self.scores.items()},
                       *(None if a is None else a[order] for a in (self.y_true, self.y_pred, self.topic)))


def per_case(metrics_dir: Path) -> PerCase:
    """Per-case region accuracy, BLEU-4, METEOR, ROUGE-L, CE labels and topic counts from a run's evaluation
    folder (the topic counts only where its region_metrics.json has them: evaluated since 2026-12-07)."""
    files = MetricsFolder(metrics_dir)
    nlg = read_csv_checked(files.nlg_per_sample, required=("id", "BLEU-4"), what="per-sample NLG")
    ids = nlg["id"].astype(str).tolist()
    scores = {m: nlg[m].astype(float).to_numpy() for m in ("BLEU-4", "METEOR", "ROUGE-L") if m in nlg.columns}
    region = json.loads(files.region_json.read_text())
    acc = [math.nan if a is None else float(a) for a in region.get("per_sample_accuracy", [])]
    if len(acc) == len(ids):
        scores["region_accuracy"] = np.array(acc)
    counts = (region.get("topic") or {}).get("per_sample")
    topic = np.asarray(counts, dtype=np.float64) if counts is not None and len(counts) == len(ids) else None
    out = PerCase(ids, scores, topic=topic)
    labels_csv = files.ce_labels
    if labels_csv.is_file():
        out.y_true, out.y_pred = read_label_table(labels_csv)[:2]
    return out


def replicates(data: PerCase, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap replicates (B,) of every headline metric that `data` supports."""
    reps = {m: nanmean_replicates(v, idx) for m, v in data.scores.items() if not np.isnan(v).all()}
    if data.y_true is not None and data.y_pred is not None:
        reps["CE_micro_F1"] = ce_replicates(data.y_true, data.y_pred, idx)["micro_f1"]
    if data.topic is not None and data.topic[:, 0].sum() > 0:  # pooled over the resample's paragraphs
        taken = data.topic[idx]  # (B, N, 2)
        reps["topic_consistency"] = taken[..., 1].sum(1) / np.maximum(taken[..., 0].sum(1), 1)
    return reps


def ablation_stats(
    paths: RunPaths,
    runs: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    folders: Mapping[str, str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    reference: str = REFERENCE,
    baselines: Mapping[str, Path] | None = None,
    seeds: Sequence[int] = (0,),
) -> pd.DataFrame:
    """Long table, one row per (run, metric): value, ci_low, ci_high, delta_vs_full, p_vs_full, p_holm,
    family, tests_in_family, n_resamples, seeds, kind, distinct_reports, n_test_cases, same_as.

    `value` is the run's own evaluation (summary.json; NaN where not applicable); CIs and p-values come from
    one set of resample indices shared by all runs (paired). `p_holm` is Holm-adjusted within the run's table
    (`grid.family`; the baselines are a family of their own; a run that is another's model, `same_as`, is not
    tested). `aliases` maps a run to the run whose outputs it
    reused (its `same_as`); `folders` maps a run to its folder under `runs/` (default: the run's name, or its
    alias's); `baselines` maps a baseline to its folder (`baselines.run_baselines`), scored like a run.
    `seeds`: the training seeds behind every run (one run per seed; the kit trains one).
    """
    aliases = dict(aliases or {})
    summary = read_summary(paths.summary)["runs"]
    folders = dict(folders or {})
    folder = {r: RunFolder(paths.run(folders.get(r, aliases.get(r, r)))).metrics() for r in runs}
    values = {r: summary.get(r, {}) for r in runs}
    for name, where in (baselines or {}).items():
        folder[name] = RunFolder(where).metrics()
        values[name] = _baseline_values(RunFolder(where), name)
    ref_data = per_case(folder[reference])
    idx = bootstrap_indices(len(ref_data.ids), n_resamples, seed)  # (B, N), shared: paired comparisons
    ref_reps = replicates(ref_data, idx)
    rows = []
    for run in [*runs, *(baselines or {})]:
        reps = replicates(per_case(folder[run]).take(ref_data.ids, folder[run]), idx)
        kind = "baseline" if run in (baselines or {}) else "run"
        extra = {
            "family": "baselines" if kind == "baseline" else family(run),
            "n_resamples": int(n_resamples),
            "seeds": len(seeds),
            "kind": kind,
            "same_as": aliases.get(run, ""),
            "distinct_reports": values[run].get("distinct_reports", math.nan),
            "n_test_cases": values[run].get("n_test_cases", math.nan),
        }
        for metric in STATS_METRICS:
            given = values[run].get(metric)
            tested = run != reference and not extra["same_as"] and metric in SUMMARY_METRICS
            rows.append({"run": run, "metric": metric, **_compare(
                reps, ref_reps, metric, float(given) if given is not None else math.nan,
                values[reference].get(metric), tested), **extra})
    return _holm_by_family(pd.DataFrame(rows))


def _baseline_values(files: RunFolder, name: str) -> dict[str, Any]:
    """A baseline's headline metrics (its metrics/summary.json) and output counts (its predictions)."""
    path = files.metrics_summary()
    if not path.is_file():
        raise BadInputError(path, f"baseline {name} was not evaluated; rerun the ablations")
    return {**json.loads(path.read_text())["headline"], **run_extras(files.predictions())}


def _compare(reps: Mapping[str, np.ndarray], ref_reps: Mapping[str, np.ndarray], metric: str, value: float,
             ref_value: float | None, test: bool) -> dict[str, float]:
    """value, its bootstrap CI and (when `test`) the paired test against the reference."""
    low, high = percentile_ci(reps[metric]) if metric in reps else (math.nan, math.nan)
    row = {"value": value, "ci_low": low, "ci_high": high, "delta_vs_full": math.nan, "p_vs_full": math.nan}
    if test and metric in reps and metric in ref_reps and ref_value is not None and not math.isnan(value):
        result = paired_test(ref_reps[metric], reps[metric], float(ref_value), value)
        row.update(delta_vs_full=result["delta"], p_vs_full=result["p_value"])
    return row


def _holm_by_family(stats: pd.DataFrame) -> pd.DataFrame:
    """`p_holm` (Holm within each family's tests) and `tests_in_family` columns."""
    stats = stats.assign(p_holm=math.nan, tests_in_family=0)
    for _, sub in stats.groupby("family", sort=False):
        tested = sub.index[sub["p_vs_full"].notna()]
        stats.loc[tested, "p_holm"] = holm_adjust(stats.loc[tested, "p_vs_full"].to_numpy())
        stats.loc[sub.index, "tests_in_family"] = len(tested)
    return stats


def read_stats(path: str | os.PathLike[str]) -> pd.DataFrame:
    """`ablation_stats.csv`, checked (files from before the baselines and Holm columns read too)."""
    stats = read_csv_checked(path, required=("run", "metric", "value", "ci_low", "ci_high", "p_vs_full"),
                             what="ablation stats")
    for col in ("value", "ci_low", "ci_high", "delta_vs_full", "p_vs_full", "p_holm", "tests_in_family",
                "n_resamples", "seeds", "distinct_reports", "n_test_cases"):
        if col in stats.columns:
            stats[col] = pd.to_numeric(stats[col], errors="coerce")
    if "kind" not in stats.columns:
        stats["kind"] = "run"
    stats["kind"] = stats["kind"].fillna("run")
    return stats


def descriptions(stats: pd.DataFrame) -> dict[str, str]:
    """run -> what it changes (and which run it is the same model as), for the tables' `setting` column."""
    same = dict(zip(stats["run"], stats["same_as"].fillna(""))) if "same_as" in stats.columns else {}
    out = {}
    for r in dict.fromkeys(stats["run"]):
        try:
            out[r] = BASELINE_SETTINGS[r] if r in BASELINE_SETTINGS else ablation(r).description
        except KitError:
            out[r] = ""
        if same.get(r):
            out[r] += f" (the same model as {same[r]}: its outputs reused)"
    return out


def verdicts(stats: pd.DataFrame, alpha: float = 0.05, reference: str = REFERENCE) -> pd.DataFrame:
    """For every run and metric: the difference to `full` and what it means, in words.

    `verdict` is "full better" / "run better" when the paired bootstrap test, Holm-adjusted within the run's
    table (`p_holm`; the raw p where a stats file has none), is below `alpha`, "no clear difference"
    otherwise, and "not applicable" where the run has no value (e.g. region accuracy without RRA). `note`
    flags a verdict that rests on near-constant output (the run's or full's: `baselines.is_near_constant`).
    Baselines get none.
    """
    rows = []
    kinds = stats["kind"] if "kind" in stats.columns else pd.Series("run", index=stats.index)
    ref = _extras(stats, reference)
    has_test = stats["metric"].isin(SUMMARY_METRICS)  # topic consistency: a CI, not a test (`STATS_METRICS`)
    for r in stats[(stats["run"] != reference) & (kinds != "baseline") & has_test].to_dict("records"):
        p = r.get("p_holm", math.nan)
        p = r["p_vs_full"] if p is None or (isinstance(p, float) and math.isnan(p)) else p
        same = r.get("same_as", "")
        if isinstance(same, str) and same:
            verdict = f"same model as {same}"
        elif math.isnan(r["value"]) or math.isnan(p):
            verdict = "not applicable"
        elif p < alpha:
            verdict = "full better" if r["delta_vs_full"] < 0 else f"{r['run']} better"
        else:
            verdict = "no clear difference"
        notes = [diversity_note(r["run"], _extras(stats, r["run"])), diversity_note(reference, ref)]
        tested = verdict.endswith("better") or verdict == "no clear difference"
        note = "; ".join(n for n in notes if n) if tested else ""
        rows.append({"run": r["run"], "metric": r["metric"], "delta_vs_full": r["delta_vs_full"],
                     "p_vs_full": r["p_vs_full"], "p_holm": p, "verdict": verdict, "note": note})
    return pd.DataFrame(
        rows, columns=["run", "metric", "delta_vs_full", "p_vs_full", "p_holm", "verdict", "note"]
    )


def _extras(stats: pd.DataFrame, run: str) -> dict[str, float]:
    """distinct_reports / n_test_cases of `run` in a stats table ({} when the file has none)."""
    sub = stats[stats["run"] == run]
    if sub.empty or "distinct_reports" not in stats.columns:
        return {}
    first = sub.iloc[0]
    out = {k: float(first[k]) for k in ("distinct_reports", "n_test_cases") if k in sub.columns
           and not pd.isna(first[k])}
    return out
