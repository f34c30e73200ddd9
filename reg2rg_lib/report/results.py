"""The README's results section, computed from one run's files so that it reads in two minutes and cannot
drift: a verdict of at most five lines, one compact table (3 decimals, the bootstrap 95% CI beside each
headline figure, one flag column), where this run falls against the committed seed spread
(`report.seed_spread`), the paper's tables one line each, and a glossary of the run names and abbreviations
taken from the ablation registry (`experiments.grid`).

    readme_results(summary_path)            the README's generated block (notebook 06, `reg2rg readme`)
    write_readme_results(summary, readme)   writes it between README_START and README_END
    verdict_lines(summary_path)             the verdict

The p-values in words (`narrative.ablation_story`) stay in notebook 05 and benchmarks/RESULTS.md; here a run's
tests against `full` and the baselines become the verdict's and the paper lines' words.

One file over 400 lines: the verdict, the table, the paper lines and the glossary are parts of one generated
README block, read from the same summary and stats with the same tests (`_tested`, `ALPHA`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reg2rg_lib.env import doctor
from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.experiments.ablation_stats import read_stats, verdicts
from reg2rg_lib.experiments.baselines import BASELINE_SETTINGS, is_near_constant
from reg2rg_lib.experiments.grid import ABBREVIATIONS, ABLATIONS, ablation, family, imported_folder
from reg2rg_lib.experiments.summary import REFERENCE, SHOWN_METRICS, SUMMARY_METRICS, read_summary
from reg2rg_lib.io import rewrite_block
from reg2rg_lib.paths import REPO_ROOT, MetricsFolder, ReleaseFolder, RunFolder, RunPaths
from reg2rg_lib.report.narrative import release_agreement
from reg2rg_lib.report.seed_spread import (
    OUTSIDE,
    expected_spread,
    placement_sentence,
    seeds_csv,
    spread_placement,
)
from reg2rg_lib.report.table_writer import DIGITS, format_cell, to_markdown
from reg2rg_lib.report.tables import table9_ce_per_label

logger = logging.getLogger(__name__)

#: The README's generated block lies between these two lines (`write_readme_results`).
README_START, README_END = "<!-- demo-results:start -->", "<!-- demo-results:end -->"
ALPHA = 0.05


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _load(summary_path: str | os.PathLike[str]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """(summary.json, the ablation_stats.csv beside it or None)."""
    path = Path(summary_path)
    stats = RunPaths(path.parent).ablation_stats
    return read_summary(path), (read_stats(stats) if stats.is_file() else None)


# ------------------------------------------------------------------------------------------------------------
# The verdict: what `full` does and does not do, against the baselines and the ablations


def _against_baselines(stats: pd.DataFrame, metric: str) -> tuple[bool, str]:
    """(does `full` beat every baseline on `metric` by the paired test at `ALPHA`, the highest baseline that
    it does not beat, else the highest baseline, as "`name` value")."""
    rows = stats[(stats["kind"] == "baseline") & (stats["metric"] == metric)].to_dict("records")
    if not rows:
        return False, "no baseline"

    def beaten(r: Mapping[str, Any]) -> bool:
        p = r.get("p_holm")
        p = r["p_vs_full"] if p is None or pd.isna(p) else p
        return bool(not pd.isna(p) and p < ALPHA and r["delta_vs_full"] < 0)

    rest = [r for r in rows if not beaten(r)]
    top = max(rest or rows, key=lambda r: r["value"])
    return not rest, f"`{top['run']}` {top['value']:.{DIGITS}f}"


def _figure(stats: pd.DataFrame | None, summary: Mapping[str, Any], metric: str) -> str:
    """`full`'s value of `metric` with its CI when the stats have one."""
    value = summary["runs"][REFERENCE].get(metric)
    if value is None:
        return "n/a"
    row = stats[(stats["run"] == REFERENCE) & (stats["metric"] == metric)] if stats is not None else None
    if row is None or row.empty or pd.isna(row["ci_low"].iloc[0]):
        return f"{float(value):.{DIGITS}f}"
    return (
        f"{float(value):.{DIGITS}f} [{row['ci_low'].iloc[0]:.{DIGITS}f}, {row['ci_high'].iloc[0]:.{DIGITS}f}]"
    )


