"""Clinical efficacy (CE): how well the abnormalities named in generated reports match those in the
references.

Both reports are turned into 18 binary CT-RATE labels (`metrics.labeler`; the authors used a RadBERT
classifier), then scored with scikit-learn's multilabel semantics: per-label precision/recall/F1/support, and
micro, macro, weighted and samples averages (`zero_division=0`, as in the authors' run, where labels absent
from both sides score 0).

Outputs (`write_ce_outputs`), in the authors' formats:
- DIR/ce_metrics.csv: `Label, Precision, Recall, F1 Score, Support` per label plus a `Weighted Average` row
  (= the released `metrics_manual.csv`);
- DIR/ce_classification_report.txt: sklearn's `classification_report` text (=
  `test_classification_report.txt`);
- DIR/ce_metrics.json: every average at full precision, with bootstrap 95% CIs;
- DIR/crg.json: the VLM3D challenge's CRG over the same label table (`metrics.crg`; written by the callers).
A label table (`GT_<label>`, `Pred_<label>` columns; the released `label_inferred.csv`) is read by
`read_label_table`; `label_reports` builds one from report text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.io import atomic_path, write_json_atomic, write_text_atomic
from reg2rg_lib.metrics.csv_inputs import check_rows, read_csv_checked
from reg2rg_lib.metrics.stats import bootstrap_indices, percentile_ci
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import LABELS

AVERAGES: tuple[str, ...] = ("micro", "macro", "weighted", "samples")


def read_label_table(path: str | Path, labels: Sequence[str] = LABELS, gt_prefix: str = "GT_",
                     pred_prefix: str = "Pred_") -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(y_true, y_pred, table) from a CSV with `<gt_prefix><label>` / `<pred_prefix><label>` columns (0/1).

    Values are read as numbers (the release stores 0.0/1.0); anything else is a BadInputError naming the file.
    """
    cols = [f"{gt_prefix}{lab}" for lab in labels] + [f"{pred_prefix}{lab}" for lab in labels]
    table = read_csv_checked(path, cols, what="label table")
    check_rows(Path(path), table, what="label table")
    values = table[cols].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() | ~values.isin([0, 1])
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise BadInputError(path, f"column {cols[col]!r} row {row + 2} is {table[cols[col]].iloc[row]!r}, "
                                  "expected 0 or 1")
    arr = values.to_numpy(dtype=np.int64)
    k = len(labels)
    return arr[:, :k], arr[:, k:], table  # (N, L) each


def case_findings(label_csv: str | Path, cases: Sequence[str],
                  labels: Sequence[str] = LABELS) -> pd.DataFrame:
    """For each of `cases` (AccNum values of a `ce_labels.csv`), the CT-RATE findings its reference states,
    those the generated report states too, those it missed and those it invented: what region accuracy does
    not score (a paragraph can name its organ right and miss that organ's finding). A case not in the file is
    a BadInputError."""
    y_true, y_pred, table = read_label_table(label_csv, labels)
    row = {name: k for k, name in enumerate(table["AccNum"].astype(str))}
    out = []
    for case in cases:
        if case not in row:
            raise BadInputError(label_csv, f"no row for case {case!r}")
        t, p = y_true[row[case]], y_pred[row[case]]
        out.append({"case": case, "in the reference": _names(labels, t), "written": _names(labels, t & p),
                    "missed": _names(labels, t & (1 - p)), "invented": _names(labels, (1 - t) & p)})
    return pd.DataFrame(out)


def _names(labels: Sequence[str], mask: np.ndarray) -> str:
    return ", ".join(lab for lab, m in zip(labels, mask) if m) or "-"


