"""Executes every numbered notebook, in order, with the `smoke` profile into a temporary folder (papermill).

Later notebooks read what earlier ones wrote, so they share one output folder for the whole session.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from reg2rg_lib.nbtools.runner import NOTEBOOK_DIR, discover, run_notebooks

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
    (result,) = run_notebooks("smoke", out, figures_dir=out / "figures", only=[notebook.name[:2]], progress=False)
    executed = nbformat.read(result.executed, as_version=4)
    assert executed.metadata["papermill"]["parameters"]["profile"] == "smoke"
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, json.dumps(errors[0])[:500] if errors else ""
    state[notebook.name] = True
