"""The authors' released CTRG metric files, read as released (`read_*`) or recomputed by the kit's metrics
from the released predictions and labels (`recompute_release_*`).

The readers also read the kit's own files of the same format (a run's `nlg_evaluation_results.csv`,
`ce_metrics.csv`). Where the release folder is and what stands in when it is absent is `report.release`'s.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.metrics.ce import ce_metrics, read_label_table
from reg2rg_lib.metrics.crg import NoPositiveLabelError, crg_score
from reg2rg_lib.metrics.csv_inputs import read_report_pairs
from reg2rg_lib.metrics.nlg import evaluate_nlg
from reg2rg_lib.paths import ReleaseFolder

#: CE averages in the order sklearn's classification_report prints them.
CE_AVERAGES: tuple[str, ...] = ("micro", "macro", "weighted", "samples")


def _split_mean_std(cell: Any) -> tuple[float, float]:
    text = str(cell)
    if "±" in text:
        mean, std = text.split("±", 1)
        return float(mean), float(std)
    return float(text), math.nan


def read_nlg_results(path: str | os.PathLike[str]) -> dict[str, float]:
    """`nlg_evaluation_results.csv` (released format: `mean±std` cells and `Overall_*`) as {metric: mean,
    ...}.

    Standard deviations come back as `<metric>_std`; corpus-level numbers keep their `Overall_` names.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "NLG results file not found")
    df = pd.read_csv(path, dtype=str)
    if len(df) != 1 or "BLEU-4" not in df.columns:
        raise BadInputError(
            path, "expected one row with BLEU-1..CIDEr columns (nlg_evaluation_results format)"
        )
    out: dict[str, float] = {}
    for col, cell in df.iloc[0].items():
        try:
            mean, std = _split_mean_std(cell)
        except ValueError:
            raise BadInputError(
                path, f"column {col!r}: cannot read {cell!r} as a number or mean±std"
            ) from None
        out[col] = mean
        if not math.isnan(std):
            out[f"{col}_std"] = std
    return out


def read_ce_manual(path: str | os.PathLike[str]) -> pd.DataFrame:
    """`metrics_manual.csv` / the kit's `ce_metrics.csv`: Label, Precision, Recall, F1 Score, Support rows."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "CE metrics file not found")
    df = pd.read_csv(path)
    need = {"Label", "Precision", "Recall", "F1 Score", "Support"}
    if not need <= set(df.columns):
        raise BadInputError(path, f"expected columns {sorted(need)}")
    return df


_REPORT_ROW = re.compile(
    r"^\s*(micro avg|macro avg|weighted avg|samples avg)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)"
)


def read_classification_report(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The averages of a printed sklearn `classification_report` (2 decimals): average, precision, recall,
    F1."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "classification report not found")
    rows = []
    for line in path.read_text().splitlines():
        m = _REPORT_ROW.match(line)
        if m:
            rows.append((m[1].split()[0], float(m[2]), float(m[3]), float(m[4]), int(m[5])))
    if not rows:
        raise BadInputError(path, "no 'micro/macro/weighted/samples avg' rows found")
    return pd.DataFrame(rows, columns=["average", "precision", "recall", "F1", "support"])


def read_region_report(path: str | os.PathLike[str]) -> tuple[float, pd.DataFrame]:
    """The released `region_classification_report.txt`: mean accuracy and per-region precision/recall/F1."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "region report not found")
    text = path.read_text()
    acc = re.search(r"Mean accuracy:\s*([\d.]+)", text)
    if not acc:
        raise BadInputError(path, "no 'Mean accuracy:' line")
    rows = []
    pattern = r"^([a-z][a-z ]*):\nPrecision: ([\d.]+)\nRecall: ([\d.]+)\nF1 score: ([\d.]+)"
    for m in re.finditer(pattern, text, flags=re.M):
        rows.append((m[1].strip(), float(m[2]), float(m[3]), float(m[4])))
    return float(acc[1]), pd.DataFrame(rows, columns=["region", "precision", "recall", "F1"])


def recompute_release_nlg(release_dir: str | os.PathLike[str]) -> dict[str, float]:
    """The kit's NLG metrics on the released `ctrg_combined_reports_rm_region_text.csv`, used as-is (as the
    authors
    did: that file is what their numbers were computed on). Per-sample means and `Overall_*` values."""
    pairs = read_report_pairs(ReleaseFolder(release_dir).predictions_without_regions)
    return evaluate_nlg(pairs.references, pairs.predictions, pairs.ids, bootstrap=0).headline()


def ce_averages(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The micro/macro/weighted/samples rows (average, precision, recall, F1, support) of a CE metrics dict
    (`reg2rg_lib.metrics.ce.ce_metrics`, or a run's `metrics/ce_metrics.json`)."""
    rows = [
        {
            "average": avg,
            "precision": float(metrics[avg]["precision"]),
            "recall": float(metrics[avg]["recall"]),
            "F1": float(metrics[avg]["f1"]),
            "support": int(metrics[avg]["support"]),
        }
        for avg in CE_AVERAGES
        if avg in metrics
    ]
    return pd.DataFrame(rows, columns=["average", "precision", "recall", "F1", "support"])


def recompute_release_ce(release_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """CE averages computed by the kit from the released RadBERT labels (`label_inferred.csv`)."""
    y_true, y_pred, _ = read_label_table(ReleaseFolder(release_dir).labels)
    return ce_averages(ce_metrics(y_true, y_pred))


def recompute_release_crg(release_dir: str | os.PathLike[str]) -> float | None:
    """CRG (`metrics.crg`) of the released RadBERT label table `label_inferred.csv`; None without a
    positive."""
    y_true, y_pred, _ = read_label_table(ReleaseFolder(release_dir).labels)
    try:
        return crg_score(y_true, y_pred)["CRG"]
    except NoPositiveLabelError:
        return None
