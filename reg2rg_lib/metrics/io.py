"""Reading the CSVs the metrics take, with one-line errors that name the file and what is wrong.

Prediction files come in the authors' released format (`AccNum, Question, GT_combined_report,
Pred_combined_report`; the CTRG release calls the report columns `GT_whole_report` / `Pred_whole_report`). Column
names can always be given explicitly; when they are not, the known pairs are tried in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reg2rg_lib.errors import BadInputError

#: (GT column, prediction column) pairs tried when none is given, in order.
KNOWN_REPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("GT_combined_report", "Pred_combined_report"),
    ("GT_whole_report", "Pred_whole_report"),
    ("GT_report", "Pred_report"),
)
ID_COLUMNS: tuple[str, ...] = ("AccNum", "id", "name")


def read_csv_checked(path: str | Path, required: Sequence[str] = (), what: str = "CSV") -> pd.DataFrame:
    """Read a CSV (all columns as text-preserving defaults); BadInputError if unreadable or lacking columns."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, f"{what} not found")
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=object)
    except pd.errors.EmptyDataError:
        raise BadInputError(path, f"{what} is empty (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BadInputError(path, f"{what} is not a readable CSV: {str(err).splitlines()[0]}") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        shown = ", ".join(map(repr, list(table.columns)[:12])) or "none"
        raise BadInputError(path, f"{what} lacks column(s) {', '.join(map(repr, missing))} (has {shown})")
    return table


@dataclass
class ReportPairs:
    """Aligned reference/prediction texts read from one CSV, with the columns they came from."""

    path: Path
    ids: list[str]
    references: list[str]
    predictions: list[str]
    gt_column: str
    pred_column: str
    table: pd.DataFrame


def read_report_pairs(path: str | Path, gt_column: str | None = None, pred_column: str | None = None,
                      id_column: str | None = None) -> ReportPairs:
    """Reference and predicted reports from a CSV. Missing cells become "" (scored as empty, with a warning)."""
    path = Path(path)
    given = [c for c in (gt_column, pred_column, id_column) if c is not None]
    head = read_csv_checked(path, given, what="predictions CSV")
    if gt_column is None or pred_column is None:
        for gt, pred in KNOWN_REPORT_COLUMNS:
            if (gt_column in (None, gt)) and (pred_column in (None, pred)) and {gt, pred} <= set(head.columns):
                gt_column, pred_column = gt, pred
                break
        else:
            known = "; ".join(f"{g}/{p}" for g, p in KNOWN_REPORT_COLUMNS)
            raise BadInputError(path, f"no report columns found (tried {known}; has "
                                      f"{', '.join(map(repr, list(head.columns)[:12]))}); "
                                      "name them with --gt-column/--pred-column")
    missing = [c for c in (gt_column, pred_column, id_column) if c is not None and c not in head.columns]
    if missing:
        raise BadInputError(path, f"predictions CSV lacks column(s) {', '.join(map(repr, missing))} "
                                  f"(has {', '.join(map(repr, list(head.columns)[:12]))})")
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in head.columns), None)
    ids = head[id_column].astype(str).tolist() if id_column else [str(i) for i in range(len(head))]
    refs = head[gt_column].fillna("").astype(str).tolist()
    preds = head[pred_column].fillna("").astype(str).tolist()
    return ReportPairs(path, ids, refs, preds, gt_column, pred_column, head)
