"""The one table writer: a table as CSV (full precision), Markdown and LaTeX (rounded cells), in `tables/`.

pandas writes the Markdown (`DataFrame.to_markdown`, through tabulate) and the LaTeX (`Styler.to_latex`); the
kit only decides what a cell says (`format_cell`: 3 decimals for the 50-case tables, counts as integers, NaN
as an en dash) and that every table has a `source` column. The tables themselves are `report.tables`'.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.io import write_text_atomic

_TABLE_NAME = re.compile(r"^table\d+_[a-z0-9_]+$")

#: Tables of the 50 benchmark cases print 3 decimals: their 95% CIs are about +-0.03 wide, so a 4th says
#: nothing.
DIGITS = 3
#: Columns that count things (test cases, findings, resamples): shown and stored as integers, never "120.000".
COUNT_COLUMNS: frozenset[str] = frozenset(
    {
        "support",
        "reported",
        "inserted",
        "misplaced",
        "attributes_checked",
        "false_findings",
        "distinct_reports",
        "n_test_cases",
        "decimals",
        "seeds",
        "n",
        "tests_in_family",
        "n_resamples",
    }
)


def format_cell(value: Any, digits: int = DIGITS) -> str:
    """A table cell as text: floats at `digits` decimals, integers as integers, NaN/None/NA as an en dash."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def with_integer_counts(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every `COUNT_COLUMNS` column that holds whole numbers as a nullable integer column (a column
    of counts turns float as soon as one row has no value, e.g. the paper's rows that are not typed in)."""
    out = df.copy()
    for col in COUNT_COLUMNS & set(df.columns):
        values = pd.to_numeric(df[col], errors="coerce")
        present = values.dropna()
        if len(present) == df[col].notna().sum() and (present == present.round()).all():
            out[col] = values.astype("Int64")
    return out


def to_markdown(display: pd.DataFrame, caption: str = "") -> str:
    """A GitHub-flavoured Markdown table (`DataFrame.to_markdown`; pipes in cells escaped, cells taken as the
    text they are, never re-parsed as numbers), preceded by the caption in bold."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    text = display.map(cell).rename(columns=cell)
    table = text.to_markdown(index=False, tablefmt="github", disable_numparse=True)
    return (f"**{caption}**\n\n" if caption else "") + table + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """`text` safe inside LaTeX: the caption (`Styler.to_latex` escapes the cells and headers, not the
    caption)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(display: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs `table` environment (`Styler.to_latex`; needs `\\usepackage{booktabs}`); text columns left,
    numbers right."""
    def numeric(col: int) -> bool:
        return all(re.fullmatch(r"[-–]|-?\d+(\.\d+)?( \[.*\])?[*†]?", str(x)) for x in display.iloc[:, col])

    spec = "".join("r" if numeric(i) else "l" for i in range(display.shape[1]))
    styler = (display.astype(str).style.hide(axis="index").format(escape="latex")
              .format_index(escape="latex", axis=1)
              .set_table_styles([{"selector": "small", "props": ":;"}], overwrite=False))
    return styler.to_latex(caption=latex_escape(caption) if caption else None, label=label or None,
                           position="t", position_float="centering", hrules=True, column_format=spec)


def _default_display(df: pd.DataFrame, digits: int) -> pd.DataFrame:
    """`df` as text at `digits` decimals, or at a row's own `decimals` (numbers released at lower
    precision)."""
    if "decimals" not in df.columns:
        return df.map(lambda v: format_cell(v, digits))
    rows = []
    for _, row in df.iterrows():
        d = digits if pd.isna(row["decimals"]) else int(row["decimals"])
        rows.append({k: format_cell(v, d) for k, v in row.items()})
    return pd.DataFrame(rows, columns=df.columns)


def save_table(
    df: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    name: str,
    caption: str = "",
    display: pd.DataFrame | None = None,
    digits: int = DIGITS,
) -> dict[str, Path]:
    """Write `figures_dir/tables/<name>.csv` (full precision), `.md` and `.tex` (rounded); return the paths.

    `df` must have a `source` column: every number says where it came from. `display`, when given, is the
    string table shown in Markdown/LaTeX (e.g. values with CIs); otherwise `df` rounded to `digits` decimals,
    its count columns (`COUNT_COLUMNS`) as integers in all three files.
    """
    if not _TABLE_NAME.match(name):
        raise ValueError(f"table name {name!r} must look like 'table<N>_<topic>' (lower case)")
    if "source" not in df.columns:
        raise ValueError(f"table {name} has no 'source' column; every number must say where it came from")
    df = with_integer_counts(df)
    if display is None:
        display = _default_display(df, digits)
    out = Path(figures_dir) / "tables"
    paths = {ext: out / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    write_text_atomic(paths["csv"], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["md"], to_markdown(display, caption))
    write_text_atomic(paths["tex"], to_latex(display, caption, label=f"tab:{name}"))
    return paths
