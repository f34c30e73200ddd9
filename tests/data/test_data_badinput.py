"""Every kind of bad input gets one clear line naming the file and the problem: a skip or an error, no
traceback, and never a half-written cache entry."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from reg2rg_lib.cli import main
from reg2rg_lib.data import prep
from reg2rg_lib.data.layout import mask_dirname, mask_filename, read_labels, volume_relpath
from reg2rg_lib.data.nifti import write_nifti
from reg2rg_lib.data.prep import PrepParams, load_cache, prepare
from reg2rg_lib.data.synth.build import synthesize
from reg2rg_lib.errors import BadInputError

SIZE = (16, 16, 4)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "clean"
    synthesize(out, 3, 1, seed=9, shape=(64, 64, 16), progress=False)
    return out


@pytest.fixture
def data(clean, tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(clean, d)
    return d


def _vol(data: Path, name: str) -> Path:
    return data / volume_relpath(name)


def _mask(data: Path, name: str, region: str) -> Path:
    return next(data.rglob(mask_dirname(name))) / mask_filename(region)


def _prepare(data: Path, out: Path):
    cache = prepare(data, out, PrepParams(image_size=SIZE), progress=False)
    files = sorted(p.name for p in (out / "cases").iterdir())
    assert not [f for f in files if f.startswith(".")], "no temporary files left behind"
    assert files == sorted(f"{r.name}.safetensors" for r in cache.cases()), (
        "exactly the listed cases are cached"
    )
    return cache


def _reason(cache, item: str) -> str:
    found = [s["reason"] for s in cache.skipped if s["item"] == item]
    assert found, f"{item} not among skipped: {cache.skipped}"
    assert "\n" not in found[0]
    return found[0]


@pytest.mark.parametrize("kind,expected", [
    ("truncated", "corrupt or truncated NIfTI"),
    ("corrupt", "corrupt or truncated NIfTI"),
    ("not_nifti", "not a NIfTI file"),
    ("nan", "NaN voxel"),
])
def test_bad_volume_skips_its_case(data, tmp_path, kind, expected):
    path = _vol(data, "train_2_a_1")
    payload = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(payload[: len(payload) // 2])
    elif kind == "corrupt":
        path.write_bytes(payload[:20] + bytes(range(256)) * 40)
    elif kind == "not_nifti":
        path.write_bytes(gzip.compress(b"Volumename,Anatomy,Sentence\n" * 50))
    else:
        img = nib.load(path)
        vol = np.asarray(img.dataobj, dtype=np.float32)
        vol[3, 4, 5] = np.nan
        write_nifti(path, vol, img.affine)
    cache = _prepare(data, tmp_path / "cache")
    reason = _reason(cache, "train_2_a_1")
    assert str(path) in reason and expected in reason
    assert [r.name for r in cache.cases()] == ["train_1_a_1", "train_3_a_1", "valid_1_a_1"]


@pytest.mark.parametrize("kind,expected", [
    ("missing", "mask missing"),
    ("zero_bytes", "mask file is empty (0 bytes)"),
    ("empty", "mask is empty"),
    ("grid", "does not match the volume"),
    ("truncated", "corrupt or truncated NIfTI"),
])
def test_bad_mask_drops_its_region(data, tmp_path, kind, expected):
    path = _mask(data, "train_1_a_1", "heart")
    if kind == "missing":
        path.unlink()
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "empty":
        img = nib.load(path)
        write_nifti(path, np.zeros(img.shape, np.uint8), img.affine)
    elif kind == "grid":
        img = nib.load(path)
        write_nifti(path, np.ones((8, 8, 8), np.uint8), img.affine)
    else:
        path.write_bytes(path.read_bytes()[:60])
    cache = _prepare(data, tmp_path / "cache")
    reason = _reason(cache, "train_1_a_1/heart")
    assert expected in reason and ("seg_train_1_a_1" in reason)
    rec = next(r for r in cache.cases() if r.name == "train_1_a_1")
    assert "heart" not in rec.regions and "heart" not in rec.reports
    assert cache.load("train_1_a_1")["texture"].shape[0] == len(rec.regions)


def test_bad_report_rows_are_skipped_with_reasons(data, tmp_path):
    csv = data / "train_region_report.csv"
    with open(csv, "a") as f:
        f.write('train_1_a_1.nii.gz,left kidney,"An unknown region row."\n')
        f.write('train_99_a_1.nii.gz,lung,"A row for a volume that does not exist."\n')
        f.write('train_1_a_1.nii.gz,lung,"A duplicate lung row."\n')
    cache = _prepare(data, tmp_path / "cache")
    assert "unknown region 'left kidney'" in _reason(cache, "train_region_report.csv:left kidney")
    assert "not in the dataset" in _reason(cache, "train_region_report.csv:train_99_a_1")
    assert "duplicate report row" in _reason(cache, "train_region_report.csv:train_1_a_1/lung")
    rec = next(r for r in cache.cases() if r.name == "train_1_a_1")
    assert rec.reports["lung"] != "A duplicate lung row."


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_duplicate_volume_names_are_an_error(data, tmp_path, capsys):
    dup = data / "elsewhere" / "train_1_a_1.nii.gz"
    dup.parent.mkdir()
    shutil.copy(_vol(data, "train_1_a_1"), dup)
    err = _cli_error(
        capsys,
        ["prepare", "--data", str(data), "--out", str(tmp_path / "c"), "--profile", "smoke", "--quiet"],
    )
    assert "duplicate volume names" in err and "train_1_a_1" in err
    assert not (tmp_path / "c" / "manifest.json").exists()


@pytest.mark.parametrize("table,column", [("train_region_report.csv", "Anatomy"),
                                          ("valid_predicted_labels.csv", "Cardiomegaly")])
def test_csv_missing_required_columns_is_an_error(data, tmp_path, capsys, table, column):
    import pandas as pd

    path = data / table
    pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=[column]).to_csv(path, index=False)
    err = _cli_error(
        capsys,
        ["prepare", "--data", str(data), "--out", str(tmp_path / "c"), "--profile", "smoke", "--quiet"],
    )
    assert str(path) in err and f"missing required column(s) '{column}'" in err


def test_missing_dataset_folder_and_label_values(tmp_path, capsys, data):
    err = _cli_error(capsys, ["prepare", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "c")])
    assert "dataset folder not found" in err
    path = data / "train_predicted_labels.csv"
    text = path.read_text().splitlines()
    text[1] = text[1].rsplit(",", 1)[0] + ",yes"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(BadInputError, match="must hold 0/1"):
        read_labels(path)


def test_interrupted_write_leaves_no_cache_entry(data, tmp_path, monkeypatch):
    def boom(path, data):
        Path(path).write_bytes(b"half")  # a partial file under the temporary name
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "write_bytes", boom)  # the cache writer, where prep calls it
    with pytest.raises(KeyboardInterrupt):
        prepare(data, tmp_path / "cache", PrepParams(image_size=SIZE), progress=False)
    assert list((tmp_path / "cache" / "cases").iterdir()) == []
    with pytest.raises(Exception, match="no prepared cache"):
        load_cache(tmp_path / "cache")
