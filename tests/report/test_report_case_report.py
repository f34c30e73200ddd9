"""One case's report: report.json (the contract), report.md (a paragraph per region, name first),
report.png."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from reg2rg_lib.data.layout import scan_layout
from reg2rg_lib.data.nifti import read_nifti, write_nifti
from reg2rg_lib.infer.generate import DecodeSettings, load_model
from reg2rg_lib.infer.report import CaseGeneration, assign_paragraphs, generate_case
from reg2rg_lib.regions import REGIONS
from reg2rg_lib.report.case_report import NO_PARAGRAPH, UNPLACED_TITLE, write_case_report

REGION_KEYS = ["region", "slot", "named", "paragraph", "missing", "note", "volume_ml", "bbox_mm", "findings"]


def check_contract(report: dict, present: list[str], absent: list[str]) -> None:
    assert list(report) == ["case", "regions", "absent", "unplaced", "warnings"]
    assert [r["region"] for r in report["regions"]] == present
    assert [r["slot"] for r in report["regions"]] == list(range(len(present)))
    assert all(list(r) == REGION_KEYS for r in report["regions"])
    assert report["absent"] == absent
    for r in report["regions"]:  # never an empty string passed on as a paragraph
        assert r["missing"] == (r["paragraph"] is None) and (r["paragraph"] is None or r["paragraph"].strip())
        assert not r["missing"] or (r["note"] and "the model wrote no paragraph for this region" in r["note"])


def region_paragraphs(md: str) -> list[str]:
    return [b.strip() for b in md.split("\n\n") if b.startswith("**")]


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
    paragraphs = {
        "heart": "The heart is enlarged. No pericardial effusion.",
        "lung": "A nodule in the left upper lobe.",
        "pleura": "",
    }
    gen = CaseGeneration(
        "valid_1_a_1",
        tmp_path / "valid_1_a_1.nii.gz",
        tmp_path / "seg",
        list(paragraphs),
        paragraphs,
        {r: r for r in paragraphs},
        ["breast", "thyroid"],
        "text",
        "prompt",
        "greedy",
    )
    files = write_case_report(gen, tmp_path / "out")
    report = json.loads(files["json"].read_text())
    check_contract(report, ["heart", "lung", "pleura"], ["breast", "thyroid"])
    by = {r["region"]: r for r in report["regions"]}
    # the rule labeler; the negated effusion is not a finding
    assert by["heart"]["findings"] == ["Cardiomegaly"]
    assert by["lung"]["findings"] == ["Lung nodule"] and by["pleura"]["findings"] == []
    assert by["pleura"]["paragraph"] is None and by["pleura"]["missing"] and by["heart"]["note"] is None
    assert (
        by["pleura"]["note"]
        == "slot 2 (pleura): the model wrote no paragraph for this region (its heading has no text)"
    )
    assert report["warnings"] == [
        "the model wrote no paragraph for pleura (slot 2); the report says so in its place"
    ]
    assert by["heart"]["volume_ml"] == pytest.approx(3 * 6 * 5 * 1.5 * 1.5 * 3.0 / 1000, abs=1e-3)
    # x runs right-to-left (negative spacing): voxels 2..4 lie between world x = -1.5 * 4.5 and -1.5 * 1.5
    assert by["heart"]["bbox_mm"] == [[-6.75, 3.75, 1.5], [-2.25, 12.75, 16.5]]
    paras = region_paragraphs(files["md"].read_text())
    assert [p.split("**")[1] for p in paras] == ["heart", "lung", "pleura"]
    assert paras[0] == "**heart**: The heart is enlarged. No pericardial effusion. _Findings: Cardiomegaly._"
    assert paras[2] == f"**pleura** _(slot 2: its heading has no text)_: {NO_PARAGRAPH}"
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
    gen = CaseGeneration(
        "valid_2_a_1",
        tmp_path / "valid_2_a_1.nii.gz",
        tmp_path / "seg",
        ["lung"],
        {"lung": ""},
        {"lung": ""},
        [r for r in REGIONS if r != "lung"],
        "Clear lungs without prefixes.",
        "q",
        "g",
    )
    md = write_case_report(gen, tmp_path / "out")["md"].read_text()
    assert region_paragraphs(md) == [
        f'**lung** _(slot 0: no heading "The region 0 is ...:" for this slot)_: {NO_PARAGRAPH}'
    ]
    assert "> Clear lungs without prefixes." in md


def bone_and_lung_case(tmp_path, text: str) -> CaseGeneration:
    """A CT with only bone and lung masks (prompt slot 0: bone, slot 1: lung) and what the model wrote for
    it."""
    affine = np.eye(4)
    write_nifti(tmp_path / "valid_3_a_1.nii.gz", np.zeros((8, 8, 4), np.float32), affine)
    for i, region in enumerate(["bone", "lung"]):
        m = np.zeros((8, 8, 4), np.uint8)
        m[1 + 3 * i: 3 + 3 * i, 1:5, 1:3] = 1
        write_nifti(tmp_path / "seg" / f"{region}.nii.gz", m, affine)
    slots = assign_paragraphs(text, ["bone", "lung"])
    absent = [r for r in REGIONS if r not in ("bone", "lung")]
    return CaseGeneration("valid_3_a_1", tmp_path / "valid_3_a_1.nii.gz", tmp_path / "seg", ["bone", "lung"],
                          slots.paragraphs, slots.named, absent, text, "q", "greedy", [], slots.unplaced)


def test_the_lung_sentence_in_the_bone_slot_and_an_empty_lung_paragraph_are_said_in_words(tmp_path):
    # the report seen on a real CT: the model headed slot 0 (bone) "lung" and left slot 1 (lung) empty
    text = "The region 0 is lung: A nodule in the left upper lobe. The region 1 is lung: "
    files = write_case_report(bone_and_lung_case(tmp_path, text), tmp_path / "out")
    report = json.loads(files["json"].read_text())
    check_contract(report, ["bone", "lung"], [r for r in REGIONS if r not in ("bone", "lung")])
    bone, lung = report["regions"]
    assert bone["paragraph"] == "A nodule in the left upper lobe." and bone["named"] == "lung"
    assert bone["note"] == "slot 0 (bone): the model named it lung (lung is slot 1)" and not bone["missing"]
    assert (
        lung["paragraph"] is None and lung["missing"] and lung["named"] == "lung" and lung["findings"] == []
    )
    assert (
        lung["note"]
        == "slot 1 (lung): the model wrote no paragraph for this region (its heading has no text)"
    )
    assert report["unplaced"] == []
    assert report["warnings"] == [
        "the model wrote no paragraph for lung (slot 1); the report says so in its place",
        "the model's heading names another organ than the slot's region: slot 0 (bone) named lung; each "
        "paragraph is shown under its slot's region",
    ]
    md = files["md"].read_text()
    assert region_paragraphs(md) == [
        "**bone** _(slot 0: the model named it lung (lung is slot 1))_: A nodule in the left upper lobe. "
        "_Findings: Lung nodule._",
        f"**lung** _(slot 1: its heading has no text)_: {NO_PARAGRAPH}"]
    assert "_Warning: the model wrote no paragraph for lung (slot 1); the report says so in its place._" in md
    assert UNPLACED_TITLE not in md and files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_heading_an_organ_not_in_the_ct_and_text_for_no_slot(tmp_path):
    text = ("The region 0 is heart: The heart is enlarged. The region 3 is pleura: A small pleural effusion. "
            "The other report is: {mediastinum: No lymphadenopathy.}")
    files = write_case_report(bone_and_lung_case(tmp_path, text), tmp_path / "out")
    report = json.loads(files["json"].read_text())
    check_contract(report, ["bone", "lung"], [r for r in REGIONS if r not in ("bone", "lung")])
    bone, lung = report["regions"]
    assert bone["paragraph"] == "The heart is enlarged." and bone["findings"] == ["Cardiomegaly"]
    assert bone["note"] == "slot 0 (bone): the model named it heart (heart is not among this CT's regions)"
    assert lung["paragraph"] is None and lung["named"] is None
    assert lung["note"] == ('slot 1 (lung): the model wrote no paragraph for this region (no heading '
                            '"The region 1 is ...:" for this slot)')
    assert [(u["slot"], u["named"], u["paragraph"]) for u in report["unplaced"]] == [
        (3, "pleura", "A small pleural effusion."), (None, "mediastinum", "No lymphadenopathy.")]
    assert report["warnings"][1].endswith(
        "slot 0 (bone) named heart (not in this CT); each paragraph is shown under its slot's region"
    )
    assert (
        report["warnings"][2]
        == f'2 paragraphs tied to no region of this CT, listed under "{UNPLACED_TITLE}" in report.md'
    )
    md = files["md"].read_text()
    assert region_paragraphs(md)[0].startswith(
        "**bone** _(slot 0: the model named it heart (heart is not among this CT's regions))_: The heart "
        "is enlarged."
    )
    tail = md.split(f"## {UNPLACED_TITLE}")[1]
    assert (
        "- _slot 3 is not in the prompt (its slots are 0..1); the model named it pleura, not among this CT's "
        "regions_: A small pleural effusion."
    ) in tail
    assert "No lymphadenopathy." in tail and "> " not in md  # the text is listed, not quoted again as raw


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
    assert {r["region"]: r for r in report["regions"]}["lung"]["volume_ml"] == pytest.approx(
        lung.sum() * voxel_ml, abs=1e-3
    )
    assert files["png"].is_file()