#: A finding counts as written when `full`'s per-label F1 reaches this (Table 9) on at least `FINDING_SUPPORT`
#: cases.
FINDING_F1, FINDING_SUPPORT = 0.5, 3


def _findings(summary_path: Path) -> str:
    """"; of the N findings in the test split it writes X (F1 0.94)" from `full`'s ce_labels.csv (Table 9's
    numbers), "" without that file."""
    labels = MetricsFolder(RunFolder(RunPaths(summary_path.parent).run(REFERENCE)).metrics()).ce_labels
    if not labels.is_file():
        return ""
    table = table9_ce_per_label(labels)
    present = table[table["support"] >= FINDING_SUPPORT]
    good = present[present["F1"] >= FINDING_F1]
    written = ", ".join(f"{r.label} (F1 {r.F1:.{DIGITS}f})" for r in good.itertuples()) or "none"
    return (f"; of the {len(present)} findings with {FINDING_SUPPORT}+ test cases it writes, at F1 >= "
            f"{FINDING_F1:g}: {written} (per label: Table 9)")


def _does_lines(summary: Mapping[str, Any], stats: pd.DataFrame | None, findings: str = "") -> list[str]:
    """"Does" and "does not" against the constant-report baselines, one line each (metric by metric)."""
    full = summary["runs"][REFERENCE]
    if stats is None or not (stats["kind"] == "baseline").any():
        return [f"**`{REFERENCE}`** (no baselines scored beside it): " + ", ".join(
            f"{m} {_figure(stats, summary, m)}" for m in SUMMARY_METRICS) + "."]
    does, does_not = [], []
    for m in SUMMARY_METRICS:
        if full.get(m) is None:
            does_not.append(f"{m} (not applicable)")
            continue
        all_beaten, top = _against_baselines(stats, m)
        (does if all_beaten else does_not).append(f"{m} {_figure(stats, summary, m)} vs {top}")
    topic = "" if full.get("topic_consistency") is None else (
        f"; beside them, topic consistency {_figure(stats, summary, 'topic_consistency')} (not tested: a "
        "constant normal report is on every organ's topic too)")
    lines = []
    if does:
        lines.append(
            f"**Does:** `{REFERENCE}` scores clearly above every constant-report baseline (the highest "
            "shown) on "
            + "; ".join(does)
            + topic
            + findings
            + "."
        )
    if does_not:
        lines.append("**Does not:** score clearly above a constant report (paired bootstrap, Holm, p >= "
                     f"{ALPHA:g} against the one shown) on " + "; ".join(does_not) + ".")
    return lines


def _tested(stats: pd.DataFrame | None) -> pd.DataFrame:
    """The verdicts of the comparable runs (`Ablation.comparable`), empty without stats."""
    if stats is None:
        return pd.DataFrame(columns=["run", "metric", "verdict", "note"])
    tests = verdicts(stats, alpha=ALPHA)
    return tests[[_comparable(r) for r in tests["run"]]] if len(tests) else tests


def _comparable(run: str) -> bool:
    try:
        return ablation(run).comparable
    except KitError:  # a run this kit version does not define (an older summary): nothing says otherwise
        return True


def _ablation_line(stats: pd.DataFrame | None) -> str:
    """One line: which ablations fall clearly below or above `full` on which metric."""
    tests = _tested(stats)
    tests = tests[~tests["verdict"].str.startswith(("same model", "not appl"))]
    runs = list(dict.fromkeys(tests["run"]))
    if not runs:
        return ""
    seeds = int(stats["seeds"].max()) if "seeds" in stats and stats["seeds"].notna().any() else 1

    def which(verdict: str) -> list[str]:
        out = []
        for run in runs:
            hit = tests[(tests["run"] == run) & (tests["verdict"] == verdict.format(run=run))]
            if len(hit):
                out.append(f"`{run}` ({', '.join(hit['metric'])})")
        return out

    below, above = which("full better"), which("{run} better")
    return (
        f"**Ablations** ({seeds} training seed(s) each, paired bootstrap against `{REFERENCE}`, Holm within "
        f"each table): of {len(runs)} comparable runs, "
        + (f"below `{REFERENCE}`: {'; '.join(below)}" if below else f"none falls below `{REFERENCE}`")
        + ("; above: " + "; ".join(above) if above else "; none scores above it")
        + "; the others are within noise."
    )


