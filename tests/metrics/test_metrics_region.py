"""Region recognition (which organs a report names, in which order) on hand-made cases."""

from __future__ import annotations

import pytest

from reg2rg_lib.metrics.region import region_recognition, region_report_text, write_region_outputs


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
