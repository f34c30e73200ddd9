"""Grounded finding accuracy: hand-built cases, every template sentence of the benchmark, the CLI, bad
inputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from reg2rg_lib.cli import main
from reg2rg_lib.data.synth.reports import ABNORMAL, NORMAL
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.metrics.grounded import (
    HOME_REGION,
    KIND_PATTERNS,
    carried_attributes,
    find_manifest,
    grounded_findings,
    positive_sentences,
    read_ground_truth,
    read_lobe,
    read_side,
    read_sizes,
)

FINDINGS = {
    "valid_1_a_1": [
        {
            "kind": "lung_nodule",
            "region": "lung",
            "label": "Lung nodule",
            "params": {"size_mm": 10, "lobe": "upper lobe of the left lung"},
        },
        {
            "kind": "pleural_effusion",
            "region": "pleura",
            "label": "Pleural effusion",
            "params": {"side": "right", "size_mm": 20},
        },
        {"kind": "cardiomegaly", "region": "heart", "label": "Cardiomegaly", "params": {"heart_scale": 1.3}},
    ],
    "valid_2_a_1": [
        {
            "kind": "thyroid_nodule",
            "region": "thyroid",
            "label": None,
            "params": {"size_mm": 8, "side": "left"},
        },
    ],
    "train_1_a_1": [],
}
REF = {
    "valid_1_a_1": "The region 0 is lung: A 10 mm solid nodule is seen in the upper lobe of the left lung. "
    "The region 1 is pleura: There is a right pleural effusion measuring 20 mm. "
    "The region 2 is heart: Cardiomegaly is present.",
    "valid_2_a_1": (
        "The region 0 is thyroid: A 8 mm hypodense nodule is seen in the left lobe of the thyroid."
    ),
}
PRED = {
    # nodule: right size (12 is within 10 +- 20 %), wrong lobe; an invented consolidation; the effusion denied
    # in its own paragraph and written under the heart instead (misplaced); cardiomegaly right
    "valid_1_a_1": "The region 0 is lung: A 12 mm nodule is present in the lower lobe of the left lung. "
    "Consolidation is seen in the middle lobe of the right lung. "
    "The region 1 is pleura: There is no pleural effusion. "
    "The region 2 is heart: There is a right pleural effusion measuring 30 mm. Cardiomegaly is present.",
    # thyroid nodule: size right (9 vs 8), side wrong; an invented pericardial effusion
    "valid_2_a_1": "The region 0 is thyroid: There is a 9 mm nodule in the right thyroid lobe. "
    "The region 1 is heart: There is a pericardial effusion 10 mm thick.",
}


def _manifest(tmp_path, findings=FINDINGS):
    root = tmp_path / "benchmark"
    root.mkdir(exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(
        {"dataset": "test", "ground_truth": {k: {"findings": v, "pose": {}} for k, v in findings.items()}}))
    return root


def _predictions(tmp_path, ref=REF, pred=PRED, name="pred.csv"):
    rows = [{"AccNum": k, "Question": "q", "GT_combined_report": ref[k], "Pred_combined_report": pred[k]}
            for k in pred]
    pd.DataFrame(rows).to_csv(tmp_path / name, index=False)
    return tmp_path / name


def test_hand_built_cases_give_hand_counted_numbers(tmp_path):
    gt = read_ground_truth(_manifest(tmp_path))
    res = grounded_findings(list(PRED), [REF[k] for k in PRED], list(PRED.values()), gt)
    s = res["summary"]
    # 4 inserted, 3 reported in their own region (the effusion only under the heart); 4 attribute checks
    # (nodule lobe wrong, nodule size right, thyroid size right, thyroid side wrong); 2 invented over 2 cases
    assert (s["n_cases"], s["inserted"], s["reported"]) == (2, 4, 3)
    assert s["grounded_recall"] == 0.75
    assert (s["attributes_checked"], s["attribute_accuracy"]) == (4, 0.5)
    assert (s["false_findings"], s["false_findings_per_case"]) == (2, 1.0)
    f = res["findings"].set_index("kind")
    assert bool(f.loc["pleural_effusion", "misplaced"]) and not f.loc["pleural_effusion", "reported"]
    assert (f.loc["lung_nodule", "lobe_ok"], f.loc["lung_nodule", "size_ok"]) == (False, True)
    assert (f.loc["thyroid_nodule", "side_ok"], f.loc["thyroid_nodule", "size_ok"]) == (False, True)
    assert f.loc["cardiomegaly", "attributes_checked"] == 0 and f.loc["cardiomegaly", "reported"]
    assert sorted(res["false"]["kind"]) == ["consolidation", "pericardial_effusion"]
    table = res["by_kind"].set_index("kind")
    assert (
        table.loc["lung_nodule", "lobe_accuracy"] == 0.0 and table.loc["lung_nodule", "size_accuracy"] == 1.0
    )
    assert table.loc["all", "inserted"] == 4 and table.loc["consolidation", "false_findings"] == 1
    assert np.isnan(table.loc["cardiomegaly", "attribute_accuracy"])  # nothing to check: not 0


def test_size_tolerance_is_twenty_percent_both_ways():
    f = {"kind": "lung_nodule", "params": {"size_mm": 10, "lobe": "upper lobe of the left lung"}}
    from reg2rg_lib.metrics.grounded import attribute_checks

    ok = [attribute_checks(f, [f"A {v} nodule in the upper lobe of the left lung."])["size"]
          for v in ("8 mm", "12 mm", "1.2 cm", "7.9 mm", "12.1 mm", "nodule")]
    assert ok == [True, True, True, False, False, False]


def test_whole_report_mode_when_the_reference_names_no_region(tmp_path):
    gt = {"valid_1_a_1": FINDINGS["valid_1_a_1"]}
    ref = "A 10 mm solid nodule is seen in the upper lobe of the left lung. Cardiomegaly is present."
    pred = (
        "There is a 10 mm nodule in the upper lobe of the left lung. Bilateral pleural effusion is seen, "
        "up to 20 mm thick. Heart size is normal and there is no pericardial effusion."
    )
    res = grounded_findings(["valid_1_a_1"], [ref], [pred], gt)
    f = res["findings"].set_index("kind")
    assert set(f["grounding"]) == {"whole report"}
    # the nodule, the effusion (wrong side), no cardiomegaly
    assert list(f["reported"]) == [True, True, False]
    assert (f.loc["pleural_effusion", "side_ok"], f.loc["pleural_effusion", "size_ok"]) == (False, True)
    assert res["summary"]["false_findings"] == 0


def _filled(template: str) -> str:
    return template.format(size_mm=14, lobe="middle lobe of the right lung", side="left")


@pytest.mark.parametrize("kind", sorted(ABNORMAL))
def test_every_benchmark_sentence_is_read_with_its_attributes(kind):
    base = "pleural_effusion" if kind == "pleural_effusion_bilateral" else kind
    side = "bilateral" if kind == "pleural_effusion_bilateral" else "left"
    finding = {"kind": base, "params": {"size_mm": 14, "lobe": "middle lobe of the right lung", "side": side}}
    from reg2rg_lib.metrics.grounded import attribute_checks

    for template in ABNORMAL[kind]:
        said = positive_sentences(_filled(template), base)
        assert said, f"{kind}: {template!r} not read as a mention"
        checks = attribute_checks(finding, said)
        assert set(checks) == set(carried_attributes(base)) and all(checks.values()), (template, checks)


def test_normal_paragraphs_invent_nothing():
    for region, texts in NORMAL.items():
        for text in texts:
            for kind, home in HOME_REGION.items():
                if home == region:
                    assert not positive_sentences(text, kind), (region, text, kind)


def test_reading_helpers():
    assert read_lobe("in the right lower lobe") == ("lower", "right")
    assert read_lobe("the upper lobe of the left lung") == ("upper", "left")
    assert read_side("on both sides") == "bilateral" and read_side("left and right") == "bilateral"
    assert read_side("a right pleural effusion") == "right" and read_side("effusion") is None
    assert read_sizes("3 cm and 12.5 mm") == [30.0, 12.5]
    assert set(KIND_PATTERNS) == set(HOME_REGION)


def test_cli_grounded_writes_table8_inputs(tmp_path, capsys):
    data = _manifest(tmp_path)
    pred = _predictions(tmp_path)
    assert main(["evaluate", "grounded", "--predictions", str(pred), "--data", str(data),
                 "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert (
        "grounded recall 0.7500, attribute accuracy 0.5000 (4 checks), false findings per case 1.0000" in out
    )
    by_kind = pd.read_csv(tmp_path / "o" / "grounded_by_kind.csv")
    assert by_kind.iloc[-1]["kind"] == "all" and by_kind.iloc[-1]["reported"] == 3
    assert json.loads((tmp_path / "o" / "grounded.json").read_text())["grounded_recall"] == 0.75
    assert len(pd.read_csv(tmp_path / "o" / "grounded_findings.csv")) == 4


def test_manifest_is_found_beside_or_inside(tmp_path):
    data = _manifest(tmp_path)
    assert find_manifest(data) == data / "manifest.json"
    assert find_manifest(data / "manifest.json") == data / "manifest.json"
    (tmp_path / "profile" / "data").mkdir(parents=True)
    (tmp_path / "profile" / "data" / "manifest.json").write_text((data / "manifest.json").read_text())
    assert find_manifest(tmp_path / "profile") == tmp_path / "profile" / "data" / "manifest.json"


def test_grounded_bad_inputs_are_one_line_errors(tmp_path, capsys):
    pred = _predictions(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "manifest.json").write_text(json.dumps({"dataset": "CT-RATE", "cases": []}))
    with pytest.raises(BadInputError, match="no benchmark manifest with ground truth"):
        read_ground_truth(tmp_path / "real")
    with pytest.raises(BadInputError, match="has no `ground_truth` section"):
        read_ground_truth(tmp_path / "real" / "manifest.json")
    other = _manifest(tmp_path, {"train_9_a_1": []})
    with pytest.raises(BadInputError, match=re.escape(f"{pred}: none of its 2 case id(s)")):
        grounded_findings(["valid_1_a_1", "valid_2_a_1"], ["", ""], ["", ""], read_ground_truth(other),
                          source=str(pred))
    assert main(["evaluate", "grounded", "--predictions", str(pred), "--data", str(tmp_path / "absent"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tmp_path / 'absent'}: not found; give the embedded benchmark's folder or its manifest.json"
    )