def verdict_lines(summary_path: str | os.PathLike[str], spread_csv: str | os.PathLike[str] | None = None
                  ) -> list[str]:
    """At most five lines, each computed from the run's files: what `full` does and does not do against the
    constant-report baselines, how the ablations compare, and where this rerun falls against the committed
    seeds."""
    summary, stats = _load(summary_path)
    if REFERENCE not in summary["runs"]:
        return [f"No `{REFERENCE}` run in {summary_path}: nothing to judge."]
    lines = _does_lines(summary, stats, _findings(Path(summary_path)))
    ablations = _ablation_line(stats)
    if ablations:
        lines.append(ablations)
    csv = Path(spread_csv) if spread_csv is not None else seeds_csv(summary["profile"])
    placed = spread_placement(summary_path, csv)
    if placed:
        lines.append(
            "**This run against the committed seeds:** " + placement_sentence(summary_path, placed, csv)
        )
    return lines[:5]


# ------------------------------------------------------------------------------------------------------------
# The compact table, the paper's tables in one line each, the glossary


def _flag(run: str, metrics: Mapping[str, Any], same: Sequence[str], profile: str = "") -> str:
    """The table's one flag: near-constant output, another recipe, imported, or the runs that are this run's
    model."""
    flags = []
    distinct, n = metrics.get("distinct_reports"), metrics.get("n_test_cases")
    if distinct is not None and n is not None and is_near_constant(float(distinct), float(n),
                                                                   metrics.get("top_report_share")):
        flags.append(f"near-constant ({int(distinct)} distinct of {int(n)})")
    if not _comparable(run):
        flags.append("other recipe: not comparable")
    elif profile and (folder := imported_folder(profile, run)):
        flags.append(f"imported: same recipe, trained outside this job ({folder})")
    if same:
        flags.append("also " + ", ".join(f"`{s}`" for s in same) + " (same model)")
    return "; ".join(flags)


def results_table(summary_path: str | os.PathLike[str], spread_csv: str | os.PathLike[str] | None = None
                  ) -> pd.DataFrame:
    """One row per distinct run, then the baselines: each headline figure with its bootstrap 95% CI (3
    decimals; `OUTSIDE` where this run left the committed seeds' interval), and one flag column."""
    summary, stats = _load(summary_path)
    outside = {(p["run"], p["metric"]) for p in spread_placement(summary_path, spread_csv) if not p["inside"]}
    same = {}
    if stats is not None and "same_as" in stats.columns:
        same = {r: s for r, s in zip(stats["run"], stats["same_as"].fillna("")) if s}
    baselines = (
        list(dict.fromkeys(stats.loc[stats["kind"] == "baseline", "run"])) if stats is not None else []
    )
    extras = {b: _baseline_extras(stats, b) for b in baselines}
    rows = []
    for run, metrics in [*((r, m) for r, m in summary["runs"].items() if r not in same), *extras.items()]:
        row = {"run": f"`{run}`"}
        for m in SHOWN_METRICS:
            cell = _cell(stats, run, metrics.get(m) if run not in extras else extras[run].get(m), m)
            row[m] = cell + (f" {OUTSIDE}" if (run, m) in outside else "")
        twins = [r for r, s in same.items() if s == run]
        row["flag"] = _flag(run, metrics, twins, summary.get("profile", ""))
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", *SHOWN_METRICS, "flag"])


def _baseline_extras(stats: pd.DataFrame, run: str) -> dict[str, Any]:
    sub = stats[stats["run"] == run]
    return {**dict(zip(sub["metric"], sub["value"])), "distinct_reports": sub["distinct_reports"].iloc[0]
            if "distinct_reports" in sub else None, "n_test_cases": sub["n_test_cases"].iloc[0]
            if "n_test_cases" in sub else None}


