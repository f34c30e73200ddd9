"""The README's results block (`report.results`, with `report.seed_spread`'s placement): a verdict computed
from the run, one compact table with CIs and a flag column, each rerun placed against the committed seed
spread (both machines named), the paper's tables one line each, and a glossary read from the ablation
registry. Run files are written in the real schemas (summary.json by `write_summary`, ablation_stats.csv in
`ablation_stats`' columns, the seed CSV by `merge_rows`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.experiments import grid
from reg2rg_lib.experiments.seeds import merge_rows, read_rows, rows_from_summary
from reg2rg_lib.experiments.summary import SUMMARY_METRICS, write_summary
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.report.results import (
    README_END,
    README_START,
    glossary,
    paper_lines,
    readme_results,
    results_table,
    update_readme_results,
    verdict_lines,
    write_readme_results,
)
from reg2rg_lib.report.seed_spread import OUTSIDE, spread_placement

MACHINE = {"date": "2026-12-02", "cpu": "x86_64", "threads": 1, "torch": "t", "device": "cpu"}
FULL = {
    "region_accuracy": 0.994,
    "topic_consistency": 0.9174,
    "BLEU-4": 0.387,
    "METEOR": 0.590,
    "ROUGE-L": 0.560,
    "CE_micro_F1": 0.23,
    "distinct_reports": 50,
    "n_test_cases": 50,
}
RUNS = {
    "full": FULL,
    "no_lfd": {**FULL, "region_accuracy": 0.80, "CE_micro_F1": 0.20},
    "llm_scratch-2x128": {**FULL, "region_accuracy": 0.70, "BLEU-4": 0.30, "distinct_reports": 3},
    "llm_scratch-2x64": FULL,
}
BASELINE = {"region_accuracy": 0.834, "BLEU-4": 0.392, "METEOR": 0.567, "ROUGE-L": 0.503, "CE_micro_F1": 0.0}


def _run(tmp_path: Path, runs=RUNS, p=None, baseline=BASELINE, kernels="AVX512", threads=1) -> RunPaths:
    """A run folder: summary.json (with its machine), full's run_config.json (its threads) and
    ablation_stats.csv with the paired p-values `p` {(run, metric): p} (1.0 where not given) and one
    baseline."""
    paths = RunPaths(tmp_path / "out")
    write_summary(paths, "demo", runs)
    summary = json.loads(paths.summary.read_text())
    summary["environment"].update(torch_cpu_capability=kernels, torch_threads=8)
    paths.summary.write_text(json.dumps(summary))
    paths.run("full").mkdir(parents=True)
    (paths.run("full") / "run_config.json").write_text(json.dumps({"settings": {"threads": threads}}))
    p = p or {}
    rows = []
    for run, metrics in [*runs.items(), ("baseline_normal", baseline)]:
        kind = "baseline" if run.startswith("baseline") else "run"
        for m in SUMMARY_METRICS:
            v = metrics[m]
            tested = run != "full" and run != "llm_scratch-2x64"
            rows.append(
                {
                    "run": run,
                    "metric": m,
                    "value": v,
                    "ci_low": v - 0.03,
                    "ci_high": v + 0.03,
                    "delta_vs_full": v - FULL[m] if tested else math.nan,
                    "p_vs_full": p.get((run, m), 1.0) if tested else math.nan,
                    "p_holm": p.get((run, m), 1.0) if tested else math.nan,
                    "family": "baselines" if kind == "baseline" else grid.family(run),
                    "n_resamples": 1000,
                    "seeds": 1,
                    "kind": kind,
                    "same_as": "full" if run == "llm_scratch-2x64" else "",
                    "distinct_reports": metrics.get("distinct_reports", 1),
                    "n_test_cases": 50,
                }
            )
    pd.DataFrame(rows).to_csv(paths.ablation_stats, index=False)
    return paths


def _seeds(tmp_path: Path, values=(0.99, 0.995, 1.0, 0.985)) -> Path:
    """A committed seed file: `full` at four seeds (AVX512, 1 training thread), region accuracy `values`."""
    csv = tmp_path / "seeds.csv"
    rows = []
    for seed, acc in enumerate(values):
        summary = {"runs": {"full": {**FULL, "region_accuracy": acc, "BLEU-4": 0.38 + 0.005 * seed,
                                     "METEOR": 0.59, "ROUGE-L": 0.56, "CE_micro_F1": 0.2 + 0.02 * seed}},
                   "environment": {"torch_cpu_capability": "AVX512", "torch_threads": 2}}
        rows += rows_from_summary(summary, seed, ["full"], train_threads=1)
    merge_rows(csv, rows)
    return csv


def test_the_verdict_is_computed_from_the_run(tmp_path: Path) -> None:
    paths = _run(
        tmp_path,
        p={
            ("baseline_normal", "region_accuracy"): 0.001,
            ("baseline_normal", "CE_micro_F1"): 0.01,
            ("llm_scratch-2x128", "region_accuracy"): 0.002,
        },
    )
    lines = verdict_lines(paths.summary, spread_csv=tmp_path / "none.csv")
    assert 1 <= len(lines) <= 5
    does, does_not, ablations = lines[:3]
    assert (
        does.startswith("**Does:**")
        and "region_accuracy 0.994 [0.964, 1.024] vs `baseline_normal` 0.834" in does
    )
    assert "CE_micro_F1 0.230" in does and "topic consistency 0.917" in does
    assert "(not tested: a constant normal report" in does  # beside the tested metrics, never among them
    assert (
        does_not.startswith("**Does not:**")
        and "BLEU-4 0.387 [0.357, 0.417] vs `baseline_normal` 0.392" in does_not
    )
    assert (
        "below `full`: `llm_scratch-2x128` (region_accuracy)" in ablations
        and "of 2 comparable runs" in ablations
    )

    # the findings it writes come from full's per-label labels (Table 9's numbers)
    from reg2rg_lib.regions import LABELS

    rows = [{f"GT_{lab}": 0 for lab in LABELS} | {f"Pred_{lab}": 0 for lab in LABELS} for _ in range(4)]
    for row, (gt, pred) in zip(rows, [(1, 1), (1, 1), (1, 1), (0, 1)]):
        row.update({"GT_Cardiomegaly": gt, "Pred_Cardiomegaly": pred, "GT_Lung nodule": 1})
    metrics = paths.run("full") / "metrics"
    metrics.mkdir()
    pd.DataFrame(rows).to_csv(metrics / "ce_labels.csv", index=False)
    does = verdict_lines(paths.summary, spread_csv=tmp_path / "none.csv")[0]
    assert "of the 2 findings with 3+ test cases it writes, at F1 >= 0.5: Cardiomegaly (F1 0.857)" in does

    # other numbers, other words: the baseline is now beaten on BLEU-4 too, and no ablation falls below full
    paths = _run(tmp_path / "b", p={("baseline_normal", m): 0.001 for m in SUMMARY_METRICS},
                 baseline={**BASELINE, "BLEU-4": 0.2, "METEOR": 0.3, "ROUGE-L": 0.3})
    lines = verdict_lines(paths.summary, spread_csv=tmp_path / "none.csv")
    assert not any(line.startswith("**Does not:**") for line in lines) and "BLEU-4 0.387" in lines[0]
    assert "none falls below `full`" in lines[1]


def test_a_rerun_outside_the_committed_spread_is_flagged_with_both_machines(tmp_path: Path) -> None:
    csv = _seeds(tmp_path)
    inside = _run(tmp_path / "in")
    placed = {(p["run"], p["metric"]): p for p in spread_placement(inside.summary, csv)}
    assert placed[("full", "region_accuracy")]["inside"] and placed[("full", "region_accuracy")]["seeds"] == 4
    assert placed[("full", "region_accuracy")]["high"] == 1.0  # clipped: no metric above 1
    assert ("no_lfd", "region_accuracy") not in placed  # no committed seeds for it: not placed

    outside = _run(tmp_path / "out", runs={**RUNS, "full": {**FULL, "region_accuracy": 0.558}},
                   kernels="DEFAULT", threads=4)
    placed = {(p["run"], p["metric"]): p for p in spread_placement(outside.summary, csv)}
    assert not placed[("full", "region_accuracy")]["inside"] and placed[("full", "METEOR")]["inside"]
    last = verdict_lines(outside.summary, spread_csv=csv)[-1]
    assert last.startswith("**This run against the committed seeds:**")
    assert f"outside {OUTSIDE}: `full` region_accuracy 0.558" in last and "5 of 6 figures inside" in last
    assert "This run: DEFAULT, 4 training threads; the committed seeds: AVX512, 1 training thread" in last
    table = results_table(outside.summary, csv).set_index("run")
    assert table.loc["`full`", "region_accuracy"].endswith(OUTSIDE)
    assert not table.loc["`full`", "METEOR"].endswith(OUTSIDE)
    text = readme_results(outside.summary, MACHINE, spread_csv=csv)
    assert (
        "**On another machine** expect `full` within the 95% prediction interval of its 4 committed" in text
    )


def test_seed_files_record_the_training_threads_and_older_files_still_read(tmp_path: Path) -> None:
    rows = read_rows(_seeds(tmp_path))
    assert {r["threads"] for r in rows} == {1}
    old = tmp_path / "old.csv"
    old.write_text(
        "run,seed,cpu_capability,region_accuracy,BLEU-4,METEOR,ROUGE-L,CE_micro_F1,distinct_reports\n"
        "full,0,AVX512,1.0,0.35,0.56,0.50,0.22,50.0\nfull,1,AVX512,0.99,0.36,0.57,0.51,0.25,50.0\n"
    )
    assert read_rows(old)[0]["threads"] is None
    assert read_rows(old)[0]["topic_consistency"] is None  # a column added later (seeds.LATER_COLUMNS)
    paths = _run(tmp_path / "r")
    assert "the committed seeds: AVX512, training threads not recorded" in verdict_lines(
        paths.summary, spread_csv=old)[-1]


def test_the_table_has_cis_at_3_decimals_and_one_flag_column(tmp_path: Path) -> None:
    paths = _run(tmp_path)
    table = results_table(paths.summary, tmp_path / "none.csv").set_index("run")
    assert list(table.columns) == ["region_accuracy", "topic_consistency", "BLEU-4", "METEOR", "ROUGE-L",
                                   "CE_micro_F1", "flag"]
    assert table.loc["`full`", "BLEU-4"] == "0.387 [0.357, 0.417]"
    assert table.loc["`full`", "topic_consistency"] == "0.917"  # no CI for it in the stats: the value alone
    assert "`llm_scratch-2x64`" not in table.index and "llm_scratch-2x64" in table.loc["`full`", "flag"]
    assert table.loc["`llm_scratch-2x128`", "flag"] == (  # the demo imports it (ablations.imported)
        "near-constant (3 distinct of 50); imported: same recipe, trained outside this job "
        "(benchmarks/imported/demo_llm_scratch-2x128)")
    assert table.loc["`baseline_normal`", "flag"] == "near-constant (1 distinct of 50)"
    assert table.loc["`no_lfd`", "flag"] == ""
    assert not any(re.search(r"\d\.\d{4}", c) for c in table.to_numpy().ravel())  # never 4 decimals


def test_paper_lines_say_agree_from_the_tests(tmp_path: Path) -> None:
    paths = _run(
        tmp_path, p={("no_lfd", "region_accuracy"): 0.001, ("llm_scratch-2x128", "region_accuracy"): 0.001}
    )
    lines = paper_lines(paths.summary, tmp_path / "no_tables").set_index("table")
    assert list(lines.columns) == ["paper says", "kit finds", "agree?"]
    assert list(lines.index) == [f"Table {i}" for i in range(1, 8)]
    assert lines.loc["Table 4", "agree?"] == "yes" and "`no_lfd`: region_accuracy below `full`" in \
        lines.loc["Table 4", "kit finds"]
    assert lines.loc["Table 7", "agree?"] == "no"  # the larger LLM scores below full
    assert lines.loc["Table 1", "agree?"] == "not checked" and lines.loc["Table 5", "agree?"] == "not checked"
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame(
        [
            {
                "dataset": "CTRG-Chest-548K test",
                "source": "authors' release: x, as released",
                "BLEU-4": 0.3204,
            },
            {
                "dataset": "CTRG-Chest-548K test",
                "source": "kit metrics recomputed from the release",
                "BLEU-4": 0.32039,
            },
        ]
    ).to_csv(tables / "table1_nlg.csv", index=False)
    assert paper_lines(paths.summary, tables).set_index("table").loc["Table 1", "agree?"] == "yes"


def test_the_glossary_is_read_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    text = glossary(["llm_scratch-2x128"])
    for name, ab in grid.ABLATIONS.items():
        assert f"`{name}`: {ab.description}" in text
    assert "`llm_scratch-2x128`: LLM scratch-2x128" in text and "`baseline_normal`:" in text
    assert all(f"{k}: {v}" in text for k, v in grid.ABBREVIATIONS.items())
    # collapsed: the results fit one screen
    assert text.startswith("<details>") and text.endswith("</details>")
    monkeypatch.setitem(grid.ABLATIONS, "no_thing", grid.Ablation("no_thing", "a run added to the registry"))
    # a new run is defined without editing prose
    assert "`no_thing`: a run added to the registry" in glossary()


def test_write_readme_results_replaces_only_its_block(tmp_path: Path) -> None:
    paths = _run(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# kit\n\nintro\n\n## Current demo results\n{README_START}\nold numbers 0.123\n{README_END}\n"
        "\n## Later\nkept\n"
    )
    write_readme_results(paths.summary, readme, machine=MACHINE, tables_dir=tmp_path,
                         spread_csv=_seeds(tmp_path))
    text = readme.read_text()
    assert text.startswith("# kit\n\nintro\n") and text.endswith("## Later\nkept\n")
    assert "old numbers" not in text and "2026-12-02" in text and text.count(README_START) == 1
    block = text.split(README_START)[1].split(README_END)[0]
    assert block.lstrip().startswith("Profile `demo`") and "\n- **Does" in block  # the verdict comes first
    assert "p = " not in block and "Paired tests against" not in block  # the p-value prose is notebook 05's
    readme.write_text("no markers")
    with pytest.raises(BadInputError, match="demo-results:start"):
        write_readme_results(paths.summary, readme, machine=MACHINE)


def test_the_readme_is_updated_for_the_demo_profile_or_when_asked(tmp_path: Path) -> None:
    paths = _run(tmp_path)
    readme = tmp_path / "README.md"
    fresh = f"# kit\n{README_START}\nold numbers 0.123\n{README_END}\n"
    kwargs = {"machine": MACHINE, "tables_dir": tmp_path, "spread_csv": _seeds(tmp_path)}
    for profile, update, written in (("smoke", None, False), ("demo", False, False), ("demo", None, True),
                                     ("smoke", True, True)):
        readme.write_text(fresh)
        got = update_readme_results(profile, paths.summary, readme, update=update, **kwargs)
        assert (got == readme) is written and ("old numbers" not in readme.read_text()) is written
    assert update_readme_results("demo", paths.summary, tmp_path / "absent.md", **kwargs) is None
