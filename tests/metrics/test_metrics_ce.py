"""metrics/ce.py: the per-case findings view (`case_findings`) shown under notebook 04's side-by-side."""

from __future__ import annotations

import pandas as pd
import pytest

from reg2rg_lib.errors import BadInputError
from reg2rg_lib.metrics.ce import case_findings
from reg2rg_lib.regions import LABELS


def _labels(tmp_path, rows: dict[str, tuple[set[str], set[str]]]):
    table = [{"AccNum": case, **{f"GT_{lab}": int(lab in gt) for lab in LABELS},
              **{f"Pred_{lab}": int(lab in pred) for lab in LABELS}} for case, (gt, pred) in rows.items()]
    path = tmp_path / "ce_labels.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    return path


def test_each_case_lists_written_missed_and_invented_findings(tmp_path):
    path = _labels(tmp_path, {"a": ({"Cardiomegaly", "Lung nodule"}, {"Cardiomegaly", "Hiatal hernia"}),
                              "b": (set(), set())})
    out = case_findings(path, ["b", "a"])
    assert list(out["case"]) == ["b", "a"]
    a = out.set_index("case").loc["a"]
    assert a["in the reference"] == "Cardiomegaly, Lung nodule" and a["written"] == "Cardiomegaly"
    assert a["missed"] == "Lung nodule" and a["invented"] == "Hiatal hernia"
    assert out.set_index("case").loc["b"].tolist() == ["-", "-", "-", "-"]


def test_a_case_not_in_the_file_names_the_file(tmp_path):
    path = _labels(tmp_path, {"a": (set(), set())})
    with pytest.raises(BadInputError, match=r"ce_labels.csv.*no row for case 'z'"):
        case_findings(path, ["z"])
