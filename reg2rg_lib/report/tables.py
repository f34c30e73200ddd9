"""The paper's Tables 1-7, each written as CSV + Markdown + LaTeX by one helper, each row naming its source.

Two kinds of numbers appear and are never mixed silently: numbers from the **authors' released files** for
CTRG-Chest-548K (either as released, or recomputed by the kit's metrics from the released predictions), and numbers
from the **kit's own runs** on the embedded benchmark. The `dataset` and `source` columns say which is which.

| file (in `figures_dir/tables/`) | builder | content |
|---|---|---|
| `table1_nlg.*` | `table1_nlg` | NLG metrics: released CTRG numbers, their recomputation, the kit's full run |
| `table2_ce.*` | `table2_ce` | clinical efficacy (18 CT-RATE labels): the same three sources |
| `table3_region_recognition.*` | `table3_region_recognition` | region recognition accuracy and per-region F1 |
| `table4_lfd.*` | `ablation_table` | local feature decoupling (LFD) on/off |
| `table5_region_features.*` | `ablation_table` | texture / + geometry / + global features |
| `table6_rra.*` | `ablation_table` | region-report alignment (RRA) on/off |
| `table7_llm_size.*` | `ablation_table` | LLM size |

No number "as printed in the paper" is typed in here: the released files are the authors' own outputs, and the
kit's numbers are computed. A rerun on the same inputs writes identical bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.env import doctor
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.experiments.summary import SUMMARY_METRICS, read_summary
from reg2rg_lib.io import write_text_atomic
from reg2rg_lib.metrics.ce import ce_metrics, read_label_table
from reg2rg_lib.metrics.io import read_report_pairs
from reg2rg_lib.metrics.nlg import evaluate_nlg
from reg2rg_lib.regions import REGIONS

_TABLE_NAME = re.compile(r"^table\d+_[a-z0-9_]+$")
#: NLG metric columns in the order of the released `nlg_evaluation_results.csv`.
NLG_METRICS: tuple[str, ...] = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-1", "ROUGE-2", "ROUGE-L", "CIDEr",
)
#: CE averages in the order sklearn's classification_report prints them.
CE_AVERAGES: tuple[str, ...] = ("micro", "macro", "weighted", "samples")
CTRG = "CTRG-Chest-548K test"
BENCHMARK = "embedded benchmark test"
RELEASED_BY = "authors' release (zhi-xuan-chen/Reg2RG results/Reg2RG_ctrg)"


# ----------------------------------------------------------------------------------------------------------------
# The one writer


def format_cell(value: Any, digits: int = 4) -> str:
    """A table cell as text: floats at `digits` decimals, NaN/None as an en dash, everything else as str."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(display: pd.DataFrame, caption: str = "") -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped), preceded by the caption in bold."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in display.columns) + " |"
    rule = "|" + "|".join("---" for _ in display.columns) + "|"
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in display.itertuples(index=False)]
    return (f"**{caption}**\n\n" if caption else "") + "\n".join([head, rule, *body]) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(display: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs `table` environment (needs `\\usepackage{booktabs}`); text columns left, numbers right."""
    def numeric(col: str) -> bool:
        return all(re.fullmatch(r"[-–]|-?\d+(\.\d+)?( \[.*\])?[*†]?", str(x)) for x in display[col])

    spec = "".join("r" if numeric(c) else "l" for c in display.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(c) for c in display.columns)
              + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(x) for x in row) + r" \\" for row in display.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _default_display(df: pd.DataFrame, digits: int) -> pd.DataFrame:
    """`df` as text at `digits` decimals, or at a row's own `decimals` (numbers released at lower precision)."""
    if "decimals" not in df.columns:
        return df.map(lambda v: format_cell(v, digits))
    rows = []
    for _, row in df.iterrows():
        d = digits if pd.isna(row["decimals"]) else int(row["decimals"])
        rows.append({k: format_cell(v, d) if k != "decimals" else format_cell(v, 0) for k, v in row.items()})
    return pd.DataFrame(rows, columns=df.columns)


def save_table(
    df: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    name: str,
    caption: str = "",
    display: pd.DataFrame | None = None,
    digits: int = 4,
) -> dict[str, Path]:
    """Write `figures_dir/tables/<name>.csv` (full precision), `.md` and `.tex` (rounded); return the paths.

    `df` must have a `source` column: every number says where it came from. `display`, when given, is the
    string table shown in Markdown/LaTeX (e.g. values with CIs); otherwise `df` rounded to `digits` decimals.
    """
    if not _TABLE_NAME.match(name):
        raise ValueError(f"table name {name!r} must look like 'table<N>_<topic>' (lower case)")
    if "source" not in df.columns:
        raise ValueError(f"table {name} has no 'source' column; every number must say where it came from")
    if display is None:
        display = _default_display(df, digits)
    out = Path(figures_dir) / "tables"
    paths = {ext: out / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    write_text_atomic(paths["csv"], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths["md"], to_markdown(display, caption))
    write_text_atomic(paths["tex"], to_latex(display, caption, label=f"tab:{name}"))
    return paths


# ----------------------------------------------------------------------------------------------------------------
# Readers for the released (and the kit's identically formatted) metric files


def _split_mean_std(cell: Any) -> tuple[float, float]:
    text = str(cell)
    if "±" in text:
        mean, std = text.split("±", 1)
        return float(mean), float(std)
    return float(text), math.nan


def read_nlg_results(path: str | os.PathLike[str]) -> dict[str, float]:
    """`nlg_evaluation_results.csv` (released format: `mean±std` cells and `Overall_*`) as {metric: mean, ...}.

    Standard deviations come back as `<metric>_std`; corpus-level numbers keep their `Overall_` names.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "NLG results file not found")
    df = pd.read_csv(path, dtype=str)
    if len(df) != 1 or "BLEU-4" not in df.columns:
        raise BadInputError(path, "expected one row with BLEU-1..CIDEr columns (nlg_evaluation_results format)")
    out: dict[str, float] = {}
    for col, cell in df.iloc[0].items():
        try:
            mean, std = _split_mean_std(cell)
        except ValueError:
            raise BadInputError(path, f"column {col!r}: cannot read {cell!r} as a number or mean±std") from None
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


_REPORT_ROW = re.compile(r"^\s*(micro avg|macro avg|weighted avg|samples avg)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)")


def read_classification_report(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The averages of a printed sklearn `classification_report` (2 decimals): average, precision, recall, F1."""
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


# ----------------------------------------------------------------------------------------------------------------
# Tables 1-3: the released CTRG numbers next to the kit's own runs


def _kit_source(run: str, profile: str) -> str:
    """The source column of a kit run's row (relative, so tables do not depend on the machine)."""
    return f"kit run, profile {profile or '?'}: runs/{run}/metrics"


def table1_nlg(
    release_dir: str | os.PathLike[str] | None = None,
    recomputed: Mapping[str, float] | None = None,
    kit_runs: Mapping[str, str | os.PathLike[str]] | None = None,
    profile: str = "",
) -> pd.DataFrame:
    """Table 1, NLG metrics (per-sample means): one row per source.

    - `release_dir`: the authors' released `nlg_evaluation_results.csv`, as released;
    - `recomputed`: the kit's metrics on the released predictions (see `recompute_release_nlg`);
    - `kit_runs`: {run name: metrics folder} of the kit's runs (their `nlg_evaluation_results.csv`).
    """
    rows = []
    if release_dir is not None:
        path = Path(release_dir) / "nlg_evaluation_results.csv"
        rows.append({"dataset": CTRG, "model": "Reg2RG (authors)",
                     "source": f"{RELEASED_BY}: nlg_evaluation_results.csv, as released", **read_nlg_results(path)})
    if recomputed is not None:
        rows.append({"dataset": CTRG, "model": "Reg2RG (authors)",
                     "source": "kit metrics recomputed from the released ctrg_combined_reports_rm_region_text.csv",
                     **recomputed})
    for run, folder in (kit_runs or {}).items():
        path = Path(folder) / "nlg_evaluation_results.csv"
        rows.append({"dataset": BENCHMARK, "model": f"kit: {run}", "source": _kit_source(run, profile),
                     **read_nlg_results(path)})
    cols = ["dataset", "model", "source", *NLG_METRICS]
    return pd.DataFrame(rows).reindex(columns=cols)


def recompute_release_nlg(release_dir: str | os.PathLike[str]) -> dict[str, float]:
    """The kit's NLG metrics on the released `ctrg_combined_reports_rm_region_text.csv`, used as-is (as the authors
    did: that file is what their numbers were computed on). Per-sample means and `Overall_*` values."""
    pairs = read_report_pairs(Path(release_dir) / "ctrg_combined_reports_rm_region_text.csv")
    return evaluate_nlg(pairs.references, pairs.predictions, pairs.ids, bootstrap=0).headline()


def ce_averages(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The micro/macro/weighted/samples rows (average, precision, recall, F1, support) of a CE metrics dict
    (`reg2rg_lib.metrics.ce.ce_metrics`, or a run's `metrics/ce_metrics.json`)."""
    rows = [{"average": avg, "precision": float(metrics[avg]["precision"]), "recall": float(metrics[avg]["recall"]),
             "F1": float(metrics[avg]["f1"]), "support": int(metrics[avg]["support"])}
            for avg in CE_AVERAGES if avg in metrics]
    return pd.DataFrame(rows, columns=["average", "precision", "recall", "F1", "support"])


def recompute_release_ce(release_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """CE averages computed by the kit from the released RadBERT labels (`label_inferred.csv`)."""
    y_true, y_pred, _ = read_label_table(Path(release_dir) / "label_inferred.csv")
    return ce_averages(ce_metrics(y_true, y_pred))


def region_rows(metrics: Mapping[str, Any]) -> tuple[float, pd.DataFrame]:
    """(mean accuracy, per-region precision/recall/F1) of a run's `metrics/region_metrics.json`."""
    per = [{"region": r, "precision": m["precision"], "recall": m["recall"], "F1": m["f1"]}
           for r, m in metrics["per_region"].items() if r in REGIONS]
    return float(metrics["accuracy"]), pd.DataFrame(per, columns=["region", "precision", "recall", "F1"])


def table2_ce(
    release_dir: str | os.PathLike[str] | None = None,
    recomputed: pd.DataFrame | None = None,
    kit_runs: Mapping[str, pd.DataFrame] | None = None,
    profile: str = "",
) -> pd.DataFrame:
    """Table 2, clinical efficacy over the 18 CT-RATE labels: precision/recall/F1 per averaging, one row per source.

    - `release_dir`: the released `metrics_manual.csv` (weighted average, full precision) and
      `test_classification_report.txt` (every average, 2 decimals as printed);
    - `recomputed`: averages computed by the kit from the released `label_inferred.csv` (columns average,
      precision, recall, F1, support);
    - `kit_runs`: {run: the same kind of averages table} for the kit's runs (labels from the kit's labeler).
    """
    rows = []
    if release_dir is not None:
        rel = Path(release_dir)
        manual = read_ce_manual(rel / "metrics_manual.csv")
        w = manual[manual["Label"] == "Weighted Average"].iloc[0]
        rows.append({"dataset": CTRG, "model": "Reg2RG (authors)", "labeler": "RadBERT (authors)",
                     "source": f"{RELEASED_BY}: metrics_manual.csv", "average": "weighted",
                     "precision": float(w["Precision"]), "recall": float(w["Recall"]), "F1": float(w["F1 Score"]),
                     "support": int(w["Support"])})
        printed = read_classification_report(rel / "test_classification_report.txt")
        for r in printed[printed["average"] != "weighted"].itertuples(index=False):  # weighted: full precision above
            rows.append({"dataset": CTRG, "model": "Reg2RG (authors)", "labeler": "RadBERT (authors)",
                         "source": f"{RELEASED_BY}: test_classification_report.txt", "average": r.average,
                         "precision": r.precision, "recall": r.recall, "F1": r.F1, "support": r.support,
                         "decimals": 2})
    if recomputed is not None:
        for r in recomputed.itertuples(index=False):
            rows.append({"dataset": CTRG, "model": "Reg2RG (authors)", "labeler": "RadBERT (authors)",
                         "source": "kit CE metrics recomputed from the released label_inferred.csv",
                         "average": r.average, "precision": r.precision, "recall": r.recall, "F1": r.F1,
                         "support": r.support})
    for run, table in (kit_runs or {}).items():
        for r in table.itertuples(index=False):
            rows.append({"dataset": BENCHMARK, "model": f"kit: {run}", "labeler": "kit RuleLabeler",
                         "source": _kit_source(run, profile),
                         "average": r.average, "precision": r.precision, "recall": r.recall, "F1": r.F1,
                         "support": r.support})
    cols = ["dataset", "model", "labeler", "source", "average", "precision", "recall", "F1", "support", "decimals"]
    return pd.DataFrame(rows).reindex(columns=cols)


def table3_region_recognition(
    release_dir: str | os.PathLike[str] | None = None,
    kit_runs: Mapping[str, tuple[float, pd.DataFrame]] | None = None,
    profile: str = "",
) -> pd.DataFrame:
    """Table 3, region recognition: mean per-report accuracy and per-region F1, one row per source.

    The released `region_classification_report.txt` was produced from a different prediction file than the one
    released (see ../shared/reference/README.md), so its source says so. `kit_runs` maps run -> (mean accuracy,
    per-region table with columns region, precision, recall, F1).
    """
    rows = []
    sources: list[tuple[str, str, str, float, pd.DataFrame]] = []  # (dataset, model, source, accuracy, per region)
    if release_dir is not None:
        acc, per = read_region_report(Path(release_dir) / "region_classification_report.txt")
        per = per.replace({"region": {"trachea": "trachea and bronchie"}})
        sources.append((CTRG, "Reg2RG (authors)", f"{RELEASED_BY}: region_classification_report.txt "
                        "(from an unreleased prediction file)", acc, per))
    for run, (acc, per) in (kit_runs or {}).items():
        sources.append((BENCHMARK, f"kit: {run}", _kit_source(run, profile), acc, per))
    for dataset, model, source, acc, per in sources:
        f1 = dict(zip(per["region"], per["F1"].astype(float)))
        rows.append({"dataset": dataset, "model": model, "source": source, "accuracy": acc,
                     **{f"F1 {r}": f1.get(r, math.nan) for r in REGIONS}})
    cols = ["dataset", "model", "source", "accuracy", *(f"F1 {r}" for r in REGIONS)]
    return pd.DataFrame(rows).reindex(columns=cols)


# ----------------------------------------------------------------------------------------------------------------
# Tables 4-7: ablations from the kit's runs


#: (table name, caption, runs in row order). `full` appears in each as the reference row.
ABLATION_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("table4_lfd", "Table 4: local feature decoupling (LFD)", ("full", "no_lfd")),
    ("table5_region_features", "Table 5: region features (texture, + geometry, + global = full)",
     ("texture_only", "texture_geometry", "full")),
    ("table6_rra", "Table 6: region-report alignment (RRA)", ("full", "no_rra")),
    ("table7_llm_size", "Table 7: LLM size", ("llm_*",)),
)


def _select_runs(patterns: Sequence[str], available: Sequence[str]) -> list[str]:
    out: list[str] = []
    for p in patterns:
        hits = [r for r in available if (r.startswith(p[:-1]) if p.endswith("*") else r == p)]
        out += [h for h in hits if h not in out]
    return out


def ablation_table(
    stats: pd.DataFrame,
    runs: Sequence[str],
    describe: Mapping[str, str] | None = None,
    profile: str = "",
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One ablation table from the long stats table (run, metric, value, ci_low, ci_high, p_vs_full).

    Returns (numbers, display): the numbers table has `<metric>`, `<metric>_ci_low`, `<metric>_ci_high`,
    `<metric>_p_vs_full` columns; the display shows `value [low, high]`, with `*` where the paired bootstrap
    test against `full` gives p < `alpha`.
    """
    metrics = [m for m in (metrics or SUMMARY_METRICS) if m in set(stats["metric"])]
    runs = _select_runs(runs, list(dict.fromkeys(stats["run"])))
    num_rows, show_rows = [], []
    for run in runs:
        sub = stats[stats["run"] == run].set_index("metric")
        base = {"run": run, "setting": (describe or {}).get(run, ""),
                "source": _kit_source(run, profile)}
        num, show = dict(base), dict(base)
        for m in metrics:
            if m not in sub.index or math.isnan(float(sub.loc[m, "value"])):
                num[m] = math.nan
                show[m] = "n/a" if m in sub.index else "–"
                continue
            r = sub.loc[m]
            p = float(r.get("p_vs_full", math.nan))
            num.update({m: float(r["value"]), f"{m}_ci_low": float(r["ci_low"]),
                        f"{m}_ci_high": float(r["ci_high"]), f"{m}_p_vs_full": p})
            star = "*" if run != "full" and not math.isnan(p) and p < alpha else ""
            show[m] = f"{r['value']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]{star}"
        num_rows.append(num)
        show_rows.append(show)
    return pd.DataFrame(num_rows), pd.DataFrame(show_rows)


def save_ablation_tables(
    stats: pd.DataFrame,
    figures_dir: str | os.PathLike[str],
    describe: Mapping[str, str] | None = None,
    profile: str = "",
) -> dict[str, dict[str, Path]]:
    """Tables 4-7 from the ablation stats; a table whose runs are all missing is skipped (not written empty)."""
    written = {}
    for name, caption, runs in ABLATION_TABLES:
        numbers, display = ablation_table(stats, runs, describe, profile)
        if numbers.empty or set(numbers["run"]) <= {"full"}:
            continue
        caption_full = (f"{caption}. Kit runs on the {BENCHMARK}; value [bootstrap 95% CI]; "
                        "* = paired bootstrap p < 0.05 against full.")
        written[name] = save_table(numbers, figures_dir, name, caption_full, display=display)
    return written


def load_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file, or a clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadInputError(path, f"not valid JSON ({err})") from None


def summary_markdown(summary_path: str | os.PathLike[str], machine: Mapping[str, Any] | None = None) -> str:
    """The README's "current demo results" block: `summary.json`'s headline metrics per run, with the date and
    machine it was produced on (`reg2rg_lib.env.doctor.machine()` when not given)."""
    summary = read_summary(summary_path)
    if machine is None:
        machine = doctor.machine()
    rows = [{"run": run, **{m: format_cell(None if metrics.get(m) is None else float(metrics[m])).replace("–", "n/a")
                            for m in SUMMARY_METRICS}} for run, metrics in summary["runs"].items()]
    where = ", ".join(f"{k} {v}" for k, v in machine.items() if k != "date")
    head = (f"Profile `{summary['profile']}`, produced {machine.get('date', '?')} on {where} "
            f"(`make reproduce`; from `outputs/{summary['profile']}/summary.json`).\n\n")
    return head + to_markdown(pd.DataFrame(rows, columns=["run", *SUMMARY_METRICS]))
