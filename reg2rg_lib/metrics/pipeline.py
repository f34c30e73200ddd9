"""One call from a predictions CSV to every metric the paper reports (used by notebooks 04 and 05).

`evaluate_predictions(pred_csv, out_dir)` scores
- NLG on whole reports with the region scaffolding removed (the paper's Table numbers; `strip_region_prefix`),
- region recognition from the "The region i is <organ>:" prefixes against the reference's, and topic
  consistency (the share of generated paragraphs whose sentences belong to the organ they name;
  `region.topic_consistency`),
- clinical efficacy from 18 labels: reference labels from `labels` (a CSV of exact labels, e.g. the embedded
  benchmark's `<split>_predicted_labels.csv`, or a full GT_/Pred_ label table) or from the labeler, prediction
  labels from the labeler (rules by default),
and writes into out_dir: nlg_evaluation_results.csv, nlg_per_sample.csv, nlg_evaluation.json, ce_labels.csv,
ce_metrics.csv, ce_classification_report.txt, ce_metrics.json, crg.json, region_metrics.json,
region_classification_report.txt, all_regions_macro_avg_results.csv, all_regions_micro_avg_results.csv,
region_reports/<region>_reports.csv, with the benchmark's ground truth grounded_findings.csv,
grounded_false_findings.csv, grounded_by_kind.csv and grounded.json, with a BERTScore model bertscore.csv and
model_metrics.json, and summary.json (the returned headline numbers).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reg2rg_lib import regions
from reg2rg_lib.data.layout import case_id
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.metrics.ce import ce_metrics, ce_replicates, evaluate_ce, read_label_table, write_ce_outputs
from reg2rg_lib.metrics.crg import NoPositiveLabelError, crg_score, write_crg
from reg2rg_lib.metrics.csv_inputs import read_csv_checked, read_report_pairs
from reg2rg_lib.metrics.grounded import (
    GROUNDED_METRICS,
    grounded_findings,
    read_ground_truth,
    write_grounded_outputs,
)
from reg2rg_lib.metrics.labeler import get_labeler
from reg2rg_lib.metrics.model_based import evaluate_model_based
from reg2rg_lib.metrics.nlg import evaluate_nlg, evaluate_nlg_by_region, nlg_replicates, write_nlg_outputs
from reg2rg_lib.metrics.region import region_recognition, write_region_outputs
from reg2rg_lib.metrics.region_ce import (
    region_ce,
    region_ce_headline,
    region_report_tables,
    write_region_ce_outputs,
)
from reg2rg_lib.metrics.stats import bootstrap_indices, nanmean_replicates, paired_test
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import LABELS

LABEL_ID_COLUMNS: tuple[str, ...] = ("AccNum", "VolumeName", "volume_name", "name", "id")


def reference_labels(path: str | Path, ids: Sequence[str], labels: Sequence[str] = LABELS
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """(y_true, y_pred or None) for `ids` from a label CSV.

    Accepts a GT_<label>/Pred_<label> table with one row per prediction (used as-is, both sides), or an id
    column (AccNum/VolumeName/...) plus one column per label (exact reference labels, matched by id).
    """
    table = read_csv_checked(path, what="label table")
    if all(f"GT_{lab}" in table.columns and f"Pred_{lab}" in table.columns for lab in labels):
        y_true, y_pred, _ = read_label_table(path, labels)
        if len(y_true) != len(ids):
            raise BadInputError(path, f"label table has {len(y_true)} rows, predictions have {len(ids)}")
        return y_true, y_pred
    id_col = next((c for c in LABEL_ID_COLUMNS if c in table.columns), None)
    read_csv_checked(path, [*(c for c in [id_col] if c), *labels], what="label table")
    if id_col is None:
        raise BadInputError(path, f"label table needs an id column ({', '.join(LABEL_ID_COLUMNS)}) or "
                                  "GT_<label>/Pred_<label> columns")
    keyed = table.assign(_id=table[id_col].map(case_id)).drop_duplicates("_id").set_index("_id")
    wanted = [case_id(i) for i in ids]
    missing = [i for i in wanted if i not in keyed.index]
    if missing:
        raise BadInputError(path, f"no labels for {len(missing)} prediction id(s), e.g. {missing[:3]}")
    values = keyed.loc[wanted, list(labels)].apply(pd.to_numeric, errors="coerce")
    if values.isna().to_numpy().any() or not values.isin([0, 1]).to_numpy().all():
        raise BadInputError(path, "label columns must hold 0 or 1")
    return values.to_numpy(dtype=np.int64), None


def evaluate_predictions(pred_csv: str | Path, out_dir: str | Path, labels: str | Path | None = None, *,
                         gt_column: str | None = None, pred_column: str | None = None,
                         labeler: Any = "rules", strip_region_prefix: bool = True, by_region: bool = False,
                         bootstrap: int = 1000, seed: int = 0, show_progress: bool = False,
                         ground_truth: str | Path | None = None, bertscore_model: str | Path | None = None,
                         allow_empty_predictions: bool = True) -> dict[str, Any]:
    """Every metric for one predictions CSV; writes the files listed in the module docstring.

    Returns the headline numbers: region_accuracy, topic_consistency (None without numbered paragraphs),
    BLEU-1..4, METEOR, ROUGE-1/2/L, CIDEr (per-sample means), Overall_*,
    CE_micro_F1/CE_macro_F1/CE_weighted_F1/CE_samples_F1 (+ precision/recall), CRG, region macro F1s,
    region_CE_macro_F1/region_CE_micro_F1, n; with `ground_truth` (the benchmark folder or its manifest)
    grounded_recall, attribute_accuracy, false_findings_per_case; with `bertscore_model` BERTScore_F1. Empty
    predicted reports are scored as "" (0) with a warning here (the kit's own runs may generate nothing);
    `allow_empty_predictions=False` makes them an error, as the CLI does by default.
    """
    out = Path(out_dir)
    labeler = get_labeler(labeler)  # one instance for CE and region-level CE (a local classifier loads once)
    pairs = read_report_pairs(
        pred_csv, gt_column, pred_column, allow_empty_predictions=allow_empty_predictions
    )
    refs = (
        [regions.strip_region_prefix(t) for t in pairs.references]
        if strip_region_prefix
        else pairs.references
    )
    hyps = (
        [regions.strip_region_prefix(t) for t in pairs.predictions]
        if strip_region_prefix
        else pairs.predictions
    )
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        nlg = evaluate_nlg(
            refs, hyps, ids=pairs.ids, bootstrap=bootstrap, seed=seed, show_progress=show_progress
        )
    caught += [str(w.message) for w in record]
    for msg in caught:
        warnings.warn(f"{pairs.path}: {msg}", stacklevel=2)
    write_nlg_outputs(nlg, out)

    region = region_recognition(pairs.references, pairs.predictions, pairs.ids)
    write_region_outputs(region, out)
    ce, y_true, y_pred = _clinical_efficacy(pairs, refs, hyps, labels, labeler, out, bootstrap, seed)

    if by_region:
        table = evaluate_nlg_by_region(pairs.references, pairs.predictions)
        with atomic_path(MetricsFolder(out).nlg_by_region) as tmp:
            table.to_csv(tmp, index=False)

    headline: dict[str, Any] = {
        "n": nlg.n,
        "region_accuracy": region["accuracy"],
        "topic_consistency": region["topic_consistency"],
        "region_macro_F1": region["macro_all"]["f1"],
        "region_macro_F1_without_lung_pleura": region["macro_without_lung_pleura"]["f1"],
    }
    headline.update(nlg.headline())
    for avg in ("micro", "macro", "weighted", "samples"):
        headline[f"CE_{avg}_F1"] = ce[avg]["f1"]
    headline["CE_micro_precision"] = ce["micro"]["precision"]
    headline["CE_micro_recall"] = ce["micro"]["recall"]
    headline.update(
        _beyond_the_paper(pairs, y_true, y_pred, labeler, out, ground_truth, bertscore_model, caught)
    )
    ci = {**nlg.ci95, **{f"CE_{k.replace('_f1', '_F1')}": tuple(v) for k, v in ce.get("ci95", {}).items()}}
    write_json_atomic(MetricsFolder(out).summary, {
        "predictions": str(pairs.path), "columns": [pairs.gt_column, pairs.pred_column],
        "strip_region_prefix": strip_region_prefix, "headline": headline,
        "ci95": {k: list(v) for k, v in ci.items()}, "warnings": caught})
    return headline


def _clinical_efficacy(pairs: Any, refs: Sequence[str], hyps: Sequence[str], labels: str | Path | None,
                       labeler: Any, out: Path, bootstrap: int, seed: int
                       ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """CE from the reference labels (a file, or the labeler) and the labeler's prediction labels; writes
    ce_labels.csv and the CE outputs; returns (metrics, y_true, y_pred)."""
    lab = get_labeler(labeler)
    y_pred_given = None
    if labels is not None:
        y_true, y_pred_given = reference_labels(labels, pairs.ids)
        gt_source = str(labels)
    else:
        y_true = lab.label(refs)[list(LABELS)].to_numpy(dtype=np.int64)
        gt_source = f"labeler {getattr(lab, 'name', type(lab).__name__)}"
    y_pred = (
        y_pred_given if y_pred_given is not None else lab.label(hyps)[list(LABELS)].to_numpy(dtype=np.int64)
    )
    label_table = pd.concat([
        pd.DataFrame({"AccNum": pairs.ids}),
        pd.DataFrame(y_true, columns=[f"GT_{lab_}" for lab_ in LABELS]),
        pd.DataFrame(y_pred, columns=[f"Pred_{lab_}" for lab_ in LABELS]),
    ], axis=1)
    with atomic_path(MetricsFolder(out).ce_labels) as tmp:
        label_table.to_csv(tmp, index=False)
    ce = evaluate_ce(y_true, y_pred, bootstrap=bootstrap, seed=seed)
    ce["reference_labels"] = gt_source
    ce["prediction_labels"] = "table" if y_pred_given is not None else f"labeler {getattr(lab, 'name', '')}"
    write_ce_outputs(ce, out)
    return ce, y_true, y_pred


def _beyond_the_paper(pairs: Any, y_true: np.ndarray, y_pred: np.ndarray, labeler: Any, out: Path,
                      ground_truth: str | Path | None, bertscore_model: str | Path | None,
                      caught: list[str]) -> dict[str, Any]:
    """CRG (crg.json), region-level CE (all_regions_*_avg_results.csv), grounded findings (grounded_*.csv)
    with `ground_truth`, BERTScore with `bertscore_model`: their headline numbers (None where not
    applicable)."""
    head: dict[str, Any] = {}
    try:
        crg = crg_score(y_true, y_pred, source=pairs.path)
        write_crg(crg, out)
        head["CRG"] = crg["CRG"]
    except NoPositiveLabelError as err:
        MetricsFolder(out).crg.unlink(missing_ok=True)
        caught.append(str(err))
        warnings.warn(str(err), stacklevel=3)
        head["CRG"] = None
    tables = region_report_tables(pairs.references, pairs.predictions, pairs.ids)
    rce = region_ce(tables, labeler)
    write_region_ce_outputs(rce, out, tables)
    head.update(region_ce_headline(rce))
    if ground_truth is not None:
        result = grounded_findings(
            pairs.ids,
            pairs.references,
            pairs.predictions,
            read_ground_truth(ground_truth),
            source=str(pairs.path),
        )
        write_grounded_outputs(result, out)
        head.update({k: result["summary"][k] for k in GROUNDED_METRICS})
    if bertscore_model is not None:
        mb = evaluate_model_based(pairs.ids, pairs.references, pairs.predictions, out, bertscore_model)
        head["BERTScore_F1"] = mb["BERTScore_F1"]
    return head


def _aligned(a: Any, b: Any) -> tuple[list[int], list[int]]:
    """Row positions of the ids both files share, in A's order; KitError when they share none."""
    pos_b = {i: k for k, i in enumerate(b.ids)}
    common = [(k, pos_b[i]) for k, i in enumerate(a.ids) if i in pos_b]
    if not common:
        raise KitError(
            f"{a.path} and {b.path} share no case ids; compare needs predictions for the same cases"
        )
    dropped = len(a.ids) + len(b.ids) - 2 * len(common)
    if dropped:
        warnings.warn(
            f"compare: {dropped} row(s) without a counterpart in the other file are left out", stacklevel=3
        )
    return [k for k, _ in common], [k for _, k in common]


def compare_predictions(
    a_csv: str | Path,
    b_csv: str | Path,
    *,
    gt_column: str | None = None,
    pred_column: str | None = None,
    strip_region_prefix: bool = True,
    labeler: Any = "rules",
    n_resamples: int = 1000,
    seed: int = 0,
    allow_empty_predictions: bool = True,
) -> pd.DataFrame:
    """Paired bootstrap test of system B against system A on the cases both files cover.

    One row per metric: A, B, delta (B - A), its 95% CI and a two-sided p-value, for every NLG number, CE
    micro and macro F1 (labels from `labeler` on both sides) and region accuracy. Resamples are shared by A
    and B.
    """
    a, b = (read_report_pairs(f, gt_column, pred_column, allow_empty_predictions=allow_empty_predictions)
            for f in (a_csv, b_csv))
    ia, ib = _aligned(a, b)
    if any(a.references[i] != b.references[j] for i, j in zip(ia, ib)):
        warnings.warn(
            "compare: the two files' reference reports differ for some cases; each system is scored "
            "against its own file's references",
            stacklevel=2,
        )
    lab = get_labeler(labeler)
    idx = bootstrap_indices(len(ia), n_resamples, seed)
    per_system = []
    for pairs, rows in ((a, ia), (b, ib)):
        raw_refs = [pairs.references[i] for i in rows]
        raw_hyps = [pairs.predictions[i] for i in rows]
        refs = [regions.strip_region_prefix(t) for t in raw_refs] if strip_region_prefix else raw_refs
        hyps = [regions.strip_region_prefix(t) for t in raw_hyps] if strip_region_prefix else raw_hyps
        nlg = evaluate_nlg(refs, hyps, bootstrap=0)
        values, reps = nlg.headline(), nlg_replicates(nlg, idx)
        t = lab.label(refs)[list(LABELS)].to_numpy(dtype=np.int64)
        p = lab.label(hyps)[list(LABELS)].to_numpy(dtype=np.int64)
        ce = ce_metrics(t, p)
        ce_reps = ce_replicates(t, p, idx)
        values.update({"CE_micro_F1": ce["micro"]["f1"], "CE_macro_F1": ce["macro"]["f1"]})
        reps.update({"CE_micro_F1": ce_reps["micro_f1"], "CE_macro_F1": ce_reps["macro_f1"]})
        acc = np.array([np.nan if x is None else x
                        for x in region_recognition(raw_refs, raw_hyps)["per_sample_accuracy"]])
        values["region_accuracy"] = float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0
        reps["region_accuracy"] = nanmean_replicates(acc, idx)  # unscored cases (no region prefix) left out
        per_system.append((values, reps))
    (va, ra), (vb, rb) = per_system
    rows_out = [{"metric": m, **paired_test(ra[m], rb[m], va[m], vb[m])} for m in va]
    table = pd.DataFrame(rows_out)
    table[["ci95_low", "ci95_high"]] = pd.DataFrame(table.pop("ci95").tolist(), index=table.index)
    table.attrs.update({"A": str(a.path), "B": str(b.path), "n": len(ia), "resamples": n_resamples})
    return table
