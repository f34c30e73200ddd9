"""`reg2rg import-ct`, `reg2rg regions`, `reg2rg report`: the user's path, end to end, through the command
line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from reg2rg_lib.cli import main as cli_main
from reg2rg_lib.data.importer import write_dicom_series
from reg2rg_lib.data.layout import volume_relpath
from reg2rg_lib.data.nifti import write_nifti
from reg2rg_lib.env.assets import find_ct_source
from reg2rg_lib.infer.predictions import PRED_COLUMNS
from reg2rg_lib.io import write_csv_atomic
from reg2rg_lib.regions import REGIONS

NAME = "valid_9001_a_1"


@pytest.fixture()
def dicom_and_labels(tmp_path):
    """The benchmark's source CT as a DICOM series and its TotalSegmentator labels, both every 8th voxel."""
    src = find_ct_source()
    ct = nib.load(src.volume).slicer[::8, ::8, ::4]
    labels = nib.load(src.labels).slicer[::8, ::8, ::4]
    write_dicom_series(np.asarray(ct.get_fdata(), np.float32), ct.affine, tmp_path / "dicom")
    write_nifti(tmp_path / "seg.nii.gz", np.asarray(labels.dataobj).astype(np.uint8), labels.affine)
    return tmp_path / "dicom", tmp_path / "seg.nii.gz"


def test_import_and_regions_commands(dicom_and_labels, tmp_path, capsys):
    dicom, seg = dicom_and_labels
    assert cli_main(["import-ct", str(dicom), "--out", str(tmp_path / "data"), "--name", NAME]) == 0
    ct = tmp_path / "data" / volume_relpath(NAME)
    assert ct.is_file() and f"{NAME}: 64x64x34 voxels" in capsys.readouterr().out
    masks = tmp_path / "data" / "valid_region_mask"
    assert (
        cli_main(["regions", "--from", "totalsegmentator", str(seg), "--ct", str(ct), "--out", str(masks)])
        == 0
    )
    out = capsys.readouterr().out
    written = sorted(p.name[:-7] for p in (masks / f"seg_{NAME}").glob("*.nii.gz"))
    info = json.loads((masks / f"seg_{NAME}" / "regions.json").read_text())
    assert written == [r for r in REGIONS if r not in info["absent"]] and "lung" in written
    assert f"{len(written)} region(s)" in out and info["resampling"] == "same grid"


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["import-ct", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--name", NAME]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'empty'}: empty folder (no files)\n"
    assert cli_main(["report", "--ct", "x.nii.gz", "--regions", "r", "--out", "o"]) == 2
    assert "give exactly one of --checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_report_command_end_to_end(dicom_and_labels, trained, tmp_path, capsys):
    dicom, seg = dicom_and_labels
    assert cli_main(["import-ct", str(dicom), "--out", str(tmp_path / "data"), "--name", NAME]) == 0
    ct = tmp_path / "data" / volume_relpath(NAME)
    assert cli_main(["regions", "--from", "totalsegmentator", str(seg), "--ct", str(ct), "--out",
                     str(tmp_path / "masks")]) == 0
    (tmp_path / "masks" / f"seg_{NAME}" / "breast.nii.gz").unlink(missing_ok=True)
    assert (
        cli_main(
            [
                "report",
                "--checkpoint",
                str(trained),
                "--ct",
                str(ct),
                "--regions",
                str(tmp_path / "masks" / f"seg_{NAME}"),
                "--out",
                str(tmp_path / "rep"),
                "--profile",
                "smoke",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["case"] == NAME and "breast" in report["absent"]
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"report.md", "report.json", "report.png"}
    assert "absent: " in capsys.readouterr().out


def test_report_command_says_which_region_got_no_paragraph(tmp_path, monkeypatch, capsys):
    """A CT with only bone and lung masks, and a model that heads slot 0 (bone) "lung" and leaves slot 1
    (lung)
    empty (what was seen on a real CT): the report says so in words, stderr names the region and the case,
    exit 0. The model is replaced by the text it wrote; prep, the slot assignment and the report files are the
    real ones."""
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    write_nifti(tmp_path / f"{NAME}.nii.gz", np.full((24, 24, 12), -700.0, np.float32), affine)
    for i, region in enumerate(["bone", "lung"]):
        m = np.zeros((24, 24, 12), np.uint8)
        m[2 + 10 * i: 10 + 10 * i, 4:20, 2:10] = 1
        write_nifti(tmp_path / "seg" / f"{region}.nii.gz", m, affine)
    text = "The region 0 is lung: A nodule in the left upper lobe. The region 1 is lung:  "
    seen = {}

    def fake_generation(model, cache, out_csv, **kwargs):
        seen["regions"] = cache.cases("test")[0].regions
        row = {"AccNum": NAME, "Question": "q", "GT_combined_report": "-", "Pred_combined_report": text}
        return write_csv_atomic(out_csv, PRED_COLUMNS, [row], lineterminator="\n")

    model = SimpleNamespace(config=SimpleNamespace(image_size=(16, 16, 8)),
                            embedding_layer=SimpleNamespace(vision_encoder=None))  # no ViT: no feature cache
    monkeypatch.setattr("reg2rg_lib.infer.generate.load_model", lambda *a, **k: model)
    monkeypatch.setattr("reg2rg_lib.infer.report.generate_predictions", fake_generation)
    assert (
        cli_main(
            [
                "report",
                "--checkpoint",
                "unused",
                "--ct",
                str(tmp_path / f"{NAME}.nii.gz"),
                "--regions",
                str(tmp_path / "seg"),
                "--out",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    )
    assert seen["regions"] == ["bone", "lung"]  # the prompt's slots 0 and 1
    err = capsys.readouterr().err.splitlines()
    assert (
        f"[report] warning: case {NAME}: the model wrote no paragraph for lung (slot 1); the report says "
        "so in its place"
    ) in err
    assert any("slot 0 (bone) named lung" in line and NAME in line for line in err)
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    bone, lung = report["regions"]
    assert bone["paragraph"] == "A nodule in the left upper lobe." and bone["named"] == "lung"
    assert lung["paragraph"] is None and lung["missing"] and "no paragraph" in lung["note"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (
        "**lung** _(slot 1: its heading has no text)_: (the model wrote no paragraph for this region)" in md
    )
    assert "**bone** _(slot 0: the model named it lung (lung is slot 1))_: A nodule" in md
