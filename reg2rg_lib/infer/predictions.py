"""The predictions CSV in the authors' released format, one row per test case, appended and synced batch by
batch.

Columns `AccNum, Question, GT_combined_report, Pred_combined_report` (the prompt with its placeholder tokens,
the ground truth and the prediction, both with "The region i is <organ>:" prefixes). An interrupted run
resumes by skipping the AccNums already written; a last row cut short by a crash is dropped.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.io import AppendOnlyCSV, read_complete_csv
from reg2rg_lib.regions import split_regions

PRED_COLUMNS: tuple[str, ...] = ("AccNum", "Question", "GT_combined_report", "Pred_combined_report")


def read_predictions(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Complete rows of a predictions CSV; a last row cut short by a crash is left out."""
    path = Path(path)
    try:
        header, rows = read_complete_csv(path)
    except csv.Error as err:
        raise BadInputError(path, f"not a CSV file ({err})") from None
    if header is None:  # empty, or a header that never finished
        return []
    missing = [c for c in PRED_COLUMNS if c not in header]
    if missing:
        raise BadInputError(
            path, f"missing column(s) {', '.join(missing)}; expected {', '.join(PRED_COLUMNS)}"
        )
    return rows


class PredictionWriter:
    """Append rows to a predictions CSV, each batch written and synced to disk at once; `done` holds the
    AccNums present.

    Opening an existing file keeps its complete rows (rewriting it atomically without a cut-off last row), so
    a rerun continues where the last one stopped. Rows end with a bare line feed, as in the released files."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        rows = read_predictions(self.path) if self.path.is_file() else []
        self.done: set[str] = {r["AccNum"] for r in rows}
        self._csv = AppendOnlyCSV(self.path, PRED_COLUMNS, rows, lineterminator="\n", fsync=True)

    def write_batch(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Append (AccNum, question, ground truth, prediction) rows with one write and one sync."""
        self._csv.write_rows([list(r) for r in rows])
        self.done.update(str(r[0]) for r in rows)

    def close(self) -> None:
        self._csv.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decoding_path(out_csv: str | os.PathLike[str]) -> Path:
    """`predictions.decoding.json` next to `predictions.csv`: which decoding produced the file."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}.decoding.json")


def written_with(out_csv: str | os.PathLike[str]) -> dict | None:
    """What `predictions.decoding.json` says produced `out_csv` (its `decoding`, `settings`, `split`, ...);
    None when there is no such record (a file from elsewhere, or from before the kit wrote it)."""
    record = decoding_path(out_csv)
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text())
    except json.JSONDecodeError as err:
        raise BadInputError(record, f"not a decoding record ({err})") from None


def same_decoding(out_csv: str | os.PathLike[str], settings: dict, split: str) -> bool | None:
    """Whether `out_csv` was written with the decoding `settings` (a `DecodeSettings` as a dict) on `split`;
    None when no record says how it was written."""
    record = written_with(out_csv)
    if record is None:
        return None
    return record.get("settings") == settings and record.get("split", split) == split


def side_by_side(
    pred_csv: str | os.PathLike[str], n_cases: int = 3, names: list[str] | None = None
) -> list[dict]:
    """Rows (case, i, region, ground truth, prediction) pairing each reference paragraph with the predicted
    paragraph of the same index, for the first `n_cases` cases (or `names`) of a predictions CSV."""
    rows = read_predictions(pred_csv)
    chosen = [r for r in rows if r["AccNum"] in set(names)] if names else rows[:n_cases]
    out = []
    for r in chosen:
        gt = split_regions(r["GT_combined_report"])
        pred = {p.index: p for p in split_regions(r["Pred_combined_report"]) if p.index is not None}
        for p in gt:
            hyp = pred.get(p.index)
            out.append({"case": r["AccNum"], "i": p.index, "region (truth)": p.region,
                        "region (predicted)": hyp.region if hyp else "(missing)", "ground truth": p.paragraph,
                        "prediction": hyp.paragraph if hyp else ""})
    return out
