"""The embedded benchmark: exact RadGenome layout, same seed -> same bytes, labels = reports = inserted
findings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from reg2rg_lib.data.layout import load_case, read_labels, read_region_reports, scan_layout
from reg2rg_lib.data.manifest import index_dataset
from reg2rg_lib.data.synth.anatomy import FINE, FINE_TO_REGION_LUT, build_atlas
from reg2rg_lib.data.synth.build import synthesize
from reg2rg_lib.data.synth.generator import make_case
from reg2rg_lib.data.synth.reports import ABNORMAL, LABEL_KEYWORDS, NORMAL
from reg2rg_lib.regions import LABELS, REGIONS

SHAPE = (64, 64, 16)  # the smoke profile's grid


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "benchmark"
    synthesize(out, 5, 2, seed=3, shape=SHAPE, workers=1, progress=False)
    return out


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_exact_radgenome_layout(bench):
    assert (bench / "train_preprocessed/train_1/train_1a/train_1_a_1.nii.gz").is_file()
    assert (bench / "valid_preprocessed/valid_2/valid_2a/valid_2_a_1.nii.gz").is_file()
    seg = bench / "train_region_mask/seg_train_1_a_1"
    assert (seg / "trachea and bronchie.nii.gz").is_file()  # the dataset's own spelling, spaces included
    for name in ("train_region_report.csv", "valid_region_report.csv", "train_predicted_labels.csv",
                 "valid_predicted_labels.csv"):
        assert (bench / name).is_file(), name
    reports = read_region_reports(bench / "train_region_report.csv")
    assert list(reports.columns) == ["Volumename", "Anatomy", "Sentence"]
    first = reports[reports["Volumename"] == "train_1_a_1.nii.gz"]
    assert first["Anatomy"].iloc[0] == "", "the whole-report row (empty Anatomy) comes first"
    assert set(first["Anatomy"].iloc[1:]) <= set(REGIONS)
    labels = read_labels(bench / "valid_predicted_labels.csv")
    assert list(labels.columns) == ["VolumeName", *LABELS] and len(labels) == 2


def test_layout_round_trip_matches_the_generator(bench):
    layout = scan_layout(bench)
    assert layout.names("train") == [f"train_{i}_a_1" for i in range(1, 6)]
    assert layout.names("test") == ["valid_1_a_1", "valid_2_a_1"]
    case = load_case(bench, "train_2_a_1", layout)
    again = make_case(build_atlas(SHAPE), "train_2_a_1", "train", 3, 1)
    np.testing.assert_array_equal(case.volume, again.ct.astype(np.float32))
    assert list(case.masks) == list(again.masks) and list(case.masks) == [
        r for r in REGIONS if r in case.masks
    ]
    for region, mask in case.masks.items():
        np.testing.assert_array_equal(mask, again.masks[region].astype(bool))
    assert case.reports == again.paragraphs and case.report == again.report and case.labels == again.labels
    np.testing.assert_allclose(case.spacing, build_atlas(SHAPE).spacing, rtol=1e-5)


def test_same_seed_same_bytes_and_another_seed_differs(bench, tmp_path):
    again = tmp_path / "again"
    synthesize(again, 5, 2, seed=3, shape=SHAPE, workers=1, progress=False)
    assert _digests(again) == _digests(bench)
    other = tmp_path / "other"
    synthesize(other, 1, 1, seed=4, shape=SHAPE, workers=1, progress=False)
    vol = "train_preprocessed/train_1/train_1a/train_1_a_1.nii.gz"
    assert _digests(other)[vol] != _digests(bench)[vol]


def test_rerun_with_fewer_cases_removes_stale_ones(tmp_path):
    out = tmp_path / "b"
    synthesize(out, 3, 1, seed=0, shape=SHAPE, progress=False)
    synthesize(out, 2, 1, seed=0, shape=SHAPE, progress=False)
    assert scan_layout(out).names() == ["train_1_a_1", "train_2_a_1", "valid_1_a_1"]
    assert len(index_dataset(out).cases) == 3


def test_labels_agree_with_reports_and_inserted_findings(bench):
    man = json.loads((bench / "manifest.json").read_text())
    truth = man["ground_truth"]
    index = index_dataset(bench)
    assert len(index.cases) == 7 and not index.skipped
    for case in index.cases:
        findings = truth[case.name]["findings"]
        expected = {f["label"] for f in findings if f["label"]}
        assert {k for k, v in case.labels.items() if v} == expected, case.name
        for f in findings:
            assert f["region"] in case.reports
            if f["label"]:
                assert LABEL_KEYWORDS[f["label"]] in case.reports[f["region"]].lower(), (case.name, f)
        for region, text in case.reports.items():
            if not any(f["region"] == region for f in findings):
                assert text in NORMAL[region], (case.name, region, text)
        assert case.report.count(".") == sum(t.count(".") for t in case.reports.values())


def test_findings_are_really_in_the_image():
    """Each kind of inserted finding changes the voxels or masks the way its sentence says."""
    atlas = build_atlas(SHAPE)
    cases = [make_case(atlas, f"train_{i}_a_1", "train", 11, i) for i in range(40)]
    kinds = {f.kind for c in cases for f in c.findings}
    assert len({f.label for c in cases for f in c.findings if f.label}) >= 10, "at least 10 of the 18 labels"

    def heart_voxels(c):
        return int(c.masks["heart"].sum())

    big = [heart_voxels(c) for c in cases if any(f.kind == "cardiomegaly" for f in c.findings)]
    normal = [heart_voxels(c) for c in cases if not any(f.kind in ("cardiomegaly", "pericardial_effusion")
                                                          for f in c.findings)]
    assert big and np.median(big) > 1.4 * np.median(normal)
    assert "pleural_effusion" in kinds
    for c in cases:
        for f in c.findings:
            if f.kind == "pleural_effusion":  # fluid claims pleural voxels: the pleura mask grows
                assert c.masks["pleura"].sum() > np.median([d.masks["pleura"].sum() for d in cases])
            if f.kind == "sternotomy_wires":
                assert c.ct.max() > 1200  # metal-bright voxels exist


def test_region_lookup_covers_every_fine_class():
    assert FINE_TO_REGION_LUT.shape == (len(FINE),)
    assert {int(v) for v in FINE_TO_REGION_LUT} == set(range(len(REGIONS) + 1))
    assert set(ABNORMAL) >= {"lung_nodule", "pleural_effusion", "cardiomegaly"}


def test_synth_and_prepare_commands(tmp_path, capsys):
    from reg2rg_lib.cli import main

    out = tmp_path / "b"
    assert (
        main(["synth", "--out", str(out), "--cases", "5", "--seed", "2", "--profile", "smoke", "--quiet"])
        == 0
    )
    assert "3 train + 1 validation + 1 test cases" in capsys.readouterr().out
    assert scan_layout(out).names() == [
        "train_1_a_1",
        "train_2_a_1",
        "train_3_a_1",
        "train_4_a_1",
        "valid_1_a_1",
    ]
    assert scan_layout(out).names("validation") == ["train_4_a_1"]
    assert json.loads((out / "manifest.json").read_text())["generator"]["seed"] == 2
    assert (
        main(["prepare", "--data", str(out), "--out", str(tmp_path / "c"), "--profile", "smoke", "--quiet"])
        == 0
    )
    assert "3 train + 1 validation + 1 test cases (5 computed, 0 reused" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["bench", "preprocess", "--help"])
    assert stop.value.code == 0