def ce_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Per-label and averaged precision/recall/F1/support (sklearn semantics, zero_division=0)."""
    # sklearn: slow to import (~2 s); only the CE scores need it
    from sklearn.metrics import precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    out: dict[str, Any] = {"n": int(len(y_true)), "labels": list(labels), "per_label": {}}
    if len(y_true) == 0:
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        out["per_label"] = {lab: dict(zero) for lab in labels}
        out.update({avg: dict(zero) for avg in AVERAGES})
        return out
    p, r, _, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    # F1 as the harmonic mean of P and R, as the authors' metrics_manual.csv has it (sklearn >= 1.3 computes
    # 2TP / (2TP + FP + FN), equal up to the last bit of a double)
    f = _safe_div(2 * p * r, p + r)
    for i, lab in enumerate(labels):
        out["per_label"][lab] = {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                 "support": int(s[i])}
    support = int(y_true.sum())
    for avg in ("micro", "samples"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af), "support": support}
    out["macro"] = {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean()),
                    "support": support}
    weights = s.astype(np.float64)
    out["weighted"] = {k: float(np.average(v, weights=weights)) if weights.sum() else 0.0
                       for k, v in (("precision", p), ("recall", r), ("f1", f))}
    out["weighted"]["support"] = support
    out = {k: out[k] for k in ("n", "labels", "per_label", *AVERAGES)}
    return out


def metrics_manual_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """The authors' `metrics_manual.csv`: one row per label and a support-weighted `Weighted Average` row."""
    rows = [{"Label": lab, "Precision": m["precision"], "Recall": m["recall"], "F1 Score": m["f1"],
             "Support": m["support"]} for lab, m in metrics["per_label"].items()]
    w = metrics["weighted"]
    rows.append({"Label": "Weighted Average", "Precision": w["precision"], "Recall": w["recall"],
                 "F1 Score": w["f1"], "Support": w["support"]})
    return pd.DataFrame(rows, columns=["Label", "Precision", "Recall", "F1 Score", "Support"])


def classification_report_text(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = LABELS,
                               digits: int = 2) -> str:
    """sklearn's `classification_report` for the multilabel matrices (the released text file's format)."""
    # sklearn: slow to import (~2 s); only the CE scores need it
    from sklearn.metrics import classification_report

    if len(y_true) == 0:
        return "no samples\n"
    return classification_report(np.asarray(y_true), np.asarray(y_pred), target_names=list(labels),
                                 zero_division=0, digits=digits)


def ce_replicates(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap replicates of micro/macro/weighted/samples F1 (and micro P/R), vectorised over resamples."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    tp, fp, fn = t & p, (1 - t) & p, t & (1 - p)  # (N, L)
    TP, FP, FN = tp[idx].sum(1), fp[idx].sum(1), fn[idx].sum(1)  # (B, L)
    f1_label = _safe_div(2 * TP, 2 * TP + FP + FN)  # (B, L)
    sup = TP + FN
    reps = {
        "micro_precision": _safe_div(TP.sum(1), TP.sum(1) + FP.sum(1)),
        "micro_recall": _safe_div(TP.sum(1), TP.sum(1) + FN.sum(1)),
        "micro_f1": _safe_div(2 * TP.sum(1), 2 * TP.sum(1) + FP.sum(1) + FN.sum(1)),
        "macro_f1": f1_label.mean(1),
        "weighted_f1": _safe_div((f1_label * sup).sum(1), sup.sum(1)),
    }
    s_tp, s_fp, s_fn = tp.sum(1), fp.sum(1), fn.sum(1)  # (N,) per-sample counts for the samples average
    reps["samples_f1"] = _safe_div(2 * s_tp, 2 * s_tp + s_fp + s_fn)[idx].mean(1)
    return reps


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a * b), where=b > 0)


def evaluate_ce(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = LABELS, bootstrap: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """`ce_metrics` plus the report text and 95% CIs of the averaged F1s (and micro P/R)."""
    metrics = ce_metrics(y_true, y_pred, labels)
    metrics["report"] = classification_report_text(y_true, y_pred, labels)
    if bootstrap and len(y_true) > 1:
        idx = bootstrap_indices(len(y_true), bootstrap, seed)
        metrics["ci95"] = {k: list(percentile_ci(v)) for k, v in ce_replicates(y_true, y_pred, idx).items()}
    return metrics


def write_ce_outputs(metrics: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """DIR/ce_metrics.csv (metrics_manual format), DIR/ce_classification_report.txt, DIR/ce_metrics.json."""
    out = MetricsFolder(out_dir)
    paths = {"csv": out.ce_csv, "report": out.ce_report, "json": out.ce_json}
    with atomic_path(paths["csv"]) as tmp:
        metrics_manual_table(metrics).to_csv(tmp, index=False)
    write_text_atomic(paths["report"], metrics.get("report", ""))
    write_json_atomic(paths["json"], metrics)
    return paths


def label_reports(gt_texts: Sequence[str], pred_texts: Sequence[str], labeler: Any,
                  labels: Sequence[str] = LABELS) -> pd.DataFrame:
    """A `label_inferred.csv`-style table: GT_<label> and Pred_<label> columns from a labeler's output."""
    both = labeler.label(list(gt_texts) + list(pred_texts))  # (2N, L) DataFrame, one labeler pass
    n = len(gt_texts)
    gt = both.iloc[:n][list(labels)].reset_index(drop=True).add_prefix("GT_")
    pred = both.iloc[n:][list(labels)].reset_index(drop=True).add_prefix("Pred_")
    return pd.concat([gt, pred], axis=1)
