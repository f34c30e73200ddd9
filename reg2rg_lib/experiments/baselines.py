"""Baselines beside every table of kit runs, how varied a run's reports are, and the shuffled-order probe.

A score means little without what a model that never looks at the CT gets. Two constant reports, the same text
for every test case, are scored exactly as the runs are (`evaluate_predictions` against the same references
and labels):

- `baseline_normal`: for each region in canonical order "The region i is <organ>: <paragraph>", the paragraph
  being the organ's most frequent one among the TRAIN cases without any finding (all train cases for an organ
  no such case has).
  Its region accuracy is the *canonical-order baseline*: organ names written by position alone.
- `baseline_frequent_finding`: the same report with the paragraphs of one TRAIN case that has the train
  split's most frequent finding (the case with that finding and the fewest others), so its CE precision on
  that label is the label's prevalence: what a constant "finding" sentence earns.

`output_diversity` counts the distinct reports of a run; `near_constant` flags a run whose verdicts rest on
(almost) one report. `shuffled_order_probe` generates `full`'s reports with each case's regions in a shuffled
order at test
time: a model that reads the region features names the organs as well as in canonical order, one that learned
the position (region i is the i-th organ of the canonical list) falls towards the canonical-order baseline.
Files: `out_dir/baselines/<name>/{predictions.csv,metrics/}`, `out_dir/baselines.json`,
`runs/full/shuffled_regions/{predictions.csv,metrics/region_metrics.json}`.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.data.prep import CaseRecord, load_cache
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.infer.generate import DecodeSettings, generate_run
from reg2rg_lib.infer.predictions import PRED_COLUMNS, read_predictions
from reg2rg_lib.io import write_csv_atomic, write_json_atomic
from reg2rg_lib.metrics import evaluate_predictions
from reg2rg_lib.metrics.csv_inputs import read_report_pairs
from reg2rg_lib.metrics.grounded import benchmark_manifest
from reg2rg_lib.metrics.region import region_recognition, write_region_outputs
from reg2rg_lib.model import Reg2RGConfig, build_target
from reg2rg_lib.paths import RunFolder, RunPaths
from reg2rg_lib.profiles import Profile
from reg2rg_lib.regions import LABELS, REGIONS

logger = logging.getLogger(__name__)

#: The baselines and, for the tables' `setting` column, what each is.
BASELINE_SETTINGS: dict[str, str] = {
    "baseline_normal": "baseline: one constant normal report (TRAIN split), organ names in canonical order",
    "baseline_frequent_finding": "baseline: one constant report with the TRAIN split's most frequent finding",
}
BASELINES: tuple[str, ...] = tuple(BASELINE_SETTINGS)
#: A run is near-constant when its most frequent report covers at least this share of the test cases ...
NEAR_CONSTANT_TOP_SHARE = 0.5
#: ... or when it writes fewer distinct reports than this share of the cases (e.g. under 10 for 50 cases).
NEAR_CONSTANT_DISTINCT_SHARE = 0.2


# ------------------------------------------------------------------------------------------------------------
# How varied a run's output is


def output_diversity(pred_csv: str | Path) -> dict[str, Any]:
    """{n, distinct_reports, top_share, near_constant} of a predictions CSV (reports compared after whitespace
    normalisation)."""
    reports = [" ".join(r["Pred_combined_report"].split()) for r in read_predictions(pred_csv)]
    if not reports:
        raise BadInputError(pred_csv, "no predictions to count")
    counts = collections.Counter(reports)
    n, distinct, top = len(reports), len(counts), counts.most_common(1)[0][1] / len(reports)
    return {"n": n, "distinct_reports": distinct, "top_share": top,
            "near_constant": is_near_constant(distinct, n, top)}


def is_near_constant(distinct: float, n: float, top_share: float | None = None) -> bool:
    """The near-constant rule (see the module constants); `top_share` None: judged by the distinct count
    only."""
    if n <= 1:
        return False
    few = distinct < NEAR_CONSTANT_DISTINCT_SHARE * n or distinct <= 1
    return bool(few or (top_share is not None and top_share >= NEAR_CONSTANT_TOP_SHARE))


# ------------------------------------------------------------------------------------------------------------
# The constant reports, from the TRAIN split


def _most_frequent(texts: Sequence[str]) -> str:
    counts = collections.Counter(" ".join(t.split()) for t in texts if t and t.strip())
    return min(counts, key=lambda t: (-counts[t], t)) if counts else ""  # ties: the first text in sort order


def normal_paragraphs(train: Sequence[CaseRecord]) -> dict[str, str]:
    """Each region's most frequent paragraph among the train cases without any finding (among all train cases
    for a region that no such case has), so that every region of the train split gets a paragraph."""
    normal = [r for r in train if r.labels and not any(int(v) for v in r.labels.values())]
    out = {}
    for region in REGIONS:
        text = _most_frequent([r.reports.get(region, "") for r in normal]) or _most_frequent(
            [r.reports.get(region, "") for r in train])
        if text:
            out[region] = text
    return out


def most_frequent_finding(train: Sequence[CaseRecord]) -> tuple[str, int] | None:
    """(label, number of train cases with it) of the train split's most frequent finding; None without
    labels."""
    counts = {lab: sum(int(r.labels.get(lab, 0)) for r in train) for lab in LABELS}
    best = max(LABELS, key=lambda lab: counts[lab])  # ties: LABELS order
    return (best, counts[best]) if counts[best] > 0 else None


def baseline_reports(train: Sequence[CaseRecord], cfg: Any) -> dict[str, dict[str, Any]]:
    """{baseline name: {"report", "description", ...}}: the constant reports, in the RRA target format of
    `cfg` with every region in canonical order."""
    normal = normal_paragraphs(train)
    order = [r for r in REGIONS if r in normal]
    out = {"baseline_normal": {
        "report": build_target(order, normal, cfg),
        "description": "constant report: each organ's most frequent normal TRAIN paragraph, canonical order"}}
    found = most_frequent_finding(train)
    if found is not None:
        label, count = found
        with_it = [r for r in train if int(r.labels.get(label, 0))]
        case = min(with_it, key=lambda r: (sum(int(v) for v in r.labels.values()), r.name))
        paragraphs = {**normal, **{k: v for k, v in case.reports.items() if v and v.strip()}}
        order = [r for r in REGIONS if r in paragraphs]
        out["baseline_frequent_finding"] = {
            "report": build_target(order, paragraphs, cfg), "finding": label, "train_cases_with_it": count,
            "train_case": case.name,
            "description": f"constant report with the most frequent TRAIN finding ({label}, {count} of "
                           f"{len(train)} train cases), from train case {case.name}"}
    return out


def write_constant_predictions(reference_csv: str | Path, report: str, out_csv: str | Path) -> Path:
    """A predictions CSV with the cases, prompts and references of `reference_csv` and `report` as every
    prediction."""
    rows = [{**r, "Pred_combined_report": report} for r in read_predictions(reference_csv)]
    if not rows:
        raise BadInputError(reference_csv, "no predictions to take the test cases from")
    write_csv_atomic(out_csv, PRED_COLUMNS, rows, lineterminator="\n")
    return Path(out_csv)


def canonical_order_accuracy(
    reference_csv: str | Path, cache_dir: str | Path, profile: Profile
) -> float | None:
    """Region accuracy of `baseline_normal` (the organ names written in canonical order, by position alone) on
    the cases and references of `reference_csv`, e.g. notebook 03's validation reports; None where no
    reference region is numbered. The same number as `baselines.json`'s `canonical_order_region_accuracy` on
    other cases."""
    train = load_cache(cache_dir).cases("train")
    if not train:
        raise BadInputError(cache_dir, "no train cases to build the baselines from")
    report = baseline_reports(train, Reg2RGConfig.from_profile(profile))["baseline_normal"]["report"]
    rows = read_predictions(reference_csv)
    if not rows:
        raise BadInputError(reference_csv, "no cases to score the canonical-order baseline on")
    refs = [r["GT_combined_report"] for r in rows]
    m = region_recognition(refs, [report] * len(rows), [r["AccNum"] for r in rows])
    return float(m["accuracy"]) if m["n_scored"] else None


def run_baselines(
    profile: Profile, paths: RunPaths, reference_csv: Path, labels: Path | None
) -> dict[str, Any]:
    """Write, evaluate and describe every baseline against the references of `reference_csv` (the `full` run's
    predictions); write `out_dir/baselines.json` and return it ({"baselines": {name: {...metrics}}, ...})."""
    train = load_cache(paths.cache).cases("train")
    if not train:
        raise BadInputError(paths.cache, "no train cases to build the baselines from")
    made = baseline_reports(train, Reg2RGConfig.from_profile(profile))
    result: dict[str, Any] = {
        "profile": profile.name,
        "reference": str(reference_csv.relative_to(paths.root))
        if reference_csv.is_relative_to(paths.root)
        else str(reference_csv),
        "baselines": {},
    }
    for name, info in made.items():
        folder = RunFolder(paths.baseline(name))
        pred = write_constant_predictions(reference_csv, info["report"], folder.predictions())
        headline = evaluate_predictions(pred, folder.metrics(), labels=labels, bootstrap=0,
                                        ground_truth=benchmark_manifest(paths.data))  # as the runs are scored
        metrics = {
            k: float(v) for k, v in headline.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        result["baselines"][name] = {**info, **metrics, **output_diversity(pred)}
    if "baseline_normal" in result["baselines"]:
        result["canonical_order_region_accuracy"] = result["baselines"]["baseline_normal"]["region_accuracy"]
    write_json_atomic(paths.baselines, result)
    logger.info("[baselines] " + ", ".join(f"{n}: region accuracy {b['region_accuracy']:.4f}, CE micro F1 "
                                           f"{b['CE_micro_F1']:.4f}" for n, b in result["baselines"].items()))
    return result


def read_baselines(path: str | Path) -> dict[str, Any]:
    """`baselines.json` as written by `run_baselines` ({} when absent: tables then say so)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------------------------------------------------
