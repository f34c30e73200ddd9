"""Bad inputs and busy folders for `train`, `generate`, `prepare`, `synth`, `ablate`, `run-notebooks`: one
line
`error: ...` on stderr, exit code 2, no traceback, and nothing already written is changed or lost."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from reg2rg_lib import io as io_module
from reg2rg_lib.cli import main
from reg2rg_lib.data.prep import PrepParams, prepare
from reg2rg_lib.infer.predictions import read_predictions
from reg2rg_lib.io import LOCK_NAME
from reg2rg_lib.train.checkpoints import latest_checkpoint


def _error(capsys, rc: int) -> str:
    """The one error line of a refused command (and no traceback)."""
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    line = "error: " + err.split("error: ", 1)[1].split("\n", 1)[0].split("\r", 1)[0]  # after any tqdm bar
    rest = err.replace(line, "")
    assert all("%|" in seg for seg in rest.replace("\r", "\n").split("\n") if seg.strip()), err  # only bars
    return line


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def _busy_args(command: str, out: Path, smoke, trained) -> list[str]:
    return {
        "train": ["train", "--profile", "smoke", "--out", str(out), "--max-steps", "2"],
        "prepare": ["prepare", "--profile", "smoke", "--data", str(smoke.data), "--out", str(out), "--quiet"],
        "generate": ["generate", "--checkpoint", str(trained), "--data", str(smoke.cache), "--out",
                     str(out / "predictions.csv")],
        "ablate": ["ablate", "--profile", "smoke", "--out", str(out), "--quiet"],
        "run-notebooks": ["run-notebooks", "--profile", "smoke", "--out", str(out), "--only", "01"],
    }[command]


@pytest.mark.parametrize("command", ["train", "prepare", "generate", "ablate", "run-notebooks"])
def test_a_second_writer_on_a_folder_in_use_is_refused_at_once(
    command, tmp_path, capsys, smoke, trained, hold_lock
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("written by the running process")
    with hold_lock(out, command) as proc:
        before = _tree(out)
        start = time.perf_counter()
        line = _error(capsys, main(_busy_args(command, out, smoke, trained)))
        seconds = time.perf_counter() - start
        assert _tree(out) == before, "the refused command wrote nothing"
    assert seconds < 5, f"refused after {seconds:.1f} s"
    assert f"in use by another process, pid {proc.pid}" in line and "hold.py" in line and command in line


def test_the_folder_of_a_killed_run_is_taken_over(tmp_path, capsys, smoke, caplog, hold_lock):
    out = tmp_path / "cache"
    out.mkdir()
    with hold_lock(out, "prepare") as proc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert (out / LOCK_NAME).is_file()
        with caplog.at_level(logging.WARNING, logger="reg2rg_lib.io"):
            assert main(["prepare", "--profile", "smoke", "--data", str(smoke.data), "--out", str(out),
                         "--quiet"]) == 0
    assert f"taking over the lock of pid {proc.pid}" in caplog.text
    assert (out / "manifest.json").is_file() and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("args", [
    ["train", "--profile", "nope", "--out", "{tmp}/r"],
    ["generate", "--profile", "nope", "--checkpoint", "{tmp}", "--out", "{tmp}/p.csv"],
    ["prepare", "--profile", "nope", "--data", "{tmp}", "--out", "{tmp}/c"],
    ["synth", "--profile", "nope", "--out", "{tmp}/s"],
    ["ablate", "--profile", "nope", "--out", "{tmp}/a"],
], ids=["train", "generate", "prepare", "synth", "ablate"])
def test_an_unknown_profile_is_one_line(args, tmp_path, capsys):
    line = _error(capsys, main([a.format(tmp=tmp_path) for a in args]))
    assert "unknown profile 'nope'; expected one of smoke, demo" in line
    assert not any(tmp_path.iterdir()), "nothing was written"


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["prepare", "--data", "{tmp}/missing", "--out", "{tmp}/c"],
            "{tmp}/missing: dataset folder not found",
        ),
        (
            ["train", "--profile", "demo", "--cache", "{tmp}/missing", "--out", "{tmp}/r"],
            "missing prep cache {tmp}/missing",
        ),
        (
            ["generate", "--checkpoint", "{tmp}/missing", "--data", "{tmp}", "--out", "{tmp}/p.csv"],
            "{tmp}/missing: does not exist",
        ),
        (
            ["generate", "--checkpoint", "{tmp}", "--data", "{tmp}/missing", "--out", "{tmp}/p.csv"],
            "{tmp}/missing: does not exist",
        ),
        (["ablate", "--profile", "smoke", "--out", "{tmp}/missing"], "no prep cache at {tmp}/missing/cache"),
        (
            ["synth", "--profile", "smoke", "--out", "{tmp}/file/s"],
            "{tmp}/file/s: cannot create this output folder",
        ),
        (
            ["train", "--profile", "smoke", "--out", "{tmp}/file/r"],
            "{tmp}/file/r: cannot create this output folder",
        ),
        (["prepare", "--out", "{tmp}/c"], "prepare needs --data"),
    ],
    ids=[
        "prepare-data",
        "train-cache",
        "generate-checkpoint",
        "generate-data",
        "ablate-out",
        "synth-out-under-a-file",
        "train-out-under-a-file",
        "prepare-no-data",
    ],
)
def test_a_path_that_does_not_exist_is_one_line(args, expected, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    line = _error(capsys, main([a.format(tmp=tmp_path) for a in args]))
    assert expected.format(tmp=tmp_path) in line, line


@pytest.mark.parametrize("change,expected", [
    (["--llm", "small"], "llm_heads=4 there, 8 here"),
    (["--set", "rra=false"], "rra=True there, False here"),
], ids=["llm-size", "rra-switch"])
def test_resuming_a_checkpoint_of_another_configuration_is_refused(change, expected, trained, capsys):
    latest = latest_checkpoint(trained / "checkpoints")
    before = _tree(trained / "checkpoints")
    line = _error(capsys, main(["train", "--profile", "smoke", "--out", str(trained), "--max-steps", "6",
                                "--resume", *change]))
    assert line.startswith(f"error: {latest / 'model' / 'config.json'}: checkpoint of another configuration")
    assert expected in line
    assert _tree(trained / "checkpoints") == before


def test_generating_from_a_cache_of_another_configuration_is_refused(trained, smoke, tmp_path, capsys):
    other = tmp_path / "cache64"
    prepare(smoke.data, other, PrepParams(image_size=(64, 64, 16)), progress=False)
    line = _error(capsys, main(["generate", "--checkpoint", str(trained), "--data", str(other), "--out",
                                str(tmp_path / "p.csv")]))
    assert f"{other}: prepared at image size (64, 64, 16)" in line and "trained at (32, 32, 8)" in line
    assert not (tmp_path / "p.csv").exists()


def test_a_full_disk_while_writing_predictions_keeps_the_rows_and_the_rerun_completes(
    trained, smoke, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "predictions.csv"
    args = ["generate", "--checkpoint", str(trained), "--data", str(smoke.cache), "--out", str(out),
            "--batch-size", "1"]
    real, calls = io_module._write_all, {"n": 0}

    def full_at_second_row(fd, data):
        calls["n"] += not data.startswith(b'{"pid"')  # rows, not the writer lock's own file
        if calls["n"] == 2:
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)
    monkeypatch.setattr(io_module, "_write_all", full_at_second_row)
    line = _error(capsys, main(args))
    assert line.startswith(f"error: {out}: the disk is full") and "1 complete row(s)" in line
    first = read_predictions(out)
    assert len(first) == 1
    monkeypatch.undo()
    assert main(args) == 0
    rows = read_predictions(out)
    assert rows[0] == first[0], "the complete row is kept, not recomputed"
    assert len(rows) == len({r["AccNum"] for r in rows}) == 3
