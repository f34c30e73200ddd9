"""Region-level clinical efficacy (the authors' all_regions_macro_avg_results.csv): hand-counted, round trip
through the per-region files, the released CTRG predictions."""

from __future__ import annotations

import pandas as pd
import pytest

from reg2rg_lib.cli import main
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.metrics.region_ce import (
    REGION_CE_COLUMNS,
    numbered_paragraphs,
    region_ce,
    region_ce_from_folder,
    region_report_tables,
    write_region_ce_outputs,
)

REFS = ["The region 0 is lung: A nodule is seen. The region 1 is heart: Cardiomegaly is present.",
        "The region 0 is lung: A nodule is seen."]
PREDS = [
    "The region 0 is lung: Consolidation is seen. The other report is: {heart: Cardiomegaly is present.}",
    "The region 3 is lung: A nodule is seen. The region 4 is pleura: There is a pleural effusion.",
]


def test_paragraphs_pair_by_name_on_cases_that_have_both():
    assert numbered_paragraphs(
        "The region 0 is lung: A. The region 5 is lung: B. The other report is: {bone: C}"
    ) == {"lung": "A. B."}
    tables = region_report_tables(REFS, PREDS, ["c1", "c2"])
    # heart: only an "other report" block in the prediction; pleura: not in the reference -> neither scored
    assert list(tables) == ["lung"]
    assert tables["lung"].to_dict("records") == [
        {
            "AccNum": "c1",
            "GT_combined_report": "A nodule is seen.",
            "Pred_combined_report": "Consolidation is seen.",
        },
        {
            "AccNum": "c2",
            "GT_combined_report": "A nodule is seen.",
            "Pred_combined_report": "A nodule is seen.",
        },
    ]


def test_region_ce_hand_counted():
    res = region_ce(region_report_tables(REFS, PREDS, ["c1", "c2"]))
    macro, micro = res["macro"].set_index("region"), res["micro"].set_index("region")
    # Lung nodule: TP 1, FN 1 -> P 1, R 0.5, F1 2/3; Consolidation: FP 1 -> 0; the other 16 labels: 0.
    # Macro over all 18 labels (as the authors' classification_report 'macro avg'): P 1/18, R 0.5/18, F1
    # (2/3)/18
    assert macro.loc["lung", "precision"] == pytest.approx(1 / 18)
    assert macro.loc["lung", "recall"] == pytest.approx(0.5 / 18)
    assert macro.loc["lung", "f1-score"] == pytest.approx((2 / 3) / 18)
    assert macro.loc["lung", "support"] == 2
    # micro: TP 1, FP 1, FN 1
    assert tuple(micro.loc["lung", ["precision", "recall", "f1-score"]]) == pytest.approx((0.5, 0.5, 0.5))


def test_written_files_round_trip_through_the_release_reader(tmp_path):
    tables = region_report_tables(REFS, PREDS, ["c1", "c2"])
    res = region_ce(tables)
    paths = write_region_ce_outputs(res, tmp_path, tables)
    written = pd.read_csv(paths["macro"])
    assert tuple(written.columns) == REGION_CE_COLUMNS
    assert list(pd.read_csv(tmp_path / "region_reports" / "lung_reports.csv").columns) == \
        ["AccNum", "GT_combined_report", "Pred_combined_report"]
    again = region_ce_from_folder(tmp_path / "region_reports")
    pd.testing.assert_frame_equal(again["macro"], res["macro"])
    with pytest.raises(BadInputError, match="holds no per-region report files"):
        region_ce_from_folder(tmp_path)


def test_release_dir_with_authors_results_is_compared(tmp_path, capsys):
    folder = tmp_path / "release"
    folder.mkdir()
    pd.DataFrame({"AccNum": ["v1", "v2"], "GT_combined_report": ["A nodule is seen.", "No nodule."],
                  "Pred_combined_report": ["A nodule is seen.", "A nodule is seen."]}).to_csv(
        folder / "lung_reports.csv", index=False)
    pd.DataFrame({"region": ["lung"], "precision": [0.1], "recall": [0.2], "f1-score": [0.3],
                  "support": [2.0]}).to_csv(folder / "all_regions_macro_avg_results.csv", index=False)
    assert main(["evaluate", "region-ce", "--release-dir", str(folder), "--out", str(tmp_path / "o")]) == 0
    got = pd.read_csv(tmp_path / "o" / "all_regions_macro_avg_results.csv").iloc[0]
    assert got["released_f1-score"] == 0.3  # the authors' RadBERT number beside the kit's
    assert got["precision"] == pytest.approx(0.5 / 18) and got["recall"] == pytest.approx(1 / 18)


def test_released_ctrg_predictions_by_region(release_dir, tmp_path):
    assert main(["evaluate", "region-ce", "--predictions", str(release_dir / "ctrg_combined_reports.csv"),
                 "--out", str(tmp_path)]) == 0
    macro = pd.read_csv(tmp_path / "all_regions_macro_avg_results.csv").set_index("region")
    for region in macro.index:
        n = len(pd.read_csv(tmp_path / "region_reports" / f"{region}_reports.csv"))
        assert 0 < n <= 361
    assert {"lung", "heart"} <= set(macro.index)
    assert (
        (
            (macro[["precision", "recall", "f1-score"]] >= 0)
            & (macro[["precision", "recall", "f1-score"]] <= 1)
        )
        .all()
        .all()
    )
