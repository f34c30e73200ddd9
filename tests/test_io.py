"""reg2rg_lib.io: the crash-safe append-only CSV, run-folder lookup, and the logging switch."""

from __future__ import annotations

import logging

from reg2rg_lib.io import AppendOnlyCSV, enable_logging, read_complete_csv
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
    with AppendOnlyCSV(path, ("a", "b"), rows[:1]) as out:  # reopened: the kept rows, then appends (csv default)
        out.write([4, "y"])
    assert path.read_bytes() == b"a,b\r\n1,x\r\n4,y\r\n"
    (tmp_path / "half.csv").write_text("a,b")  # a header that never finished
    assert read_complete_csv(tmp_path / "half.csv") == (None, [])


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
