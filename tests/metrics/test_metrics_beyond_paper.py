"""evaluate_predictions's additions: CRG, region-level CE and grounded findings in summary.json, from disk."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.metrics import evaluate_predictions
from reg2rg_lib.metrics.crg import crg_score
from reg2rg_lib.regions import LABELS

REF = ["The region 0 is lung: A 10 mm solid nodule is seen in the upper lobe of the left lung. "
       "The region 1 is heart: Cardiomegaly is present.",
       "The region 0 is lung: Both lungs are clear, with no nodule or consolidation. "
       "The region 1 is heart: The heart is of normal size, with no pericardial effusion."]
PRED = ["The region 0 is lung: A 10 mm nodule is present in the upper lobe of the left lung. "
        "The region 1 is heart: The heart is of normal size, with no pericardial effusion.",
        "The region 0 is lung: Consolidation is present in the lower lobe of the left lung. "
        "The region 1 is heart: The heart is of normal size, with no pericardial effusion."]
GT = {"valid_1_a_1": {"findings": [
    {"kind": "lung_nodule", "region": "lung", "label": "Lung nodule",
     "params": {"size_mm": 10, "lobe": "upper lobe of the left lung"}},
    {"kind": "cardiomegaly", "region": "heart", "label": "Cardiomegaly", "params": {}}]},
    "valid_2_a_1": {"findings": []}}


@pytest.fixture()
def files(tmp_path):
    pred = tmp_path / "predictions.csv"
    pd.DataFrame({"AccNum": list(GT), "Question": "q", "GT_combined_report": REF,
                  "Pred_combined_report": PRED}).to_csv(pred, index=False)
    bench = tmp_path / "benchmark"
    bench.mkdir()
    (bench / "manifest.json").write_text(json.dumps({"ground_truth": GT}))
    return pred, bench


def test_summary_carries_crg_region_ce_and_grounded(nltk_ready, tmp_path, files):
    pred, bench = files
    out = tmp_path / "m"
    head = evaluate_predictions(pred, out, ground_truth=bench, bootstrap=0)
    labels = pd.read_csv(out / "ce_labels.csv")
    y_true = labels[[f"GT_{lab}" for lab in LABELS]].to_numpy()
    y_pred = labels[[f"Pred_{lab}" for lab in LABELS]].to_numpy()
    crg = json.loads((out / "crg.json").read_text())
    assert crg == crg_score(y_true, y_pred)  # the pipeline writes what the arithmetic gives on its own labels
    # labels: GT {nodule, cardiomegaly} and {}, Pred {nodule} and {consolidation}: TP 1, FN 1, FP 1, X 36, A 2
    assert (crg["TP"], crg["FN"], crg["FP"], crg["X"], crg["A"]) == (1, 1, 1, 36, 2)
    assert head["CRG"] == pytest.approx(17 / (34 - (8.5 - 8.5 - 1)))
    # grounded: nodule reported with lobe and size right, cardiomegaly missed, consolidation invented in case
    # 2
    assert (head["grounded_recall"], head["attribute_accuracy"], head["false_findings_per_case"]) == (
        0.5,
        1.0,
        0.5,
    )
    macro = pd.read_csv(out / "all_regions_macro_avg_results.csv").set_index("region")
    assert set(macro.index) == {"lung", "heart"}
    assert head["region_CE_macro_F1"] == pytest.approx(macro["f1-score"].mean())
    summary = json.loads((out / "summary.json").read_text())["headline"]
    for key in (
        "CRG",
        "grounded_recall",
        "attribute_accuracy",
        "false_findings_per_case",
        "region_CE_macro_F1",
    ):
        assert summary[key] == head[key]
    assert (out / "grounded_by_kind.csv").is_file() and (
        out / "region_reports" / "lung_reports.csv"
    ).is_file()


def test_no_positive_reference_label_leaves_crg_null_with_a_warning(nltk_ready, tmp_path, files):
    pred, _ = files
    negative = tmp_path / "labels.csv"
    pd.DataFrame({"VolumeName": list(GT), **{lab: [0, 0] for lab in LABELS}}).to_csv(negative, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head = evaluate_predictions(pred, tmp_path / "m", labels=negative, bootstrap=0)
    assert head["CRG"] is None and "grounded_recall" not in head
    assert any("no positive label" in str(w.message) for w in caught)
    assert not (tmp_path / "m" / "crg.json").exists()
    assert np.isfinite(head["CE_micro_F1"])


def test_table2_crg_column_and_table8_from_the_metrics_folder(nltk_ready, tmp_path, files):
    """The report stage reads what this evaluation wrote (Table 2's CRG column, the kit's Table 8)."""
    from reg2rg_lib.report.release_readers import ce_averages
    from reg2rg_lib.report.table_writer import save_table
    from reg2rg_lib.report.tables import table2_ce, table8_grounded

    pred, bench = files
    out = tmp_path / "runs" / "full" / "metrics"
    head = evaluate_predictions(pred, out, ground_truth=bench, bootstrap=0)
    t2 = table2_ce(kit_runs={"full": ce_averages(json.loads((out / "ce_metrics.json").read_text()))},
                   crg={"full": head["CRG"]})
    assert "CRG" in t2.columns and set(t2["CRG"]) == {head["CRG"]}
    t8 = table8_grounded({"full": out, "missing": tmp_path / "nowhere"}, "smoke")
    assert list(t8["model"].unique()) == ["kit: full"]
    total = t8.set_index("kind").loc["all"]
    assert (total["inserted"], total["reported"], total["grounded_recall"]) == (2, 1, 0.5)
    md = save_table(t8, tmp_path / "fig", "table8_grounded_findings", "Table 8")["md"].read_text()
    assert "lung_nodule" in md and "consolidation" in md


def test_cli_evaluate_all_with_data(nltk_ready, tmp_path, files):
    from reg2rg_lib.cli import main

    pred, bench = files
    assert (
        main(
            [
                "evaluate",
                "all",
                "--predictions",
                str(pred),
                "--data",
                str(bench),
                "--out",
                str(tmp_path / "o"),
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    head = json.loads((tmp_path / "o" / "summary.json").read_text())["headline"]
    assert (head["grounded_recall"], head["false_findings_per_case"]) == (0.5, 0.5)
    assert head["CRG"] == json.loads((tmp_path / "o" / "crg.json").read_text())["CRG"]