# Region accuracy with the regions in a shuffled order at test time


def shuffled_order_probe(profile: Profile, paths: RunPaths, run_dir: Path, names: Sequence[str],
                         progress: bool = True) -> dict[str, float | None]:
    """`{"region_accuracy_shuffled": ...}` of the run at `run_dir` (an RRA model) with each test case's
    regions in a shuffled order (`generate_run(region_order="shuffled")`); generated once per trained model,
    then reused."""
    out = RunFolder(RunFolder(run_dir).shuffled_regions)
    pred = out.predictions()
    trained = RunFolder(run_dir).train_summary
    stale = pred.is_file() and trained.is_file() and pred.stat().st_mtime < trained.stat().st_mtime
    have = {r["AccNum"] for r in read_predictions(pred)} if pred.is_file() and not stale else set()
    if stale:
        pred.unlink()
    if not set(names) <= have:
        decode = DecodeSettings.from_profile(profile.generate)
        generate_run(run_dir, paths.cache, pred, decode=decode, batch_size=profile.generate.batch_size,
                     progress=progress, region_order="shuffled")
    pairs = read_report_pairs(pred, allow_empty_predictions=True)
    metrics = region_recognition(pairs.references, pairs.predictions, pairs.ids)
    write_region_outputs(metrics, out.metrics())
    return {"region_accuracy_shuffled": float(metrics["accuracy"]) if metrics["n_scored"] else None}


