"""Reading the CSVs the metrics take, with one-line errors that name the file and what is wrong.

Prediction files come in the authors' released format (`AccNum, Question, GT_combined_report,
Pred_combined_report`; the CTRG release calls the report columns `GT_whole_report` / `Pred_whole_report`).
Column names can always be given explicitly; when they are not, the known pairs are tried in order.
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
    """Read a CSV (every cell as text, empty cells as NaN); BadInputError if unreadable or lacking columns.

    Each failure is one line naming the file: not found, a folder, empty (no header), not UTF-8, not CSV,
    missing columns.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInputError(path, f"is a folder; expected a {what} file")
    if not path.is_file():
        raise BadInputError(path, f"{what} not found")
    with path.open("rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        kind = "gzip" if head[:2] == b"\x1f\x8b" else "binary"
        raise BadInputError(path, f"is a {kind} file, not a CSV (expected a text table with a header row)")
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=object, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise BadInputError(path, f"{what} is empty (no header row)") from None
    except UnicodeDecodeError as err:
        raise BadInputError(path, f"{what} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                                  f"{err.start}); save it as UTF-8") from None
    except pd.errors.ParserError as err:
        raise BadInputError(path, f"{what} is not a readable CSV: {str(err).splitlines()[0]}") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        shown = ", ".join(map(repr, list(table.columns)[:12])) or "none"
        raise BadInputError(path, f"{what} lacks column(s) {', '.join(map(repr, missing))} (has {shown})")
    return table


def check_rows(path: Path, table: pd.DataFrame, what: str = "predictions CSV") -> None:
    """BadInputError for a table with a header but no rows (an empty result is an error, not zeros)."""
    if len(table) == 0:
        raise BadInputError(path, f"{what} has a header but no rows; nothing to evaluate")


def check_ids(path: Path, table: pd.DataFrame, id_column: str) -> None:
    """BadInputError for empty or duplicate case ids in `id_column` (rows numbered as in the file, header =
    1)."""
    ids = table[id_column]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise BadInputError(path, f"empty {id_column!r} cell(s) in row(s) {_rows(empty)}")
    dup = ids.astype(str).str.strip().duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0]
        raise BadInputError(path, f"duplicate case id {first!r} in column {id_column!r} (rows {_rows(dup)}); "
                                  "each case must appear once")


def check_cells(path: Path, table: pd.DataFrame, columns: Sequence[str], hint: str = "") -> None:
    """BadInputError naming the first empty cells of `columns`."""
    for col in columns:
        empty = table[col].isna() | (table[col].astype(str).str.strip() == "")
        if empty.any():
            raise BadInputError(
                path,
                f"{int(empty.sum())} empty cell(s) in column {col!r} (row(s) {_rows(empty)})"
                + (f"; {hint}" if hint else ""),
            )


def _rows(mask: pd.Series, shown: int = 5) -> str:
    """File row numbers (header = row 1) of the True entries of `mask`, the first `shown` of them."""
    rows = [str(i + 2) for i in mask.to_numpy().nonzero()[0]]
    return ", ".join(rows[:shown]) + (", ..." if len(rows) > shown else "")


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
                      id_column: str | None = None, allow_empty_predictions: bool = True) -> ReportPairs:
    """Reference and predicted reports from a CSV, checked.

    A file without rows, duplicate or empty case ids, and empty reference cells are errors. An empty
    prediction cell (a model that wrote nothing) is read as "" and scores 0 with a warning from the metrics,
    unless `allow_empty_predictions=False`, which makes it an error (the `reg2rg evaluate` default: a user's
    file with holes is more likely a broken export than a silent model).
    """
    path = Path(path)
    given = [c for c in (gt_column, pred_column, id_column) if c is not None]
    head = read_csv_checked(path, given, what="predictions CSV")
    if gt_column is None or pred_column is None:
        for gt, pred in KNOWN_REPORT_COLUMNS:
            if (
                (gt_column in (None, gt))
                and (pred_column in (None, pred))
                and {gt, pred} <= set(head.columns)
            ):
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
    check_rows(path, head)
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in head.columns), None)
    if id_column is not None:
        check_ids(path, head, id_column)
    check_cells(path, head, [gt_column])
    if not allow_empty_predictions:
        check_cells(
            path,
            head,
            [pred_column],
            hint="a model that wrote nothing: pass --allow-empty-predictions "
            "to score those rows as empty reports",
        )
    ids = head[id_column].astype(str).tolist() if id_column else [str(i) for i in range(len(head))]
    refs = head[gt_column].fillna("").astype(str).tolist()
    preds = head[pred_column].fillna("").astype(str).tolist()
    return ReportPairs(path, ids, refs, preds, gt_column, pred_column, head)
