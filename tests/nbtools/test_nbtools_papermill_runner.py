"""The papermill runner: selection by number, parameter injection, and a failure that names its cell."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reg2rg_lib.nbtools.papermill_runner import NotebookFailed, run_notebooks, select


def test_select_by_number():
    nbs = [Path("00_a.ipynb"), Path("01_b.ipynb"), Path("03_c.ipynb")]
    assert select(nbs, ["1", "03"]) == [nbs[1], nbs[2]]
    assert select(nbs, None) == nbs
    with pytest.raises(ValueError, match="no notebook numbered 02"):
        select(nbs, ["02"])


def test_runner_injects_parameters_and_names_the_failing_cell(tmp_path, write_notebook):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_notebook(
        nbdir / "00_ok.ipynb", "from pathlib import Path\nPath(out_dir, 'seen.txt').write_text(profile)"
    )
    write_notebook(nbdir / "01_bad.ipynb", "raise ValueError('boom in the pipeline')")
    out = tmp_path / "out"
    res = run_notebooks("smoke", out, notebook_dir=nbdir, only=["0"], progress=False, kernel="python3")
    assert (out / "seen.txt").read_text() == "smoke"
    assert res[0].executed == out / "notebooks" / "00_ok.ipynb"
    with pytest.raises(NotebookFailed) as err:
        run_notebooks("smoke", out, notebook_dir=nbdir, progress=False, kernel="python3")
    msg = str(err.value)
    assert "01_bad.ipynb" in msg and "cell 3" in msg and "boom in the pipeline" in msg


def test_a_kernel_writes_under_the_runners_lock(tmp_path, write_notebook):
    """The kernel is a child of the runner, which holds out_dir: the stages it runs share that lock."""
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_notebook(nbdir / "00_lock.ipynb", (
        "from pathlib import Path\nfrom reg2rg_lib.io import folder_lock, lock_holder\n"
        "with folder_lock(out_dir, 'ablate'), folder_lock(Path(out_dir, 'runs', 'full'), 'train'):\n"
        "    Path(out_dir, 'holder.txt').write_text(str(lock_holder(out_dir)['pid']))"))
    out = tmp_path / "out"
    run_notebooks("smoke", out, notebook_dir=nbdir, progress=False, kernel="python3")
    assert (out / "holder.txt").read_text() == str(os.getpid()), "the runner (this process) held out_dir"