def _cell(stats: pd.DataFrame | None, run: str, value: Any, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    row = stats[(stats["run"] == run) & (stats["metric"] == metric)] if stats is not None else None
    if row is None or row.empty or pd.isna(row["ci_low"].iloc[0]):
        return format_cell(float(value))
    return (
        f"{format_cell(float(value))} [{format_cell(row['ci_low'].iloc[0])}, "
        f"{format_cell(row['ci_high'].iloc[0])}]"
    )


#: What the paper's tables show, in words (its printed numbers are not typed in:
#: `report.release.PAPER_PRINTED`).
PAPER_SAYS: dict[str, str] = {
    "table1_nlg": (
        "Reg2RG's report quality (BLEU, METEOR, ROUGE, CIDEr) on RadGenome-ChestCT and CTRG-Chest-548K"
    ),
    "table2_ce": "its clinical efficacy over the 18 CT-RATE findings",
    "table3_region_recognition": 'its "The region i is X" names are recognised correctly',
    "table4_lfd": "removing local feature decoupling (LFD) lowers the scores",
    "table5_region_features": "texture alone, then + geometry, score below texture + geometry + global",
    "table6_rra": "removing region-report alignment (RRA) lowers the scores",
    "table7_llm_size": "a larger LLM scores higher",
}


def _release_line(tables_dir: Path, name: str) -> tuple[str, str]:
    """(kit finds, agree?) for Tables 1-2: the kit's metrics recomputed from the authors' released CTRG
    files."""
    path = tables_dir / f"{name}.csv"
    if not path.is_file():
        return f"no {name}.csv in {_shown(tables_dir)} (notebook 06 writes it)", "not checked"
    table = pd.read_csv(path)
    # the released weighted average (metrics_manual.csv) against the kit's recomputation
    if name == "table2_ce":
        table = table[table["average"].isin(["weighted"]) | table["average"].isna()].drop(
            columns=["average", "support", "CRG", "decimals", "labeler"], errors="ignore")
        manual = ReleaseFolder(".").ce_manual.name  # the release's CE file, named in the row's source
        table["source"] = table["source"].str.replace(manual, f"{manual}, as released")
    check = release_agreement(table)
    if check.ok is None:
        return (
            "the authors' released CTRG files were not found or not recomputed here (the table's rows say "
            "where they were looked for)"
        ), "not checked"
    return (f"the kit's metrics recomputed from the released CTRG predictions: {check.measured}",
            "yes" if check.ok else "no")


def _ablation_paper_line(stats: pd.DataFrame | None, table: str) -> tuple[str, str]:
    """(kit finds, agree?) for one of Tables 4-7, from the paired tests of its comparable runs."""
    tests = _tested(stats)
    tests = tests[[family(r) == table for r in tests["run"]]] if len(tests) else tests
    tests = tests[~tests["verdict"].str.startswith(("same model", "not appl"))] if len(tests) else tests
    runs = list(dict.fromkeys(tests["run"]))
    if not runs:
        return "no comparable run of this table in the grid", "not checked"
    larger = table == "table7_llm_size"
    better = {r for r in runs if (tests[(tests["run"] == r)]["verdict"] == f"{r} better").any()}
    worse = {r for r in runs if (tests[(tests["run"] == r)]["verdict"] == "full better").any()}
    words = []
    for r in runs:
        sub = tests[tests["run"] == r]
        hits = [
            f"{m} {'below' if v == 'full better' else 'above'}"
            for m, v in zip(sub["metric"], sub["verdict"])
            if v in ("full better", f"{r} better")
        ]
        words.append(f"`{r}`: " + (", ".join(hits) + f" `{REFERENCE}`" if hits else "within noise"))
    if stats is not None:
        left_out = [r for r in dict.fromkeys(stats["run"]) if family(r) == table and not _comparable(r)]
        words += [f"`{r}`: other recipe, left out" for r in left_out]
    helps, hurts = (better, worse) if larger else (worse, better)
    agree = "no" if hurts else ("yes" if helps == set(runs) else "not shown (within noise)")
    return "; ".join(words), agree


def paper_lines(summary_path: str | os.PathLike[str], tables_dir: str | os.PathLike[str] | None = None
                ) -> pd.DataFrame:
    """Per paper table one row: what the paper says, what the kit finds, and whether they agree."""
    _, stats = _load(summary_path)
    tables = Path(tables_dir) if tables_dir is not None else REPO_ROOT / "figures" / "tables"
    summary = read_summary(summary_path)
    rows = []
    for name, says in PAPER_SAYS.items():
        if name in ("table1_nlg", "table2_ce"):
            finds, agree = _release_line(tables, name)
        elif name == "table3_region_recognition":
            acc = summary["runs"].get(REFERENCE, {}).get("region_accuracy")
            finds = ("the released region report comes from an unreleased prediction file, so it cannot be "
                     f"recomputed; `{REFERENCE}` here: {format_cell(None if acc is None else float(acc))}")
            agree = "not checkable"
        else:
            finds, agree = _ablation_paper_line(stats, name)
        rows.append({"table": name.split("_")[0].replace("table", "Table "), "paper says": says,
                     "kit finds": finds, "agree?": agree})
    return pd.DataFrame(rows)


def glossary(runs: Sequence[str] = ()) -> str:
    """The run names (every run of the ablation registry, the `llm_<arch>` runs in `runs`, the baselines) and
    the abbreviations (`grid.ABBREVIATIONS`), as one list in a collapsed `<details>` block, so that the
    README's results fit one screen and a reader opens the glossary when a name is new to them."""
    names = {**{n: a.description for n, a in ABLATIONS.items()}}
    for run in runs:
        if run.startswith("llm_") and run not in names:
            try:
                names[run] = ablation(run).description
            except KitError:
                continue
    names |= BASELINE_SETTINGS
    items = [f"- `{n}`: {d}" for n, d in names.items()] + [f"- {k}: {v}" for k, v in ABBREVIATIONS.items()]
    return ("<details><summary><b>Glossary</b>: the run names (<code>experiments.grid.ABLATIONS</code>) and "
            "abbreviations</summary>\n\n" + "\n".join(items) + "\n\n</details>")


# ------------------------------------------------------------------------------------------------------------
# The README's block


def readme_results(summary_path: str | os.PathLike[str], machine: Mapping[str, Any] | None = None,
                   tables_dir: str | os.PathLike[str] | None = None,
                   spread_csv: str | os.PathLike[str] | None = None) -> str:
    """The README's generated results block: verdict, glossary (collapsed), compact table, expected spread,
    paper lines.
    `machine` (`env.doctor.machine()` when None) dates it; `tables_dir` holds the tables notebook 06 wrote
    (default figures/tables); `spread_csv` is the committed seed file (default
    benchmarks/seeds/<profile>.csv)."""
    summary = read_summary(summary_path)
    machine = doctor.machine() if machine is None else machine
    where = ", ".join(f"{k} {v}" for k, v in machine.items() if k != "date")
    stats_note = (" (CI: bootstrap 95% over the test cases" + (
        f"; {OUTSIDE}: outside the committed seeds' interval" if any(
            not p["inside"] for p in spread_placement(summary_path, spread_csv)) else "") + ")")
    parts = [
        f"Profile `{summary['profile']}`, produced {machine.get('date', '?')} on {where} (`make "
        f"reproduce`; from `outputs/{summary['profile']}/summary.json`; p-values in words: notebook 05 and "
        "benchmarks/RESULTS.md).",
        "\n".join(f"- {line}" for line in verdict_lines(summary_path, spread_csv)),
        glossary(list(summary["runs"])),
        "Headline figures, value [CI]"
        + stats_note
        + ":\n\n"
        + to_markdown(results_table(summary_path, spread_csv)).rstrip(),
        expected_spread(summary_path, spread_csv),
        "The paper's tables:\n\n" + to_markdown(paper_lines(summary_path, tables_dir)).rstrip(),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def write_readme_results(summary: str | os.PathLike[str], readme: str | os.PathLike[str],
                         machine: Mapping[str, Any] | None = None,
                         tables_dir: str | os.PathLike[str] | None = None,
                         spread_csv: str | os.PathLike[str] | None = None) -> Path:
    """Replace the block between `README_START` and `README_END` in `readme` by `readme_results(summary)`,
    atomically; the README's other sections are kept as they are."""
    readme = Path(readme)
    if not readme.is_file():
        raise BadInputError(readme, "README not found")
    block = readme_results(summary, machine, tables_dir, spread_csv)
    rewrite_block(readme, README_START, README_END, block)
    logger.info(f"[report] {readme}: demo results from {summary}")
    return readme



def update_readme_results(profile: str, summary: str | os.PathLike[str], readme: str | os.PathLike[str],
                          update: bool | None = None, **kwargs: Any) -> Path | None:
    """Notebook 06's README step: write `summary`'s block into `readme` (`write_readme_results`, `kwargs`
    passed on) when asked (`update`), or, with `update` None, for the `demo` profile only, whose results the
    README reports; None when nothing is written (another profile, not asked, or no README there)."""
    wanted = update if update is not None else profile == "demo"
    if not wanted or not Path(readme).is_file():
        return None
    return write_readme_results(summary, readme, **kwargs)