def run_extras(pred_csv: Path) -> dict[str, float]:
    """The numbers summary.json keeps beside a run's metrics: distinct reports and the share of the top
    one."""
    d = output_diversity(pred_csv)
    return {"distinct_reports": float(d["distinct_reports"]), "top_report_share": float(d["top_share"]),
            "n_test_cases": float(d["n"])}


def diversity_note(run: str, extras: Mapping[str, Any]) -> str:
    """"" or a warning that `run`'s output is near-constant, with its counts (for verdicts and tables)."""
    n, distinct = extras.get("n_test_cases"), extras.get("distinct_reports")
    if n is None or distinct is None or not is_near_constant(distinct, n, extras.get("top_report_share")):
        return ""
    return f"{run} output near-constant: {int(distinct)} distinct report(s) for {int(n)} cases"


def annotate_runs(
    profile: Profile,
    paths: RunPaths,
    results: dict[str, dict[str, Any]],
    folders: Mapping[str, str],
    names: Sequence[str],
    labels: Path | None,
    progress: bool = True,
) -> dict[str, Path]:
    """After the grid's runs: add each run's `run_extras` to its headline in `results` (in place), the
    shuffled-order region accuracy to `full`'s (an RRA model), and score the baselines against `full`'s
    references. Returns {baseline name: its folder} for `ablation_stats` (empty when `full` has no
    predictions)."""
    for run, folder in folders.items():
        pred = RunFolder(paths.run(folder)).predictions()
        if pred.is_file():
            results[run].update(run_extras(pred))
    full = folders.get("full")
    if full is None or not RunFolder(paths.run(full)).predictions().is_file():
        return {}
    if Reg2RGConfig.from_profile(profile).rra:
        results["full"].update(shuffled_order_probe(profile, paths, paths.run(full), names, progress))
    made = run_baselines(profile, paths, RunFolder(paths.run(full)).predictions(), labels)
    return {name: paths.baseline(name) for name in made["baselines"]}


