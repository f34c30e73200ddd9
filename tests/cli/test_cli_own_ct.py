"""`reg2rg import-ct`, `reg2rg regions`, `reg2rg report`: the user's path, end to end, through the command line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from reg2rg_lib.cli import main as cli_main
from reg2rg_lib.data.importer import write_dicom_series
from reg2rg_lib.data.layout import volume_relpath, write_nifti
from reg2rg_lib.env.assets import find_ct_source
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
    assert cli_main(["regions", "--from", "totalsegmentator", str(seg), "--ct", str(ct), "--out", str(masks)]) == 0
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
    assert cli_main(["report", "--checkpoint", str(trained), "--ct", str(ct), "--regions",
                     str(tmp_path / "masks" / f"seg_{NAME}"), "--out", str(tmp_path / "rep"), "--profile", "smoke"]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["case"] == NAME and "breast" in report["absent"]
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"report.md", "report.json", "report.png"}
    assert "absent: " in capsys.readouterr().out
