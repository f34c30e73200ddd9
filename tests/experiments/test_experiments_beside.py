"""Grid rows trained beside notebook 03's `full` (`experiments.beside`), reused by notebook 05's grid."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil

import pytest

from reg2rg_lib.errors import KitError
from reg2rg_lib.experiments.beside import beside_full, rows_beside
from reg2rg_lib.profiles import ProfileError, load_profile


def test_the_rows_are_grid_rows_other_than_full_its_twins_and_imports():
    assert [a.name for a in rows_beside(load_profile("demo"))] == ["no_reref"]
    assert rows_beside(load_profile("paper")) == []
    smoke = load_profile("smoke")
    # llm_scratch-2x128 is the smoke preset's own LLM (full's model): the grid reuses full for it
    assert [a.name for a in rows_beside(smoke, ["full", "no_rra", "llm_scratch-2x128"])] == ["no_rra"]
    imported = load_profile("smoke", {"ablations.imported": ["no_rra"]})
    assert rows_beside(imported, ["no_rra"]) == []
    with pytest.raises(KitError, match="no_lfd not in profile smoke's grid"):
        rows_beside(smoke, ["no_lfd"])
    with pytest.raises(ProfileError, match="ablations.beside_full names 'no_lfd', which is not one of"):
        load_profile("smoke", {"ablations.beside_full": ["no_lfd"]})


def _inputs(smoke, root):
    for sub in ("cache", "tokenizer", "data"):
        shutil.copytree(smoke.root / sub, root / sub)
    shutil.rmtree(root / "cache" / "vit_features", ignore_errors=True)  # other tests' runs may have made them
    return root


@pytest.mark.slow  # trains two 4-step smoke runs side by side and evaluates one: ~40-80 s
def test_a_row_trained_beside_full_is_reused_by_the_grid(smoke, tmp_path, caplog):
    from reg2rg_lib.experiments.runner import run_ablations
    from reg2rg_lib.train.run import train_run

    root = _inputs(smoke, tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="reg2rg_lib"):
        with beside_full("smoke", root, ["no_rra"]) as rows:
            assert rows == ["no_rra"]
            train_run("smoke", root / "runs" / "full", progress=False)
    logs = caplog.messages
    run = root / "runs" / "no_rra"
    steps = json.loads((run / "train_summary.json").read_text())["steps"]
    assert steps == load_profile("smoke").train.max_steps
    assert (run / "predictions.csv").is_file() and (run / "metrics" / "summary.json").is_file()
    # the frozen ViT's features were computed once, by this process, before the second one started
    computed = [m for m in logs if "frozen-ViT features of" in m]
    assert len(computed) == 3 and "(0 computed" not in computed[0]
    assert all("(0 computed" in m for m in computed[1:]) and computed[2].startswith("[no_rra]")
    assert "[beside] no_rra finished" in logs and not mp.active_children()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="reg2rg_lib"):
        summary = run_ablations("smoke", root, runs=["full", "no_rra"], n_resamples=20, progress=False)
    assert any(m.startswith("[ablate] no_rra: reusing") for m in caplog.messages)
    assert not any(m.startswith("[ablate] no_rra: training") for m in caplog.messages)
    assert set(summary["runs"]) == {"full", "no_rra"}


def test_an_interrupted_block_stops_the_second_process_and_a_failed_row_is_a_warning(smoke, tmp_path, caplog):
    root = _inputs(smoke, tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        with beside_full("smoke", root, ["no_rra"]):
            raise KeyboardInterrupt
    assert not mp.active_children()
    assert not (root / "runs" / "no_rra" / "train_summary.json").exists()
    # vit_pretrained needs the pretrained ViT, which nothing made here: the second process fails; full's block
    # is not failed for it (notebook 05 trains the row again, where the error shows)
    with caplog.at_level(logging.INFO, logger="reg2rg_lib"):
        with beside_full("smoke", root, ["vit_pretrained"]) as rows:
            assert rows == ["vit_pretrained"]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "[beside]" in r.getMessage()]
    assert len(warned) == 1 and "no pretrained vision encoder" in warned[0].getMessage()
    assert "notebook 05 trains what did not finish" in warned[0].getMessage()
    assert "\n" not in warned[0].getMessage() and not mp.active_children()  # one line


def test_nothing_starts_on_one_core(smoke, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    root = _inputs(smoke, tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="reg2rg_lib"):
        with beside_full("smoke", root, ["no_rra"]) as rows:
            assert rows == [] and not mp.active_children()
    assert "[beside] one core: no_rra will train in notebook 05" in caplog.messages
    assert not (root / "runs" / "no_rra").exists()


_KILLED_NOTEBOOK = """import multiprocessing as mp, sys, time
from reg2rg_lib.experiments.beside import beside_full
from reg2rg_lib.profiles import load_profile
if __name__ == "__main__":
    long = load_profile("smoke", {"train.max_steps": 20000})  # the row trains for minutes
    with beside_full(long, sys.argv[1], ["no_rra"]):
        print(mp.active_children()[0].pid, flush=True)
        time.sleep(300)  # killed with -9 here, as a notebook kernel can be
"""


def test_the_second_process_ends_when_the_notebook_is_killed_outright(smoke, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root = _inputs(smoke, tmp_path / "out")
    script = tmp_path / "notebook.py"
    script.write_text(_KILLED_NOTEBOOK)
    proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
    log, child = root / "runs" / "no_rra" / "train_log.csv", None
    try:
        child = int(proc.stdout.readline())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (log.is_file() and len(log.read_text().splitlines()) > 5):
            time.sleep(0.2)  # the second process is training
        assert _alive(child), "the second process ended before it trained"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.2)
        assert not _alive(child)  # it would have trained for minutes
        assert not (root / "runs" / "no_rra" / "train_summary.json").exists()
    finally:
        proc.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, ended but not yet reaped by init, counts as ended)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = f"/proc/{pid}/status"
    if os.path.exists(status):
        with open(status) as f:
            return "zombie" not in f.read()
    return True