# ------------------------------------------------------------------------------------------------------------
# What notebook 05 shows of them

#: The columns of `baseline_table`, beside the baseline's description.
BASELINE_COLUMNS = ("region_accuracy", "BLEU-4", "METEOR", "ROUGE-L", "CE_micro_F1", "distinct_reports", "n")


def baseline_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """One row per baseline of a `baselines.json` (`read_baselines`): its headline metrics, distinct reports
    and test cases, and what it is; empty (same columns) when there are none."""
    rows = [
        {"baseline": name, **{c: b.get(c) for c in BASELINE_COLUMNS}, "description": b.get("description", "")}
        for name, b in (result.get("baselines") or {}).items()
    ]
    return pd.DataFrame(rows, columns=["baseline", *BASELINE_COLUMNS, "description"]).set_index("baseline")


def shuffled_story(full: Mapping[str, Any], canonical: float | None) -> str:
    """The shuffled-order probe in words, from `full`'s summary metrics (`region_accuracy`,
    `region_accuracy_shuffled`) and the canonical-order baseline."""
    acc, shuffled = full.get("region_accuracy"), full.get("region_accuracy_shuffled")
    if acc is None or shuffled is None:
        return (
            "The shuffled-order probe did not run (no region accuracy of `full`, e.g. a model without RRA, "
            "or no shuffled predictions)."
        )
    text = (
        f"Region accuracy of `full` with the regions in canonical order: {acc:.4f}; with each test case's "
        f"regions shuffled: {shuffled:.4f} ({shuffled - acc:+.4f})."
    )
    if canonical is None:
        return text + " No canonical-order baseline to compare with (baselines.json is absent)."
    text += f" Writing the organ names in canonical order by position alone scores {canonical:.4f}."
    if shuffled > canonical and shuffled >= acc - 0.05:
        return text + " The model names the organs from the region features, not from their position."
    if shuffled <= canonical:
        return text + (" With shuffled regions the model does no better than the position-only baseline: it "
                       "learned where an organ usually sits in the prompt, not what the region looks like.")
    return text + (" The model reads the features in part: shuffling costs accuracy, but it stays above the "
                   "position-only baseline.")
