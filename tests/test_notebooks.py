"""Executes every numbered notebook, in order, with the `smoke` profile into a temporary folder (papermill).

Later notebooks read what earlier ones wrote, so they share one output folder for the whole session.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from reg2rg_lib.nbtools.papermill_runner import NOTEBOOK_DIR, discover, run_notebooks

NOTEBOOKS = discover(NOTEBOOK_DIR)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke_run"), {}


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_smoke_profile(notebook, smoke_run):
    out, state = smoke_run
    failed_before = [name for name, ok in state.items() if not ok]
    if failed_before:
        pytest.fail(f"an earlier notebook failed ({failed_before[0]}); {notebook.name} depends on it")
    state[notebook.name] = False
    (result,) = run_notebooks(
        "smoke", out, figures_dir=out / "figures", only=[notebook.name[:2]], progress=False
    )
    executed = nbformat.read(result.executed, as_version=4)
    assert executed.metadata["papermill"]["parameters"]["profile"] == "smoke"
    errors = [
        o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, json.dumps(errors[0])[:500] if errors else ""
    twice = logged_twice(executed)
    assert not twice, f"{notebook.name}: log lines shown twice (on stdout and again on stderr): {twice[:3]}"
    state[notebook.name] = True


def logged_twice(executed: nbformat.NotebookNode) -> list[str]:
    """The lines a code cell shows on stderr that it also shows on stdout, or in logging's default form
    ("INFO:reg2rg_lib.x:..."), which only a second handler on the root logger writes."""
    found = []
    for cell in executed.cells:
        streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "stream":
                streams[out.name] += out.text.splitlines()
        shown = set(streams["stdout"])
        found += [line for line in streams["stderr"]
                  if line.strip() and (line in shown or re.match(r"[A-Z]+:reg2rg_lib[\w.]*:", line))]
    return found
