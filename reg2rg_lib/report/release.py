"""Where the authors' released CTRG files are, and the rows that stand in for numbers a table cannot show.

The release is the `results/Reg2RG_ctrg/` folder of the authors' repository (zhi-xuan-chen/Reg2RG on GitHub,
Apache-2.0); the README's "The authors' release" says how to get it. `find_release` looks, in this order:

1. an explicit `release_dir` (a notebook parameter, `Inputs.from_profile(release_dir=...)`); "" leaves it out;
2. the environment variable `REG2RG_RELEASE`;
3. the profile's `figures.release_dir`, documented default `release/Reg2RG_ctrg` in the repository.

A relative path is taken from the repository root, so a clone works wherever it lives. When the folder is
absent, Tables 1-3 carry a row "authors' release: not found at PATH" where its rows would stand
(`release_missing_row`), never dropping them silently. The paper's own printed numbers (its Tables 1-3) are
not in the repository or the release, and the paper cannot be fetched offline, so `paper_rows` gives labelled
rows that say "not typed in" with the source to type them from; no number is invented. `PAPER_PRINTED` is
where typed-in values go, each with its table and page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.paths import REPO_ROOT

RELEASE_ENV = "REG2RG_RELEASE"
RELEASE_URL = "https://github.com/zhi-xuan-chen/Reg2RG (folder results/Reg2RG_ctrg)"
PAPER = ("the Reg2RG paper (Large Language Model with Region-Guided Referring and Grounding for CT Report "
         "Generation, IEEE TMI 2025)")
#: The paper's printed numbers, {(table, dataset): {column: value}}, typed in from the paper with its table
#: number. Empty: no copy of the paper's tables is in the repository, so none is typed in (see `paper_rows`).
PAPER_PRINTED: dict[tuple[str, str], Mapping[str, float]] = {}
#: The datasets of the paper's Tables 1-3.
PAPER_DATASETS: tuple[str, ...] = ("RadGenome-ChestCT test", "CTRG-Chest-548K test")


@dataclass(frozen=True)
class ReleaseLookup:
    """Where the release was looked for, how that place was chosen, and whether it is there."""

    path: Path | None  # None: deliberately left out (release_dir="")
    how: str  # "parameter" | "$REG2RG_RELEASE" | "profile figures.release_dir" | "left out"

    @property
    def found(self) -> Path | None:
        return self.path if self.path is not None and self.path.is_dir() else None

    def shown(self) -> str:
        """The path as a table shows it: repository-relative when inside the repository."""
        if self.path is None:
            return ""
        try:
            return str(self.path.relative_to(REPO_ROOT))
        except ValueError:
            return str(self.path)


def find_release(explicit: str | os.PathLike[str] | None, profile_default: str) -> ReleaseLookup:
    """The release folder: `explicit`, else $REG2RG_RELEASE, else the profile's default (see the module
    doc)."""
    if explicit is not None:
        given, how = str(explicit), "parameter"
    elif os.environ.get(RELEASE_ENV):
        given, how = os.environ[RELEASE_ENV], f"${RELEASE_ENV}"
    else:
        given, how = profile_default, "profile figures.release_dir"
    if not given:
        return ReleaseLookup(None, "left out")
    path = Path(given).expanduser()
    return ReleaseLookup((path if path.is_absolute() else REPO_ROOT / path).resolve(), how)


def release_missing_row(lookup: ReleaseLookup | None, dataset: str) -> dict[str, Any] | None:
    """The row a table shows where the release's rows would stand when it is absent (None when it is
    found)."""
    if lookup is None or lookup.found is not None:
        return None
    if lookup.path is None:
        note = "authors' release: left out (release_dir=\"\")"
    else:
        note = (f"authors' release: not found at {lookup.shown()} ({lookup.how}); get {RELEASE_URL} and set "
                f"${RELEASE_ENV} (README: The authors' release)")
    return {"dataset": dataset, "model": "Reg2RG (authors)", "source": note}


def paper_rows(table: str, columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The paper's printed rows of `table` ("table1" | "table2" | "table3"), one per dataset: the typed-in
    values of `PAPER_PRINTED` (renamed by `columns`) or, where none are typed in, a row that says so and where
    from."""
    rows = []
    for dataset in PAPER_DATASETS:
        values = PAPER_PRINTED.get((table, dataset))
        where = f"{PAPER}, {table.replace('table', 'Table ')}"
        if values:
            rows.append({"dataset": dataset, "model": "Reg2RG (paper, as printed)", "source": where,
                         **{(columns or {}).get(k, k): v for k, v in values.items()}})
        else:
            rows.append({"dataset": dataset, "model": "Reg2RG (paper, as printed)",
                         "source": f"not typed in: {where} (no offline copy of the paper's tables)"})
    return rows


def with_release_rows(
    df: pd.DataFrame, table: str, lookup: ReleaseLookup | None, dataset: str
) -> pd.DataFrame:
    """`df` with the paper's rows first and, when the release is absent, the "not found" row after them, the
    numbers of those rows empty (NaN), columns unchanged."""
    extra = paper_rows(table)
    missing = release_missing_row(lookup, dataset)
    if missing is not None:
        extra.append(missing)
    head = pd.DataFrame(extra).reindex(columns=df.columns)
    return pd.concat([head, df], ignore_index=True) if len(df) else head
