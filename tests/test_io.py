"""reg2rg_lib.io: the crash-safe append-only CSV, a full disk, one writer per folder, run-folder lookup,
logging."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest

from reg2rg_lib import folder_lock as lock_module
from reg2rg_lib import io as io_module
from reg2rg_lib.errors import BadInputError
from reg2rg_lib.folder_lock import MUTEX_NAME
from reg2rg_lib.io import (
    LOCK_NAME,
    AppendOnlyCSV,
    DiskFullError,
    FolderBusyError,
    enable_logging,
    folder_lock,
    lock_holder,
    read_complete_csv,
    rewrite_block,
    write_json_atomic,
)
from reg2rg_lib.paths import RunPaths


def test_append_only_csv_keeps_complete_rows_and_drops_a_cut_one(tmp_path):
    path = tmp_path / "log.csv"
    with AppendOnlyCSV(path, ("a", "b"), lineterminator="\n", fsync=True) as out:
        out.write([1, "x"])
        out.write([2, 'multi\nline "quoted"'])
    assert path.read_bytes() == b'a,b\n1,x\n2,"multi\nline ""quoted"""\n'
    header, rows = read_complete_csv(path)
    assert header == ["a", "b"] and rows == [{"a": "1", "b": "x"}, {"a": "2", "b": 'multi\nline "quoted"'}]
    with open(path, "a", encoding="utf-8") as f:  # a crash in the middle of a row
        f.write('3,"never fin')
    assert read_complete_csv(path)[1] == rows
    # reopened: the kept rows, then appends (csv default)
    with AppendOnlyCSV(path, ("a", "b"), rows[:1]) as out:
        out.write([4, "y"])
    assert path.read_bytes() == b"a,b\r\n1,x\r\n4,y\r\n"
    (tmp_path / "half.csv").write_text("a,b")  # a header that never finished
    assert read_complete_csv(tmp_path / "half.csv") == (None, [])


