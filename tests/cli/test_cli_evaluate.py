"""`reg2rg evaluate` on bad inputs: one line `error: FILE: ...`, exit code 2, no traceback, one test per
case."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from reg2rg_lib.cli import main

GOOD = {"AccNum": ["valid_1_a_1", "valid_2_a_1"], "Question": ["q", "q"],
        "GT_combined_report": ["The region 0 is lung: A nodule is seen.", "The region 0 is lung: Clear."],
        "Pred_combined_report": ["The region 0 is lung: A nodule is seen.", "The region 0 is lung: Clear."]}


def _run(capsys, path, command="region", extra=()) -> str:
    """Run `reg2rg evaluate <command>` on `path`; assert exit 2 and one error line naming the file; return
    it."""
    argv = ["evaluate", command, "--predictions", str(path), "--out", str(path.parent / "out"), *extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    return lines[0]


def _csv(tmp_path, name="p.csv", **changes):
    table = pd.DataFrame({**GOOD, **changes})
    table.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def test_missing_columns(tmp_path, capsys):
    path = _csv(tmp_path)
    pd.read_csv(path).drop(columns=["Pred_combined_report"]).to_csv(path, index=False)
    assert "no report columns found" in _run(capsys, path)
    assert "lacks column(s) 'Prediction'" in _run(capsys, path, extra=["--pred-column", "Prediction"])


def test_duplicate_case_ids(tmp_path, capsys):
    path = _csv(tmp_path, AccNum=["valid_1_a_1", "valid_1_a_1"])
    assert "duplicate case id 'valid_1_a_1' in column 'AccNum' (rows 2, 3)" in _run(capsys, path)


def test_empty_id_cell(tmp_path, capsys):
    path = _csv(tmp_path, AccNum=["valid_1_a_1", ""])
    assert "empty 'AccNum' cell(s) in row(s) 3" in _run(capsys, path)


def test_empty_reference_cell(tmp_path, capsys):
    path = _csv(tmp_path, GT_combined_report=["", "The region 0 is lung: Clear."])
    assert "1 empty cell(s) in column 'GT_combined_report' (row(s) 2)" in _run(capsys, path, "nlg")


def test_empty_prediction_cell_refused_unless_allowed(tmp_path, capsys):
    path = _csv(tmp_path, Pred_combined_report=["The region 0 is lung: Clear.", ""])
    msg = _run(capsys, path, "ce")
    assert (
        "1 empty cell(s) in column 'Pred_combined_report' (row(s) 3)" in msg
        and "--allow-empty-predictions" in msg
    )
    assert main(["evaluate", "region", "--predictions", str(path), "--out", str(tmp_path / "o"),
                 "--allow-empty-predictions"]) == 0


def test_non_utf8_text(tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    pd.DataFrame({**GOOD, "GT_combined_report": ["Pleural effusion, 20 mm \u00b1 2.", "Clear."]}).to_csv(
        path, index=False, encoding="latin-1")
    assert "is not UTF-8 text (byte 0xb1 at offset" in _run(capsys, path)


def test_binary_file_is_not_csv(tmp_path, capsys):
    path = tmp_path / "volume.csv"
    path.write_bytes(gzip.compress(b"\x00" * 64))
    assert "is a gzip file, not a CSV" in _run(capsys, path)


def test_text_that_is_not_a_table(tmp_path, capsys):
    path = tmp_path / "notes.csv"
    path.write_text('{"AccNum": 1, "report": "x"}\n')
    assert "no report columns found" in _run(capsys, path)
    path.write_text('AccNum,GT_combined_report,Pred_combined_report\n1,"unclosed quote,x\n')
    assert "not a readable CSV" in _run(capsys, path)


def test_path_that_does_not_exist(tmp_path, capsys):
    assert "predictions CSV not found" in _run(capsys, tmp_path / "absent.csv")
    (tmp_path / "adir").mkdir()
    assert "is a folder; expected a predictions CSV file" in _run(capsys, tmp_path / "adir")


@pytest.mark.parametrize("command", ["nlg", "ce", "region", "region-ce", "all"])
def test_empty_or_header_only_is_an_error_not_zeros(tmp_path, capsys, command):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty (no header row)" in _run(capsys, empty, command)
    header = tmp_path / "header.csv"
    header.write_text("AccNum,Question,GT_combined_report,Pred_combined_report\n")
    assert "has a header but no rows; nothing to evaluate" in _run(capsys, header, command)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_header_only_label_table(tmp_path, capsys):
    from reg2rg_lib.regions import LABELS

    path = tmp_path / "labels.csv"
    path.write_text(",".join([f"GT_{lab}" for lab in LABELS] + [f"Pred_{lab}" for lab in LABELS]) + "\n")
    assert main(["evaluate", "ce", "--labels", str(path), "--out", str(tmp_path / "o")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {path}: label table has a header but no rows; nothing to evaluate"
    )


def test_image_use_names_a_missing_checkpoint_or_cache(tmp_path, capsys):
    missing = tmp_path / "no_run"
    argv = [
        "evaluate",
        "image-use",
        "--checkpoint",
        str(missing),
        "--cache",
        str(tmp_path),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: checkpoint not found"]
    assert main(["evaluate", "image-use", "--checkpoint", str(tmp_path), "--cache", str(missing),
                 "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {missing}: prep cache not found"
    assert main(["evaluate", "image-use", "--checkpoint", str(tmp_path), "--cache", str(tmp_path),
                 "--out", str(tmp_path)]) == 2  # a folder that is no model: one line naming it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path}: not a model folder")


def test_evaluate_all_needs_checkpoint_and_cache_together(tmp_path, capsys):
    path = _csv(tmp_path)
    assert main(["evaluate", "all", "--predictions", str(path), "--out", str(tmp_path / "o"),
                 "--checkpoint", str(tmp_path)]) == 2
    assert "needs both --checkpoint and --cache" in capsys.readouterr().err


def test_image_use_on_a_trained_smoke_run(trained, smoke, tmp_path, capsys):
    out = tmp_path / "iu"
    assert main(["evaluate", "image-use", "--checkpoint", str(trained), "--cache", str(smoke.cache),
                 "--labels", "Lung nodule", "Cardiomegaly", "--out", str(out)]) == 0
    table = pd.read_csv(out / "image_use.csv")
    assert list(table["label"]) == ["Lung nodule", "Cardiomegaly"]
    assert {"carried_auc", "used_auc", "control_auc", "gap_flag"} <= set(table.columns)
    assert (out / "image_use.json").is_file() and "carried but not used" in capsys.readouterr().out
