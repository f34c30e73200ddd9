"""Parsing "The region i is X:" reports and region recognition on hand-made cases."""

from __future__ import annotations

import pytest

from reg2rg_lib.metrics.region import region_recognition, region_report_text, write_region_outputs
from reg2rg_lib.regions import region_sequence, split_regions, strip_region_prefix

REPORT = ("The region 0 is lung: No nodule. The region 1 is trachea and bronchie: Patent airways. "
          "The other report is: {pleura: No effusion.}{other: }")


def test_split_regions_reads_multiword_names_and_other_blocks():
    parts = [tuple(p) for p in split_regions(REPORT)]
    assert parts == [(0, "lung", "No nodule."), (1, "trachea and bronchie", "Patent airways."),
                     (None, "pleura", "No effusion.")]
    assert strip_region_prefix(REPORT) == "No nodule. Patent airways. No effusion."
    assert region_sequence(REPORT) == {0: "lung", 1: "trachea and bronchie"}


@pytest.mark.parametrize("text, want", [
    ("Plain report without prefixes.", "Plain report without prefixes."),
    ("Intro. The region 0 is Heart : Normal.", "Intro. Normal."),
    ("The region 0 is lung: A. The other report is {mediastinum: B.}", "A. B."),  # colon dropped by the model
    ("The region 0 is lung: A. The other report is: {other: cut off by max_new_tokens", "A. cut off by max_new_tokens"),
    ("", ""),
])
def test_strip_region_prefix_variants(text, want):
    assert strip_region_prefix(text) == want


def test_region_recognition_hand_computed(tmp_path):
    gt = ["The region 0 is heart: a. The region 1 is lung: b. The region 2 is trachea and bronchie: c.",
          "The region 0 is bone: d. The region 1 is pleura: e.",
          "no regions at all"]
    pred = ["The region 0 is heart: a. The region 1 is pleura: b. The region 2 is trachea and bronchie: c.",
            "The region 0 is bone: d. The region 1 is pleura: e. The region 2 is lung: f.",
            "whatever"]
    m = region_recognition(gt, pred, ids=["A", "B", "C"])
    assert m["per_sample_accuracy"] == [pytest.approx(2 / 3), 1.0, None]
    assert m["accuracy"] == pytest.approx((2 / 3 + 1) / 2) and m["n_scored"] == 2
    lung, pleura = m["per_region"]["lung"], m["per_region"]["pleura"]
    assert (lung["tp"], lung["fp"], lung["fn"]) == (0, 1, 1) and lung["fn_ids"] == ["A"] and lung["fp_ids"] == ["B"]
    assert (pleura["tp"], pleura["fp"]) == (1, 1) and pleura["precision"] == 0.5 and pleura["recall"] == 1.0
    assert m["per_region"]["trachea and bronchie"]["f1"] == 1.0
    assert "lung" not in m["macro_without_lung_pleura"]["regions"] and len(m["macro_all"]["regions"]) == 10
    paths = write_region_outputs(m, tmp_path)
    assert paths["json"].is_file() and "without lung and pleura" in region_report_text(m)