def test_rewrite_block_replaces_only_between_the_markers_and_refuses_a_file_without_them(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("# top\n<!-- a -->\nold 1\nold 2\n<!-- b -->\n## kept\n")
    rewrite_block(page, "<!-- a -->", "<!-- b -->", "\nnew table\n\n")
    assert page.read_text() == "# top\n<!-- a -->\nnew table\n<!-- b -->\n## kept\n"
    bare = tmp_path / "bare.md"
    bare.write_text("# nothing generated\n")
    with pytest.raises(BadInputError, match="bare.md.*no generated block"):
        rewrite_block(bare, "<!-- a -->", "<!-- b -->", "x")
    assert bare.read_text() == "# nothing generated\n"


def test_run_paths_of_run_and_of_checkpoint(tmp_path):
    out = tmp_path / "outputs" / "demo"
    model = out / "runs" / "full" / "checkpoints" / "step-00000004" / "model"
    assert RunPaths.of_run(out / "runs" / "full").root == out.resolve()
    assert RunPaths.of_run(tmp_path / "alone").root == (tmp_path / "alone").resolve()  # its inputs inside it
    assert RunPaths.of_checkpoint(model).cache == out.resolve() / "cache"
    assert RunPaths.of_checkpoint(tmp_path / "elsewhere" / "model") is None


def test_enable_logging_is_idempotent(capsys):
    logger = enable_logging()
    enable_logging()
    logging.getLogger("reg2rg_lib.train.loop").info("[train] hello")
    assert capsys.readouterr().out == "[train] hello\n"  # once, plain
    assert len(logger.handlers) == 1


# The notebooks' setup in a fresh interpreter (root logger without handlers, as in a kernel): enable_logging,
# then rouge_score's first message (absl: `logging.basicConfig()` on the root logger), then the kit's
# messages.
_NOTEBOOK_LOGGING = """
import logging
from reg2rg_lib.io import enable_logging
enable_logging()
from rouge_score import rouge_scorer
rouge_scorer.RougeScorer(["rougeL"])  # logs "Using default tokenizer." through absl
kit = logging.getLogger("reg2rg_lib.experiments.runner")
kit.info("[ablate] no_lfd: training 4 steps")
kit.warning("expectation not met: region accuracy")
logging.getLogger("some.library").warning("a library's own warning")
logging.getLogger("some.library").info("a library's own info")
"""


def test_each_kit_message_is_shown_once_after_a_library_configures_the_root_logger():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", _NOTEBOOK_LOGGING], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[ablate] no_lfd: training 4 steps\nexpectation not met: region accuracy\n"
    # as Python's last resort shows it; the kit's lines not again
    assert done.stderr == "a library's own warning\n"


# ---- a full disk -------------------------------------------------------------------------------------------
def _half_then_enospc(real):
    """A stand-in for `io._write_all` that writes half of the bytes, then fails as a full disk does."""

    def write(fd, data):
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_a_full_disk_mid_row_keeps_the_complete_rows_and_a_rerun_continues(tmp_path, monkeypatch):
    path = tmp_path / "predictions.csv"
    out = AppendOnlyCSV(path, ("a", "b"), lineterminator="\n")
    out.write([1, "x"])
    out.write([2, "y"])
    monkeypatch.setattr(io_module, "_write_all", _half_then_enospc(io_module._write_all))
    with pytest.raises(DiskFullError) as err:
        out.write([3, "a long row that is cut in the middle"])
    out.close()
    message = str(err.value)
    assert message.startswith(f"{path}: the disk is full") and "its 2 complete row(s)" in message
    assert "\n" not in message
    assert path.read_bytes().startswith(b"a,b\n1,x\n2,y\n3,a long"), "half a row reached the disk"
    header, rows = read_complete_csv(path)
    assert rows == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}], "the cut row is not taken for complete"
    monkeypatch.undo()
    with AppendOnlyCSV(path, header, rows, lineterminator="\n") as again:  # the rerun, space freed
        again.write([3, "z"])
    assert path.read_bytes() == b"a,b\n1,x\n2,y\n3,z\n"


def test_a_full_disk_in_an_atomic_write_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"v": 1})
    real = Path.write_text

    def full(self, text, *args, **kwargs):
        real(self, text[:3])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(
        DiskFullError, match=r"summary\.json: the disk is full .*the previous summary\.json is unchanged"
    ):
        write_json_atomic(target, {"v": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"], "no temporary file is left behind"


# ---- one writer per output folder --------------------------------------------------------------------------
def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, hold_lock):
    run = tmp_path / "run"
    with hold_lock(run) as proc:
        assert lock_holder(run)["pid"] == proc.pid
        start = time.perf_counter()
        with pytest.raises(FolderBusyError) as err:
            with folder_lock(run, "train"):
                pass
        assert time.perf_counter() - start < 2, "refused at once, not after a wait"
        message = str(err.value)
        assert message.startswith(f"{run.resolve()}: in use by another process, pid {proc.pid}")
        assert "hold.py" in message and "train" in message and "\n" not in message
        with pytest.raises(FolderBusyError, match=f"pid {proc.pid}"):  # a folder inside it is refused too
            with folder_lock(run / "checkpoints", "train"):
                pass
        # and above it
        with pytest.raises(FolderBusyError, match=f"{run.resolve()}: in use .* pid {proc.pid}"):
            with folder_lock(tmp_path, "ablate"):
                pass
    with folder_lock(run, "train"):  # released when the holder ends
        assert lock_holder(run)["pid"] == os.getpid()
    assert lock_holder(run) is None and not (run / LOCK_NAME).exists() and not (run / MUTEX_NAME).exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog, hold_lock):
    run = tmp_path / "run"
    with hold_lock(run) as proc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == proc.pid, "kill -9 left its lock file"
        assert lock_holder(run) is None, "but the kernel released the lock itself"
        with caplog.at_level(logging.WARNING, logger="reg2rg_lib.io"), folder_lock(run, "train"):
            assert lock_holder(run)["pid"] == os.getpid()
    assert f"taking over the lock of pid {proc.pid}" in caplog.text


