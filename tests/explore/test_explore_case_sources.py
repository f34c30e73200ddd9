"""Loading what the explorer shows: a RadGenome-layout dataset (reoriented to RAS+) and a run's prediction
files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from reg2rg_lib.data.layout import case_id, mask_dirname, mask_filename, volume_relpath
from reg2rg_lib.data.nifti import write_nifti
from reg2rg_lib.data.sources import LayoutSource, region_report_text, to_ras
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.explore import open_dataset, open_explorer, run_predictions
from reg2rg_lib.explore.case_sources import as_prediction_files
from reg2rg_lib.infer.predictions import PRED_COLUMNS
from reg2rg_lib.paths import RunPaths

#: Stored L-A-S (like the embedded CT): voxel i runs toward the patient's left, 2 mm x 2 mm x 5 mm.
LAS = np.diag([-2.0, 2.0, 5.0, 1.0])


def _write_case(root, name, regions=("heart", "lung")):
    vol = np.full((10, 8, 4), -1000, np.int16)
    vol[0, :, :] = 300  # stored i=0 is the patient's right side
    write_nifti(root / volume_relpath(name), vol, LAS)
    for k, region in enumerate(regions):
        m = np.zeros(vol.shape, np.uint8)
        m[2 + 3 * k : 4 + 3 * k, 2:6, 1 + k] = 1
        write_nifti(root / "masks" / mask_dirname(name) / mask_filename(region), m, LAS)


@pytest.fixture
def benchmark(tmp_path):
    out = tmp_path / "run"
    root = RunPaths(out).data
    for name in ("train_1_a_1", "valid_2_a_1", "valid_1_a_1"):
        _write_case(root, name)
    with open(root / "valid_region_report.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Volumename", "Anatomy", "Sentence"])
        w.writerow(["valid_1_a_1.nii.gz", "lung", "Clear lungs."])
        w.writerow(["valid_1_a_1.nii.gz", "heart", "Normal heart."])
        w.writerow(["valid_1_a_1.nii.gz", "", "Normal heart. Clear lungs."])
    return out


def test_to_ras_flips_stored_left_to_right_axes():
    data = np.zeros((3, 2, 2))
    data[0] = 1  # stored first along i (the patient's right for an L-A-S affine)
    ras, spacing = to_ras(data, LAS, (2.0, 2.0, 5.0))
    assert ras[-1].all() and not ras[0].any()  # in RAS+ the patient's right is the high-x end
    swapped, sp = to_ras(
        np.zeros((3, 4, 5)),
        np.array([[0, 0, 5.0, 0], [2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]]),
        (2.0, 3.0, 5.0),
    )
    assert swapped.shape == (5, 3, 4) and sp == (5.0, 2.0, 3.0)  # stored axis 2 is x, 0 is y, 1 is z


def test_layout_source_lists_test_cases_first_and_reads_reports(benchmark):
    src = open_dataset(RunPaths(benchmark).data)
    assert isinstance(src, LayoutSource)
    assert src.names() == ["valid_1_a_1", "valid_2_a_1", "train_1_a_1"]
    volume, masks, spacing, gt = src.load("valid_1_a_1")
    assert volume.shape == (10, 8, 4) and spacing == (2.0, 2.0, 5.0)
    assert volume[-1].min() == 300 and volume[0].max() == -1000  # reoriented to RAS+
    assert list(masks) == ["heart", "lung"] and masks["heart"][-4:-2, 2:6, 1].all()
    assert gt == "The region 0 is heart: Normal heart. The region 1 is lung: Clear lungs."
    assert src.load("valid_2_a_1")[3] == ""  # no report rows for this case


def test_open_explorer_defaults_to_the_run_and_says_when_predictions_are_missing(benchmark):
    ex = open_explorer(benchmark)
    assert ex.case.name == "valid_1_a_1" and ex.columns == ["gt"]
    assert "No predictions" in ex.notice.value and "no predictions file" in ex.notice.value
    assert "no predictions found" in ex.data.describe()


def test_open_explorer_compares_the_runs_that_have_predictions(benchmark):
    paths = RunPaths(benchmark)
    for run, pred in (
        ("full", "The region 0 is heart: Enlarged heart."),
        ("no_rra", "The region 0 is lung: Clear."),
    ):
        paths.run(run).mkdir(parents=True)
        with open(paths.run(run) / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(PRED_COLUMNS)
            w.writerow(["valid_2_a_1", "q", "The region 0 is heart: Normal heart.", pred])
    # what notebook 04 writes for a run (Evaluation's per-sample file)
    (paths.run("full") / "metrics").mkdir()
    (paths.run("full") / "metrics" / "nlg_per_sample.csv").write_text(
        "id,BLEU-4,METEOR\nvalid_2_a_1,0.4321,0.5\n"
    )
    assert list(run_predictions(benchmark, ["full", "no_rra", "no_lfd"])) == ["full", "no_rra"]
    ex = open_explorer(benchmark)
    assert ex.case.name == "valid_2_a_1"  # the first case with predictions
    # by default the ground truth against full only: no_rra names no region, so its column would read
    # "missing"
    assert ex.columns == ["gt", "full"]
    assert open_explorer(benchmark, runs=["full", "no_rra"]).columns == ["gt", "full", "no_rra"]
    # the GT the predictions were scored on
    assert ex.case.gt_report == "The region 0 is heart: Normal heart."
    assert ex.case.scores == {"full": {"BLEU-4": 0.4321, "METEOR": 0.5}}
    assert "BLEU-4" in ex.summary.value and "0.432" in ex.summary.value


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(BadInputError, match="dataset folder not found"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no volumes"):
        open_dataset(tmp_path / "empty")


def test_prediction_file_names_and_case_ids(tmp_path):
    assert case_id("valid_1_a_1.nii.gz") == "valid_1_a_1" and case_id(1334) == "1334"
    assert case_id(" train_2_a_1.nii ") == "train_2_a_1"
    named = as_prediction_files([tmp_path / "runs" / "full" / "predictions.csv", tmp_path / "released.csv"])
    assert list(named) == ["full", "released"]
    assert as_prediction_files(None) == {} and list(as_prediction_files({"a": "x.csv"})) == ["a"]
    assert region_report_text({"lung": "Clear.", "heart": "Normal.", "breast": " "}) == (
        "The region 0 is heart: Normal. The region 1 is lung: Clear.")
