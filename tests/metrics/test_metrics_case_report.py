"""One case's report: report.json (the contract), report.md (a paragraph per region, name first), report.png."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from reg2rg_lib.data.layout import read_nifti, scan_layout, write_nifti
from reg2rg_lib.infer.generate import DecodeSettings, load_model
from reg2rg_lib.infer.report import CaseGeneration, generate_case
from reg2rg_lib.metrics.case_report import write_case_report
from reg2rg_lib.regions import REGIONS

REGION_KEYS = ["region", "paragraph", "volume_ml", "bbox_mm", "findings"]


def check_contract(report: dict, present: list[str], absent: list[str]) -> None:
    assert list(report) == ["case", "regions", "absent"]
    assert [r["region"] for r in report["regions"]] == present
    assert all(list(r) == REGION_KEYS for r in report["regions"])
    assert report["absent"] == absent


def region_paragraphs(md: str) -> list[str]:
    return [b for b in md.split("\n\n") if b.startswith("**")]


def test_report_files_from_a_generation_with_two_regions_absent(tmp_path):
    affine = np.diag([-1.5, 1.5, 3.0, 1.0])
    ct = np.full((16, 16, 8), -800.0, np.float32)
    write_nifti(tmp_path / "valid_1_a_1.nii.gz", ct, affine)
    masks = {}
    for i, region in enumerate(["heart", "lung", "pleura"]):
        m = np.zeros(ct.shape, np.uint8)
        m[2 + 4 * i: 5 + 4 * i, 3:9, 1:6] = 1
        masks[region] = m
        write_nifti(tmp_path / "seg" / f"{region}.nii.gz", m, affine)
    paragraphs = {"heart": "The heart is enlarged. No pericardial effusion.", "lung": "A nodule in the left upper lobe.",
                  "pleura": ""}
    gen = CaseGeneration("valid_1_a_1", tmp_path / "valid_1_a_1.nii.gz", tmp_path / "seg", list(paragraphs),
                         paragraphs, {r: r for r in paragraphs}, ["breast", "thyroid"], "text", "prompt", "greedy")
    files = write_case_report(gen, tmp_path / "out")
    report = json.loads(files["json"].read_text())
    check_contract(report, ["heart", "lung", "pleura"], ["breast", "thyroid"])
    by = {r["region"]: r for r in report["regions"]}
    assert by["heart"]["findings"] == ["Cardiomegaly"]  # the rule labeler; the negated effusion is not a finding
    assert by["lung"]["findings"] == ["Lung nodule"] and by["pleura"]["findings"] == []
    assert by["heart"]["volume_ml"] == pytest.approx(3 * 6 * 5 * 1.5 * 1.5 * 3.0 / 1000, abs=1e-3)
    # x runs right-to-left (negative spacing): voxels 2..4 lie between world x = -1.5 * 4.5 and -1.5 * 1.5
    assert by["heart"]["bbox_mm"] == [[-6.75, 3.75, 1.5], [-2.25, 12.75, 16.5]]
    paras = region_paragraphs(files["md"].read_text())
    assert [p.split("**")[1] for p in paras] == ["heart", "lung", "pleura"]
    assert paras[0] == "**heart**: The heart is enlarged. No pericardial effusion. _Findings: Cardiomegaly._"
    assert "breast, thyroid" in files["md"].read_text()
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    inputs = json.loads(files["inputs"].read_text())
    assert inputs["ct"] == str(tmp_path / "valid_1_a_1.nii.gz")


def test_text_tied_to_no_region_is_quoted_in_the_markdown(tmp_path):
    affine = np.eye(4)
    write_nifti(tmp_path / "valid_2_a_1.nii.gz", np.zeros((6, 6, 4), np.float32), affine)
    lung = np.zeros((6, 6, 4), np.uint8)
    lung[1:3, 1:3, 1:3] = 1
    write_nifti(tmp_path / "seg" / "lung.nii.gz", lung, affine)
    gen = CaseGeneration("valid_2_a_1", tmp_path / "valid_2_a_1.nii.gz", tmp_path / "seg", ["lung"], {"lung": ""},
                         {"lung": ""}, [r for r in REGIONS if r != "lung"], "Clear lungs without prefixes.", "q", "g")
    md = write_case_report(gen, tmp_path / "out")["md"].read_text()
    assert region_paragraphs(md) == ["**lung**: (the model wrote no paragraph for this region)"]
    assert "> Clear lungs without prefixes." in md


@pytest.mark.slow
def test_report_of_a_trained_model_on_a_case_with_two_regions_removed(smoke, trained, tmp_path):
    layout = scan_layout(smoke.data)
    name = layout.names("test")[0]
    seg = tmp_path / f"seg_{name}"
    shutil.copytree(layout.mask_dirs[name], seg)
    present = [r for r in REGIONS if (seg / f"{r}.nii.gz").is_file()]
    removed = present[1:3]
    for r in removed:
        (seg / f"{r}.nii.gz").unlink()
    model = load_model(trained, device="cpu")
    gen = generate_case(model, layout.volumes[name], seg, decode=DecodeSettings(max_new_tokens=24))
    kept = [r for r in present if r not in removed]
    assert gen.regions == kept and gen.absent == [r for r in REGIONS if r not in kept]
    assert gen.question.count("The region ") == len(kept)  # only the kept regions go into the prompt
    files = write_case_report(gen, tmp_path / "out")
    report = json.loads(files["json"].read_text())
    check_contract(report, kept, gen.absent)
    assert set(removed) <= set(report["absent"])
    assert len(region_paragraphs(files["md"].read_text())) == len(kept)
    vol = read_nifti(layout.volumes[name])
    lung = read_nifti(seg / "lung.nii.gz", kind="mask").data
    voxel_ml = abs(np.linalg.det(vol.affine[:3, :3])) / 1000
    assert {r["region"]: r for r in report["regions"]}["lung"]["volume_ml"] == pytest.approx(lung.sum() * voxel_ml,
                                                                                            abs=1e-3)
    assert files["png"].is_file()