def test_child_processes_write_under_their_parents_lock_and_nesting_is_fine(tmp_path):
    out = tmp_path / "profile"
    with folder_lock(out, "run-notebooks"):
        with folder_lock(out, "ablate"), folder_lock(out / "runs" / "full", "train"):  # nested, same process
            assert lock_holder(out / "runs" / "full")["pid"] == os.getpid()
        child = subprocess.run([sys.executable, "-c", (  # a notebook kernel: a child of the runner
            "from reg2rg_lib.io import folder_lock\n"
            f"with folder_lock({str(out)!r}, 'ablate'), folder_lock({str(out / 'cache')!r}, 'prepare'):\n"
            "    print('ok')")], capture_output=True, text=True)
        assert child.returncode == 0 and child.stdout.strip() == "ok", child.stderr
        assert lock_holder(out)["pid"] == os.getpid()
    assert lock_holder(out) is None


def test_safetensors_and_torch_full_disk_errors_are_recognised(tmp_path):
    target = tmp_path / "features.safetensors"
    target.write_bytes(b"complete")
    serde = (
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
        'device" })'
    )
    with pytest.raises(DiskFullError, match="the previous features.safetensors is unchanged"):
        with io_module.atomic_path(target) as tmp:
            tmp.write_bytes(b"par")
            raise RuntimeError(serde)  # what safetensors' save_file raises on a full disk
    assert target.read_bytes() == b"complete" and [p.name for p in tmp_path.iterdir()] == [target.name]
    with pytest.raises(ValueError):  # other errors pass through unchanged
        with io_module.atomic_path(target):
            raise ValueError("not a write error")


_SOFT_HOLD = """import sys, time, filelock
from reg2rg_lib import folder_lock as module
module.FileLock = filelock.SoftFileLock  # what filelock falls back to where the file system has no flock
with module.folder_lock(sys.argv[1], "train"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_without_flock_filelocks_pid_marker_decides_and_is_taken_over(tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    monkeypatch.setattr(lock_module, "FileLock", filelock.SoftFileLock)
    script = tmp_path / "soft_hold.py"
    script.write_text(_SOFT_HOLD)
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert (run / MUTEX_NAME).read_text().strip(), (
            "the mutex is filelock's pid marker, not an empty flock file"
        )
        with pytest.raises(FolderBusyError, match=f"pid {proc.pid}"):
            with folder_lock(run, "train"):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert (run / MUTEX_NAME).exists(), "kill -9 left its marker"
        with caplog.at_level(logging.WARNING, logger="reg2rg_lib"), folder_lock(run, "train"):
            assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()
    assert f"taking over the lock of pid {proc.pid}" in caplog.text
    assert sorted(p.name for p in run.iterdir()) == [], "released: neither the record nor the marker is left"


def test_atomic_dir_replaces_a_folder_only_when_the_block_succeeds(tmp_path):
    from reg2rg_lib.io import atomic_dir

    target = tmp_path / "tok"
    target.mkdir()
    (target / "old.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.json").write_text("half")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["tok"] and (target / "old.json").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "new.json").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


def test_append_only_csv_writes_a_batch_with_one_sync(tmp_path, monkeypatch):
    import reg2rg_lib.io as kio

    syncs = []
    monkeypatch.setattr(kio.os, "fsync", lambda fd: syncs.append(fd))
    path = tmp_path / "p.csv"
    with kio.AppendOnlyCSV(path, ["a", "b"], fsync=True) as out:
        out.write_rows([[1, "x, y"], [2, "z"], [3, "w"]])
        out.write([4, "v"])
        out.write_rows([])
        assert out.rows == 4
    assert len(syncs) == 2  # one per batch, one per single row, none for an empty batch
    assert [r["b"] for r in kio.read_complete_csv(path)[1]] == ["x, y", "z", "w", "v"]
