"""The explorer opens a report folder of `reg2rg report` (notebook 07's `report_dir`, written by notebook
08)."""

from __future__ import annotations

import numpy as np
import pytest

from reg2rg_lib.data.nifti import write_nifti
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.explore import open_explorer
from reg2rg_lib.infer.report import CaseGeneration
from reg2rg_lib.report.case_report import write_case_report


def test_open_explorer_on_a_report_folder(tmp_path):
    affine = np.diag([-2.0, 2.0, 4.0, 1.0])  # stored LAS, shown RAS+
    ct = np.linspace(-1000, 200, 12 * 10 * 6, dtype=np.float32).reshape(12, 10, 6)
    write_nifti(tmp_path / "valid_7_a_1.nii.gz", ct, affine)
    heart = np.zeros(ct.shape, np.uint8)
    heart[1:4, 2:6, 1:5] = 1
    write_nifti(tmp_path / "seg" / "heart.nii.gz", heart, affine)
    text = "The region 0 is heart: The heart is enlarged."
    gen = CaseGeneration(
        "valid_7_a_1",
        tmp_path / "valid_7_a_1.nii.gz",
        tmp_path / "seg",
        ["heart"],
        {"heart": "The heart is enlarged."},
        {"heart": "heart"},
        ["lung"],
        text,
        "q",
        "greedy",
    )
    write_case_report(gen, tmp_path / "report")
    explorer = open_explorer(tmp_path / "unused", report_dir=tmp_path / "report")
    case = explorer.case
    assert case.name == "valid_7_a_1" and list(case.masks) == ["heart"]
    assert case.predictions == {"report": text}
    assert np.array_equal(case.masks["heart"], heart[::-1].astype(bool))  # x flipped to RAS+
    with pytest.raises(BadInputError, match="not a report folder"):
        open_explorer(tmp_path, report_dir=tmp_path / "seg")
