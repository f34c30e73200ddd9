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
    assert (
        (lung["tp"], lung["fp"], lung["fn"]) == (0, 1, 1)
        and lung["fn_ids"] == ["A"]
        and lung["fp_ids"] == ["B"]
    )
    assert (pleura["tp"], pleura["fp"]) == (1, 1) and pleura["precision"] == 0.5 and pleura["recall"] == 1.0
    assert m["per_region"]["trachea and bronchie"]["f1"] == 1.0
    assert "lung" not in m["macro_without_lung_pleura"]["regions"] and len(m["macro_all"]["regions"]) == 10
    paths = write_region_outputs(m, tmp_path)
    assert paths["json"].is_file() and "without lung and pleura" in region_report_text(m)


# ---- topic consistency


def test_topic_consistency_reads_the_benchmark_bank_exactly():
    from reg2rg_lib.metrics.region import topic_consistency

    on_topic = ("The region 0 is heart: Cardiomegaly is present. A pericardial effusion of 9 mm is present. "
                "The region 1 is pleura: There is a left pleural effusion measuring 14 mm.")
    off_topic = ("The region 0 is breast: The bones are intact, with no destructive lesion. "
                 "The region 1 is lung: There is a 9 mm nodule in the left thyroid lobe.")
    t = topic_consistency([on_topic, off_topic])
    assert (t["paragraphs"], t["consistent"]) == (4, 2) and t["share"] == 0.5
    assert t["per_region"]["heart"]["share"] == 1.0 and t["per_region"]["breast"]["share"] == 0.0
    # a thyroid nodule is not the lung's, though both say "nodule"
    assert t["per_region"]["lung"]["share"] == 0.0
    assert {"region": "breast", "sentence": "The bones are intact, with no destructive lesion."} in t[
        "off_topic"
    ]
    assert t["sentences"]["bank"] == 5 and t["sentences"]["off_topic"] == 2
    # each report's own [paragraphs, on topic], for a bootstrap over cases; an unnumbered report has none
    per_sample = topic_consistency([on_topic, off_topic, "No regions here."])["per_sample"]
    assert per_sample == [[2, 2], [2, 0], [0, 0]]


def test_topic_consistency_keyword_rule_for_free_text():
    from reg2rg_lib.metrics.region import sentence_on_topic, sentence_topics, topic_consistency

    assert sentence_topics("Mild cardiomegaly with a small pericardial fluid rim.")[0] == {"heart"}
    assert sentence_on_topic("No acute abnormality is seen.", "breast")  # no organ named: neutral
    assert not sentence_on_topic("Degenerative changes of the thoracic vertebrae.", "breast")
    assert sentence_on_topic(
        "Bilateral effusion in the pleural space with passive atelectasis of the lower lobe.", "lung"
    )  # names pleura and lung: on topic for either
    t = topic_consistency(
        [
            "The region 0 is lung: Scattered ground glass opacities in both lungs. No other finding. "
            "The region 1 is thyroid: Enlarged mediastinal lymph nodes."
        ]
    )
    assert t["per_region"]["lung"]["share"] == 1.0 and t["per_region"]["thyroid"]["share"] == 0.0
    assert t["sentences"]["keywords"] == 3 and t["sentences"]["neutral"] == 1
    bank_only = topic_consistency(
        ["The region 0 is lung: Scattered ground glass opacities in both lungs."], "bank"
    )
    assert bank_only["share"] == 0.0  # outside the bank: no organ under the strict rule


def test_topic_consistency_empty_paragraphs_and_unnumbered_reports():
    from reg2rg_lib.metrics.region import topic_consistency

    t = topic_consistency(
        [
            "The region 0 is lung: The region 1 is bone: Bony structures in the scan field are normal. "
            "The region 2 is heart: Cardiac contour is normal; no pericardial effusion is seen."
        ]
    )
    assert (t["paragraphs"], t["consistent"], t["empty"]) == (3, 2, 1)
    assert t["sentences"]["bank"] == 2  # a bank sentence with a semicolon is one sentence
    # no region names: not applicable
    assert topic_consistency(["Both lungs are clear.", ""])["share"] is None


def test_region_recognition_carries_topic_consistency(tmp_path):
    gt = ["The region 0 is breast: Both breasts are unremarkable."]
    pred = ["The region 0 is breast: The bones are intact, with no destructive lesion."]
    m = region_recognition(gt, pred)
    # the right name over another organ's sentence
    assert m["accuracy"] == 1.0 and m["topic_consistency"] == 0.0
    write_region_outputs(m, tmp_path)
    assert "Topic consistency: 0.0" in (tmp_path / "region_classification_report.txt").read_text()
